//! Modules and the decoder-transformer model family.
