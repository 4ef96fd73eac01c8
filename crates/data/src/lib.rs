//! Corpora, tokenizers, token shards and batch loading.
