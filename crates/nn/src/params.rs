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
    /// A statistic no loss reaches, kept with the weights (ERNIE 4.5's expert score
    /// correction): zeros at init, never decayed, so AdamW leaves it as loaded.
    Statistic,
}

impl ParamKind {
    /// AdamW convention: decay matrices only; never norms, biases or embeddings.
    pub fn decays(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::ResidualWeight)
    }

    /// Whether a loss can reach it (torch skips parameters without a gradient, decay too).
    pub fn trained(self) -> bool {
        self != ParamKind::Statistic
    }
}

/// A named leaf tensor of a model.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub tensor: Tensor,
}
