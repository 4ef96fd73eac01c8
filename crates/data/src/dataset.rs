//! `--data PATH` to train/val token streams, through the shard cache.

use std::path::Path;

use anyhow::bail;

use crate::fsutil::sha256;
use crate::shard::{read_shard, shard_path, write_shard};
use crate::source::read_corpus;
use crate::{tokenizer, TokenizerKind};

/// A tokenized corpus split into training and validation streams.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The first `1 - val_fraction` of the token stream.
    pub train: Vec<u32>,
    /// The last `val_fraction` of the token stream.
    pub val: Vec<u32>,
    /// Vocabulary size of `tokenizer`.
    pub vocab_size: usize,
    /// The tokenizer that produced the ids.
    pub tokenizer: TokenizerKind,
    /// The data path, for logs and checkpoints.
    pub source: String,
}

/// What `prepare` did with the shard cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// A valid shard was loaded; nothing was tokenized.
    Hit,
    /// No shard existed; one was built and written.
    Built,
    /// A shard existed but was not trusted (the reason); it was rebuilt and overwritten.
    Rebuilt(String),
}

/// Tokenizes `path` (a UTF-8 file or directory) with `kind`, caching the tokens under
/// `cache_dir/tokens`, and splits off the last `val_fraction` as validation.
pub fn prepare(path: &Path, kind: TokenizerKind, cache_dir: &Path, val_fraction: f64) -> anyhow::Result<Dataset> {
    prepare_with_status(path, kind, cache_dir, val_fraction).map(|(d, _)| d)
}

/// [`prepare`], also saying whether the shard cache was hit.
pub fn prepare_with_status(
    path: &Path,
    kind: TokenizerKind,
    cache_dir: &Path,
    val_fraction: f64,
) -> anyhow::Result<(Dataset, CacheStatus)> {
    check_fraction(val_fraction)?;
    let corpus = read_corpus(path)?;
    let sha = sha256(corpus.text.as_bytes());
    let shard = shard_path(cache_dir, &sha, kind);
    let (tokens, status) = match read_shard(&shard, &sha, kind) {
        Ok(tokens) => (tokens, CacheStatus::Hit),
        Err(reason) => {
            let tokens = tokenizer(kind)?.encode(&corpus.text);
            // Checked before the write below replaces a damaged file.
            let status = if shard.exists() { CacheStatus::Rebuilt(reason) } else { CacheStatus::Built };
            write_shard(&shard, &tokens, &sha, kind)?;
            (tokens, status)
        }
    };
    let (train, val) = split_tokens(tokens, val_fraction)?;
    let dataset =
        Dataset { train, val, vocab_size: kind.vocab_size(), tokenizer: kind, source: path.display().to_string() };
    Ok((dataset, status))
}

/// Splits a token stream: the last `round(len * val_fraction)` tokens are validation.
/// Contiguous rather than sampled, so no validation text leaks into training windows.
pub fn split_tokens(mut tokens: Vec<u32>, val_fraction: f64) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    check_fraction(val_fraction)?;
    let n_val = ((tokens.len() as f64 * val_fraction).round() as usize).min(tokens.len());
    let val = tokens.split_off(tokens.len() - n_val);
    Ok((tokens, val))
}

fn check_fraction(f: f64) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&f) {
        bail!("validation fraction {f} is out of range; use a value in [0, 1), e.g. 0.1");
    }
    Ok(())
}
