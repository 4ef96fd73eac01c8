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

/// The example fleet with `extra` lines added to the named jobs of the example jobs file.
fn example_with(objective: Objective, extra: &[(&str, &str)]) -> Result<Schedule, String> {
    let root = manifest_dir().join("../../examples/fleet");
    let mut jobs = std::fs::read_to_string(root.join("jobs.toml")).unwrap();
    for (job, line) in extra {
        let at = format!("name = \"{job}\"\n");
        assert!(jobs.contains(&at), "no job {job}");
        jobs = jobs.replace(&at, &format!("{at}{line}\n"));
    }
    let tmp = tempfile::Builder::new().prefix("anychip-fleet-deadline-").tempdir().unwrap();
    let path = tmp.path().join("jobs.toml");
    std::fs::write(&path, jobs).unwrap();
    schedule_files(
        &root.join("fleet.toml"),
        &path,
        &ChipDb::builtin(),
        objective,
        &stack::find("megatron-core-2024").unwrap(),
        &calib::shipped(),
    )
    .map_err(|e| e.to_string())
}

fn job<'a>(s: &'a Schedule, name: &str) -> &'a anychip_plan::fleet::Assignment {
    s.assignments.iter().find(|a| a.job == name).unwrap()
}

#[test]
fn a_deadline_takes_a_placement_that_ends_in_time() {
    // Cheapest first, Qwen3-4B's 6T tokens run long on a small slice; with 20 days to finish it
    // takes a placement that ends by then, and says so.
    let free = example_with(Objective::Cost, &[]).unwrap();
    assert!(job(&free, "qwen3-4b").end_days() > 20.0, "the deadline must bind for the test to mean anything");
    assert_eq!(job(&free, "qwen3-4b").meets_deadline, None);
    let due = example_with(Objective::Cost, &[("qwen3-4b", "deadline_days = 20")]).unwrap();
    let a = job(&due, "qwen3-4b");
    assert!(a.end_days() <= 20.0 && a.meets_deadline == Some(true) && a.chips_for_deadline.is_empty(), "{a:?}");
    // Without deadlines the schedule is what it was.
    let again = example(Objective::Cost);
    assert_eq!(format!("{:?}", again.assignments), format!("{:?}", free.assignments));
}

#[test]
fn a_missed_deadline_says_how_many_chips_would_meet_it() {
    // The frontier job must stay on the 512 H20s, which take far longer than 40 days.
    let s = example_with(Objective::Makespan, &[("frontier-70b", "deadline_days = 40")]).unwrap();
    let a = job(&s, "frontier-70b");
    assert_eq!(a.meets_deadline, Some(false));
    assert_eq!(a.start_days, 0.0, "a job with a deadline goes first");
    let [(kind, n)] = a.chips_for_deadline.as_slice() else { panic!("{:?}", a.chips_for_deadline) };
    assert!(kind == "h20" && *n > 512, "{kind} {n}");
    for bad in ["deadline_days = 0", "deadline_days = -3", "deadline_days = nan"] {
        let e = example_with(Objective::Makespan, &[("qwen3-8b", bad)]).unwrap_err();
        assert!(e.contains("job qwen3-8b") && e.contains("deadline_days must be a positive number"), "{e}");
    }
}
