//! The twelve primitives, one op family per file.

pub mod elementwise;
pub mod matmul;
#[cfg(anychip_avx512bf16)]
pub mod matmul_bf16;
#[cfg(anychip_avx512bf16)]
mod matmul_bf16_pack;
pub mod movement;
pub mod random;
pub mod reduce;
pub mod rows;

use anychip_port::{invalid, Result, View};

/// The native unit bf16 products run on (AMX or AVX512-BF16), or None where they are widened
/// to f32.
pub fn bf16_matmul_engine() -> Option<&'static str> {
    #[cfg(anychip_avx512bf16)]
    return matmul_bf16::engine().map(|e| e.name());
    #[cfg(not(anychip_avx512bf16))]
    None
}

/// Reject outputs that broadcast (a stride of 0 over an extent above 1): two elements would
/// land on one address and the result would depend on thread timing.
pub fn dense_out(out: &View) -> Result<()> {
    let l = &out.layout;
    if l.shape.iter().zip(&l.strides).any(|(&n, &s)| n > 1 && s == 0) {
        return invalid(format!("output view {:?} broadcasts (stride 0); write into a dense tensor", l.shape));
    }
    Ok(())
}
