//! What a run's matmuls multiply in on the port it got.

use anychip_nn::Precision;
use anychip_port::{DType, Port};

/// What a run asking for `requested` multiplies in on `port`, and the one-line notice to print
/// at start when that differs. bf16 runs as asked where the port multiplies bf16 fast (a native
/// bf16 dot product or matrix unit); elsewhere rounding operands to bf16 and widening them back
/// costs more than multiplying in f32 (0.94x on an AVX2-only EPYC), so the products run in f32.
/// The decision reads the port's `Capabilities::fast_matmul`, so no chip is named here.
/// `ANYCHIP_BF16_WIDEN=1` keeps bf16 operands anyway, to check bf16 numerics on any machine.
pub fn matmul_precision(port: &dyn Port, requested: Precision) -> (Precision, Option<String>) {
    let widen = std::env::var("ANYCHIP_BF16_WIDEN").is_ok_and(|v| !v.is_empty() && v != "0");
    if requested != Precision::Bf16 || widen || port.capabilities().fast_matmul.contains(&DType::BF16) {
        return (requested, None);
    }
    let note = format!(
        "note: port {} has no fast bf16 matmul here, so --precision bf16 multiplies in f32 (faster than widening bf16; ANYCHIP_BF16_WIDEN=1 keeps bf16 operands)",
        port.name()
    );
    (Precision::F32, Some(note))
}
