//! The decoder-only transformer family: GPT-2 (learned positions, LayerNorm, GELU, tied
//! embeddings) and Llama (RoPE, RMSNorm, SwiGLU, GQA, optional QK-norm) from one config.

mod init;
mod model;
mod moe;
mod params;
mod precision;

pub use anychip_model_config::{Mlp, ModelConfig, MoeConfig, Norm, Positions};
pub use model::{ExpertSlot, Placement, Transformer};
pub use moe::{ExpertGroup, RouterStats};
/// Region names of a MoE block's router, dispatch and combine (see `anychip_core::in_region`).
pub mod moe_regions {
    pub use crate::moe::{COMBINE, DISPATCH, ROUTER};
}
pub use params::{Param, ParamKind};
pub use precision::Precision;
