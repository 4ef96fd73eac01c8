//! Reading `--data PATH`: one UTF-8 text file, or every file under a directory.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// A corpus read into memory.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The files' contents concatenated in byte-sorted path order, with no separator added,
    /// so a directory of parts reads exactly like the file they were split from.
    pub text: String,
    /// The files read, in the order they were concatenated.
    pub files: Vec<PathBuf>,
}

/// Reads a UTF-8 text file, or all regular non-hidden files under a directory (recursively,
/// byte-sorted path order; symlinked files are followed, symlinked directories are not, so a
/// link cycle cannot loop).
pub fn read_corpus(path: &Path) -> anyhow::Result<Corpus> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "data path {} does not exist; pass --data with an existing UTF-8 text file or directory",
            path.display()
        ),
        Err(e) => bail!("cannot read data path {}: {e}; check its permissions", path.display()),
    };
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files)?;
        // Byte order, not locale order: the same corpus must hash the same on every machine.
        files.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
        if files.is_empty() {
            bail!(
                "data directory {} holds no (non-hidden) files; pass --data with a non-empty UTF-8 text file or directory",
                path.display()
            );
        }
        files
    } else {
        vec![path.to_path_buf()]
    };

    let mut text = String::new();
    for file in &files {
        let bytes = fs::read(file)
            .with_context(|| format!("cannot read data file {}; check its permissions", file.display()))?;
        match std::str::from_utf8(&bytes) {
            Ok(s) => text.push_str(s),
            Err(e) => bail!(
                "data file {} is not UTF-8 (invalid byte at offset {}); convert it to UTF-8 or leave it out of --data",
                file.display(),
                e.valid_up_to()
            ),
        }
    }
    if text.is_empty() {
        let what = if meta.is_dir() { "data directory" } else { "data file" };
        bail!("{what} {} is empty; pass --data with a non-empty UTF-8 text file or directory", path.display());
    }
    Ok(Corpus { text, files })
}

/// Collects regular files under `dir`, skipping names that start with '.' (`.git`, editor swap files).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir)
        .with_context(|| format!("cannot list data directory {}; check its permissions", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list data directory {}", dir.display()))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_read_in_byte_order_skipping_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("b")).unwrap();
        fs::create_dir_all(d.join(".git")).unwrap();
        fs::write(d.join("b/2.txt"), "two ").unwrap();
        fs::write(d.join("B.txt"), "upper ").unwrap(); // 'B' < 'a' < 'b' in bytes
        fs::write(d.join("a.txt"), "one ").unwrap();
        fs::write(d.join(".hidden"), "\u{1}no").unwrap();
        fs::write(d.join(".git/HEAD"), [0xFFu8]).unwrap();
        let c = read_corpus(d).unwrap();
        assert_eq!(c.text, "upper one two ");
        assert_eq!(c.files.len(), 3);
    }
}
