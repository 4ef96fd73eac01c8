//! Differentiable ops, one family per file.

pub(crate) mod elementwise;
pub(crate) mod matmul;
pub mod nn;
pub(crate) mod reduce;
