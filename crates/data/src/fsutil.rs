//! Small file helpers: the one crash-safe write the whole engine uses (corpus and shard caches,
//! checkpoints, Hugging Face exports), and the hashes the caches are keyed by.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Writes `bytes` to `path` so a reader sees either the old file or the whole new one, never a
/// prefix: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail = || format!("cannot write {}; check that {} is writable and not full", path.display(), dir.display());
    fs::create_dir_all(dir).with_context(fail)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).with_context(fail)?;
    tmp.write_all(bytes).with_context(fail)?;
    tmp.as_file().sync_all().with_context(fail)?;
    tmp.persist(path).map_err(|e| e.error).with_context(fail)?;
    sync_dir(dir);
    Ok(())
}

/// fsync a directory so a rename inside it survives a power cut. Best effort: not every
/// platform can open a directory for syncing, and the file data is already safe, so a failure
/// here is ignored.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
