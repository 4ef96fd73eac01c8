//! The example fleet of docs/planner.md: smaller models land on in-house chips, the frontier
//! model stays on Nvidia, as in the Sept 2025 reports.

use anychip_plan::calib;
use anychip_plan::chips::ChipDb;
use anychip_plan::fleet::{schedule_files, Objective, Schedule};
use anychip_plan::stack;
use std::path::Path;
use std::path::PathBuf;

/// This crate's directory, read when the test runs: cargo sets it then too, and a build cache
/// shared between checkouts can hand over a test binary compiled in another one.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

fn schedule(fleet: &Path, jobs: &Path, objective: Objective) -> Schedule {
    schedule_files(
        fleet,
        jobs,
        &ChipDb::builtin(),
        objective,
        &stack::find("megatron-core-2024").unwrap(),
        &calib::shipped(),
    )
    .unwrap()
}

fn example(objective: Objective) -> Schedule {
    let root = manifest_dir().join("../../examples/fleet");
    schedule(&root.join("fleet.toml"), &root.join("jobs.toml"), objective)
}

#[test]
fn frontier_on_nvidia_smaller_models_in_house() {
    let s = example(Objective::Makespan);
    for a in &s.assignments {
        println!(
            "{:<14} {:?} start {:.1} d, {:.1} d",
            a.job,
            a.shares.iter().map(|x| (&x.chip, x.count)).collect::<Vec<_>>(),
            a.start_days,
            a.days
        );
    }
    let frontier = s.assignments.iter().find(|a| a.job == "frontier-70b").unwrap();
    assert!(frontier.shares.iter().all(|x| x.chip == "h20"), "require = nvidia must hold");
    // Nothing required the small jobs to leave Nvidia: the scheduler sends them in-house because the
    // H20 pool is busy with the frontier run for far longer than they take elsewhere.
    for a in s.assignments.iter().filter(|a| a.job != "frontier-70b") {
        assert!(
            a.shares.iter().all(|x| x.chip == "p800" || x.chip == "ppu"),
            "{} went to {:?}",
            a.job,
            a.shares[0].chip
        );
    }
    // No pool is over-committed at any moment.
    let caps = [("h20", 512usize), ("p800", 2048), ("ppu", 1024)];
    for a in &s.assignments {
        let t = a.start_days + 1e-9;
        for (chip, cap) in caps {
            let used: usize = s
                .assignments
                .iter()
                .filter(|b| b.start_days <= t && t < b.end_days())
                .flat_map(|b| b.shares.iter().filter(|x| x.chip == chip).map(|x| x.count))
                .sum();
            assert!(used <= cap, "{chip} over capacity at {t}: {used} > {cap}");
        }
    }
    assert!((s.makespan_days - frontier.end_days()).abs() < 1e-9);
}

#[test]
fn cost_objective_is_not_more_expensive() {
    let fast = example(Objective::Makespan);
    let cheap = example(Objective::Cost);
    assert!(cheap.cost_usd.unwrap() <= fast.cost_usd.unwrap() * (1.0 + 1e-9));
}

#[test]
fn heterogeneous_job_spans_kinds_only_when_asked() {
    let root = manifest_dir().join("../../examples/fleet");
    let tmp = tempfile::Builder::new().prefix("anychip-fleet-het-").tempdir().unwrap();
    let dir = tmp.path();
    let run = |het: bool| {
        let jobs = dir.join(format!("jobs-{het}.toml"));
        std::fs::write(
            &jobs,
            format!("[[job]]\nname = \"j\"\nmodel = \"qwen3-8b\"\ntokens = 1e12\nheterogeneous = {het}\n"),
        )
        .unwrap();
        schedule(&root.join("fleet.toml"), &jobs, Objective::Makespan)
    };
    let single = run(false);
    assert_eq!(single.assignments[0].shares.len(), 1);
    let mixed = run(true);
    assert_eq!(mixed.assignments[0].shares.len(), 3, "all three kinds together finish first");
    assert!(mixed.makespan_days < single.makespan_days);
}
