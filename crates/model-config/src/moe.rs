//! Mixture-of-experts feed-forward settings (Qwen3-MoE, ERNIE 4.5 MoE, Mixtral-style routing).
//!
//! A MoE layer replaces the dense MLP with `n_experts` SwiGLU experts of width `d_expert`; a
//! router (linear `d -> n_experts`, softmax) sends each token to its `top_k` most probable
//! experts and sums their outputs weighted by those probabilities (renormalised to sum to 1
//! when `norm_topk_prob`). ERNIE 4.5 adds always-on shared experts and a per-expert score
//! correction used only to pick the experts. Which layers are MoE follows ERNIE's
//! `moe_layer_start_index` / `moe_layer_interval` / `moe_layer_end_index` (Qwen3's
//! `decoder_sparse_step` is the interval with start 0).
//!
//! Every field has a serde default so configs written before a field existed still parse.

use serde::{Deserialize, Serialize};

/// The MoE part of a [`crate::ModelConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoeConfig {
    /// Routed experts per MoE layer (`num_experts`, `moe_num_experts`).
    pub n_experts: usize,
    /// Experts each token is sent to (`num_experts_per_tok`, `moe_k`).
    pub top_k: usize,
    /// Renormalise the chosen experts' probabilities to sum to 1 (Qwen3's `norm_topk_prob`;
    /// ERNIE 4.5 always does).
    pub norm_topk_prob: bool,
    /// Hidden width of one expert (`moe_intermediate_size`).
    pub d_expert: usize,
    /// Always-active shared experts, fused into one SwiGLU of width `n_shared * d_expert`
    /// (ERNIE's `moe_num_shared_experts`; 0 for Qwen3-MoE).
    pub n_shared: usize,
    /// First MoE layer; earlier layers are dense (`moe_layer_start_index`).
    pub layer_start: usize,
    /// Layer i is MoE when (i + 1) is a multiple of this (`moe_layer_interval`, `decoder_sparse_step`).
    pub layer_interval: usize,
    /// Last layer that may be MoE (`moe_layer_end_index`); None: the last layer.
    pub layer_end: Option<usize>,
    /// Weight of the load-balancing loss added to the training loss (0: not added).
    pub aux_loss_coef: f32,
    /// Balance each MoE layer on its own: the load-balancing loss is the mean over MoE layers
    /// of each layer's Switch loss (the paper's form, as Megatron-Core computes it), instead of
    /// transformers' one loss over every layer's routing pooled together (false, what the
    /// Hugging Face families were trained with). The pooled form lets one layer send every
    /// token to the same expert while another layer avoids it.
    pub aux_loss_per_layer: bool,
    /// The load-balancing loss trains the router's weights only: its probabilities are taken
    /// again from the block input with the gradient stopped, so the balancing pressure does not
    /// reach the representations the language-model loss shapes.
    pub aux_loss_router_only: bool,
    /// A per-expert score correction added to the probabilities when picking the top-k, not
    /// when weighting (ERNIE 4.5's `moe_statics.e_score_correction_bias`; not trained).
    pub selection_bias: bool,
    /// Aux-loss-free load balancing (DeepSeek-V3, section 2.1.2): after every training forward
    /// each MoE layer's selection bias moves by this much per expert, up for an expert that got
    /// fewer tokens than the mean, down for one that got more (0: the bias stays as loaded, as
    /// the Hugging Face families need). Needs `selection_bias`.
    pub bias_balance_rate: f32,
    /// Expert capacity as a multiple of the mean share of a layer's routed slots (Switch's and
    /// GShard's capacity factor; None: uncapped, as the Hugging Face families train). Where the
    /// router sends an expert more than ceil(f N k / E) of the N k slots of a batch, its
    /// weakest-preference slots go to their token's next-best expert with room instead: no token
    /// is dropped (dropless), and no expert's work exceeds f times the mean.
    pub capacity_factor: Option<f32>,
}

impl Default for MoeConfig {
    fn default() -> MoeConfig {
        MoeConfig {
            n_experts: 8,
            top_k: 2,
            norm_topk_prob: true,
            d_expert: 0,
            n_shared: 0,
            layer_start: 0,
            layer_interval: 1,
            layer_end: None,
            aux_loss_coef: 0.01,
            aux_loss_per_layer: false,
            aux_loss_router_only: false,
            selection_bias: false,
            bias_balance_rate: 0.0,
            capacity_factor: None,
        }
    }
}

impl MoeConfig {
    /// Whether layer `i` (0-based) of a model with `n_layer` layers is a MoE layer.
    pub fn is_moe_layer(&self, i: usize, n_layer: usize) -> bool {
        let end = self.layer_end.unwrap_or(n_layer.saturating_sub(1));
        i >= self.layer_start && i <= end && self.layer_interval > 0 && (i + 1) % self.layer_interval == 0
    }

    /// Parameters of one MoE feed-forward block of model width `d` (router, experts, shared experts).
    pub fn block_params(&self, d: usize) -> usize {
        let router = self.n_experts * d + if self.selection_bias { self.n_experts } else { 0 };
        router + self.n_experts * 3 * d * self.d_expert + 3 * d * self.n_shared * self.d_expert
    }

    /// Parameters one token passes through in a MoE block (router, its top-k experts, shared).
    pub fn active_block_params(&self, d: usize) -> usize {
        self.n_experts * d + (self.top_k + self.n_shared) * 3 * d * self.d_expert
    }

    /// Check the settings; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_experts == 0 || self.d_expert == 0 {
            return Err("model config: moe.n_experts and moe.d_expert must be positive".into());
        }
        if self.top_k == 0 || self.top_k > self.n_experts {
            return Err(format!(
                "model config: moe.top_k ({}) must be between 1 and the expert count ({}); lower top_k or add experts",
                self.top_k, self.n_experts
            ));
        }
        if !(self.bias_balance_rate >= 0.0 && self.bias_balance_rate.is_finite()) {
            return Err(format!(
                "model config: moe.bias_balance_rate ({}) must be a finite number >= 0",
                self.bias_balance_rate
            ));
        }
        if self.bias_balance_rate > 0.0 && !self.selection_bias {
            return Err("model config: moe.bias_balance_rate moves the selection bias; set moe.selection_bias = true or the rate to 0".into());
        }
        if let Some(f) = self.capacity_factor {
            if !(f.is_finite() && f >= 1.0) {
                return Err(format!(
                    "model config: moe.capacity_factor ({f}) must be at least 1 (below the mean share the experts cannot hold every slot); raise it or remove it"
                ));
            }
        }
        if self.layer_interval == 0 {
            return Err("model config: moe.layer_interval must be at least 1".into());
        }
        Ok(())
    }
}
