//! A run directory's lifecycle: one writer at a time (a lock), what a crash left behind put
//! right or removed at start, and `metrics.jsonl` kept in step with the checkpoint.
//!
//! The lock is an advisory `flock` on `<run>/.lock` (std's `File::try_lock`): the kernel drops
//! it when the process ends however it ends, so a killed run never leaves a stale lock.

use crate::checkpoint;
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

const METRICS: &str = "metrics.jsonl";

/// A run directory this process holds the lock of (until it is dropped).
pub struct RunDir {
    path: PathBuf,
    _lock: File,
    /// This process created the directory (it did not exist before).
    created: bool,
}

/// What [`RunDir::open`] found and did, for the run's opening lines.
#[derive(Default)]
pub struct Tidied {
    /// The staging directory a crash mid-swap left, restored as `checkpoint/`.
    pub recovered: Option<PathBuf>,
    /// Staging directories removed, and their total size in bytes.
    pub removed: usize,
    pub removed_bytes: u64,
}

impl RunDir {
    /// Create (if needed) and lock `path`, restore a checkpoint a crash left mid-swap, and
    /// remove stale staging directories. Fails with one line if another run holds the lock.
    pub fn open(path: &Path) -> Result<(RunDir, Tidied)> {
        let created = !path.exists();
        fs::create_dir_all(path).map_err(|e| {
            anyhow!("cannot create the run directory {} ({e}); choose a writable --out", path.display())
        })?;
        let lock_path = path.join(".lock");
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow!("cannot open {} ({e}); choose a writable --out", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let who = holder.trim().parse::<u32>().map(|p| format!(" (pid {p})")).unwrap_or_default();
                bail!(
                    "{} is in use by another anychip run{who}; wait for it to finish or choose another --out",
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                bail!("cannot lock {} ({e}); choose an --out on a local file system", lock_path.display())
            }
        }
        // Who holds it, for the message above (best effort: the lock itself is what protects).
        let _ = lock.set_len(0).and_then(|_| lock.rewind()).and_then(|_| write!(lock, "{}", std::process::id()));
        let run = RunDir { path: path.to_path_buf(), _lock: lock, created };
        let tidied = run.tidy()?;
        Ok((run, tidied))
    }

    fn tidy(&self) -> Result<Tidied> {
        let mut t = Tidied { recovered: checkpoint::recover(&self.path)?, ..Tidied::default() };
        for stale in checkpoint::leftovers(&self.path) {
            let bytes = dir_size(&stale);
            fs::remove_dir_all(&stale).map_err(|e| {
                anyhow!("cannot remove the stale {} ({e}); remove it by hand or fix its permissions", stale.display())
            })?;
            t.removed += 1;
            t.removed_bytes += bytes;
        }
        Ok(t)
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `metrics.jsonl`, ready to append, holding exactly the lines of steps up to `resume_step`:
    /// on resume, lines of steps the checkpoint does not cover (they are trained again) and a
    /// line torn by a crash are dropped; for a new run (`None`) an earlier `metrics.jsonl` is
    /// moved to `metrics.jsonl.prev` rather than appended to. Returns the log and a note of what
    /// was done, if anything.
    pub fn metrics(&self, resume_step: Option<u64>) -> Result<(Metrics, Option<String>)> {
        let path = self.path.join(METRICS);
        let note = match resume_step {
            Some(step) if path.exists() => truncate_metrics(&path, step)?,
            None if path.exists() => {
                let prev = self.path.join("metrics.jsonl.prev");
                fs::rename(&path, &prev).map_err(|e| {
                    anyhow!("cannot move {} aside ({e}); fix permissions on {}", path.display(), self.path.display())
                })?;
                Some(format!("an earlier {METRICS} without a checkpoint was moved to {}", prev.display()))
            }
            _ => None,
        };
        let file =
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| {
                anyhow!("cannot open {} ({e}); fix permissions or choose another --out", path.display())
            })?;
        Ok((Metrics { file, path }, note))
    }
}

impl Drop for RunDir {
    /// A run refused before it wrote anything leaves no directory behind: a directory this
    /// process created that holds only its lock is removed (the lock goes with it).
    fn drop(&mut self) {
        let only_lock =
            fs::read_dir(&self.path).map(|rd| rd.flatten().all(|e| e.file_name() == ".lock")).unwrap_or(false);
        if self.created && only_lock {
            let _ = fs::remove_file(self.path.join(".lock"));
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Keep the well-formed lines of `path` whose step is at most `step` (rewritten atomically).
fn truncate_metrics(path: &Path, step: u64) -> Result<Option<String>> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut kept, mut dropped) = (String::new(), 0usize);
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| anyhow!("cannot read {} ({e})", path.display()))?;
        let line_step = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["step"].as_u64());
        match line_step {
            Some(s) if s <= step => {
                kept.push_str(&line);
                kept.push('\n');
            }
            _ => dropped += 1,
        }
    }
    if dropped == 0 {
        return Ok(None);
    }
    anychip_data::write_atomic(path, kept.as_bytes())?;
    Ok(Some(format!("{METRICS}: dropped {dropped} lines after step {step} (the checkpoint's step), trained again now")))
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.metadata().map_or(0, |m| m.len())).sum()).unwrap_or(0)
}

/// The run's `metrics.jsonl`: one JSON line per step.
pub struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    /// Append one line; an OS error names the file and what to do.
    pub fn append(&mut self, json: &str) -> Result<()> {
        crate::fault::write_error(METRICS)
            .and_then(|_| writeln!(self.file, "{json}"))
            .map_err(|e| anyhow!("cannot write {} ({e}); free space or fix permissions there", self.path.display()))
    }
}
