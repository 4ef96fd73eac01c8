//! Named parameters and what kind of tensor each is (decides weight decay and init).

use anychip_core::Tensor;

/// What a parameter is, which decides its initialisation and whether weight decay applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Token or position embedding table.
    Embedding,
    /// A linear layer's weight matrix.
    Weight,
    /// A linear output projection feeding the residual stream (GPT-2 scales its init).
    ResidualWeight,
    Bias,
    /// Norm gain.
    NormWeight,
    /// Norm shift.
    NormBias,
}

impl ParamKind {
    /// AdamW convention: decay matrices only; never norms, biases or embeddings.
    pub fn decays(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::ResidualWeight)
    }
}

/// A named leaf tensor of a model.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub tensor: Tensor,
}
