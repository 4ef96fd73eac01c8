//! Token shard cache: a corpus tokenized once is stored as one binary file and reloaded.
//!
//! Layout (little endian), 104-byte header then the tokens:
//!
//! | bytes   | field                                                  |
//! |---------|--------------------------------------------------------|
//! | 0..8    | magic `ANYCHTOK`                                       |
//! | 8..12   | format version (u32)                                   |
//! | 12..16  | bytes per token, 2 (u16) or 4 (u32)                    |
//! | 16..24  | token count (u64)                                      |
//! | 24..56  | SHA-256 of the corpus text                             |
//! | 56..88  | SHA-256 of the token payload                           |
//! | 88..104 | tokenizer name, NUL-padded                             |
//!
//! Every field is checked on load, so a truncated, foreign or bit-flipped file is rebuilt, never trusted.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::{hex, sha256, write_atomic};
use crate::TokenizerKind;

const MAGIC: &[u8; 8] = b"ANYCHTOK";
const VERSION: u32 = 1;
const HEADER: usize = 104;

/// Where the shard of (`corpus_sha`, `kind`) lives under `cache_dir`.
pub fn shard_path(cache_dir: &Path, corpus_sha: &[u8; 32], kind: TokenizerKind) -> PathBuf {
    cache_dir.join("tokens").join(format!("{}-{}.bin", &hex(corpus_sha)[..16], kind.name()))
}

/// Serializes `tokens` with the header; u16 when the vocabulary fits, halving the file.
pub fn encode_shard(tokens: &[u32], corpus_sha: &[u8; 32], kind: TokenizerKind) -> Vec<u8> {
    let width = if kind.vocab_size() <= 1 << 16 { 2 } else { 4 };
    encode_with_width(tokens, corpus_sha, kind, width)
}

fn encode_with_width(tokens: &[u32], corpus_sha: &[u8; 32], kind: TokenizerKind, width: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(tokens.len() * width);
    for &t in tokens {
        match width {
            2 => payload.extend_from_slice(&(t as u16).to_le_bytes()),
            _ => payload.extend_from_slice(&t.to_le_bytes()),
        }
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    out.extend_from_slice(corpus_sha);
    out.extend_from_slice(&sha256(&payload));
    out.extend_from_slice(&name_field(kind));
    out.extend_from_slice(&payload);
    out
}

/// Parses a shard, or says why it cannot be trusted for (`corpus_sha`, `kind`).
pub fn decode_shard(bytes: &[u8], corpus_sha: &[u8; 32], kind: TokenizerKind) -> Result<Vec<u32>, String> {
    if bytes.len() < HEADER {
        return Err(format!("{} bytes is shorter than the {HEADER}-byte header", bytes.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    if &bytes[0..8] != MAGIC {
        return Err("not a token shard (bad magic)".into());
    }
    if u32_at(8) != VERSION {
        return Err(format!("format version {} is not {VERSION}", u32_at(8)));
    }
    let width = u32_at(12) as usize;
    if width != 2 && width != 4 {
        return Err(format!("token width {width} is neither 2 nor 4"));
    }
    let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let payload = &bytes[HEADER..];
    if count.checked_mul(width as u64) != Some(payload.len() as u64) {
        return Err(format!(
            "{count} tokens of {width} bytes do not match a {}-byte payload (truncated?)",
            payload.len()
        ));
    }
    if &bytes[24..56] != corpus_sha {
        return Err("it was built from a different corpus".into());
    }
    if bytes[88..104] != name_field(kind) {
        return Err(format!("it was built with a tokenizer other than {kind}"));
    }
    if bytes[56..88] != sha256(payload) {
        return Err("its payload checksum does not match (corrupt)".into());
    }
    let tokens: Vec<u32> = match width {
        2 => payload.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect(),
        _ => payload.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect(),
    };
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= kind.vocab_size()) {
        return Err(format!("token {bad} is outside the {kind} vocabulary"));
    }
    Ok(tokens)
}

/// Loads the shard at `path`; `Err(reason)` when it is missing or untrustworthy.
pub fn read_shard(path: &Path, corpus_sha: &[u8; 32], kind: TokenizerKind) -> Result<Vec<u32>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    decode_shard(&bytes, corpus_sha, kind)
}

/// Writes the shard atomically.
pub fn write_shard(path: &Path, tokens: &[u32], corpus_sha: &[u8; 32], kind: TokenizerKind) -> anyhow::Result<()> {
    write_atomic(path, &encode_shard(tokens, corpus_sha, kind))
        .map_err(|e| anyhow::anyhow!("{e:#}; or set ANYCHIP_CACHE to a writable directory"))
}

fn name_field(kind: TokenizerKind) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[..kind.name().len()].copy_from_slice(kind.name().as_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_widths_and_rejects_damage() {
        let sha = sha256(b"corpus");
        let cases = [(TokenizerKind::Bytes, vec![0, 7, 255], 2), (TokenizerKind::Gpt2, vec![0, 50256, 19999], 4)];
        for (kind, tokens, width) in cases {
            let bytes = encode_with_width(&tokens, &sha, kind, width);
            assert_eq!(bytes.len(), HEADER + tokens.len() * width);
            assert_eq!(decode_shard(&bytes, &sha, kind).unwrap(), tokens);
            assert!(decode_shard(&bytes[..bytes.len() - 1], &sha, kind).unwrap_err().contains("truncated"));
            assert!(decode_shard(&bytes, &sha256(b"other"), kind).unwrap_err().contains("different corpus"));
            let mut flipped = bytes.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert!(decode_shard(&flipped, &sha, kind).unwrap_err().contains("corrupt"));
        }
        let bytes = encode_shard(&[1, 2], &sha, TokenizerKind::Bytes);
        assert!(decode_shard(&bytes, &sha, TokenizerKind::Gpt2).unwrap_err().contains("other than gpt2"));
        // GPT-2's 50257 ids fit u16: the default encoder halves the file.
        assert_eq!(encode_shard(&[1, 2], &sha, TokenizerKind::Gpt2).len(), HEADER + 2 * 2);
    }
}
