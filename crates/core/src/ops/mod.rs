//! Differentiable ops, one family per file.

pub mod all_to_all;
pub mod attention;
pub mod composite;
pub(crate) mod elementwise;
pub mod glu;
pub(crate) mod matmul;
pub mod moe;
pub(crate) mod reduce;
