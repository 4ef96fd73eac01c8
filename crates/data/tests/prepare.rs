//! `prepare`: bad input gives one clear line; the shard cache is hit, missed, and never trusted when damaged.

use std::fs;
use std::path::{Path, PathBuf};

use anychip_data::{prepare, prepare_with_status, shard, split_tokens, CacheStatus, TokenizerKind};

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. Ünïcödé ✓\n";

fn setup(text: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("input.txt");
    fs::write(&data, text).unwrap();
    let cache = dir.path().join("cache");
    (dir, data, cache)
}

fn one_shard(cache: &Path) -> PathBuf {
    let files: Vec<_> = fs::read_dir(cache.join("tokens")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn error_line(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    let msg = format!("{:#}", r.expect_err("should fail"));
    assert!(!msg.contains('\n'), "error should be one line: {msg:?}");
    msg
}

#[test]
fn cache_miss_then_hit_for_each_tokenizer() {
    let (_dir, data, cache) = setup(TEXT);
    for kind in TokenizerKind::ALL {
        let (built, status) = prepare_with_status(&data, kind, &cache, 0.0).unwrap();
        assert_eq!(status, CacheStatus::Built);
        let want = anychip_data::tokenizer(kind).unwrap().encode(TEXT);
        assert_eq!(built.train, want);
        assert_eq!((built.vocab_size, built.tokenizer), (kind.vocab_size(), kind));
        let (hit, status) = prepare_with_status(&data, kind, &cache, 0.0).unwrap();
        assert_eq!(status, CacheStatus::Hit);
        assert_eq!(hit, built);
    }
    assert_eq!(fs::read_dir(cache.join("tokens")).unwrap().count(), 2, "one shard per tokenizer");
}

#[test]
fn changed_corpus_is_a_miss_not_a_stale_hit() {
    let (_dir, data, cache) = setup(TEXT);
    prepare(&data, TokenizerKind::Bytes, &cache, 0.0).unwrap();
    fs::write(&data, "different text").unwrap();
    let (d, status) = prepare_with_status(&data, TokenizerKind::Bytes, &cache, 0.0).unwrap();
    assert_eq!(status, CacheStatus::Built);
    assert_eq!(d.train, b"different text".iter().map(|&b| b as u32).collect::<Vec<_>>());
}

#[test]
fn truncated_or_corrupt_shard_is_rebuilt_not_trusted() {
    let (_dir, data, cache) = setup(TEXT);
    let good = prepare(&data, TokenizerKind::Gpt2, &cache, 0.1).unwrap();
    let path = one_shard(&cache);
    let bytes = fs::read(&path).unwrap();

    // Truncated mid-payload, mid-header, to nothing; one token flipped; a bad magic.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    let mut magic = bytes.clone();
    magic[0] = b'X';
    let damaged = [bytes[..bytes.len() - 3].to_vec(), bytes[..20].to_vec(), Vec::new(), flipped, magic];
    for bad in damaged {
        fs::write(&path, &bad).unwrap();
        let (d, status) = prepare_with_status(&data, TokenizerKind::Gpt2, &cache, 0.1).unwrap();
        assert!(matches!(status, CacheStatus::Rebuilt(_)), "{status:?}");
        assert_eq!(d, good);
        assert_eq!(fs::read(&path).unwrap(), bytes, "the rebuilt shard replaces the damaged one");
    }
}

#[test]
fn shard_header_records_count_and_width() {
    let (_dir, data, cache) = setup(TEXT);
    let d = prepare(&data, TokenizerKind::Bytes, &cache, 0.0).unwrap();
    let bytes = fs::read(one_shard(&cache)).unwrap();
    assert_eq!(&bytes[..8], b"ANYCHTOK");
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 2, "bytes fit u16");
    assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), d.train.len() as u64);
    assert_eq!(bytes.len(), 104 + 2 * TEXT.len());
    let sha: [u8; 32] = bytes[24..56].try_into().unwrap();
    assert_eq!(shard::decode_shard(&bytes, &sha, TokenizerKind::Bytes).unwrap(), d.train);
}

#[test]
fn directory_is_concatenated_in_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    fs::create_dir_all(root.join("act2")).unwrap();
    fs::write(root.join("act2/scene1.txt"), "C").unwrap();
    fs::write(root.join("act1.txt"), "A").unwrap();
    fs::write(root.join("act10.txt"), "B").unwrap();
    fs::write(root.join(".DS_Store"), [0xFFu8, 0xFE]).unwrap();
    let d = prepare(&root, TokenizerKind::Bytes, &dir.path().join("cache"), 0.0).unwrap();
    // "act1.txt" < "act10.txt" < "act2/..." byte-wise; the hidden binary file is skipped.
    assert_eq!(d.train, vec![b'A' as u32, b'B' as u32, b'C' as u32]);
}

#[test]
fn non_utf8_names_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "fine").unwrap();
    let mut bad = b"hello ".to_vec();
    bad.extend_from_slice(&[0xC3, 0x28]); // a 2-byte lead followed by a non-continuation byte
    fs::write(dir.path().join("b.txt"), &bad).unwrap();
    let msg = error_line(prepare(dir.path(), TokenizerKind::Bytes, &dir.path().join(".cache"), 0.1));
    assert!(msg.contains("b.txt") && msg.contains("offset 6") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn missing_and_empty_inputs_say_how_to_fix() {
    let (dir, data, cache) = setup("");
    let msg = error_line(prepare(&data, TokenizerKind::Bytes, &cache, 0.1));
    assert!(msg.contains("input.txt") && msg.contains("empty") && msg.contains("--data"), "{msg}");

    let missing = dir.path().join("nope.txt");
    let msg = error_line(prepare(&missing, TokenizerKind::Bytes, &cache, 0.1));
    assert!(msg.contains("nope.txt") && msg.contains("does not exist") && msg.contains("--data"), "{msg}");

    let empty_dir = dir.path().join("emptydir");
    fs::create_dir_all(empty_dir.join(".git")).unwrap();
    fs::write(empty_dir.join(".git/config"), "x").unwrap();
    let msg = error_line(prepare(&empty_dir, TokenizerKind::Bytes, &cache, 0.1));
    assert!(msg.contains("emptydir") && msg.contains("--data"), "{msg}");

    fs::write(empty_dir.join("blank.txt"), "").unwrap();
    let msg = error_line(prepare(&empty_dir, TokenizerKind::Bytes, &cache, 0.1));
    assert!(msg.contains("emptydir") && msg.contains("empty"), "{msg}");
    assert!(!cache.exists(), "a failed prepare writes no cache");
}

#[test]
fn split_takes_the_tail_as_validation() {
    let tokens: Vec<u32> = (0..1000).collect();
    for (f, n_val) in [(0.0, 0), (0.1, 100), (0.25, 250), (0.0005, 1), (0.9994, 999)] {
        let (train, val) = split_tokens(tokens.clone(), f).unwrap();
        assert_eq!(val.len(), n_val, "fraction {f}");
        assert_eq!([train, val].concat(), tokens, "contiguous, in order");
    }
    for bad in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
        let msg = error_line(split_tokens(tokens.clone(), bad));
        assert!(msg.contains("[0, 1)"), "{msg}");
    }
    let (_dir, data, cache) = setup(TEXT);
    let d = prepare(&data, TokenizerKind::Bytes, &cache, 0.2).unwrap();
    let n = TEXT.len();
    assert_eq!(d.val.len(), (n as f64 * 0.2).round() as usize);
    assert_eq!(d.train.len() + d.val.len(), n);
    assert_eq!(d.val.last(), Some(&(b'\n' as u32)));
}
