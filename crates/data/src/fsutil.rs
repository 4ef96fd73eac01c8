//! Small file helpers shared by the corpus and shard caches.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Writes `bytes` to `path` so a reader sees either the old file or the whole new one, never a
/// prefix: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fail =
        || format!("cannot write {}; check that {} is writable (or set ANYCHIP_CACHE)", path.display(), dir.display());
    fs::create_dir_all(dir).with_context(fail)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).with_context(fail)?;
    tmp.write_all(bytes).with_context(fail)?;
    tmp.as_file().sync_all().with_context(fail)?;
    tmp.persist(path).map_err(|e| e.error).with_context(fail)?;
    // The rename itself is durable only once the directory entry is; not every platform can
    // open a directory for syncing, and the data is already safe, so a failure here is ignored.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
