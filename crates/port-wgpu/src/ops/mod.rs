//! The twelve primitives, one family per file (their WGSL is in `src/kernels/`).

pub mod elementwise;
pub mod matmul;
pub mod random;
pub mod reduce;
pub mod rows;
