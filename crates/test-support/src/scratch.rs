//! Scratch directories for tests that write files or run the binary.
//!
//! A [`Scratch`] is a fresh directory under the system temp directory, removed when it goes out
//! of scope in a passing test and kept, with its path printed, when the test panics, so a failure
//! can be inspected and `cargo test` leaves nothing behind otherwise (checkpoints of the tiny
//! models are 100-300 MB a test binary, so leaked directories filled disks).

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A directory that lives as long as this value; see the module header.
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// A new empty directory named `anychip-test-{name}-XXXXXX`.
    pub fn new(name: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("anychip-test-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a scratch directory for {name}: {e}"));
        Scratch { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("a Scratch holds its directory until dropped").path()
    }
}

/// A new [`Scratch`] named after `name`.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(name)
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the failed test's files in {}", dir.keep().display());
            }
        }
    }
}

/// The token cache the binary-level tests share (`ANYCHIP_CACHE`): one fixed directory, never
/// the user's. Sharing it between runs and concurrent test binaries is safe because the cache
/// is keyed by content and written atomically (temp file, fsync, rename).
pub fn token_cache() -> PathBuf {
    std::env::temp_dir().join("anychip-test-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_is_removed_when_dropped_and_kept_when_its_thread_panics() {
        let passed = {
            let s = scratch("drop");
            std::fs::write(s.join("f"), "x").unwrap();
            s.to_path_buf()
        };
        assert!(!passed.exists(), "{} survived its scope", passed.display());
        let (tx, rx) = std::sync::mpsc::channel();
        let failed = std::thread::spawn(move || {
            let s = scratch("panic");
            tx.send(s.to_path_buf()).unwrap();
            panic!("a failing test");
        });
        assert!(failed.join().is_err());
        let kept = rx.recv().unwrap();
        assert!(kept.is_dir(), "{} was removed although its test failed", kept.display());
        std::fs::remove_dir_all(kept).unwrap();
    }
}
