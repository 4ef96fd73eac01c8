//! What the binary-level tests share: running `anychip` with a private cache, scratch
//! directories, a small corpus, and the failure contract.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use anychip_test_support::{scratch, token_cache};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anychip"));
    // Token caches go to a private directory, never the user's.
    c.env("ANYCHIP_CACHE", token_cache());
    c.env_remove("ANYCHIP_FAULT");
    c
}

pub fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    let line = "ROMEO: But soft, what light through yonder window breaks?\nJULIET: O Romeo, Romeo, wherefore art thou Romeo?\n";
    fs::write(&p, line.repeat(200)).unwrap();
    p
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The failure contract: exit 2, exactly one non-empty stderr line starting with "error:", no panic.
pub fn assert_clean_failure(o: &Output, must_contain: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("anychip: ")).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(must_contain), "'{must_contain}' not in: {err}");
}

pub const TINY: &[&str] = &["--preset", "gpt2-tiny", "--batch", "4", "--ctx", "32", "--threads", "1", "--quiet"];

/// `anychip train` on the tiny model: `steps` steps into `out`, plus `extra` flags.
pub fn train_cmd(data: &Path, out: &Path, steps: &str, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", steps]);
    c.args(TINY).args(extra);
    c
}

pub fn train(data: &Path, out: &Path, steps: &str, extra: &[&str]) -> Output {
    train_cmd(data, out, steps, extra).output().unwrap()
}

/// The steps of a run's metrics.jsonl, in order.
pub fn metric_steps(run: &Path) -> Vec<u64> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
