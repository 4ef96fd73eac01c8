//! Models the planner knows: the engine presets of `anychip-model-config` plus planner-only presets
//! (published architectures the engine need not build, dense and mixture-of-experts), and model
//! files in TOML. The performance model reads an [`Arch`]: the per-layer numbers it needs.

use anychip_model_config::{Mlp, ModelConfig};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Planner-only presets, one `[[model]]` table each, with the source of every architecture.
const PRESETS_TOML: &str = include_str!("../data/models.toml");

/// A model file (and one preset entry): the few numbers the planner needs; the rest is derived.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Preset name (optional in a user file; the file name is used instead).
    #[serde(default)]
    pub name: String,
    /// Where the numbers came from.
    #[serde(default)]
    pub source: String,
    /// What was assumed reading it, where the planner read a Hugging Face config of a family it
    /// does not know by name ([`crate::hf_config`]); never in a TOML file.
    #[serde(skip)]
    pub note: Option<String>,
    /// `gpt` (LayerNorm, GELU MLP of 4h, learned positions), `llama` (RMSNorm, SwiGLU, RoPE, GQA)
    /// or `moe` (llama-style attention, SwiGLU experts).
    pub arch: String,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context the model supports (defaults to 4096).
    #[serde(default)]
    pub ctx: Option<usize>,
    /// Transformer layers.
    pub layers: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads (GQA); defaults to `heads`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Hidden width.
    pub d_model: usize,
    /// Per-head width; defaults to d_model / heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP hidden width (of the dense layers of a MoE); defaults to 4 x d_model for `gpt`.
    #[serde(default)]
    pub d_ff: Option<usize>,
    /// Whether the LM head shares the embedding (default: true for gpt, false otherwise).
    #[serde(default)]
    pub tied: Option<bool>,
    /// MoE: routed experts per MoE layer.
    #[serde(default)]
    pub experts: Option<usize>,
    /// MoE: routed experts each token visits.
    #[serde(default)]
    pub experts_per_token: Option<usize>,
    /// MoE: shared experts every token visits (default 0).
    #[serde(default)]
    pub shared_experts: Option<usize>,
    /// MoE: hidden width of one expert's SwiGLU.
    #[serde(default)]
    pub expert_d_ff: Option<usize>,
    /// MoE: the first layers that are dense (default 0).
    #[serde(default)]
    pub dense_layers: Option<usize>,
    /// MoE: after the leading dense layers, every n-th layer is MoE and the others dense
    /// (default 1, every layer; Llama 4 Maverick's `interleave_moe_layer_step` 2).
    #[serde(default)]
    pub moe_every: Option<usize>,
    /// MoE: hidden width of one shared expert's SwiGLU, where it differs from the routed
    /// experts' (Qwen2-MoE: `shared_expert_intermediate_size`; default `expert_d_ff`).
    #[serde(default)]
    pub shared_expert_d_ff: Option<usize>,
    /// MoE: whether the experts' linear layers carry biases (GPT-OSS; default false).
    #[serde(default)]
    pub expert_bias: Option<bool>,
    /// MoE: the value the experts' gated activation clamps its inputs to (GPT-OSS: 7.0).
    #[serde(default)]
    pub activation_clamp: Option<f64>,
    /// MoE: latent width (Nemotron 3 Super's `moe_latent_size`): tokens are projected down to it
    /// before routing and back after, and the experts read and write it.
    #[serde(default)]
    pub moe_latent: Option<usize>,
    /// Multi-head latent attention (DeepSeek): query low-rank width (0 = full-rank query).
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
    /// Multi-head latent attention: compressed key/value width.
    #[serde(default)]
    pub kv_lora_rank: Option<usize>,
    /// Multi-head latent attention: per-head query/key width without and with RoPE.
    #[serde(default)]
    pub qk_nope_dim: Option<usize>,
    /// Multi-head latent attention: per-head RoPE width.
    #[serde(default)]
    pub qk_rope_dim: Option<usize>,
    /// Multi-head latent attention: per-head value width.
    #[serde(default)]
    pub v_head_dim: Option<usize>,
    /// Sliding-window attention span of the windowed layers (GPT-OSS).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Fraction of layers using the sliding window (GPT-OSS alternates: 0.5).
    #[serde(default)]
    pub sliding_fraction: Option<f64>,
    /// Whether the MLPs (dense and experts) are gated, with two up projections (SwiGLU, GeGLU;
    /// the default for `llama`, `moe` and `hybrid`), or plain, with one (Nemotron's squared ReLU).
    #[serde(default)]
    pub gated: Option<bool>,
    /// `hybrid`: the layer pattern, one character per layer as Megatron-Core's
    /// `hybrid_layer_pattern` writes it: `M` a Mamba-2 mixer, `G` a Gated DeltaNet mixer, `*`
    /// attention, `-` a dense MLP, `E` a mixture of experts (each layer is one of these, with its
    /// own norm).
    #[serde(default)]
    pub pattern: Option<String>,
    /// `hybrid`: Mamba-2 heads (`mamba_num_heads`).
    #[serde(default)]
    pub mamba_heads: Option<usize>,
    /// `hybrid`: Mamba-2 head width (`mamba_head_dim`).
    #[serde(default)]
    pub mamba_head_dim: Option<usize>,
    /// `hybrid`: Mamba-2 state width (`mamba_state_dim`, `ssm_state_size`).
    #[serde(default)]
    pub mamba_state: Option<usize>,
    /// `hybrid`: Mamba-2 groups sharing B and C (`mamba_num_groups`, `n_groups`).
    #[serde(default)]
    pub mamba_groups: Option<usize>,
    /// `hybrid`: Gated DeltaNet query/key heads (`linear_num_key_heads`).
    #[serde(default)]
    pub gdn_key_heads: Option<usize>,
    /// `hybrid`: Gated DeltaNet value heads (`linear_num_value_heads`; the query and key heads
    /// are repeated to as many).
    #[serde(default)]
    pub gdn_value_heads: Option<usize>,
    /// `hybrid`: Gated DeltaNet query/key head width (`linear_key_head_dim`).
    #[serde(default)]
    pub gdn_key_head_dim: Option<usize>,
    /// `hybrid`: Gated DeltaNet value head width (`linear_value_head_dim`).
    #[serde(default)]
    pub gdn_value_head_dim: Option<usize>,
    /// `hybrid`: Kimi Delta Attention's low rank (Kimi Linear: its `linear_attn_config` head
    /// width, 128): the `G` layers' output gate and decay are each projected d_model -> rank ->
    /// heads x head width (`g_a_proj`/`g_b_proj`, `f_a_proj`/`f_b_proj`), the decay one per key
    /// channel rather than one per head. Absent or 0: the Gated DeltaNet's full-rank output gate
    /// and per-head decay.
    #[serde(default)]
    pub kda_gate_rank: Option<usize>,
    /// Whether attention gates its output with a sigmoid of a second query-wide projection
    /// (Qwen3-Next, Qwen3.5: `attn_output_gate`); default false.
    #[serde(default)]
    pub attn_output_gate: Option<bool>,
    /// DeepSeek Sparse Attention (DeepSeek-V3.2's `index_n_heads`): the lightning indexer's
    /// heads. With `index_head_dim` and `index_topk` every attention layer's core attends the
    /// `index_topk` keys the indexer picks (priced as a window of that span) and the indexer
    /// scores every causal key. Needs latent attention with a query latent (`q_lora_rank`): the
    /// indexer projects its queries from it.
    #[serde(default)]
    pub index_heads: Option<usize>,
    /// DeepSeek Sparse Attention: the width of one indexer head (`index_head_dim`).
    #[serde(default)]
    pub index_head_dim: Option<usize>,
    /// DeepSeek Sparse Attention: the keys each query's attention core attends (`index_topk`).
    #[serde(default)]
    pub index_topk: Option<usize>,
    /// Multi-token prediction depths each token trains (DeepSeek-V3's MTP, Megatron-Core's
    /// `mtp_num_layers`): each one attention and one MLP block (MoE where the model has experts),
    /// a projection of the next token's embedding and the hidden state (2 d_model -> d_model), and
    /// the LM head and loss again. Default 0.
    #[serde(default)]
    pub mtp_layers: Option<usize>,
    /// Whether one MTP module's weights serve every depth (Megatron-Core's
    /// `mtp_use_repeated_layer`); default false, a module per depth.
    #[serde(default)]
    pub mtp_repeated: Option<bool>,
}

/// Multi-token prediction: depths computed per token and modules holding weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mtp {
    /// Depths each token trains (each one more attention and MLP block, LM head and loss).
    pub depths: usize,
    /// Modules holding weights: one when a module is repeated for every depth, else `depths`.
    pub modules: usize,
}

/// A hybrid architecture's layers by kind and its Mamba-2 mixers' widths (Nemotron-H, Nemotron 3).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hybrid {
    /// Attention layers.
    pub attention: usize,
    /// Mamba-2 mixer layers.
    pub mamba: usize,
    /// Dense MLP layers.
    pub mlp: usize,
    /// Mixture-of-experts layers.
    pub moe: usize,
    /// Mamba-2 heads (split over tensor parallelism as attention heads are).
    pub mamba_heads: usize,
    /// Width of one Mamba-2 head.
    pub mamba_head_dim: usize,
    /// Width of the state each head carries.
    pub mamba_state: usize,
    /// Groups of heads sharing one B and one C.
    pub mamba_groups: usize,
    /// Gated DeltaNet mixer layers.
    pub gdn: usize,
    /// Gated DeltaNet query/key heads (split over tensor parallelism).
    pub gdn_key_heads: usize,
    /// Gated DeltaNet value heads (split over tensor parallelism).
    pub gdn_value_heads: usize,
    /// Width of one Gated DeltaNet query/key head.
    pub gdn_key_dim: usize,
    /// Width of one Gated DeltaNet value head.
    pub gdn_value_dim: usize,
    /// Kimi Delta Attention's gate rank (0 for a Gated DeltaNet): its output gate and its
    /// channel-wise decay each projected d_model -> rank -> value heads x width.
    pub kda_gate_rank: usize,
}

impl Hybrid {
    /// Width of the mixer's inner stream (heads x head width).
    pub fn d_inner(&self) -> usize {
        self.mamba_heads * self.mamba_head_dim
    }

    /// Output width of the mixer's input projection: z and x (d_inner each), B and C (groups x
    /// state each) and one dt per head.
    pub fn in_proj_width(&self) -> usize {
        2 * self.d_inner() + 2 * self.mamba_groups * self.mamba_state + self.mamba_heads
    }

    /// Channels of the mixer's causal convolution: x, B and C.
    pub fn conv_width(&self) -> usize {
        self.d_inner() + 2 * self.mamba_groups * self.mamba_state
    }

    /// Matmul weights of one mixer: the input and output projections.
    pub fn mamba_params(&self, d_model: usize) -> f64 {
        (d_model * (self.in_proj_width() + self.d_inner())) as f64
    }

    /// Forward FLOPs per token of one mixer's chunked scan (Mamba-2's SSD, chunks of
    /// [`MAMBA_CHUNK`] tokens): per group the chunk's C B^T (2 Q N), per head the masked
    /// (C B^T) X of the chunk (2 Q P), the chunk's state B^T X (2 N P) and the state's output
    /// C h (2 N P).
    pub fn scan_flops_per_token(&self) -> f64 {
        let (q, n, p) = (MAMBA_CHUNK as f64, self.mamba_state as f64, self.mamba_head_dim as f64);
        self.mamba_groups as f64 * 2.0 * q * n + self.mamba_heads as f64 * (2.0 * q * p + 4.0 * n * p)
    }

    /// HBM bytes per token that one mixer's convolution and chunked scan move (forward, backward),
    /// as the Triton kernels of mamba_ssm's `mamba_split_conv1d_scan_combined` (the path
    /// Megatron-Core's `MambaMixer` trains with) read and write them: each kernel reads its
    /// inputs once and writes its outputs once, BF16 except where the kernels keep FP32.
    ///
    /// Per token, with D = heads x head width (x, z, the output), S = groups x state (B or C),
    /// Q = groups x chunk (a row of C B^T, FP32) and R = state / chunk (the per-chunk FP32 states,
    /// heads x head width x state per chunk, are R D per token); the dt/dA terms (per head) are
    /// left out.
    ///
    /// Forward, 14D + 12RD + 16S + 8Q: the causal convolution (read and write x, B, C: 4D + 8S),
    /// chunk_state (read x and B, write the FP32 states: 2D + 2S + 4RD), state_passing (read
    /// them, write BF16: 6RD), bmm_chunk (read B and C, write C B^T: 4S + 4Q), chunk_scan (read
    /// C B^T, x, C, the states and z, write the output and its ungated copy: 8D + 2RD + 2S + 4Q).
    ///
    /// Backward, 44D + 34RD + 56S + 24Q: the recomputed convolution, C B^T, states and their
    /// passing (FP32 out: 8RD), then chunk_scan_bwd_dz (12D), chunk_scan_bwd_dstates (2D + 2S +
    /// 4RD), state_passing_bwd (12RD), chunk_scan_chunk_state_bwd_dx (6D + 2S + 4Q + 2RD),
    /// chunk_state_bwd_db (2D + 2RD + 4S), chunk_scan_bwd_dC (2D + 2RD + 6S),
    /// chunk_scan_bwd_dcb (4D + 4Q), two bmm_chunk backwards (8Q + 16S),
    /// chunk_scan_bwd_ddAcs_stable (4D + 4Q) and the convolution's backward (read x, B, C and
    /// their gradient, write it: 6D + 12S).
    ///
    /// Source: state-spaces/mamba mamba_ssm/ops/triton/ssd_combined.py
    /// (`_mamba_chunk_scan_combined_fwd`, `_mamba_chunk_scan_combined_bwd`,
    /// `MambaSplitConv1dScanCombinedFn`) at e9594ce; Megatron-Core megatron/core/ssm/mamba_mixer.py
    /// `_ssm_training` (`use_mamba_mem_eff_path` defaults to true; states in `params_dtype`).
    pub fn scan_bytes_per_token(&self) -> (f64, f64) {
        let d = self.d_inner() as f64;
        let s = (self.mamba_groups * self.mamba_state) as f64;
        let q = (self.mamba_groups * MAMBA_CHUNK) as f64;
        let r = self.mamba_state as f64 / MAMBA_CHUNK as f64;
        let fwd = 14.0 * d + 12.0 * r * d + 16.0 * s + 8.0 * q;
        let bwd = 44.0 * d + 34.0 * r * d + 56.0 * s + 24.0 * q;
        (fwd, bwd)
    }

    /// Output width of a Gated DeltaNet mixer's input projection from d_model: queries and keys
    /// (key heads x key width each), values (value heads x value width), per value head beta,
    /// and the output gate z (value heads x value width) and per value head the decay's input;
    /// or, for Kimi Delta Attention, in place of those two, the rank-wide down projections of its
    /// output gate and its decay ([`Self::kda_gate_up_width`] takes them back up).
    pub fn gdn_in_proj_width(&self) -> usize {
        let qkv_beta = 2 * self.gdn_k_width() + self.gdn_v_width() + self.gdn_value_heads;
        match self.kda_gate_rank {
            0 => qkv_beta + self.gdn_v_width() + self.gdn_value_heads,
            r => qkv_beta + 2 * r,
        }
    }

    /// Kimi Delta Attention's up projections from its gate rank: to the output gate (value heads
    /// x value width, `g_b_proj`) and to the channel-wise decay (value heads x key width,
    /// `f_b_proj`); 0 for a Gated DeltaNet.
    pub fn kda_gate_up_width(&self) -> usize {
        if self.kda_gate_rank == 0 {
            0
        } else {
            self.gdn_v_width() + self.gdn_value_heads * self.gdn_key_dim
        }
    }

    /// Channels of a Gated DeltaNet mixer's causal convolution: queries, keys and values.
    pub fn gdn_conv_width(&self) -> usize {
        2 * self.gdn_k_width() + self.gdn_v_width()
    }

    /// Key heads x key width: the width of the mixer's queries or keys as projected.
    pub fn gdn_k_width(&self) -> usize {
        self.gdn_key_heads * self.gdn_key_dim
    }

    /// Value heads x value width: the width of the mixer's values, output and gate.
    pub fn gdn_v_width(&self) -> usize {
        self.gdn_value_heads * self.gdn_value_dim
    }

    /// Matmul weights of one Gated DeltaNet mixer: the input and output projections (and Kimi
    /// Delta Attention's gate up projections).
    pub fn gdn_params(&self, d_model: usize) -> f64 {
        (d_model * (self.gdn_in_proj_width() + self.gdn_v_width()) + self.kda_gate_rank * self.kda_gate_up_width())
            as f64
    }

    /// Forward FLOPs per token of one Gated DeltaNet mixer's chunked delta rule (fla's
    /// `chunk_gated_delta_rule`, chunks of [`GDN_CHUNK`] tokens, queries and keys repeated to
    /// the value heads), per value head: within the chunk K K^T, the WY representation's
    /// w = A (beta k) and u = A v, and the output's Q K^T and its product with the new values
    /// (6 C dk + 4 C dv); across chunks w h, the state update k^T v and the output's q h
    /// (6 dk dv).
    ///
    /// Kimi Delta Attention (fla's `chunk_kda`) is counted the same way at its widths: a gated
    /// delta rule whose decay is a vector per head (one per key channel) rather than a scalar, the
    /// same chunked (WY, per-chunk state) algorithm class (Kimi Linear report, arXiv 2510.26692,
    /// section 3). What its channel-wise decay adds (the decay applied inside the chunk's
    /// products, computed in sub-chunks, and read in FP32 by each kernel) is not counted here
    /// nor in [`Self::gdn_bytes_per_token`]: for KDA both are lower bounds.
    pub fn gdn_flops_per_token(&self) -> f64 {
        let (c, dk, dv) = (GDN_CHUNK as f64, self.gdn_key_dim as f64, self.gdn_value_dim as f64);
        self.gdn_value_heads as f64 * (6.0 * c * dk + 4.0 * c * dv + 6.0 * dk * dv)
    }

    /// HBM bytes per token one Gated DeltaNet mixer's kernels move (forward, backward), each
    /// kernel reading its inputs and writing its outputs once.
    ///
    /// Per token, with Kk = key heads x key width (q or k as projected), K = value heads x key
    /// width (q or k repeated to the value heads), V = value heads x value width, S = V x key
    /// width / chunk (the per-chunk states) and A = value heads x chunk (a row of the chunk's
    /// WY matrix).
    ///
    /// Forward, 16K + 22V + 4S + 2A + 20Kk: the causal convolution (read and write q, k, v:
    /// 8Kk + 4V), the L2 norm of q and k and their repeat to the value heads (12Kk + 4K),
    /// chunk_gated_delta_rule_fwd_intra (read k, v, write w, u and A: 4K + 4V + 2A),
    /// chunk_gated_delta_rule_fwd_h (read k, w, u, write the states and the new values:
    /// 4K + 4V + 2S), chunk_fwd_o (read q, k, the new values and the states, write o:
    /// 4K + 4V + 2S) and the gated RMSNorm (read o and z, write: 6V).
    ///
    /// Backward, 46K + 46V + 8S + 4A + 28Kk: the recomputed w, u (4K + 4V + 2A) and states
    /// (4K + 4V + 2S), chunk_bwd_dv_local (4K + 4V), chunk_gated_delta_rule_bwd_dhu
    /// (6K + 6V + 2S), chunk_bwd_dqkwg (12K + 6V + 4S), prepare_wy_repr_bwd (6K + 6V + 2A), the
    /// dk sum (6K), the repeat's and the norms' gradients (4K + 16Kk), the convolution's
    /// (12Kk + 6V) and the gated norm's (10V).
    ///
    /// Source: fla-org/flash-linear-attention fla/ops/gated_delta_rule/chunk.py
    /// (`chunk_gated_delta_rule_fwd`, `chunk_gated_delta_rule_bwd`) at bc3b101; Megatron-Core
    /// megatron/core/ssm/gated_delta_net (gdn.py, common.py `_prepare_input_for_gated_delta_rule`).
    pub fn gdn_bytes_per_token(&self) -> (f64, f64) {
        let (dk, h) = (self.gdn_key_dim as f64, self.gdn_value_heads as f64);
        let kk = self.gdn_k_width() as f64;
        let (k, v) = (h * dk, self.gdn_v_width() as f64);
        let (st, a) = (v * dk / GDN_CHUNK as f64, h * GDN_CHUNK as f64);
        let fwd = 16.0 * k + 22.0 * v + 4.0 * st + 2.0 * a + 20.0 * kk;
        let bwd = 46.0 * k + 46.0 * v + 8.0 * st + 4.0 * a + 28.0 * kk;
        (fwd, bwd)
    }
}

/// DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2): per query token `heads`
/// queries of `head_dim` (projected from the `q_rank`-wide query latent), per key token one key
/// of `head_dim` and per query one weight a head, both projected from the hidden state; the
/// index score of a (query, key) pair is the weighted sum over heads of ReLU(q . k), and each
/// query's attention core attends only the `topk` best-scoring keys.
///
/// Sources: DeepSeek-V3.2 report (arXiv 2512.02556), section 2.1, equation 1 (the index score),
/// and the DeepSeek-V3.2-Exp tech report; deepseek-ai/DeepSeek-V3.2-Exp inference/model.py
/// (`Indexer`: `wq_b` q_lora_rank -> index_n_heads x index_head_dim, `wk` dim -> index_head_dim,
/// `weights_proj` dim -> index_n_heads) at 6d8cb70; Megatron-LM
/// megatron/core/transformer/experimental_attention_variant/dsa.py (`DSAIndexer`, whose three
/// projections are duplicated on every tensor-parallel rank) at 00bebb4.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Dsa {
    /// Indexer heads (`index_n_heads`).
    pub heads: usize,
    /// Width of one indexer head (`index_head_dim`).
    pub head_dim: usize,
    /// Keys each query's attention core attends (`index_topk`).
    pub topk: usize,
    /// Input width of the indexer's query projection: the query latent (`q_lora_rank`).
    pub q_rank: usize,
}

impl Dsa {
    /// Matmul weights of one layer's indexer: its query projection from the query latent, its
    /// key projection and its head-weight projection from the hidden state.
    pub fn params(&self, d_model: usize) -> f64 {
        (self.q_rank * self.heads * self.head_dim + d_model * (self.head_dim + self.heads)) as f64
    }

    /// Forward FLOPs of scoring one (query, key) pair: a `head_dim` dot product per head and the
    /// ReLU-weighted sum over heads (no softmax, no values).
    pub fn flops_per_pair(&self) -> f64 {
        2.0 * (self.heads * (self.head_dim + 1)) as f64
    }
}

/// Blocks per layer by kind ([`Arch::blocks_per_layer`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blocks {
    /// Attention blocks per layer.
    pub attention: f64,
    /// Mamba-2 mixer blocks per layer.
    pub mamba: f64,
    /// Gated DeltaNet mixer blocks per layer.
    pub gdn: f64,
    /// Dense MLP blocks per layer.
    pub mlp: f64,
    /// Mixture-of-experts blocks per layer.
    pub moe: f64,
}

/// Tokens per chunk of Mamba-2's chunked scan (Megatron-Core's `MambaMixer` default, 128).
pub const MAMBA_CHUNK: usize = 128;

/// Tokens per chunk of the Gated DeltaNet's chunked delta rule (Megatron-Core's
/// `GatedDeltaNet`, fla's default: 64).
pub const GDN_CHUNK: usize = 64;

/// Mixture-of-experts part of an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Moe {
    /// Routed experts per MoE layer.
    pub experts: usize,
    /// Routed experts per token.
    pub top_k: usize,
    /// Shared experts per MoE layer.
    pub shared: usize,
    /// Hidden width of one expert's SwiGLU.
    pub expert_d_ff: usize,
    /// Hidden width of one shared expert's SwiGLU.
    pub shared_d_ff: usize,
    /// Leading dense layers.
    pub dense_layers: usize,
    /// After the leading dense layers, every `every`-th layer is MoE.
    pub every: usize,
    /// Whether the experts' linear layers carry biases.
    pub expert_bias: bool,
    /// Whether the experts' gated activation clamps its inputs.
    pub clamped_activation: bool,
    /// Up projections of an expert: 2 gated (SwiGLU), 1 plain (squared ReLU).
    pub expert_up: usize,
    /// Latent MoE (Nemotron 3 Super): the width tokens are projected down to before routing and
    /// the experts' input and output width; 0 for experts on the hidden width.
    pub latent: usize,
}

impl Moe {
    /// Matmuls of one expert (its up projections and the down projection).
    pub fn expert_matrices(&self) -> f64 {
        (self.expert_up + 1) as f64
    }

    /// The width routed tokens travel and the experts read and write: the latent width of a
    /// latent MoE, else `d_model`.
    pub fn expert_io(&self, d_model: usize) -> f64 {
        if self.latent > 0 {
            self.latent as f64
        } else {
            d_model as f64
        }
    }

    /// Weights of a latent MoE's projections to and from the latent width (0 without).
    pub fn latent_params(&self, d_model: usize) -> f64 {
        2.0 * (d_model * self.latent) as f64
    }
}

/// What the performance model needs of an architecture, per layer and in total.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arch {
    /// Vocabulary.
    pub vocab: usize,
    /// Longest context.
    pub max_ctx: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Hidden width.
    pub d_model: usize,
    /// Query heads (tensor parallel splits them).
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query/key width summed over heads (QK^T contracts over it).
    pub qk_dim: usize,
    /// Value width summed over heads (AV produces it).
    pub v_dim: usize,
    /// Key plus value elements per token that context parallel exchanges.
    pub kv_exchange: usize,
    /// Matmul weights of one layer's attention.
    pub attn_params: f64,
    /// Matmul weights of a dense layer's MLP.
    pub dense_mlp_params: f64,
    /// MLP hidden width of a dense layer and its number of up projections (2 gelu, 3 swiglu).
    pub d_ff: usize,
    /// Up projections of the MLP (1 for GELU, 2 for SwiGLU).
    pub mlp_up: usize,
    /// The mixture of experts, if any.
    pub moe: Option<Moe>,
    /// Whether the LM head shares the embedding.
    pub tied: bool,
    /// Sliding-window span and the fraction of layers using it (DeepSeek Sparse Attention's
    /// `index_topk` on every layer: its core attends that many keys a query, the FLOPs of a
    /// window of that span).
    pub window: Option<(usize, f64)>,
    /// Latent attention: weights of the up projections from the compressed latents to per-head
    /// queries, keys and values (what `mla_up_proj` recompute reruns); 0 without latent attention.
    pub mla_up_params: f64,
    /// Latent attention: the up projections' input width (latent ranks weighted by their weights).
    pub mla_up_rank: f64,
    /// A hybrid's layers by kind (each of `layers` is one attention, Mamba-2, MLP or MoE layer);
    /// none for a transformer, whose every layer is attention and an MLP.
    pub hybrid: Option<Hybrid>,
    /// Multi-token prediction, if trained.
    pub mtp: Option<Mtp>,
    /// DeepSeek Sparse Attention's indexer on every attention layer (its core priced as
    /// `window`, `topk` keys on every layer; its weights in `attn_params`), if any.
    pub dsa: Option<Dsa>,
}

impl Arch {
    /// From an engine config, its experts included.
    pub fn from_config(c: &ModelConfig) -> Arch {
        let h = c.d_model as f64;
        let q = c.n_head * c.head_dim;
        let kv = c.n_kv_head * c.head_dim;
        let mlp_up = match c.mlp {
            Mlp::Gelu => 1,
            Mlp::SwiGlu => 2,
        };
        Arch {
            vocab: c.vocab_size,
            max_ctx: c.max_ctx,
            layers: c.n_layer,
            d_model: c.d_model,
            heads: c.n_head,
            kv_heads: c.n_kv_head,
            qk_dim: q,
            v_dim: q,
            kv_exchange: 2 * kv,
            attn_params: h * (q + 2 * kv) as f64 + q as f64 * h,
            dense_mlp_params: (mlp_up + 1) as f64 * h * c.d_ff as f64,
            d_ff: c.d_ff,
            mlp_up,
            moe: c.moe.as_ref().map(|m| Moe {
                experts: m.n_experts,
                top_k: m.top_k,
                shared: m.n_shared,
                expert_d_ff: m.d_expert,
                shared_d_ff: m.d_expert,
                // The planner needs how many layers are MoE, not where they sit.
                dense_layers: c.n_layer - c.moe_layers(),
                every: 1,
                expert_bias: false,
                clamped_activation: false,
                expert_up: 2,
                latent: 0,
            }),
            tied: c.tied_embeddings,
            window: None,
            mla_up_params: 0.0,
            mla_up_rank: 0.0,
            hybrid: None,
            mtp: None,
            dsa: None,
        }
    }

    /// `gdn-hybrid` for a model with Gated DeltaNet layers (no published run validates them
    /// yet), `hybrid` for one with Mamba-2 layers among its attention ones, else `moe` for a
    /// model with experts, else `dense`.
    pub fn kind(&self) -> &'static str {
        match (self.hybrid, self.moe) {
            (Some(hy), _) if hy.gdn > 0 => "gdn-hybrid",
            (Some(_), _) => "hybrid",
            (None, Some(_)) => "moe",
            (None, None) => "dense",
        }
    }

    /// Layers whose MLP is a mixture of experts (a hybrid's MoE layers).
    pub fn moe_layers(&self) -> usize {
        match self.hybrid {
            Some(hy) => hy.moe,
            None => self.moe.map_or(0, |m| (self.layers - m.dense_layers) / m.every),
        }
    }

    /// Per layer, on average, how many attention, Mamba-2, dense MLP and MoE blocks it holds: a
    /// transformer's layer is one attention and one MLP, dense or MoE; a hybrid's layer is one of
    /// the four, in the proportions of its pattern.
    pub fn blocks_per_layer(&self) -> Blocks {
        let l = self.layers as f64;
        match self.hybrid {
            Some(hy) => Blocks {
                attention: hy.attention as f64 / l,
                mamba: hy.mamba as f64 / l,
                gdn: hy.gdn as f64 / l,
                mlp: hy.mlp as f64 / l,
                moe: hy.moe as f64 / l,
            },
            None => {
                let moe = self.moe_layers() as f64 / l;
                Blocks { attention: 1.0, mamba: 0.0, gdn: 0.0, mlp: 1.0 - moe, moe }
            }
        }
    }

    /// Matmul weights of one MoE layer's MLP: router, routed and shared experts (and a latent
    /// MoE's projections).
    pub fn moe_mlp_params(&self) -> f64 {
        self.moe.map_or(0.0, |m| self.moe_block_params(&m, m.experts))
    }

    /// Matmul weights one token passes through in a MoE layer's MLP.
    pub fn moe_active_mlp_params(&self) -> f64 {
        self.moe.map_or(0.0, |m| self.moe_block_params(&m, m.top_k))
    }

    /// Weights of a MoE layer's MLP counting `routed` of its routed experts.
    fn moe_block_params(&self, m: &Moe, routed: usize) -> f64 {
        let h = self.d_model as f64;
        let (mats, io) = (m.expert_matrices(), m.expert_io(self.d_model));
        h * m.experts as f64
            + mats * (io * (m.expert_d_ff * routed) as f64 + h * (m.shared_d_ff * m.shared) as f64)
            + m.latent_params(self.d_model)
    }

    /// All parameters (embedding and head included).
    pub fn total_params(&self) -> f64 {
        let emb = (self.vocab * self.d_model) as f64 * if self.tied { 1.0 } else { 2.0 };
        let mtp = self.mtp.map_or(0.0, |m| m.modules as f64 * self.mtp_module_params(self.moe_mlp_params()));
        self.layer_params(self.moe_mlp_params()) + emb + mtp
    }

    /// Parameters one token passes through (matmuls of the layers and the LM head, and of each
    /// multi-token prediction depth with its LM head).
    pub fn active_matmul_params(&self) -> f64 {
        let head = (self.vocab * self.d_model) as f64;
        let mtp =
            self.mtp.map_or(0.0, |m| m.depths as f64 * (self.mtp_module_params(self.moe_active_mlp_params()) + head));
        self.layer_params(self.moe_active_mlp_params()) + head + mtp
    }

    /// Matmul weights of one multi-token prediction module, its MoE MLP counted as `moe_mlp`: its
    /// attention, its MLP and the projection of [embedding; hidden state] to d_model.
    pub fn mtp_module_params(&self, moe_mlp: f64) -> f64 {
        let mlp = if self.moe.is_some() { moe_mlp } else { self.dense_mlp_params };
        self.attn_params + mlp + 2.0 * (self.d_model * self.d_model) as f64
    }

    /// Matmul weights of every layer, a MoE layer's MLP counted as `moe_mlp`.
    fn layer_params(&self, moe_mlp: f64) -> f64 {
        let Some(hy) = self.hybrid else {
            let dense = (self.layers - self.moe_layers()) as f64 * (self.attn_params + self.dense_mlp_params);
            return dense + self.moe_layers() as f64 * (self.attn_params + moe_mlp);
        };
        hy.attention as f64 * self.attn_params
            + hy.mamba as f64 * hy.mamba_params(self.d_model)
            + hy.gdn as f64 * hy.gdn_params(self.d_model)
            + hy.mlp as f64 * self.dense_mlp_params
            + hy.moe as f64 * moe_mlp
    }

    /// One attention layer's matmul weights on one of `tp` tensor-parallel ranks: split over
    /// them, except DeepSeek Sparse Attention's indexer, which Megatron-Core duplicates on every
    /// rank ([`Dsa`]).
    pub fn attn_params_on(&self, tp: usize) -> f64 {
        let indexer = self.indexer_params();
        (self.attn_params - indexer) / tp as f64 + indexer
    }

    /// Of `attn_params`, one layer's DeepSeek Sparse Attention indexer weights; 0 without one.
    pub fn indexer_params(&self) -> f64 {
        self.dsa.map_or(0.0, |d| d.params(self.d_model))
    }

    /// Forward FLOPs per token of one attention layer's DeepSeek Sparse Attention indexer at
    /// context `s`: every causal key scored (s / 2 a query on average); 0 without one.
    pub fn indexer_flops_per_token(&self, s: usize) -> f64 {
        self.dsa.map_or(0.0, |d| s as f64 / 2.0 * d.flops_per_pair())
    }

    /// Attention layers (every layer of a transformer), and one per multi-token prediction depth.
    pub fn attention_layers(&self) -> usize {
        self.hybrid.map_or(self.layers, |hy| hy.attention) + self.mtp.map_or(0, |m| m.depths)
    }

    /// Mean attention span of a token at context `s` for causal attention, over all layers.
    pub fn mean_causal_span(&self, s: usize) -> f64 {
        let full = s as f64 / 2.0;
        match self.window {
            Some((w, frac)) => (1.0 - frac) * full + frac * (w.min(s) as f64).min(full),
            None => full,
        }
    }

    /// Model FLOPs per token at context `s` (the MFU numerator): 6 x active matmul weights plus
    /// the causal attention scores and values, 6 x span x (qk + v) per attention layer (and 3 x
    /// a DeepSeek Sparse Attention indexer's scores: forward, and backward at twice it; 4, not 6,
    /// x its projections' weights, whose input is detached), and 3 x each Mamba-2 mixer's scan
    /// and each Gated DeltaNet mixer's delta rule.
    pub fn model_flops_per_token(&self, s: usize) -> f64 {
        let scans = self.hybrid.map_or(0.0, |hy| {
            3.0 * (hy.mamba as f64 * hy.scan_flops_per_token() + hy.gdn as f64 * hy.gdn_flops_per_token())
        });
        let layers = self.attention_layers() as f64;
        // The indexer's projections take a detached input: forward and weight gradient only.
        let indexer_params = self.indexer_params();
        6.0 * self.active_matmul_params()
            + 6.0 * layers * self.mean_causal_span(s) * (self.qk_dim + self.v_dim) as f64
            + scans
            + layers * (3.0 * self.indexer_flops_per_token(s) - 2.0 * indexer_params)
    }
}

impl ModelFile {
    fn has_moe_fields(&self) -> bool {
        self.experts.is_some()
            || self.experts_per_token.is_some()
            || self.shared_experts.is_some()
            || self.expert_d_ff.is_some()
            || self.dense_layers.is_some()
            || self.moe_every.is_some()
            || self.shared_expert_d_ff.is_some()
            || self.expert_bias.is_some()
            || self.activation_clamp.is_some()
            || self.moe_latent.is_some()
    }

    fn dense_config(&self, ctx: usize) -> Result<ModelConfig> {
        if self.heads == 0 {
            bail!("model {}: heads must be positive", self.name);
        }
        let mut c = match self.arch.as_str() {
            "gpt" => {
                let mut c = ModelConfig::gpt2(self.vocab, ctx, self.layers, self.heads, self.d_model);
                c.family = "gpt".into();
                c.d_ff = self.d_ff.unwrap_or(4 * self.d_model);
                c
            }
            _ => {
                let d_ff = match (self.d_ff, self.expert_d_ff) {
                    (Some(f), _) => f,
                    (None, Some(f)) if self.arch == "moe" || self.arch == "hybrid" => f,
                    (None, None) if self.arch == "hybrid" => self.d_model,
                    _ => bail!("model {}: a {} model needs d_ff (the SwiGLU hidden width)", self.name, self.arch),
                };
                ModelConfig::llama(
                    self.vocab,
                    ctx,
                    self.layers,
                    self.heads,
                    self.kv_heads.unwrap_or(self.heads),
                    self.d_model,
                    d_ff,
                )
            }
        };
        if let Some(kv) = self.kv_heads {
            c.n_kv_head = kv;
        }
        if let Some(hd) = self.head_dim {
            c.head_dim = hd;
        }
        if let Some(t) = self.tied {
            c.tied_embeddings = t;
        }
        c.validate().map_err(|e| anyhow!("model {}: {e}", self.name))?;
        Ok(c)
    }

    fn moe(&self) -> Result<Moe> {
        let need = |v: Option<usize>, what: &str| {
            v.filter(|&x| x > 0).ok_or_else(|| anyhow!("model {}: a moe model needs {what} (positive)", self.name))
        };
        let expert_d_ff = need(self.expert_d_ff, "expert_d_ff")?;
        let m = Moe {
            experts: need(self.experts, "experts")?,
            top_k: need(self.experts_per_token, "experts_per_token")?,
            shared: self.shared_experts.unwrap_or(0),
            expert_d_ff,
            shared_d_ff: self.shared_expert_d_ff.unwrap_or(expert_d_ff),
            dense_layers: self.dense_layers.unwrap_or(0),
            every: self.moe_every.unwrap_or(1),
            expert_bias: self.expert_bias.unwrap_or(false),
            clamped_activation: self.activation_clamp.is_some(),
            expert_up: if self.gated.unwrap_or(true) { 2 } else { 1 },
            latent: self.moe_latent.unwrap_or(0),
        };
        if m.top_k > m.experts {
            bail!("model {}: experts_per_token {} exceeds experts {}", self.name, m.top_k, m.experts);
        }
        if m.dense_layers > self.layers {
            bail!("model {}: dense_layers {} exceeds layers {}", self.name, m.dense_layers, self.layers);
        }
        if m.every == 0 || m.shared_d_ff == 0 {
            bail!("model {}: moe_every and shared_expert_d_ff must be positive", self.name);
        }
        if (m.dense_layers > 0 || m.every > 1) && self.d_ff.is_none() {
            bail!(
                "model {}: dense layers (dense_layers, moe_every) need d_ff (the dense layers' SwiGLU width)",
                self.name
            );
        }
        Ok(m)
    }

    /// A hybrid's layer counts from its pattern, and its Mamba-2 widths where it has mixers.
    fn hybrid(&self) -> Result<Hybrid> {
        let Some(p) = self.pattern.as_deref() else {
            bail!(
                "model {}: a hybrid model needs pattern (e.g. \"M-M*-\": M Mamba-2, G Gated DeltaNet, * attention, - MLP, E experts)",
                self.name
            );
        };
        if let Some(c) = p.chars().find(|c| !matches!(c, 'M' | 'G' | '*' | '-' | 'E')) {
            bail!(
                "model {}: pattern has '{c}'; a layer is M (Mamba-2), G (Gated DeltaNet), * (attention), - (MLP) or E (experts)",
                self.name
            );
        }
        if p.chars().count() != self.layers {
            bail!("model {}: pattern has {} layers, layers says {}", self.name, p.chars().count(), self.layers);
        }
        let count = |k: char| p.chars().filter(|&c| c == k).count();
        let (mamba, gdn) = (count('M'), count('G'));
        let need = |v: Option<usize>, layers: usize, what: &str| match v.filter(|&x| x > 0) {
            Some(x) => Ok(x),
            None if layers == 0 => Ok(0),
            None => Err(anyhow!("model {}: {what} (positive)", self.name)),
        };
        let m = |v, what: &str| need(v, mamba, &format!("Mamba-2 layers (M) need {what}"));
        let g = |v, what: &str| need(v, gdn, &format!("Gated DeltaNet layers (G) need {what}"));
        let hy = Hybrid {
            attention: count('*'),
            mamba,
            mlp: count('-'),
            moe: count('E'),
            mamba_heads: m(self.mamba_heads, "mamba_heads")?,
            mamba_head_dim: m(self.mamba_head_dim, "mamba_head_dim")?,
            mamba_state: m(self.mamba_state, "mamba_state")?,
            mamba_groups: m(self.mamba_groups, "mamba_groups")?,
            gdn,
            gdn_key_heads: g(self.gdn_key_heads, "gdn_key_heads")?,
            gdn_value_heads: g(self.gdn_value_heads, "gdn_value_heads")?,
            gdn_key_dim: g(self.gdn_key_head_dim, "gdn_key_head_dim")?,
            gdn_value_dim: g(self.gdn_value_head_dim, "gdn_value_head_dim")?,
            kda_gate_rank: self.kda_gate_rank.unwrap_or(0),
        };
        if hy.kda_gate_rank > 0 && gdn == 0 {
            bail!("model {}: kda_gate_rank describes G (Kimi Delta Attention) layers; the pattern has none", self.name);
        }
        if gdn > 0 && !hy.gdn_value_heads.is_multiple_of(hy.gdn_key_heads) {
            bail!(
                "model {}: gdn_value_heads {} is not a multiple of gdn_key_heads {}",
                self.name,
                hy.gdn_value_heads,
                hy.gdn_key_heads
            );
        }
        if hy.mlp > 0 && self.d_ff.is_none() {
            bail!("model {}: dense MLP layers (-) need d_ff", self.name);
        }
        if hy.moe == 0 && self.has_moe_fields() {
            bail!("model {}: expert fields without an E layer in the pattern", self.name);
        }
        Ok(hy)
    }

    /// Apply multi-head latent attention widths, if given, to `a`.
    fn apply_mla(&self, a: &mut Arch) -> Result<()> {
        let Some(kv_rank) = self.kv_lora_rank else {
            return Ok(());
        };
        let (Some(nope), Some(rope), Some(v)) = (self.qk_nope_dim, self.qk_rope_dim, self.v_head_dim) else {
            bail!("model {}: latent attention needs qk_nope_dim, qk_rope_dim and v_head_dim", self.name);
        };
        let (h, n) = (self.d_model as f64, self.heads as f64);
        let qk = (nope + rope) as f64;
        let q_params = match self.q_lora_rank.unwrap_or(0) {
            0 => h * n * qk,
            r => h * r as f64 + r as f64 * n * qk,
        };
        let kv_params = h * (kv_rank + rope) as f64 + kv_rank as f64 * n * (nope + v) as f64;
        a.attn_params = q_params + kv_params + n * v as f64 * h;
        let kv_up = kv_rank as f64 * n * (nope + v) as f64;
        let (q_up, q_rank) = match self.q_lora_rank.unwrap_or(0) {
            0 => (0.0, 0.0),
            r => (r as f64 * n * qk, r as f64),
        };
        a.mla_up_params = q_up + kv_up;
        a.mla_up_rank = (q_up * q_rank + kv_up * kv_rank as f64) / a.mla_up_params;
        a.qk_dim = self.heads * (nope + rope);
        a.v_dim = self.heads * v;
        // Context parallel moves the expanded per-head keys and values (Megatron/TE).
        a.kv_exchange = a.qk_dim + a.v_dim;
        Ok(())
    }

    /// The arch is one the planner prices, and the file's fields belong to it: no expert fields
    /// on a dense arch, no hybrid fields outside a hybrid.
    fn check_arch_kind(&self) -> Result<()> {
        let dense_arch = matches!(self.arch.as_str(), "gpt" | "llama");
        if !dense_arch && self.arch != "moe" && self.arch != "hybrid" {
            bail!("model {}: arch must be \"gpt\", \"llama\", \"moe\" or \"hybrid\", got \"{}\"", self.name, self.arch);
        }
        if dense_arch && self.has_moe_fields() {
            bail!(
                "model {}: arch \"{}\" is dense but the file sets expert fields; use arch = \"moe\" or remove them",
                self.name,
                self.arch
            );
        }
        if self.has_hybrid_fields() && self.arch != "hybrid" {
            bail!(
                "model {}: pattern, mamba_*, gdn_* and kda_* fields describe a hybrid; use arch = \"hybrid\" or remove them",
                self.name
            );
        }
        Ok(())
    }

    /// Whether the file sets any field only a hybrid has (its pattern, Mamba-2, Gated DeltaNet
    /// or Kimi Delta Attention widths).
    fn has_hybrid_fields(&self) -> bool {
        self.pattern.is_some()
            || self.mamba_heads.is_some()
            || self.mamba_head_dim.is_some()
            || self.mamba_state.is_some()
            || self.mamba_groups.is_some()
            || self.gdn_key_heads.is_some()
            || self.gdn_value_heads.is_some()
            || self.gdn_key_head_dim.is_some()
            || self.gdn_value_head_dim.is_some()
            || self.kda_gate_rank.is_some()
    }

    /// Build the architecture, checking it.
    pub fn to_arch(&self) -> Result<Arch> {
        self.check_arch_kind()?;
        let ctx = self.ctx.unwrap_or(4096);
        if ctx == 0 {
            bail!("model {}: ctx (the context length) must be positive; give the longest sequence it trains on, or leave it out for 4096", self.name);
        }
        let c = self.dense_config(ctx)?;
        let mut a = Arch::from_config(&c);
        if self.gated == Some(false) && self.arch != "gpt" {
            a.mlp_up = 1;
            a.dense_mlp_params = 2.0 * (self.d_model * a.d_ff) as f64;
        }
        if self.arch == "hybrid" {
            a.hybrid = Some(self.hybrid()?);
        }
        if self.arch == "moe" || a.hybrid.is_some_and(|hy| hy.moe > 0) {
            a.moe = Some(self.moe()?);
            if self.d_ff.is_none() {
                a.dense_mlp_params = 0.0;
            }
        }
        self.apply_mla(&mut a)?;
        if self.attn_output_gate == Some(true) {
            // The gate's projection is as wide as the queries (Qwen3-Next's q_proj is 2x wide).
            a.attn_params += (self.d_model * a.qk_dim) as f64;
        }
        if let Some(d) = self.mtp_layers.filter(|&d| d > 0) {
            a.mtp = Some(Mtp { depths: d, modules: if self.mtp_repeated.unwrap_or(false) { 1 } else { d } });
        }
        if let Some(w) = self.sliding_window {
            let frac = self.sliding_fraction.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&frac) {
                bail!("model {}: sliding_fraction must be within 0..1, got {frac}", self.name);
            }
            a.window = Some((w, frac));
        }
        if let Some(d) = self.dsa()? {
            // Every layer's core attends index_topk keys: a window of that span on every layer.
            a.window = Some((d.topk, 1.0));
            a.attn_params += d.params(self.d_model);
            a.dsa = Some(d);
        }
        Ok(a)
    }

    /// DeepSeek Sparse Attention's indexer, where the file gives its fields: all three, positive,
    /// on latent attention with a query latent (the indexer's queries are projected from it) and
    /// no sliding window (both would narrow the keys a query attends).
    fn dsa(&self) -> Result<Option<Dsa>> {
        let fields = [self.index_heads, self.index_head_dim, self.index_topk];
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        let [Some(heads), Some(head_dim), Some(topk)] = fields.map(|f| f.filter(|&x| x > 0)) else {
            bail!(
                "model {}: DeepSeek Sparse Attention needs index_heads, index_head_dim and index_topk (all positive)",
                self.name
            );
        };
        let q_rank = self.q_lora_rank.filter(|&r| r > 0 && self.kv_lora_rank.is_some());
        let Some(q_rank) = q_rank else {
            bail!(
                "model {}: index_heads/index_head_dim/index_topk (DeepSeek Sparse Attention) need latent attention with a query latent (q_lora_rank, kv_lora_rank), which the indexer projects its queries from",
                self.name
            );
        };
        if self.sliding_window.is_some() {
            bail!(
                "model {}: index_topk (DeepSeek Sparse Attention) and sliding_window cannot both narrow attention",
                self.name
            );
        }
        Ok(Some(Dsa { heads, head_dim, topk, q_rank }))
    }
}

#[derive(Deserialize)]
struct PresetList {
    model: Vec<ModelFile>,
}

fn planner_presets() -> Vec<ModelFile> {
    let list: PresetList = toml::from_str(PRESETS_TOML).expect("data/models.toml is valid");
    list.model
}

/// A named model and its architecture.
#[derive(Clone, Debug)]
pub struct Model {
    /// Preset name or file name.
    pub name: String,
    /// Where its numbers came from.
    pub source: String,
    /// What was assumed reading it (a Hugging Face config of a family the planner does not know
    /// by name); None for presets, TOML files and the families it knows.
    pub note: Option<String>,
    /// The architecture as the performance model sees it.
    pub arch: Arch,
}

impl Model {
    /// The class of [`crate::calib::Accuracy`] the model's predictions fall in ([`Arch::kind`]).
    pub fn kind(&self) -> &'static str {
        self.arch.kind()
    }
}

/// The sequence length a job uses when none is given: the model's context, at most 4096.
pub fn default_seq(m: &Model) -> usize {
    m.arch.max_ctx.min(4096)
}

/// Every preset name the planner accepts (planner presets, then engine presets).
pub fn preset_names() -> Vec<String> {
    let mut v: Vec<String> = planner_presets().into_iter().map(|m| m.name).collect();
    for n in ModelConfig::preset_names() {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    }
    v
}

/// Resolve `--model`: a preset name, a path to a TOML model file, a Hugging Face `config.json`
/// (or the directory holding it), or a preset's name as Hugging Face writes it
/// (`meta-llama/Llama-3.1-70B-Instruct` is `llama3-70b`: [`crate::names::model_key`]).
pub fn resolve(spec: &str) -> Result<Model> {
    if let Some(m) = preset(&spec.to_ascii_lowercase()) {
        return m;
    }
    let path = Path::new(spec);
    if spec.ends_with(".json") || path.join("config.json").is_file() {
        return load_hf_config(path);
    }
    if spec.ends_with(".toml") || path.exists() {
        return load_file(path);
    }
    if let Some(name) = crate::names::versioned_preset(spec) {
        return preset(name).expect("a versioned name's preset resolves");
    }
    let names = preset_names();
    let key = crate::names::model_key(spec);
    if let Some(name) = names.iter().find(|n| crate::names::model_key(n) == key) {
        return preset(name).expect("a listed preset resolves");
    }
    Err(unknown_model(spec, " (or pass a TOML model file, or a Hugging Face config.json or the directory holding it)"))
}

/// The error for a model name no preset answers to: the closest preset, every preset, and `hint`.
fn unknown_model(spec: &str, hint: &str) -> anyhow::Error {
    let names = preset_names();
    anyhow!(
        "unknown model '{spec}'{}; presets: {}{hint}",
        crate::names::suggestion(spec, names.iter().map(String::as_str)),
        names.join(", ")
    )
}

/// The preset named exactly `name` (lower case), planner presets first.
fn preset(name: &str) -> Option<Result<Model>> {
    if let Some(m) = planner_presets().into_iter().find(|m| m.name == name) {
        return Some(m.to_arch().map(|arch| Model {
            name: m.name.clone(),
            source: m.source.clone(),
            note: None,
            arch,
        }));
    }
    ModelConfig::preset(name).map(|c| {
        Ok(Model {
            name: name.into(),
            source: "anychip-model-config engine preset".into(),
            note: None,
            arch: Arch::from_config(&c),
        })
    })
}

/// Read a Hugging Face `config.json` (or the checkpoint directory holding one) as a model, named
/// after its directory.
pub fn load_hf_config(path: &Path) -> Result<Model> {
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("cannot read model config {}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("model config {}: not valid JSON ({e})", file.display()))?;
    let dir_name = file.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = if stem == "config" { dir_name.unwrap_or(stem) } else { stem };
    let m = crate::hf_config::model_file(&v, &name).map_err(|e| anyhow!("model config {}: {e}", file.display()))?;
    let arch = m.to_arch().map_err(|e| anyhow!("model config {}: {e}", file.display()))?;
    Ok(Model { name: m.name, source: format!("{} ({})", m.source, file.display()), note: m.note, arch })
}

/// The engine's [`ModelConfig`] of a dense planner preset (for ports that price a real step, such
/// as `sim`), at the preset's longest context. MoE planner presets are refused: their engine
/// twins are the engine's own MoE presets.
pub fn engine_config(spec: &str) -> Result<ModelConfig> {
    let lower = spec.to_ascii_lowercase();
    if let Some(c) = ModelConfig::preset(&lower) {
        return Ok(c);
    }
    let Some(m) = planner_presets().into_iter().find(|m| m.name == lower) else {
        return Err(unknown_model(spec, ""));
    };
    if m.has_moe_fields() {
        bail!("{spec} is a mixture-of-experts planner preset; use an engine preset (moe-tiny, qwen3-30b-a3b, ernie4.5-21b-a3b)");
    }
    m.dense_config(m.ctx.unwrap_or(4096))
}

/// Read a model file.
pub fn load_file(path: &Path) -> Result<Model> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let mut m: ModelFile = toml::from_str(&text)
        .map_err(|e| anyhow!("model file {}: {}", path.display(), crate::chips::one_line(&e.to_string())))?;
    if m.name.is_empty() {
        m.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    }
    let arch = m.to_arch().map_err(|e| anyhow!("model file {}: {e}", path.display()))?;
    Ok(Model { name: m.name, source: m.source, note: None, arch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves() {
        for n in preset_names() {
            let m = resolve(&n).unwrap();
            assert!(m.arch.total_params() > 0.0, "{n}");
        }
    }

    #[test]
    fn names_as_hugging_face_writes_them_resolve_to_the_preset() {
        for (spelling, preset) in [
            ("meta-llama/Llama-3.1-405B", "llama3-405b"),
            ("Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
            // Mistral 7B v0.1 slides a 4,096-token window over every layer; v0.3 does not.
            ("mistralai/Mistral-7B-v0.1", "mistral-7b-sliding"),
            ("mistralai/Mistral-7B-Instruct-v0.1", "mistral-7b-sliding"),
            ("mistralai/Mistral-7B-v0.3", "mistral-7b"),
        ] {
            assert_eq!(resolve(spelling).unwrap().name, preset, "{spelling}");
        }
        let e = resolve("qwen3-31b").unwrap_err().to_string();
        assert!(e.starts_with("unknown model 'qwen3-31b' (did you mean 'qwen3-32b'?)"), "{e}");
    }

    #[test]
    fn presets_sharing_a_name_key_share_their_shapes() {
        // A spelling that meets two presets' key resolves to the first; that is only sound when
        // both are the same architecture (the planner's and the engine's ERNIE 4.5 21B-A3B).
        let names = preset_names();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                if crate::names::model_key(a) == crate::names::model_key(b) {
                    assert_eq!(resolve(a).unwrap().arch, resolve(b).unwrap().arch, "{a} and {b}");
                }
            }
        }
    }

    #[test]
    fn published_parameter_counts() {
        // (preset, published total parameters, published active parameters)
        let cases = [
            ("gpt3-175b", 175e9, 175e9),
            // MegaScale's Table 1 models (named by size: 175B and 530B).
            ("megascale-175b", 175e9, 175e9),
            ("megascale-530b", 530e9, 530e9),
            ("llama2-7b", 6.74e9, 6.74e9),
            ("llama3-8b", 8.03e9, 8.03e9),
            ("llama3-405b", 405.9e9, 405.9e9),
            ("qwen3-32b", 32.8e9, 32.8e9),
            ("deepseek-v3", 671e9, 37e9),
            // The report's 671B main model plus its 14B multi-token-prediction module.
            ("deepseek-v3-mtp", 685e9, 37e9),
            // V3's 671B with 61 lightning indexers of 14M (the checkpoint's main model: 671.9B).
            ("deepseek-v3.2", 671.9e9, 37e9),
            // BloombergGPT's Appendix A.5 count; the Zero Bubble paper's Table 3 models.
            ("bloomberggpt-50b", 50.56e9, 50.56e9),
            ("zb-1.5b", 1.5e9, 1.5e9),
            ("zb-6.2b", 6.2e9, 6.2e9),
            ("zb-14.6b", 14.6e9, 14.6e9),
            ("zb-28.3b", 28.3e9, 28.3e9),
            ("kimi-k2", 1.04e12, 32.6e9),
            ("mixtral-8x22b", 141e9, 39e9),
            ("mixtral-8x7b", 46.7e9, 12.9e9),
            ("deepseek-v2", 236e9, 21e9),
            ("deepseek-v2-lite", 15.7e9, 2.4e9),
            ("llama3.2-1b", 1.24e9, 1.24e9),
            ("llama3.2-3b", 3.21e9, 3.21e9),
            ("qwen2.5-7b", 7.61e9, 7.61e9),
            ("qwen2.5-72b", 72.7e9, 72.7e9),
            // NVIDIA: 31.6B total, 3.2B active (3.6B with the embeddings).
            ("nemotron-3-nano", 31.6e9, 3.4e9),
            // 123.6B in the checkpoint (its MTP module's 2.9B included); A12B without MTP, whose
            // two depths and LM heads add 1.6B a token.
            ("nemotron-3-super", 123.6e9, 13.6e9),
            // Qwen: 80B total, 3B activated (the checkpoint: 79.67B without its MTP module).
            ("qwen3-next-80b-a3b", 79.7e9, 3.9e9),
            ("qwen2-57b-a14b", 57.4e9, 14.2e9),
            ("llama4-maverick", 400e9, 17e9),
            ("qwen3-30b-a3b", 30.5e9, 3.3e9),
            ("qwen3-235b-a22b", 235e9, 22e9),
            ("gpt-oss-120b", 116.8e9, 5.1e9),
            ("gpt-oss-20b", 20.9e9, 3.6e9),
            ("ernie-4.5-21b-a3b", 21e9, 3e9),
            ("ernie-4.5-300b-a47b", 300e9, 47e9),
            // The MindSpeed-LLM table's dense models (their Hugging Face model cards' sizes).
            ("qwen1.5-7b", 7.72e9, 7.72e9),
            ("qwen1.5-14b", 14.2e9, 14.2e9),
            ("qwen1.5-32b", 32.5e9, 32.5e9),
            ("qwen1.5-72b", 72.3e9, 72.3e9),
            ("qwen2.5-14b", 14.7e9, 14.7e9),
            ("qwen2.5-32b", 32.5e9, 32.5e9),
            ("yi-34b", 34.4e9, 34.4e9),
            ("codellama-34b", 33.7e9, 33.7e9),
            ("internlm2-20b", 19.9e9, 19.9e9),
            ("baichuan2-13b", 13.9e9, 13.9e9),
            ("gemma2-9b", 9.24e9, 9.24e9),
            ("gemma2-27b", 27.2e9, 27.2e9),
            ("glm4-9b", 9.4e9, 9.4e9),
            ("chatglm3-6b", 6.24e9, 6.24e9),
            ("mistral-7b-sliding", 7.24e9, 7.24e9),
        ];
        for (n, total, active) in cases {
            let a = resolve(n).unwrap().arch;
            let got = a.total_params();
            assert!((got / total - 1.0).abs() < 0.05, "{n}: total {got:.4e} vs {total:.4e}");
            // Active parameters: the published figure counts the embedding once (or not at all).
            let act = a.active_matmul_params();
            assert!((act / active - 1.0).abs() < 0.15, "{n}: active {act:.4e} vs {active:.4e}");
        }
    }

    #[test]
    fn interleaved_moe_layers_need_a_dense_width_and_a_positive_interval() {
        let f = |every: usize, d_ff: Option<usize>| ModelFile {
            name: "x".into(),
            arch: "moe".into(),
            vocab: 1000,
            layers: 4,
            heads: 4,
            d_model: 256,
            d_ff,
            experts: Some(8),
            experts_per_token: Some(2),
            expert_d_ff: Some(128),
            moe_every: Some(every),
            ..Default::default()
        };
        assert_eq!(f(2, Some(512)).to_arch().unwrap().moe_layers(), 2);
        assert_eq!(f(1, None).to_arch().unwrap().moe_layers(), 4);
        let e = f(2, None).to_arch().unwrap_err().to_string();
        assert!(e.contains("need d_ff"), "{e}");
        let e = f(0, Some(512)).to_arch().unwrap_err().to_string();
        assert!(e.contains("moe_every"), "{e}");
    }

    #[test]
    fn a_hybrid_pattern_is_checked_against_its_fields() {
        let f = |pattern: &str, layers: usize, heads: Option<usize>| ModelFile {
            name: "x".into(),
            arch: "hybrid".into(),
            vocab: 1000,
            layers,
            heads: 4,
            d_model: 256,
            d_ff: Some(512),
            pattern: Some(pattern.into()),
            mamba_heads: heads,
            mamba_head_dim: Some(64),
            mamba_state: Some(16),
            mamba_groups: Some(1),
            ..Default::default()
        };
        let hy = f("M*-M", 4, Some(8)).to_arch().unwrap().hybrid.unwrap();
        assert_eq!((hy.mamba, hy.attention, hy.mlp, hy.moe), (2, 1, 1, 0));
        let gdn = |key_heads| ModelFile {
            gdn_key_heads: Some(key_heads),
            gdn_value_heads: Some(8),
            gdn_key_head_dim: Some(32),
            gdn_value_head_dim: Some(32),
            ..f("G*-M", 4, Some(8))
        };
        let hy = gdn(4).to_arch().unwrap().hybrid.unwrap();
        assert_eq!((hy.gdn, hy.mamba, hy.attention, hy.mlp), (1, 1, 1, 1));
        for (file, want) in [
            (f("M*-M", 5, Some(8)), "pattern has 4 layers, layers says 5"),
            (f("M*-X", 4, Some(8)), "pattern has 'X'"),
            (f("M*-M", 4, None), "need mamba_heads"),
            (f("M*-E", 4, Some(8)), "a moe model needs expert_d_ff"),
            (ModelFile { pattern: None, ..f("M*-M", 4, Some(8)) }, "needs pattern"),
            (ModelFile { arch: "llama".into(), ..f("M*-M", 4, Some(8)) }, "use arch = \"hybrid\""),
            (f("G*-M", 4, Some(8)), "Gated DeltaNet layers (G) need gdn_key_heads"),
            (gdn(3), "gdn_value_heads 8 is not a multiple of gdn_key_heads 3"),
        ] {
            let e = file.to_arch().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_model_file_gives_deepseek_sparse_attention_as_its_config_json_does() {
        // The deepseek-v3 preset with DeepSeek-V3.2's indexer fields is what the published
        // DeepSeek-V3.2 config.json reads as.
        let v3 = planner_presets().into_iter().find(|m| m.name == "deepseek-v3").unwrap();
        let with = |heads, head_dim, topk| ModelFile {
            index_heads: heads,
            index_head_dim: head_dim,
            index_topk: topk,
            ..v3.clone()
        };
        let file = with(Some(64), Some(128), Some(2048)).to_arch().unwrap();
        let path = format!("{}/tests/hf_configs/DeepSeek-V3.2", env!("CARGO_MANIFEST_DIR"));
        assert_eq!(file, resolve(&path).unwrap().arch);
        // The preset is the published config's architecture, and Hugging Face's name finds it.
        assert_eq!(resolve("deepseek-v3.2").unwrap().arch, file);
        assert_eq!(resolve("deepseek-ai/DeepSeek-V3.2").unwrap().arch, file);
        // A dense llama (no latent attention) with index fields is refused in one line, as are
        // partial fields and a sliding window beside index_topk.
        let llama =
            ModelFile { index_heads: Some(4), index_head_dim: Some(32), index_topk: Some(64), ..tiny_llama_file() };
        for (f, want) in [
            (llama.clone(), "need latent attention with a query latent (q_lora_rank, kv_lora_rank)"),
            // Latent keys and values but a full-rank query: no latent for the indexer to read.
            (
                ModelFile {
                    kv_lora_rank: Some(64),
                    qk_nope_dim: Some(32),
                    qk_rope_dim: Some(16),
                    v_head_dim: Some(32),
                    ..llama.clone()
                },
                "need latent attention",
            ),
            (with(Some(64), None, Some(2048)), "needs index_heads, index_head_dim and index_topk"),
            (with(Some(64), Some(128), Some(0)), "(all positive)"),
            (ModelFile { sliding_window: Some(4096), ..with(Some(64), Some(128), Some(2048)) }, "sliding_window"),
        ] {
            let e = f.to_arch().unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
    }

    /// A two-layer llama model file, 256 wide, for tests that add the fields they check.
    fn tiny_llama_file() -> ModelFile {
        ModelFile {
            name: "x".into(),
            arch: "llama".into(),
            vocab: 1000,
            layers: 2,
            heads: 4,
            d_model: 256,
            d_ff: Some(512),
            ..Default::default()
        }
    }

    #[test]
    fn moe_fields_on_a_dense_arch_are_refused() {
        let f = ModelFile { experts: Some(8), ..tiny_llama_file() };
        let e = f.to_arch().unwrap_err().to_string();
        assert!(e.contains("is dense") && e.contains("arch = \"moe\""), "{e}");
    }
}
