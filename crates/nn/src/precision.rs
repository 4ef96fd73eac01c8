//! Arithmetic precision of a model's matrix products (mixed precision).

use anychip_port::DType;
use serde::{Deserialize, Serialize};

/// What the linear layers, the LM head and attention's two products multiply in.
///
/// `Bf16` is mixed precision as `torch.autocast(dtype=bfloat16)` does it: weights and
/// activations are rounded to bf16 on the way into each product, which accumulates in f32
/// and returns f32; the backward rounds the incoming gradient to bf16 for dx = dy w and
/// dw = dy^T x and keeps dx and dw in f32. Attention likewise (as autocast runs
/// `scaled_dot_product_attention` in bf16): q, k and v rounded to bf16, QK^T and PV with bf16
/// operands and f32 accumulation, softmax and its log-sum-exp in f32, the probabilities
/// rounded to bf16 before PV; output and dq, dk, dv in f32. Master weights, AdamW moments,
/// norms, softmax and the loss stay f32. It is an engine setting, so every port runs it: one with a
/// bf16 matrix unit goes fast, any other computes the same numbers by widening.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 operands with f32 accumulation in the linear layers, the LM head and attention.
    Bf16,
}

impl Precision {
    /// Every precision, for help texts and sweeps.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The dtype matrix-product operands are rounded to.
    pub fn operands(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision '{s}'; use f32 or bf16"))
    }
}
