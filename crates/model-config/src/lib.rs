//! Architecture configs of decoder-only transformers, and the named presets.
//!
//! One struct describes GPT-2 (learned positions, LayerNorm, GELU, tied embeddings) and the
//! Llama family (RoPE, RMSNorm, SwiGLU, GQA, optional QK-norm as in Qwen3). The engine builds
//! models from it and the planner counts their FLOPs and bytes; neither owns it.

use serde::{Deserialize, Serialize};

mod moe;
mod rope;
pub use moe::MoeConfig;
pub use rope::{inv_freq, Llama3RopeScaling};

/// Normalisation layer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    LayerNorm,
    RmsNorm,
}

/// Feed-forward block kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mlp {
    /// fc -> GELU(tanh) -> proj, as GPT-2.
    Gelu,
    /// down(silu(gate(x)) * up(x)), as Llama.
    SwiGlu,
}

/// Position encoding kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned `[ctx, d]` table added to the token embedding.
    Learned,
    /// Rotary embedding applied to q and k.
    Rope,
}

/// Every architectural number of a decoder-only transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Family tag written into checkpoints (`gpt2`, `llama`, `qwen2`, `qwen3`, `ernie4_5`).
    pub family: String,
    pub vocab_size: usize,
    /// Longest context the model supports.
    pub max_ctx: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// KV heads (GQA); equal to `n_head` for plain multi-head attention.
    pub n_kv_head: usize,
    pub d_model: usize,
    /// Per-head width; usually d_model / n_head (Qwen3 sets it separately).
    pub head_dim: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
    pub norm: Norm,
    pub norm_eps: f32,
    pub mlp: Mlp,
    pub positions: Positions,
    pub rope_theta: f32,
    /// Llama 3's RoPE frequency scaling (absent: plain RoPE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Whether the LM head shares the token embedding.
    pub tied_embeddings: bool,
    /// Biases on q/k/v projections.
    pub qkv_bias: bool,
    /// Biases on every other linear layer and on norms (GPT-2 style).
    pub linear_bias: bool,
    /// RMSNorm on q and k per head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Mixture-of-experts feed-forward in some layers (absent: every layer dense).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
}

impl ModelConfig {
    /// A GPT-2 style config.
    pub fn gpt2(vocab_size: usize, max_ctx: usize, n_layer: usize, n_head: usize, d_model: usize) -> ModelConfig {
        ModelConfig {
            family: "gpt2".into(),
            vocab_size,
            max_ctx,
            n_layer,
            n_head,
            n_kv_head: n_head,
            d_model,
            head_dim: d_model / n_head,
            d_ff: 4 * d_model,
            norm: Norm::LayerNorm,
            norm_eps: 1e-5,
            mlp: Mlp::Gelu,
            positions: Positions::Learned,
            rope_theta: 10000.0,
            rope_scaling: None,
            tied_embeddings: true,
            qkv_bias: true,
            linear_bias: true,
            qk_norm: false,
            moe: None,
        }
    }

    /// A Llama style config (no biases, RMSNorm, SwiGLU, RoPE, GQA).
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        vocab_size: usize,
        max_ctx: usize,
        n_layer: usize,
        n_head: usize,
        n_kv_head: usize,
        d_model: usize,
        d_ff: usize,
    ) -> ModelConfig {
        ModelConfig {
            family: "llama".into(),
            vocab_size,
            max_ctx,
            n_layer,
            n_head,
            n_kv_head,
            d_model,
            head_dim: d_model / n_head,
            d_ff,
            norm: Norm::RmsNorm,
            norm_eps: 1e-5,
            mlp: Mlp::SwiGlu,
            positions: Positions::Rope,
            rope_theta: 10000.0,
            rope_scaling: None,
            tied_embeddings: false,
            qkv_bias: false,
            linear_bias: false,
            qk_norm: false,
            moe: None,
        }
    }

    /// Parameter count (embeddings included, tied head counted once).
    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let q = self.n_head * self.head_dim;
        let kv = self.n_kv_head * self.head_dim;
        let lb = self.linear_bias as usize;
        let norm_p = if self.norm == Norm::LayerNorm && self.linear_bias { 2 * d } else { d };
        let attn = d * (q + 2 * kv) + self.qkv_bias as usize * (q + 2 * kv) + q * d + lb * d;
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let mlp = match self.mlp {
            Mlp::Gelu => 2 * d * self.d_ff + lb * (self.d_ff + d),
            Mlp::SwiGlu => 3 * d * self.d_ff + lb * (2 * self.d_ff + d),
        };
        let layer = attn + qk_norm + 2 * norm_p;
        let ffn = (self.n_layer - self.moe_layers()) * mlp + self.moe_layers() * self.moe_block_params(false);
        let emb = self.vocab_size * d;
        let pos = if self.positions == Positions::Learned { self.max_ctx * d } else { 0 };
        let head = if self.tied_embeddings { 0 } else { self.vocab_size * d };
        emb + pos + self.n_layer * layer + ffn + norm_p + head
    }

    /// Parameters a token passes through: [`ModelConfig::n_params`] with each MoE block
    /// counted as its router, top-k and shared experts only (equal to `n_params` when dense).
    pub fn n_active_params(&self) -> usize {
        let all = self.moe_layers() * self.moe_block_params(false);
        let active = self.moe_layers() * self.moe_block_params(true);
        self.n_params() - all + active
    }

    /// How many layers are MoE layers.
    pub fn moe_layers(&self) -> usize {
        (0..self.n_layer).filter(|&i| self.is_moe_layer(i)).count()
    }

    /// Whether layer `i` has a MoE feed-forward block.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.is_moe_layer(i, self.n_layer))
    }

    fn moe_block_params(&self, active: bool) -> usize {
        match &self.moe {
            Some(m) if active => m.active_block_params(self.d_model),
            Some(m) => m.block_params(self.d_model),
            None => 0,
        }
    }

    /// Training FLOPs per token at context `ctx`: 6 x (non-embedding-lookup params) + attention
    /// 12 L T d_attn (the count used by the PaLM/llm.c MFU convention; the lookup table is not a matmul
    /// unless it is tied to the head, which is counted).
    pub fn train_flops_per_token(&self, ctx: usize) -> f64 {
        let d = self.d_model;
        let pos = if self.positions == Positions::Learned { self.max_ctx * d } else { 0 };
        let lookup = if self.tied_embeddings { 0 } else { self.vocab_size * d };
        let n = (self.n_active_params() - pos - lookup) as f64;
        6.0 * n + 12.0 * (self.n_layer * ctx * self.n_head * self.head_dim) as f64
    }

    /// Check internal consistency; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_layer == 0 || self.d_model == 0 || self.n_head == 0 || self.vocab_size == 0 {
            return Err("model config: n_layer, d_model, n_head and vocab_size must be positive".into());
        }
        if self.head_dim == 0 {
            return Err("model config: head_dim must be positive (leave it out for d_model / n_head)".into());
        }
        if self.d_ff == 0 && self.moe.is_none() {
            return Err("model config: d_ff (the MLP's hidden width, intermediate_size) must be positive".into());
        }
        if self.n_kv_head == 0 || self.n_head % self.n_kv_head != 0 {
            return Err(format!(
                "model config: n_head ({}) must be a multiple of n_kv_head ({})",
                self.n_head, self.n_kv_head
            ));
        }
        if self.positions == Positions::Rope && self.head_dim % 2 != 0 {
            return Err(format!("model config: RoPE needs an even head_dim, got {}", self.head_dim));
        }
        if let Some(r) = &self.rope_scaling {
            r.validate()?;
        }
        if let Some(m) = &self.moe {
            m.validate()?;
            if self.mlp != Mlp::SwiGlu {
                return Err("model config: MoE experts are SwiGLU; set mlp = \"swi_glu\"".into());
            }
        }
        Ok(())
    }

    /// Look up a named preset.
    pub fn preset(name: &str) -> Option<ModelConfig> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, f)| f())
    }

    /// Names of every preset, for error messages and `--help`.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }
}

type PresetFn = fn() -> ModelConfig;

/// Engine presets: small ones to train here, and real architectures (configs from the models'
/// public `config.json` files) to fine-tune, export and plan.
const PRESETS: &[(&str, PresetFn)] = &[
    // The README's default: byte-level, a few million parameters, trains on 2 cores in minutes.
    ("shakespeare-bytes", || ModelConfig::gpt2(256, 256, 4, 4, 256)),
    ("gpt2-tiny", || ModelConfig::gpt2(256, 128, 4, 4, 256)),
    ("gpt2-small-30m", || ModelConfig::gpt2(50257, 256, 6, 6, 384)),
    ("gpt2-124m", || ModelConfig::gpt2(50257, 1024, 12, 12, 768)),
    ("llama-tiny", || ModelConfig::llama(256, 256, 4, 4, 2, 256, 704)),
    ("llama-30m", || {
        let mut c = ModelConfig::llama(50257, 256, 6, 8, 4, 384, 1024);
        c.tied_embeddings = true;
        c
    }),
    ("qwen3-0.6b", || {
        // Qwen/Qwen3-0.6B config.json
        let mut c = ModelConfig::llama(151936, 40960, 28, 16, 8, 1024, 3072);
        c.family = "qwen3".into();
        c.head_dim = 128;
        c.norm_eps = 1e-6;
        c.rope_theta = 1_000_000.0;
        c.tied_embeddings = true;
        c.qk_norm = true;
        c
    }),
    ("ernie4.5-0.3b", || {
        // baidu/ERNIE-4.5-0.3B-PT config.json
        let mut c = ModelConfig::llama(103424, 131072, 18, 16, 2, 1024, 3072);
        c.family = "ernie4_5".into();
        c.head_dim = 128;
        c.norm_eps = 1e-5;
        c.rope_theta = 500_000.0;
        c.tied_embeddings = true;
        c
    }),
    // shakespeare-bytes with the MLPs of layers 1-3 replaced by 8 SwiGLU experts, top-2: the
    // router and two experts of width 340 hold 524,288 active parameters per layer against the
    // dense MLP's 525,568, so the two train with equal active parameters. Layer 0 keeps a dense
    // SwiGLU MLP of width 680 (522,240), as DeepSeek-V3 (`first_k_dense_replace`) and ERNIE 4.5
    // (`moe_layer_start_index`) keep their first layers dense: routing on what is still little
    // more than the byte embedding sent nearly every token to one expert there and cost more
    // than the experts gained (docs/moe.md). Each MoE layer is balanced on its own (with
    // transformers' pooled loss one layer collapsed onto one expert), and no expert takes more
    // than twice the mean share of a layer's slots (capacity factor 2, overflow rerouted, none
    // dropped): the router alone still swings above that in a few steps after the learning-rate
    // peak, and tighter caps cost validation loss (docs/moe.md).
    ("moe-tiny", || {
        let mut c = ModelConfig::gpt2(256, 256, 4, 4, 256);
        c.family = "moe".into();
        c.mlp = Mlp::SwiGlu;
        c.d_ff = 680;
        let moe = MoeConfig {
            n_experts: 8,
            top_k: 2,
            d_expert: 340,
            layer_start: 1,
            aux_loss_per_layer: true,
            aux_loss_router_only: true,
            aux_loss_coef: 0.04,
            capacity_factor: Some(2.0),
            ..MoeConfig::default()
        };
        c.moe = Some(moe);
        c
    }),
    ("qwen3-30b-a3b", || {
        // Qwen/Qwen3-30B-A3B config.json: 128 experts of width 768, 8 per token, norm_topk_prob,
        // every layer MoE (decoder_sparse_step 1), output_router_logits false (so no aux loss).
        let mut c = ModelConfig::llama(151936, 40960, 48, 32, 4, 2048, 6144);
        c.family = "qwen3_moe".into();
        c.head_dim = 128;
        c.norm_eps = 1e-6;
        c.rope_theta = 1_000_000.0;
        c.qk_norm = true;
        c.moe = Some(MoeConfig { n_experts: 128, top_k: 8, d_expert: 768, aux_loss_coef: 0.0, ..MoeConfig::default() });
        c
    }),
    ("ernie4.5-21b-a3b", || {
        // baidu/ERNIE-4.5-21B-A3B-PT config.json: 64 experts of width 1536, moe_k 6, 2 shared
        // experts, layer 0 dense (moe_layer_start_index 1, interval 1, end 27), tied embeddings.
        let mut c = ModelConfig::llama(103424, 131072, 28, 20, 4, 2560, 12288);
        c.family = "ernie4_5_moe".into();
        c.head_dim = 128;
        c.norm_eps = 1e-5;
        c.rope_theta = 500_000.0;
        c.tied_embeddings = true;
        c.moe = Some(MoeConfig {
            n_experts: 64,
            top_k: 6,
            d_expert: 1536,
            n_shared: 2,
            layer_start: 1,
            aux_loss_coef: 0.0,
            selection_bias: true,
            ..MoeConfig::default()
        });
        c
    }),
];

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn gpt2_124m_has_the_published_parameter_count() {
        // 124,439,808 with the learned position table (Radford et al.; llm.c prints this number).
        assert_eq!(ModelConfig::preset("gpt2-124m").unwrap().n_params(), 124_439_808);
    }
    #[test]
    fn qwen3_0_6b_parameter_count() {
        // Qwen3-0.6B: 0.6B total, 0.44B non-embedding per the model card.
        let c = ModelConfig::preset("qwen3-0.6b").unwrap();
        let non_emb = c.n_params() - c.vocab_size * c.d_model;
        assert!((non_emb as f64 / 0.44e9 - 1.0).abs() < 0.02, "{non_emb}");
    }
    #[test]
    fn moe_presets_have_their_published_sizes() {
        // Model cards: Qwen3-30B-A3B 30.5B total, 3.3B activated; ERNIE-4.5-21B-A3B 21B total, 3B activated.
        let b = |n: usize| n as f64 / 1e9;
        let q = ModelConfig::preset("qwen3-30b-a3b").unwrap();
        assert!((b(q.n_params()) - 30.5).abs() < 0.1 && (b(q.n_active_params()) - 3.3).abs() < 0.1, "{}", q.n_params());
        let e = ModelConfig::preset("ernie4.5-21b-a3b").unwrap();
        // ERNIE's 3B counts no embedding (tied, 0.26B here).
        let e_active = e.n_active_params() - e.vocab_size * e.d_model;
        assert!((b(e.n_params()) - 21.8).abs() < 0.3 && (b(e_active) - 3.0).abs() < 0.1, "{} {e_active}", e.n_params());
        let (m, dense) = (ModelConfig::preset("moe-tiny").unwrap(), ModelConfig::preset("shakespeare-bytes").unwrap());
        let active = m.n_active_params() as f64 / dense.n_params() as f64;
        assert!((active - 1.0).abs() < 0.01, "moe-tiny holds {active}x the dense preset's active parameters");
    }
    #[test]
    fn a_bias_balance_rate_needs_a_selection_bias_and_a_finite_value() {
        let mut m = MoeConfig { d_expert: 8, selection_bias: true, bias_balance_rate: 0.01, ..MoeConfig::default() };
        assert!(m.validate().is_ok());
        m.selection_bias = false;
        assert!(m.validate().unwrap_err().contains("moe.selection_bias"));
        m.selection_bias = true;
        m.bias_balance_rate = f32::NAN;
        assert!(m.validate().unwrap_err().contains("moe.bias_balance_rate"));
    }
    #[test]
    fn a_zero_head_dim_or_mlp_width_is_refused() {
        // Both used to validate: a config.json with `head_dim: 0` planned attention of no width,
        // and `intermediate_size: 0` a dense model without MLPs.
        let mut c = ModelConfig::preset("qwen3-0.6b").unwrap();
        c.head_dim = 0;
        assert!(c.validate().unwrap_err().contains("head_dim must be positive"));
        let mut c = ModelConfig::preset("qwen3-0.6b").unwrap();
        c.d_ff = 0;
        assert!(c.validate().unwrap_err().contains("d_ff"));
    }
    #[test]
    fn every_preset_validates() {
        for n in ModelConfig::preset_names() {
            ModelConfig::preset(n).unwrap().validate().unwrap();
        }
    }
}
