//! Fault injection: the process is killed at every step of the checkpoint protocol, signalled
//! mid-run, given a full disk, NaN gradients, a second run on its directory, and changed flags
//! on resume. Each case asserts that the last good checkpoint loads and that at most one
//! checkpoint interval is lost. The faults come from `ANYCHIP_FAULT` (crates/train/src/fault.rs):
//! no strace or LD_PRELOAD, so this runs in plain `cargo test`.

mod common;
use common::*;

use anychip_train::checkpoint;
use std::fs;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// The step of the checkpoint `sample`, `export` and `--resume` would read in `run`, after
/// checking that it loads: its weights parse and are finite.
fn loadable_step(run: &Path) -> u64 {
    let ck = checkpoint::open(run).unwrap_or_else(|e| panic!("no loadable checkpoint in {}: {e:#}", run.display()));
    checkpoint::validate(&ck.dir).unwrap_or_else(|e| panic!("{e:#}"));
    let o = run_sample(run);
    assert!(o.status.success(), "sample: {}", stderr(&o));
    ck.state.step
}

fn run_sample(run: &Path) -> Output {
    common::run(&["sample", "--ckpt", run.to_str().unwrap(), "--tokens", "3", "--threads", "1"])
}

fn with_fault(data: &Path, out: &Path, steps: &str, fault: &str, extra: &[&str]) -> Output {
    train_cmd(data, out, steps, extra).env("ANYCHIP_FAULT", fault).output().unwrap()
}

/// Files a checkpoint swap may leave behind.
fn staging_left(run: &Path) -> Vec<String> {
    fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".checkpoint."))
        .collect()
}

#[test]
fn a_kill_at_any_point_of_the_checkpoint_swap_loses_at_most_one_interval() {
    let d = scratch("kill-swap");
    let data = corpus(&d);
    let straight = d.join("straight");
    let o = train(&data, &straight, "6", &["--ckpt-every", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = fs::read(straight.join("checkpoint/model.safetensors")).unwrap();
    // Each site with the visit that falls in the second checkpoint (step 4): the first (step
    // 2) has no previous checkpoint to move aside, so "moved-old" is first reached at step 4.
    let sites = [
        ("ckpt:write:model.safetensors", 2),
        ("ckpt:write:optimizer.safetensors", 2),
        ("ckpt:write:config.json", 2),
        ("ckpt:write:state.json", 2),
        ("ckpt:written", 2),
        ("ckpt:moved-old", 1),
        ("ckpt:swapped", 2),
    ];
    for (site, nth) in sites {
        let run = d.join(site.replace(':', "-"));
        // The second checkpoint (step 4) dies at `site`; the first (step 2) is complete.
        let o = with_fault(&data, &run, "6", &format!("{site}@{nth}"), &["--ckpt-every", "2"]);
        assert_eq!(o.status.code(), None, "{site}: the process should have aborted: {}", stderr(&o));
        let step = loadable_step(&run);
        assert!(step == 2 || step == 4, "{site}: checkpoint at step {step}, want 2 or 4");
        // Resume continues it to the end, bit-exactly, with one metrics line per step.
        let o = bin().args(["train", "--resume", run.to_str().unwrap(), "--threads", "1"]).output().unwrap();
        assert!(o.status.success(), "{site}: resume: {}", stderr(&o));
        assert_eq!(fs::read(run.join("checkpoint/model.safetensors")).unwrap(), want, "{site}: not bit-exact");
        assert_eq!(metric_steps(&run), (1..=6).collect::<Vec<_>>(), "{site}: metrics");
        assert!(staging_left(&run).is_empty(), "{site}: left {:?}", staging_left(&run));
    }
}

#[test]
fn the_intermediate_state_of_a_swap_is_read_and_restored() {
    let d = scratch("mid-swap");
    let data = corpus(&d);
    let run = d.join("run");
    let o = with_fault(&data, &run, "4", "ckpt:moved-old@1", &["--ckpt-every", "2"]);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    // No checkpoint/ at all: the old one is aside, the new one complete beside it.
    assert!(!run.join("checkpoint").exists());
    assert_eq!(checkpoint::open(&run.join("checkpoint")).unwrap().state.step, 4);
    assert_eq!(loadable_step(&run), 4);
    let hf = d.join("hf");
    let o = common::run(&["export", "--ckpt", run.to_str().unwrap(), "--hf", hf.to_str().unwrap()]);
    assert!(o.status.success(), "export: {}", stderr(&o));
    // A new start in the directory puts it back in place and says so.
    let o =
        bin().args(["train", "--resume", run.to_str().unwrap(), "--steps", "6", "--threads", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("restored the checkpoint from"), "{}", stderr(&o));
    assert_eq!(loadable_step(&run), 6);
}

#[test]
fn stale_staging_directories_are_removed_and_a_reused_pid_is_harmless() {
    let d = scratch("stale");
    let data = corpus(&d);
    let run = d.join("run");
    assert!(train(&data, &run, "2", &[]).status.success());
    // What an interrupted run of an earlier version (per-PID names) and of this one leave.
    for stale in [".checkpoint.new", ".checkpoint.old", ".checkpoint.tmp-1", ".checkpoint.old-1"] {
        fs::create_dir_all(run.join(stale)).unwrap();
        fs::write(run.join(stale).join("model.safetensors"), vec![0u8; 1000]).unwrap();
    }
    let o =
        bin().args(["train", "--resume", run.to_str().unwrap(), "--steps", "4", "--ckpt-every", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("removed 4 unfinished checkpoint copies"), "{}", stderr(&o));
    assert!(staging_left(&run).is_empty(), "{:?}", staging_left(&run));
    assert_eq!(loadable_step(&run), 4);
}

fn wait_for_steps(run: &Path, n: usize, child: &mut Child) {
    let t0 = Instant::now();
    while metric_steps_lenient(run) < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before step {n}");
        assert!(t0.elapsed() < Duration::from_secs(120), "no step {n} after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Complete metrics lines so far (a line being written may be torn).
fn metric_steps_lenient(run: &Path) -> usize {
    fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default().lines().filter(|l| l.ends_with('}')).count()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn sigint_and_sigterm_end_with_a_checkpoint_of_the_last_step() {
    let d = scratch("signals");
    let data = corpus(&d);
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let run = d.join(format!("run{sig}"));
        // No checkpoint cadence at all: only the signal's checkpoint can save the work.
        let mut child = train_cmd(&data, &run, "100000", &["--ckpt-every", "0", "--eval-every", "0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_steps(&run, 3, &mut child);
        signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
        let steps = metric_steps(&run);
        // Nothing lost: the checkpoint is at the last logged step.
        assert_eq!(loadable_step(&run), *steps.last().unwrap());
        let o = bin()
            .args(["train", "--resume", run.to_str().unwrap(), "--stop-after", "2", "--threads", "1"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn a_second_signal_ends_the_run_at_once() {
    let d = scratch("signal-twice");
    let data = corpus(&d);
    let run = d.join("run");
    let mut child = train_cmd(&data, &run, "100000", &["--ckpt-every", "1"]).spawn().unwrap();
    wait_for_steps(&run, 2, &mut child);
    signal(&child, "-INT");
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    // Either the second signal caught it before the final checkpoint (exit at once, 130) or
    // the first one's checkpoint was already written (130 too): whichever, one loads.
    assert_eq!(status.code(), Some(130));
    let step = loadable_step(&run);
    assert!(step as usize + 1 >= metric_steps(&run).len(), "checkpoint {step}, metrics {:?}", metric_steps(&run));
}

#[test]
fn a_full_disk_keeps_the_last_checkpoint_and_names_the_file() {
    let d = scratch("enospc");
    let data = corpus(&d);
    let run = d.join("run");
    let o = with_fault(&data, &run, "6", "enospc:model.safetensors@2", &["--ckpt-every", "2"]);
    assert_clean_failure(&o, "No space left on device");
    let err = stderr(&o);
    assert!(err.contains(".checkpoint.new/model.safetensors"), "{err}");
    assert!(err.contains("the last checkpoint, at step 2"), "{err}");
    assert_eq!(loadable_step(&run), 2);
    // The partial copy does not stay to keep the disk full.
    assert!(staging_left(&run).is_empty(), "{:?}", staging_left(&run));

    let run = d.join("metrics");
    let o = with_fault(&data, &run, "6", "enospc:metrics.jsonl@3", &["--ckpt-every", "2"]);
    assert_clean_failure(&o, "metrics.jsonl");
    assert!(stderr(&o).contains("No space left on device") && stderr(&o).contains("at step 2"), "{}", stderr(&o));
    assert_eq!(loadable_step(&run), 2);
}

#[test]
fn non_finite_gradients_never_reach_the_weights_or_a_checkpoint() {
    let d = scratch("nan");
    let data = corpus(&d);
    // --on-nan stop, no checkpoint yet: the state before the bad step is saved, and said so.
    let run = d.join("stop");
    let o = with_fault(&data, &run, "10", "nan-grad@3", &["--ckpt-every", "0"]);
    assert_clean_failure(&o, "step 3 had loss");
    assert!(stderr(&o).contains("the update was not applied; the last checkpoint, at step 2"), "{}", stderr(&o));
    assert_eq!(loadable_step(&run), 2);
    assert_eq!(metric_steps(&run), [1, 2]);

    // At the very first step there is nothing to save, and the message says so.
    let run = d.join("first");
    let o = with_fault(&data, &run, "10", "nan-grad@1", &[]);
    assert_clean_failure(&o, "no checkpoint has been written");
    assert!(!run.join("checkpoint").exists());

    // --on-nan skip: the step is counted, the run goes on, the checkpoint is finite.
    let run = d.join("skip");
    let o = with_fault(&data, &run, "6", "nan-grad@3", &["--on-nan", "skip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("skipped 1 steps"));
    assert_eq!(loadable_step(&run), 6);
    let lines = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"skipped\":true")).count(), 1, "{lines}");
    // The skip count travels with the checkpoint: a resume continues AdamW's own step count.
    assert_eq!(checkpoint::open(&run).unwrap().state.skipped, 1);
}

#[test]
fn a_really_diverging_run_never_writes_a_non_finite_checkpoint() {
    let d = scratch("diverge");
    let data = corpus(&d);
    for lr in ["100", "1e3"] {
        let run = d.join(format!("lr{lr}"));
        let o = train(&data, &run, "12", &["--lr", lr, "--constant-lr", "--ckpt-every", "1", "--grad-clip", "0"]);
        assert!(o.status.code() == Some(0) || o.status.code() == Some(2), "{}", stderr(&o));
        if run.join("checkpoint").exists() {
            loadable_step(&run);
        }
    }
}

#[test]
fn sample_export_and_eval_refuse_non_finite_weights() {
    let d = scratch("refuse-nan");
    let data = corpus(&d);
    let run = d.join("run");
    assert!(train(&data, &run, "2", &[]).status.success());
    // Poison one weight, as a checkpoint of a diverged run by an earlier version would be.
    let path = run.join("checkpoint/model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut poisoned = bytes.clone();
    poisoned[8 + n..8 + n + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(&path, &poisoned).unwrap();
    assert_clean_failure(&run_sample(&run), "NaN or infinite");
    let hf = d.join("hf");
    let o = common::run(&["export", "--ckpt", run.to_str().unwrap(), "--hf", hf.to_str().unwrap()]);
    assert_clean_failure(&o, "NaN or infinite");
    let o = bin().args(["train", "--resume", run.to_str().unwrap(), "--steps", "4"]).output().unwrap();
    assert_clean_failure(&o, "NaN or infinite");
}

#[test]
fn two_runs_on_one_directory_the_second_is_refused() {
    let d = scratch("two-runs");
    let data = corpus(&d);
    let run = d.join("run");
    let mut first = train_cmd(&data, &run, "100000", &["--ckpt-every", "2"]).spawn().unwrap();
    wait_for_steps(&run, 2, &mut first);
    let second = train(&data, &run, "10", &[]);
    let second_resume = bin().args(["train", "--resume", run.to_str().unwrap(), "--threads", "1"]).output().unwrap();
    signal(&first, "-TERM");
    assert_eq!(first.wait().unwrap().code(), Some(143));
    assert_clean_failure(&second, "is in use by another anychip run (pid");
    assert_clean_failure(&second_resume, "is in use by another anychip run");
    // The first run's metrics are one line per step, uninterleaved.
    let steps = metric_steps(&run);
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
    assert_eq!(loadable_step(&run), *steps.last().unwrap());
}

#[test]
fn metrics_follow_the_checkpoint() {
    let d = scratch("metrics");
    let data = corpus(&d);
    let run = d.join("run");
    // A run that died after step 5 with its checkpoint at step 4.
    let o = with_fault(&data, &run, "8", "ckpt:written@3", &["--ckpt-every", "2"]);
    assert_eq!(o.status.code(), None);
    assert_eq!(metric_steps(&run), [1, 2, 3, 4, 5, 6]);
    assert_eq!(loadable_step(&run), 4);
    let o = bin().args(["train", "--resume", run.to_str().unwrap(), "--threads", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(metric_steps(&run), (1..=8).collect::<Vec<_>>());

    // A new run into a directory with an old metrics.jsonl but no checkpoint starts afresh.
    let fresh = d.join("fresh");
    fs::create_dir_all(&fresh).unwrap();
    fs::write(fresh.join("metrics.jsonl"), "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
    let o = train(&data, &fresh, "2", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(metric_steps(&fresh), [1, 2]);
    assert!(fresh.join("metrics.jsonl.prev").exists());
}

#[test]
fn resume_applies_the_flags_that_may_change_and_refuses_the_others() {
    let d = scratch("resume-flags");
    let data = corpus(&d);
    let run = d.join("run");
    // A relative --data path is stored absolute.
    let o = train_cmd(Path::new("corpus.txt"), &run, "4", &[]).current_dir(&d).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = checkpoint::open(&run).unwrap().cfg;
    assert_eq!(cfg.data.as_deref(), Some(data.as_path()));

    let resume = |extra: &[&str]| {
        let mut c = bin();
        c.args(["train", "--resume", run.to_str().unwrap(), "--threads", "1"]).args(extra);
        c.current_dir(std::env::temp_dir()).output().unwrap()
    };
    let o = resume(&["--lr", "1e-4", "--steps", "8", "--ckpt-every", "2", "--eval-every", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("resuming at step 4 with steps 4 -> 8, lr 0.003 -> 0.0001"), "{err}");
    assert!(err.contains("eval every 200 -> 3, checkpoint every 200 -> 2"), "{err}");
    let cfg = checkpoint::open(&run).unwrap().cfg;
    assert_eq!((cfg.lr, cfg.min_lr, cfg.steps, cfg.ckpt_every), (1e-4, 1e-4 / 10.0, 8, 2));
    let lrs: Vec<f64> = fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"].as_f64().unwrap())
        .collect();
    assert!(lrs[4..].iter().all(|&lr| lr <= 1e-4 + 1e-9), "{lrs:?}");

    for (flag, value) in [("--batch", "8"), ("--ctx", "16"), ("--preset", "shakespeare-bytes"), ("--tokenizer", "gpt2")]
    {
        assert_clean_failure(&resume(&[flag, value, "--steps", "12"]), flag);
    }
    // A new data path applies from the same data position.
    let other = d.join("other.txt");
    fs::write(&other, "All the world's a stage, and all the men and women merely players.\n".repeat(200)).unwrap();
    let o = resume(&["--data", other.to_str().unwrap(), "--steps", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("other.txt"), "{}", stderr(&o));
}
