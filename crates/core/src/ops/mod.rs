//! Differentiable ops, one family per file.

pub mod attention;
pub(crate) mod elementwise;
pub mod glu;
pub(crate) mod matmul;
pub mod moe;
pub mod nn;
pub(crate) mod reduce;
