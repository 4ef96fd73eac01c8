//! Deterministic initialisation from the port's counter-based stream, so the same seed gives
//! the same weights on every port.

use crate::params::ParamKind;
use anychip_core::{Result, Tensor};
use anychip_port::{DType, Distribution, Port};
use std::sync::Arc;

/// Initialise one parameter. `offset` selects a disjoint region of the seed's stream.
pub(crate) fn init_param(
    port: &Arc<dyn Port>,
    shape: &[usize],
    kind: ParamKind,
    seed: u64,
    offset: u64,
    n_layer: usize,
) -> Result<Tensor> {
    let _g = anychip_core::no_grad();
    // GPT-2 / nanoGPT: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 L)), zeros and ones.
    let std = match kind {
        ParamKind::Embedding | ParamKind::Weight => 0.02,
        ParamKind::ResidualWeight => 0.02 / ((2 * n_layer) as f64).sqrt(),
        ParamKind::Bias | ParamKind::NormBias | ParamKind::Statistic => return Tensor::zeros(port, shape, DType::F32),
        ParamKind::NormWeight => return Tensor::full(port, shape, 1.0, DType::F32),
    };
    Tensor::random(port, shape, Distribution::Normal, seed, offset, DType::F32)?.mul_scalar(std).map(|t| t.detach())
}
