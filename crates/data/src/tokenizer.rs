//! Tokenizers: raw bytes (vocab 256) and GPT-2 BPE (r50k_base, vocab 50257).

use std::fmt;
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Turns text into token ids and back; one instance is shared by every thread.
pub trait Tokenizer: Send + Sync {
    /// The name used on the command line (`bytes`, `gpt2`).
    fn name(&self) -> &str;
    /// Number of distinct token ids; every id produced by `encode` is below it.
    fn vocab_size(&self) -> usize;
    /// Token ids of `text`; special-token syntax in the text is encoded as ordinary text.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`; invalid UTF-8 (a character cut between tokens) and unknown ids become U+FFFD.
    fn decode(&self, ids: &[u32]) -> String;
    /// The end-of-text token, where the vocabulary has one.
    fn eot(&self) -> Option<u32>;
}

/// Which tokenizer to use; parsed from `bytes` or `gpt2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per UTF-8 byte.
    Bytes,
    /// GPT-2's byte-level BPE (tiktoken's r50k_base).
    Gpt2,
}

impl TokenizerKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [TokenizerKind; 2] = [TokenizerKind::Bytes, TokenizerKind::Gpt2];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Bytes => "bytes",
            TokenizerKind::Gpt2 => "gpt2",
        }
    }

    /// Vocabulary size, known without building the tokenizer.
    pub fn vocab_size(self) -> usize {
        match self {
            TokenizerKind::Bytes => 256,
            TokenizerKind::Gpt2 => GPT2_VOCAB,
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        TokenizerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown tokenizer '{s}'; use one of: bytes, gpt2"))
    }
}

/// Builds the tokenizer of `kind`; works offline (GPT-2's ranks are compiled in).
pub fn tokenizer(kind: TokenizerKind) -> anyhow::Result<Box<dyn Tokenizer>> {
    Ok(match kind {
        TokenizerKind::Bytes => Box::new(ByteTokenizer),
        TokenizerKind::Gpt2 => Box::new(Gpt2Tokenizer::new()?),
    })
}

/// One token per byte: the vocabulary every text fits without training or download.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn name(&self) -> &str {
        "bytes"
    }
    fn vocab_size(&self) -> usize {
        256
    }
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
    fn decode(&self, ids: &[u32]) -> String {
        // An id >= 256 (a model sampling past the vocab) maps to a byte that is never valid UTF-8,
        // so the lossy conversion shows it as U+FFFD instead of silently aliasing a real byte.
        let bytes: Vec<u8> = ids.iter().map(|&id| u8::try_from(id).unwrap_or(0xFF)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    fn eot(&self) -> Option<u32> {
        None
    }
}

const GPT2_VOCAB: usize = 50257;
const GPT2_EOT: u32 = 50256;

/// GPT-2 BPE: 50,256 byte-pair merges plus `<|endoftext|>` = 50256.
pub struct Gpt2Tokenizer {
    bpe: tiktoken_rs::CoreBPE,
}

impl Gpt2Tokenizer {
    /// Parses the r50k_base ranks embedded in tiktoken-rs (no network).
    pub fn new() -> anyhow::Result<Self> {
        let bpe = tiktoken_rs::r50k_base().context("could not load the GPT-2 (r50k_base) tokenizer")?;
        Ok(Self { bpe })
    }
}

impl Tokenizer for Gpt2Tokenizer {
    fn name(&self) -> &str {
        "gpt2"
    }
    fn vocab_size(&self) -> usize {
        GPT2_VOCAB
    }
    fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }
    fn decode(&self, ids: &[u32]) -> String {
        // tiktoken's strict decode fails on a character split across tokens (common when sampling)
        // and its byte decoder panics on unknown ids, so gather bytes ourselves and decode lossily.
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut run = Vec::new();
        for &id in ids {
            if (id as usize) < GPT2_VOCAB {
                run.push(id);
                continue;
            }
            flush(&self.bpe, &mut run, &mut bytes);
            bytes.extend_from_slice("\u{FFFD}".as_bytes());
        }
        flush(&self.bpe, &mut run, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }
    fn eot(&self) -> Option<u32> {
        Some(GPT2_EOT)
    }
}

/// Appends the bytes of the known ids in `run` to `out`.
fn flush(bpe: &tiktoken_rs::CoreBPE, run: &mut Vec<u32>, out: &mut Vec<u8>) {
    if !run.is_empty() {
        for piece in bpe._decode_native_and_split(std::mem::take(run)) {
            out.extend_from_slice(&piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("bytes".parse::<TokenizerKind>().unwrap(), TokenizerKind::Bytes);
        assert_eq!("gpt2".parse::<TokenizerKind>().unwrap(), TokenizerKind::Gpt2);
        let err = "gpt3".parse::<TokenizerKind>().unwrap_err().to_string();
        assert!(err.contains("gpt3") && err.contains("bytes") && err.contains("gpt2"), "{err}");
        for k in TokenizerKind::ALL {
            assert_eq!(k.to_string().parse::<TokenizerKind>().unwrap(), k);
        }
    }

    #[test]
    fn bytes_decode_shows_bad_ids_and_cut_characters() {
        let t = ByteTokenizer;
        assert_eq!(t.decode(&[104, 105, 300]), "hi\u{FFFD}");
        // "é" is 0xC3 0xA9; only the first byte arrives.
        assert_eq!(t.decode(&[0xC3]), "\u{FFFD}");
    }
}
