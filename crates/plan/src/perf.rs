//! Analytic performance model of one training step of a decoder transformer (dense or mixture of
//! experts) or a hybrid of Mamba-2, attention and expert layers on one chip kind, under a software
//! stack ([`Stack`]). Layers are priced as blocks: a transformer layer is an attention block and an
//! MLP block; a hybrid's layer is one attention, Mamba-2, MLP or MoE block, in its pattern's
//! proportions.
//!
//! Notation (Korthikanti et al. 2022): s sequence, b micro-batch, h d_model, l layers, V vocabulary;
//! t tensor-, p pipeline-, d data-, c context-, e expert-parallel degree; m micro-batches per step,
//! v interleaved chunks per stage.
//!
//! Step = m x t_mb + (p-1)/v x t_mb + exposed data-parallel time + optimizer, where t_mb is one
//! micro-batch through the stage that binds: the last (its layers plus the LM head), or under an
//! uneven split ([`Layout::stage_split`]) a stage without the head where it holds more work:
//! - GEMMs at peak x eff(intensity): eff = gemm_eff x I/(I + knee x ridge), I the GEMM's arithmetic
//!   intensity (FLOP/byte), ridge = peak / memory bandwidth of the chip. Small GEMMs (thin tensor
//!   parallel slices, few tokens per expert) fall off the roof on every chip in the same way, and no
//!   GEMM beats streaming its operands and result through memory once (the roofline floor); FP8
//!   GEMMs run at the FP8 peak times `fp8_gemm_eff` (the scaling and casting TE adds), FP4 GEMMs at
//!   the FP4 peak times `fp4_gemm_eff` (fitted apart: block scales, Hadamard transforms), while
//!   attention, the LM head and element-wise work stay BF16.
//! - Tensor work (GEMMs, attention, softmax exponentials) at the clock the chip sustains within its
//!   board power ([`power_clock`]): below `power_w_per_tflop` board watts per TFLOP/s, the cube
//!   root of the shortfall.
//! - Fused attention at `attn_eff` of the BF16 peak (backward 2.5x forward; cuDNN and
//!   FlashAttention-3-class kernels, the cuDNN of 2025 `attn_gain_2025` faster, a
//!   FlashAttention-2-class stack at the chip's `sync_mma_fraction` of that); its softmax
//!   exponentials at the chip's SFU rate run under the products on asynchronous-MMA kernels of
//!   chips that have them (the slower sets the time) and after them on FlashAttention-2-class
//!   ones and on older chips; unfused attention as batched GEMMs of width head_dim plus its
//!   softmax traffic. The Mamba-2 and Gated DeltaNet scans cost the larger of their FLOPs at
//!   `attn_eff` and their kernels' traffic.
//! - Element-wise kernels: stored-activation bytes x passes / memory bandwidth.
//! - Collectives over the topology: inside the scale-up domain at its link rate, across domains at
//!   the scale-out rate of the NICs the group's members in one domain share; a per-hop latency.
//!   What a stack overlaps is hidden up to the compute it can hide behind, and even then costs
//!   (1 - overlap_hidden) of itself (contention for SMs and memory).
//! - Recompute: selective (the attention core), full (the layer's forward), or Megatron-Core's
//!   modules on top ([`Modules`]: norms, expert activations, latent up projections, the dense MLP).
//! - Activation offload: the offloaded layers' stored bytes to host memory in forward and back in
//!   backward over the chip's host link, on copy engines: only what outlasts the compute shows.
//!
//! Memory per chip: Korthikanti for activations (less what is offloaded), ZeRO (Rajbhandari et
//! al.) for states, experts sharded over expert parallel, ZeRO-3 gathered-weight buffers from the
//! same assumption as its time.

use crate::calib::Constants;
use crate::chips::{Chip, GIB};
use crate::model::{Arch, Moe};
use crate::stack::Stack;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Activation recomputation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep every activation.
    None,
    /// Recompute only the attention core (Korthikanti's selective recompute).
    Selective,
    /// Keep only each layer's input and rerun the layer's forward in backward.
    Full,
}

impl Recompute {
    /// Parse `none`, `selective` or `full`.
    pub fn parse(s: &str) -> Result<Recompute> {
        Ok(match s {
            "none" => Recompute::None,
            "selective" => Recompute::Selective,
            "full" => Recompute::Full,
            other => bail!("recompute must be none, selective or full, got '{other}'"),
        })
    }
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        })
    }
}

/// Pipeline schedule of a layout with pipeline parallelism. Per micro-batch and stage, F is the
/// forward, B the backward for the inputs and W the backward for the weights (the weight-gradient
/// GEMMs, as long as the forward's linears); a stage's micro-batch is F + B + W.
/// - `1f1b`: one forward, one backward (Narayanan et al. 2021), interleaved over `v` chunks when
///   v > 1: (p - 1)(F + B + W) / v of bubble, min(m, p) micro-batches in flight on the first stage.
/// - `zb-h1`: Zero Bubble's ZB-H1 (Qi et al., ICLR 2024, section 3.1): W is deferred into the
///   cool-down's idle slots, (p - 1)(F + B - W) of bubble, the same memory as 1F1B.
/// - `zb-h2`: ZB-H2 (same paper): more warm-up forwards fill the rest, (p - 1)(F + B - 2W) (none
///   below zero), up to 2p - 1 micro-batches in flight on the first stage.
/// - `dualpipe`: DeepSeek-V3's DualPipe (DeepSeek-V3 report, section 3.2.1 and Table 2):
///   micro-batches fed from both ends, each rank holding two chunks (its stage of either
///   direction) and overlapping one chunk's forward with another's backward: (p/2 - 1)(F&B + B -
///   3W) of bubble in chunk times (F&B = F + B + W, B the full backward), p + 1 micro-batches in
///   flight, and the model's parameters twice (weights and gradients; one optimizer state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// One forward, one backward (interleaved when `v` > 1).
    #[default]
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// Zero Bubble ZB-H1.
    #[serde(rename = "zb-h1")]
    ZbH1,
    /// Zero Bubble ZB-H2.
    #[serde(rename = "zb-h2")]
    ZbH2,
    /// DeepSeek-V3's DualPipe.
    #[serde(rename = "dualpipe")]
    DualPipe,
}

impl Schedule {
    /// Parse `1f1b`, `zb-h1`, `zb-h2` or `dualpipe`.
    pub fn parse(s: &str) -> Result<Schedule> {
        Ok(match s {
            "1f1b" | "interleaved" => Schedule::OneFOneB,
            "zb-h1" | "zb1p" => Schedule::ZbH1,
            "zb-h2" | "zb2p" => Schedule::ZbH2,
            "dualpipe" => Schedule::DualPipe,
            other => bail!("schedule must be 1f1b, zb-h1, zb-h2 or dualpipe, got '{other}'"),
        })
    }

    /// Idle time of a stage over the step, from a micro-batch's stage time `t_mb` (F + B + W and
    /// what it exposes), its forward share `fwd` and its weight-gradient GEMMs `w`, with `p`
    /// stages of `v` interleaved chunks and `m` micro-batches a step. A zero-bubble schedule saves
    /// on 1F1B in two ways: its backward chain through the p - 1 stages carries B without W, which
    /// saves (p - 1) W whatever m; and it fills idle slots with deferred weight gradients, the rest
    /// of its steady-state saving, in full only with p - 1 micro-batches or more to draw on, and
    /// m / (p - 1) of it with fewer (the Zero Bubble paper's appendix H: at m <= p its schedules
    /// still gain, less than at m >> p).
    pub fn bubble(self, t_mb: f64, fwd: f64, w: f64, p: f64, v: f64, m: f64) -> f64 {
        let one_f_one_b = t_mb * (p - 1.0) / v;
        let steady = match self {
            Schedule::OneFOneB => return one_f_one_b,
            Schedule::ZbH1 => (p - 1.0) * (t_mb - 2.0 * w).max(0.0),
            Schedule::ZbH2 => (p - 1.0) * (t_mb - 3.0 * w).max(0.0),
            // A chunk is half a rank's layers: F&B + B - 3W = (t_mb + (t_mb - fwd) - 3w) / 2.
            Schedule::DualPipe => (p / 2.0 - 1.0).max(0.0) * (2.0 * t_mb - fwd - 3.0 * w).max(0.0) / 2.0,
        };
        let chain = (one_f_one_b - (p - 1.0) * w).max(steady);
        let filled = (m / (p - 1.0)).min(1.0);
        chain - filled * (chain - steady)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::OneFOneB => "1f1b",
            Schedule::ZbH1 => "zb-h1",
            Schedule::ZbH2 => "zb-h2",
            Schedule::DualPipe => "dualpipe",
        })
    }
}

/// Submodules whose outputs are discarded after forward and recomputed in backward, on top of
/// [`Recompute`] (Megatron-Core `recompute_modules`: "moe_act", "layernorm" and "mla_up_proj" use
/// output-discarding checkpointing; TransformerConfig docstring and the MoE README, "Checkpointing").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Modules {
    /// The input and pre-MLP norms: their outputs (the QKV and MLP inputs) are not stored.
    pub layernorm: bool,
    /// The routed experts' activation: its output (the down projection's input) is not stored.
    pub moe_act: bool,
    /// Latent attention's up projections and RoPE: the per-head queries, keys and values are not
    /// stored, only the compressed latents.
    pub mla_up_proj: bool,
    /// The dense MLP: only its input is kept; its up projections, activation and down projection
    /// rerun in backward (Megatron-Core `recompute_modules` "mlp"; MaxText's `remat` of `mlpwi`
    /// and `mlpwo`). MoE layers are not touched (Megatron-Core names them "moe").
    pub mlp: bool,
    /// A MoE layer checkpointed whole (Megatron-Core `recompute_modules` "moe", `MoELayer`'s
    /// `custom_forward` under `tensor_parallel.checkpoint`): only its input is kept; router,
    /// dispatch, experts, combine and shared experts rerun in backward, the all-to-all included.
    pub moe: bool,
    /// A MoE layer's shared experts: only their input is kept; their up projections, activation
    /// and down projection rerun in backward (Megatron-Core `recompute_modules` "shared_experts",
    /// `SharedExpertMLP` checkpointed whole).
    pub shared_experts: bool,
    /// torchtitan's per-op selective checkpointing (`selective_ac_option = "op"`): of a layer's
    /// forward only the outputs of the ops in its save list are kept (matmuls, attention, max),
    /// except every second matmul; everything else reruns in backward, the element-wise ops
    /// included (torchtitan parallelize_llama.py `_save_list`, `_custom_policy`, 2024-12 to
    /// 2025-06). Float8 linears count as matmuls too: the checkpointing mode sees `aten.mm` on
    /// torchao's Float8 tensors before they dispatch to `_scaled_mm`.
    pub op_sac: bool,
}

impl Modules {
    /// Parse module names joined by `+` (or given one by one): `layernorm`, `moe_act`, `mla_up_proj`,
    /// `mlp`, `moe`, `shared_experts`, `op_sac`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Modules> {
        let mut m = Modules::default();
        for name in names.into_iter().flat_map(|n| n.split('+')).map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "layernorm" => m.layernorm = true,
                "moe_act" => m.moe_act = true,
                "mla_up_proj" => m.mla_up_proj = true,
                "mlp" => m.mlp = true,
                "moe" => m.moe = true,
                "shared_experts" => m.shared_experts = true,
                "op_sac" => m.op_sac = true,
                other => bail!(
                    "recompute module must be layernorm, moe_act, mla_up_proj, mlp, moe, shared_experts or op_sac, got '{other}'"
                ),
            }
        }
        Ok(m)
    }

    /// Whether no module is recomputed.
    pub fn is_empty(&self) -> bool {
        *self == Modules::default()
    }
}

impl fmt::Display for Modules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = [
            (self.layernorm, "layernorm"),
            (self.moe_act, "moe_act"),
            (self.mla_up_proj, "mla_up_proj"),
            (self.mlp, "mlp"),
            (self.moe, "moe"),
            (self.shared_experts, "shared_experts"),
            (self.op_sac, "op_sac"),
        ];
        let names: Vec<&str> = on.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        f.write_str(&names.join("+"))
    }
}

/// Number format of the transformer layers' GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// BF16 everywhere.
    Bf16,
    /// FP8 GEMMs in the transformer layers (Transformer Engine style); the rest BF16.
    Fp8,
    /// INT8 GEMMs in the transformer layers (quantized training as Google's AQT does it on TPUs,
    /// at the chip's `int8_tops`); otherwise as FP8: the same low-precision GEMM efficiency, casts
    /// and 1-byte stored linear inputs, but no persistent 8-bit weight copy.
    Int8,
    /// NVFP4 GEMMs in the transformer layers (Transformer Engine's `nvfp4` recipe: 4-bit elements
    /// with an FP8 scale per 16, at the chip's `fp4_tflops`); otherwise as FP8, with 0.5625-byte
    /// operands, casts and stored linear inputs.
    Fp4,
}

impl Precision {
    /// Parse `bf16`, `fp8`, `int8` or `fp4` (also `nvfp4`).
    pub fn parse(s: &str) -> Result<Precision> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bf16" => Precision::Bf16,
            "fp8" => Precision::Fp8,
            "int8" => Precision::Int8,
            "fp4" | "nvfp4" => Precision::Fp4,
            other => bail!("--precision must be bf16, fp8, int8 or fp4, got '{other}'"),
        })
    }

    /// The chip field holding this format's dense GEMM peak (`bf16_tflops`, `fp8_tflops`,
    /// `int8_tops`, `fp4_tflops`).
    pub fn peak_field(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16_tflops",
            Precision::Fp8 => "fp8_tflops",
            Precision::Int8 => "int8_tops",
            Precision::Fp4 => "fp4_tflops",
        }
    }

    /// Whether the transformer layers' GEMMs run quantized (FP8, INT8 or FP4).
    pub fn quantized(self) -> bool {
        self != Precision::Bf16
    }

    /// Bytes per element of a transformer GEMM operand: 2 in BF16, 1 in FP8 and INT8, and in
    /// NVFP4 half a byte plus one 1-byte scale per 16 elements.
    pub fn operand_bytes(self) -> f64 {
        match self {
            Precision::Bf16 => 2.0,
            Precision::Fp8 | Precision::Int8 => 1.0,
            Precision::Fp4 => 0.5 + 1.0 / 16.0,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Fp4 => "fp4",
        })
    }
}

/// A parallel layout of one job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Layout {
    /// Tensor-parallel degree (Megatron column/row split).
    pub tp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Data-parallel replicas.
    pub dp: usize,
    /// Context-parallel degree (sequence split across ranks for attention).
    pub cp: usize,
    /// Expert-parallel degree (experts split across ranks of tp x cp x dp).
    pub ep: usize,
    /// Expert tensor-parallel degree (Megatron-Core's `expert_tensor_parallel_size`): each
    /// expert's matrices split over `etp` ranks, which all-gather the routed tokens the
    /// all-to-all brought them and reduce-scatter the experts' outputs. 1 keeps experts whole;
    /// Megatron-Core before 0.10 split them over the tensor-parallel group (`etp` = `tp`), and
    /// 0.10 and later default to that where a recipe leaves it unset.
    pub etp: usize,
    /// Sequences per micro-batch.
    pub mb: usize,
    /// Interleaved model chunks per pipeline stage (1 = plain 1F1B).
    pub v: usize,
    /// Pipeline schedule (1F1B unless the stack or the layout names another; pp > 1 only).
    pub schedule: Schedule,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// Under a full recompute, the layers of each model chunk that recompute, the chunk's first
    /// ones (Megatron-Core's `recompute_method` block with `recompute_num_layers`); the chunk's
    /// other layers keep every activation. 0: every layer recomputes.
    pub recompute_layers: usize,
    /// Submodules recomputed on top of `recompute` (ignored under full recompute).
    pub modules: Modules,
    /// ZeRO stage of the data-parallel optimizer: 0 none, 1 optimizer states, 2 + gradients, 3 + weights.
    pub zero: u8,
    /// Data-parallel replicas the ZeRO stage (or a distributed optimizer) shards over; 0 = all
    /// `dp`. Fewer is hybrid sharding (PyTorch HSDP, MaxText's FSDP inside a slice and data
    /// parallelism across slices, Megatron's `num_distributed_optimizer_instances`): each group of
    /// `shard` replicas holds one sharded copy, and the `dp / shard` copies all-reduce their
    /// gradient shards.
    pub shard: usize,
    /// Sequence parallelism in the tensor-parallel group (Korthikanti).
    pub sp: bool,
    /// Layers of each pipeline stage whose stored activations go to host memory after their
    /// forward and come back for their backward (Megatron-Core `cpu_offloading_num_layers`;
    /// MaxText's remat `offload`); 0 keeps every activation on the chip.
    pub offload: usize,
    /// Layers of the model a quantized recipe keeps in BF16 (Megatron-Bridge's
    /// `num_layers_at_start_in_bf16` plus `num_layers_at_end_in_bf16` under
    /// `first_last_layers_bf16`); 0 quantizes every layer. Ignored in BF16.
    pub bf16_layers: usize,
    /// Layers on the first pipeline stage where the split is uneven (Megatron-Core's
    /// `num_layers_in_first_pipeline_stage`, Llama 3's and Zero Bubble's "one layer fewer" on the
    /// stages holding the embedding and the loss); `None`: the stages share the layers evenly.
    pub first_layers: Option<usize>,
    /// Layers on the last pipeline stage, the one with the LM head and the loss
    /// (`num_layers_in_last_pipeline_stage`); `None`: an even share.
    pub last_layers: Option<usize>,
}

/// Layers a pipeline rank holds (over all its interleaved chunks): the first rank's, each middle
/// rank's and the last rank's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageSplit {
    /// The first rank's layers (the embedding's stage).
    pub first: f64,
    /// Each rank's between the first and the last (the larger share where they do not divide
    /// evenly).
    pub middle: f64,
    /// The last rank's layers (the LM head's and the loss's stage).
    pub last: f64,
}

impl StageSplit {
    /// The most layers a rank without the LM head holds (the first's or a middle one's).
    pub fn body(&self) -> f64 {
        self.first.max(self.middle)
    }

    /// The most layers a rank holds, LM head aside: what the states and the stored activations
    /// of the heaviest rank are counted on.
    pub fn most(&self) -> f64 {
        self.body().max(self.last)
    }
}

impl Layout {
    /// How `layers` spread over the pipeline ranks: `first_layers` and `last_layers` where given,
    /// the rest shared by the other ranks (the larger share where they do not divide evenly;
    /// every rank ceil(layers / pp) without either, as Megatron's even split prices the heaviest).
    pub fn stage_split(&self, layers: usize) -> StageSplit {
        let p = self.pp.max(1);
        let (first, last) = (self.first_layers, self.last_layers);
        if p == 1 || (first.is_none() && last.is_none()) {
            let even = layers.div_ceil(p) as f64;
            return StageSplit { first: even, middle: even, last: even };
        }
        let given = [first, last];
        let pinned: usize = given.iter().flatten().sum();
        let others = p - given.iter().flatten().count();
        let middle = if others == 0 { 0 } else { layers.saturating_sub(pinned).div_ceil(others) };
        StageSplit { first: first.unwrap_or(middle) as f64, middle: middle as f64, last: last.unwrap_or(middle) as f64 }
    }

    /// This layout with the split a framework that balances it runs
    /// ([`Stack::balanced_pipeline_split`]: Megatron-Core's recipes, which refuse an even split
    /// where the layers do not divide over the pp x vp chunks) written in, where it names none.
    pub fn balanced_on(&self, layers: usize, stack: &Stack) -> Layout {
        match (self.first_layers, self.last_layers, stack.balanced_pipeline_split) {
            (None, None, true) => match balanced_split(layers, self.pp, self.v) {
                Some((first_layers, last_layers)) => Layout { first_layers, last_layers, ..*self },
                None => *self,
            },
            _ => *self,
        }
    }

    /// Data-parallel replicas that share one sharded copy of the states (`shard`, or every one).
    pub fn shard_group(&self) -> usize {
        if self.shard == 0 {
            self.dp
        } else {
            self.shard
        }
    }

    /// Sharded copies of the states across the data-parallel replicas (1 unless hybrid).
    pub fn replicas(&self) -> usize {
        self.dp / self.shard_group().max(1)
    }

    /// `dp` plain data-parallel replicas: every other degree 1, one sequence per micro-batch, no
    /// recompute, no ZeRO; change fields with struct update syntax.
    pub fn data_parallel(dp: usize) -> Layout {
        Layout {
            tp: 1,
            pp: 1,
            dp,
            cp: 1,
            ep: 1,
            etp: 1,
            mb: 1,
            v: 1,
            schedule: Schedule::OneFOneB,
            recompute: Recompute::None,
            recompute_layers: 0,
            modules: Modules::default(),
            zero: 0,
            shard: 0,
            sp: false,
            offload: 0,
            bf16_layers: 0,
            first_layers: None,
            last_layers: None,
        }
    }

    /// Ranks one expert's group spans: its `etp` tensor-parallel shards of each of `ep` expert
    /// sets (Megatron-Core's expert model-parallel group, ordered etp, then ep).
    pub fn expert_model_parallel(&self) -> usize {
        self.ep.max(1) * self.etp.max(1)
    }

    /// Chips the layout occupies.
    pub fn chips(&self) -> usize {
        self.tp * self.pp * self.dp * self.cp
    }

    /// The most layers one model chunk holds when `layers` split over `pp` x `v` chunks.
    pub fn chunk_layers(&self, layers: usize) -> usize {
        layers.div_ceil(self.pp * self.v.max(1))
    }

    /// Share of a rank's `stage_layers` (over its `v` chunks) that rerun their forward in
    /// backward under a full recompute: `recompute_layers` of each chunk, or all of them; 0 under
    /// the other modes.
    pub fn recomputed_share(&self, stage_layers: f64) -> f64 {
        match (self.recompute, self.recompute_layers) {
            (Recompute::Full, 0) => 1.0,
            (Recompute::Full, n) if stage_layers > 0.0 => ((n * self.v.max(1)) as f64 / stage_layers).min(1.0),
            _ => 0.0,
        }
    }
}

/// The first and last ranks' layers where `layers` do not divide over `pp` x `v` chunks: with
/// the embedding and the loss each taking a layer's place, (layers + 2) / pp - 1 on both end
/// ranks (Llama 3.1 405B, Qwen3-235B-A22B); with the loss alone, (layers + 1) / pp - 1 on the
/// last; with the last chunk's MTP module and loss in three layers' place, (layers + 3) / pp - 3
/// on the last (Megatron-Bridge's DeepSeek-V3 and Kimi K2 layouts); the first that divides.
/// `None` where the layers divide (the even split runs) or none of them does.
pub(crate) fn balanced_split(layers: usize, pp: usize, v: usize) -> Option<(Option<usize>, Option<usize>)> {
    let chunks = pp * v.max(1);
    if pp < 2 || layers.is_multiple_of(chunks) {
        return None;
    }
    let per_rank = |slots: usize| (slots.is_multiple_of(chunks)).then(|| slots / pp);
    if let Some(n) = per_rank(layers + 2).filter(|&n| n > 1) {
        return Some((Some(n - 1), Some(n - 1)));
    }
    if let Some(n) = per_rank(layers + 1).filter(|&n| n > 1) {
        return Some((None, Some(n - 1)));
    }
    per_rank(layers + 3).filter(|&n| n > 3).map(|n| (None, Some(n - 3)))
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tp{} pp{} dp{}", self.tp, self.pp, self.dp)?;
        if self.cp > 1 {
            write!(f, " cp{}", self.cp)?;
        }
        if self.ep > 1 {
            write!(f, " ep{}", self.ep)?;
        }
        if self.etp > 1 {
            write!(f, " etp{}", self.etp)?;
        }
        if self.v > 1 {
            write!(f, " v{}", self.v)?;
        }
        if self.schedule != Schedule::OneFOneB {
            write!(f, " {}", self.schedule)?;
        }
        write!(f, " mb{} rc:{}", self.mb, self.recompute)?;
        if self.recompute == Recompute::Full && self.recompute_layers > 0 {
            write!(f, ":{}", self.recompute_layers)?;
        }
        if !self.modules.is_empty() {
            write!(f, "+{}", self.modules)?;
        }
        write!(f, " zero{}", self.zero)?;
        if self.replicas() > 1 {
            write!(f, " shard{}", self.shard_group())?;
        }
        if self.sp && self.tp > 1 {
            f.write_str(" sp")?;
        }
        if self.offload > 0 {
            write!(f, " offload{}", self.offload)?;
        }
        if self.bf16_layers > 0 {
            write!(f, " bf16:{}", self.bf16_layers)?;
        }
        if let Some(n) = self.first_layers {
            write!(f, " first:{n}")?;
        }
        if let Some(n) = self.last_layers {
            write!(f, " last:{n}")?;
        }
        Ok(())
    }
}

/// A training job: model, sequence length, global batch in sequences, precision.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Architecture.
    pub arch: &'a Arch,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per optimizer step.
    pub global_batch: usize,
    /// GEMM number format.
    pub precision: Precision,
}

/// Per-chip memory, bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    /// BF16 weights held between steps (sharded under ZeRO-3), plus FP8 copies when training in FP8.
    pub weights: f64,
    /// Gradients kept between micro-batches.
    pub gradients: f64,
    /// Optimizer states: master weights and Adam moments (the stack's `optimizer_state_bytes`).
    pub optimizer: f64,
    /// Weights gathered by ZeRO-3 for compute (prefetch buffers, or the whole stage when kept).
    pub gathered: f64,
    /// Stored activations of the stage whose memory peaks: the first stage's in-flight
    /// micro-batches, or under pipeline parallelism the last stage's when its fewer in-flight
    /// micro-batches and the logits need more.
    pub activations: f64,
    /// Logits and their gradient, on the last stage: counted when that stage is the peak (always
    /// without pipeline parallelism), 0 when the first stage is.
    pub logits: f64,
    /// Framework reserve (context, communication buffers, fragmentation).
    pub reserve: f64,
    /// Stored activations held in host memory under `offload` (not in [`Memory::total`]).
    pub offloaded: f64,
}

impl Memory {
    /// Sum of all parts.
    pub fn total(&self) -> f64 {
        self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.logits + self.reserve
    }

    /// Weights, gradients and optimizer states.
    pub fn states(&self) -> f64 {
        self.weights + self.gradients + self.optimizer
    }
}

/// Where a step's time goes, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepTime {
    /// GEMMs, attention, element-wise kernels and launch overhead of all micro-batches on the heaviest stage.
    pub compute: f64,
    /// Forward work rerun in backward (selective or full recompute).
    pub recompute: f64,
    /// Exposed tensor-parallel collectives.
    pub tp_comm: f64,
    /// Exposed context-parallel key/value exchange.
    pub cp_comm: f64,
    /// Exposed expert-parallel all-to-all.
    pub ep_comm: f64,
    /// Exposed pipeline sends.
    pub pp_comm: f64,
    /// Pipeline fill and drain.
    pub bubble: f64,
    /// Exposed data-parallel / ZeRO collectives.
    pub dp_comm: f64,
    /// Optimizer update (its memory traffic) and the step's fixed host-side work
    /// (`step_overhead_ms`).
    pub optimizer: f64,
    /// Exposed copies of offloaded activations to and from host memory.
    pub offload: f64,
}

impl StepTime {
    /// Every part times `f` (a chip's residual, `calib::ChipResidual`).
    pub fn scaled(self, f: f64) -> StepTime {
        StepTime {
            compute: self.compute * f,
            recompute: self.recompute * f,
            tp_comm: self.tp_comm * f,
            cp_comm: self.cp_comm * f,
            ep_comm: self.ep_comm * f,
            pp_comm: self.pp_comm * f,
            bubble: self.bubble * f,
            dp_comm: self.dp_comm * f,
            optimizer: self.optimizer * f,
            offload: self.offload * f,
        }
    }

    /// The whole step.
    pub fn total(&self) -> f64 {
        self.offload
            + self.compute
            + self.recompute
            + self.tp_comm
            + self.cp_comm
            + self.ep_comm
            + self.pp_comm
            + self.bubble
            + self.dp_comm
            + self.optimizer
    }
}

/// The model's prediction for one job, layout and chip.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// The layout.
    pub layout: Layout,
    /// GEMM number format.
    pub precision: Precision,
    /// Global batch in sequences.
    pub global_batch: usize,
    /// Micro-batches per step per pipeline.
    pub micro_batches: usize,
    /// Time breakdown of one step.
    pub time: StepTime,
    /// Memory per chip.
    pub memory: Memory,
    /// Usable memory per chip.
    pub capacity: f64,
    /// Host memory per chip offloaded activations may take (`None` when the chip does not say).
    pub host_capacity: Option<f64>,
    /// Tokens per second for the whole job.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation against the BF16 peak: [`Arch::model_flops_per_token`] x tokens/s.
    pub mfu: f64,
}

impl Estimate {
    /// Whether the per-chip memory fits, on the chip and, for offloaded activations, in the host
    /// memory the chip's share of its node holds (unchecked where the chip does not say).
    pub fn fits(&self) -> bool {
        self.memory.total() <= self.capacity && self.host_capacity.is_none_or(|h| self.memory.offloaded <= h)
    }
}

/// Rates of one chip the model needs, bytes/s and FLOP/s, with the measured link efficiencies applied.
#[derive(Clone, Debug)]
pub struct Rates {
    /// The chip's name, for the messages that tell the user which figure to give.
    pub chip: String,
    /// Nominal dense BF16 FLOP/s (the datasheet's; MFU is reported against it).
    pub nominal_bf16: f64,
    /// Dense BF16 FLOP/s at the clock the chip sustains under its power limit ([`power_clock`]).
    pub peak_bf16: f64,
    /// Dense quantized GEMM rate at that clock: FP8 FLOP/s (under `--precision int8` INT8 OP/s,
    /// under `fp4` FP4 FLOP/s), if the chip has it.
    pub peak_8bit: Option<f64>,
    /// Nominal memory bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Achieved scale-up link, one direction, bytes/s.
    pub scaleup: f64,
    /// Chips in one scale-up domain.
    pub domain: usize,
    /// Achieved scale-out per chip, bytes/s (`None` when not public and not needed).
    pub scaleout: Option<f64>,
    /// Softmax exponentials per second (`None` when the chip does not say).
    pub exp_rate: Option<f64>,
    /// Fraction of the attention rate warp-synchronous MMA kernels reach (chip `sync_mma_fraction`);
    /// `None` on a chip without asynchronous tensor-core instructions (wgmma, tcgen05), whose
    /// every attention kernel is warp-synchronous.
    pub sync_mma: Option<f64>,
    /// Achieved link to host memory, one direction, bytes/s (`None` when the chip does not say).
    pub host_link: Option<f64>,
    /// Host memory offloaded activations may take per chip, bytes (`None` when the chip does not say).
    pub host_memory: Option<f64>,
}

/// How much faster `stack`'s fused attention runs than `attn_eff` prices it: 1 + `attn_gain_2025`
/// for the cuDNN of 2025 (`cudnn_attention_2025`) on asynchronous kernels, else 1.
pub fn cudnn_2025_speedup(stack: &Stack, k: &Constants) -> f64 {
    if stack.cudnn_attention_2025 && !stack.sync_mma_attention {
        1.0 + k.attn_gain_2025
    } else {
        1.0
    }
}

impl Rates {
    /// Fraction of the chip's fused-attention rate `stack`'s attention kernel reaches: the chip's
    /// `sync_mma_fraction` for a FlashAttention-2-class stack (`sync_mma_attention`), else 1.
    pub fn attention_kernel(&self, stack: &Stack) -> f64 {
        if stack.sync_mma_attention {
            self.sync_mma.unwrap_or(1.0)
        } else {
            1.0
        }
    }

    /// Whether `stack`'s fused attention runs its softmax exponentials under its products: an
    /// asynchronous-MMA kernel (cuDNN, FlashAttention-3/4) on a chip that has them.
    pub fn softmax_under_products(&self, stack: &Stack) -> bool {
        self.sync_mma.is_some() && !stack.sync_mma_attention
    }

    /// Read a chip's rates; unknown figures the job needs are errors naming the field.
    pub fn of(chip: &Chip, k: &Constants, chips_used: usize, precision: Precision) -> Result<Rates> {
        let peak_bf16 = chip.require_positive("bf16_tflops")? * 1e12;
        let fp8 = Precision::Fp8.peak_field();
        let peak_8bit = match precision {
            Precision::Fp8 => Some(quantized_peak(chip, fp8, "in FP8", "bf16")?),
            Precision::Int8 => Some(quantized_peak(chip, precision.peak_field(), "with INT8 matmuls", "bf16")?),
            Precision::Fp4 => {
                let instead = if chip.get(fp8).is_some() { "fp8 or bf16" } else { "bf16" };
                Some(quantized_peak(chip, precision.peak_field(), "in FP4", instead)?)
            }
            Precision::Bf16 => chip.get(fp8).map(|t| t * 1e12),
        };
        let mem_bw = chip.require_positive("mem_bw_tbs")? * 1e12;
        let domain = chip.require("scaleup_domain")?;
        if domain < 1.0 || domain.fract() != 0.0 {
            bail!("chip {}: scaleup_domain must be a whole number of chips, at least 1, got {domain}", chip.name);
        }
        let domain = domain as usize;
        if chip.get("tdp_w").is_some() {
            // A zero power would read as no power limit and no energy: refused like the rates.
            chip.require_positive("tdp_w")?;
        }
        let scaleup =
            if chips_used > 1 { chip.require_positive("scaleup_gbs")? * 1e9 / 2.0 * k.scaleup_eff } else { 0.0 };
        let scaleout = if chips_used > domain {
            Some(chip.require_positive("scaleout_gbs")? * 1e9 * k.scaleout_eff)
        } else {
            chip.get("scaleout_gbs").map(|g| g * 1e9 * k.scaleout_eff)
        };
        let clock = power_clock(chip, k);
        let exp_rate = chip.get("sfu_exp_tops").map(|t| t * 1e12 * clock);
        let sync_mma = chip.get("sync_mma_fraction");
        // Copies to host memory over PCIe or NVLink-C2C reach about what a NIC does of its rate.
        let host_link = chip.get("host_link_gbs").map(|g| g * 1e9 * k.scaleout_eff);
        // The chip's share of its node's DRAM, less a fifth for the OS, the data loaders and the
        // framework's pinned buffers (assumed).
        let host_memory = chip.get("host_memory_gb").map(|g| 0.8 * g * 1e9);
        Ok(Rates {
            chip: chip.name.clone(),
            nominal_bf16: peak_bf16,
            peak_bf16: peak_bf16 * clock,
            peak_8bit: peak_8bit.map(|p| p * clock),
            mem_bw,
            scaleup,
            domain,
            scaleout,
            exp_rate,
            sync_mma,
            host_link,
            host_memory,
        })
    }

    /// Bandwidth per rank of a collective over a group whose members are `stride` chips apart and
    /// span `span` consecutive chips.
    ///
    /// Inside one domain: the scale-up link. Across domains NCCL runs hierarchical rings (one per
    /// NIC), so a group with k members per domain moves its inter-domain share over k NICs at once:
    /// k x the per-chip scale-out, never more than the scale-up link.
    pub fn link(&self, stride: usize, span: usize) -> f64 {
        if span <= self.domain {
            return self.scaleup;
        }
        let per_domain = (self.domain / stride.max(1)).max(1) as f64;
        match self.scaleout {
            Some(so) => (so * per_domain).min(self.scaleup.max(so)),
            None => self.scaleup,
        }
    }

    /// Whether a group of `span` consecutive chips crosses a domain boundary.
    fn crosses(&self, span: usize) -> bool {
        span > self.domain
    }
}

/// Fraction of the quantized peak `precision`'s GEMMs reach relative to a BF16 GEMM of the same
/// shape: `fp4_gemm_eff` for FP4 (NVFP4 and MXFP4 recipes carry block scales and, in NVFP4,
/// Hadamard transforms that FP8's per-tensor or MXFP8 scaling does not), `fp8_gemm_eff` for FP8
/// and INT8, 1 otherwise.
fn quantized_gemm_eff(k: &Constants, precision: Precision) -> f64 {
    match precision {
        Precision::Fp4 => k.fp4_gemm_eff,
        Precision::Fp8 | Precision::Int8 => k.fp8_gemm_eff,
        Precision::Bf16 => 1.0,
    }
}

/// A chip's quantized GEMM peak `field` (OP/s), or the one-line refusal to train `how` without
/// it, naming the precisions to use `instead` and the override that supplies the figure.
fn quantized_peak(chip: &Chip, field: &str, how: &str, instead: &str) -> Result<f64> {
    let t = chip.require_positive(field).map_err(|_| {
        anyhow!(
            "chip {}: no {field}, so it cannot train {how}; use --precision {instead} or supply it with --override {}.{field}=VALUE",
            chip.name,
            chip.name
        )
    })?;
    Ok(t * 1e12)
}

/// Fraction of its rated clock a chip's tensor cores sustain under full load within its board
/// power. Datasheet peaks are at the rated (boost) clock; a chip rated at fewer board watts per
/// dense BF16 TFLOP/s than `k.power_w_per_tflop` holds only
/// (watts per TFLOP/s / power_w_per_tflop)^(1/3) of it, since dynamic power goes as f V^2 and V
/// as f near the top of the voltage/frequency curve. 1 for a chip whose board power is not known.
///
/// A chip with a vendor's max-achievable FLOPs measurement (`maf_bf16_tflops`: the best dense
/// GEMM rate found by a size sweep at the clock the chip sustains, AMD's for the MI300X and
/// MI325X) holds no more than the clock at which `gemm_eff` of its rated peak is that rate: AMD
/// measures its CDNA 3 parts' dense-GEMM clock at 57-69% of the rated 2,100 MHz with 94% of the
/// issue slots busy, which no power model of other chips predicts. (A single-size benchmark such
/// as FlagPerf's `measured_bf16_tflops` is not a maximum and does not cap.)
pub fn power_clock(chip: &Chip, k: &Constants) -> f64 {
    let power = match (chip.get("tdp_w"), chip.get("bf16_tflops")) {
        (Some(w), Some(t)) if w > 0.0 && t > 0.0 && k.power_w_per_tflop > 0.0 => {
            (w / t / k.power_w_per_tflop).cbrt().min(1.0)
        }
        _ => 1.0,
    };
    power.min(maf_clock(chip, k))
}

/// The clock a chip's max-achievable GEMM rate allows at `gemm_eff` of its rated peak (at most
/// 1; 1 without the measurement).
pub fn maf_clock(chip: &Chip, k: &Constants) -> f64 {
    match (chip.get("maf_bf16_tflops"), chip.get("bf16_tflops")) {
        (Some(m), Some(t)) if m > 0.0 && t > 0.0 && k.gemm_eff > 0.0 => (m / (t * k.gemm_eff)).min(1.0),
        _ => 1.0,
    }
}

/// Fraction of the nominal memory bandwidth a streaming kernel reaches: FlagPerf's A100
/// measurement, 1,328 of 1,555 GB/s (85.4%; shared/anchors/chips.md, "Measured vs nominal").
const MEM_BW_EFF: f64 = 0.854;

/// Fraction of the chip's peak one GEMM of m x k x n reaches with `bytes` per element, given
/// the chip's nominal `peak` FLOP/s and memory bandwidth (bytes/s): the calibrated form every
/// estimate prices GEMMs with. The sim port's default profile prices GEMMs with it too, so that a
/// simulated step and an analytic estimate of the same job never disagree on what a GEMM costs.
pub fn gemm_efficiency(k: &Constants, peak: f64, mem_bw: f64, (m, n, kk): (f64, f64, f64), bytes: f64) -> f64 {
    let intensity = 2.0 / (bytes * (1.0 / m + 1.0 / n + 1.0 / kk));
    let ridge = peak / mem_bw;
    k.gemm_eff * intensity / (intensity + k.gemm_knee * ridge)
}

/// Seconds for `flops` of GEMMs of shape m x k -> n at `peak` (already scaled by any precision
/// factor) with `bytes` per element: the intensity-dependent efficiency above, and never faster
/// than streaming the GEMMs' operands and results (m k + k n + m n elements each) through memory
/// once (the roofline's memory side; the smooth form alone would let a GEMM of intensity far below
/// the ridge point move bytes faster than the memory can).
#[allow(clippy::too_many_arguments)]
fn gemm_time(
    k: &Constants,
    peak: f64,
    ridge_peak: f64,
    mem_bw: f64,
    flops: f64,
    m: f64,
    n: f64,
    kk: f64,
    bytes: f64,
) -> f64 {
    let compute = flops / (peak * gemm_efficiency(k, ridge_peak, mem_bw, (m, n, kk), bytes));
    let gemms = flops / (2.0 * m * n * kk);
    let traffic = gemms * bytes * (m * kk + kk * n + m * n) / (mem_bw * MEM_BW_EFF);
    compute.max(traffic)
}

/// Time of `bytes_per_rank` moved at `bw` plus `steps` latency hops.
fn comm(bytes_per_rank: f64, bw: f64, steps: f64, k: &Constants, crosses: bool) -> f64 {
    if bytes_per_rank <= 0.0 {
        return 0.0;
    }
    let hop = k.hop_latency_us * 1e-6 * if crosses { 2.0 } else { 1.0 };
    bytes_per_rank / bw + steps * hop
}

/// What of `t` is exposed when it can overlap `window` of compute: the part beyond the window, plus
/// (1 - overlap_hidden) of the overlapped part (contention). Without overlap all of it.
fn exposed(t: f64, window: f64, overlap: bool, k: &Constants) -> f64 {
    if !overlap {
        return t;
    }
    let under = t.min(window.max(0.0));
    (t - under) + (1.0 - k.overlap_hidden) * under
}

/// Expected number of domains other than the sender's that hold at least one of a token's `top_k`
/// experts, the `experts` spread evenly over `domains` domains and chosen uniformly (the Megatron-Bridge
/// benchmarks force-balance routing): (domains - 1) x (1 - C(E - E/D, k) / C(E, k)).
fn other_domains_hit(top_k: usize, experts: usize, domains: usize) -> f64 {
    if domains <= 1 {
        return 0.0;
    }
    let (e, elsewhere) = (experts as f64, experts as f64 * (1.0 - 1.0 / domains as f64));
    let miss: f64 = (0..top_k).map(|i| (elsewhere - i as f64).max(0.0) / (e - i as f64)).product();
    (domains - 1) as f64 * (1.0 - miss)
}

/// Element-wise passes of a stack over the stored-activation bytes.
fn passes(k: &Constants, stack: &Stack) -> f64 {
    // Unfused kernels read and write each tensor separately; 1.5x the fused traffic is the
    // ratio of the unfused to the fused GeLU/bias/dropout/add sequence (Narayanan SC'21 section 4.2).
    k.elementwise_passes * if stack.fused_elementwise { 1.0 } else { 1.5 }
}

/// Bytes the loss keeps over the logits of one micro-batch, whose FP32 size is `logits_bytes`:
/// a fused cross-entropy keeps one logit-sized buffer in FP32 or two in BF16 (the logits and
/// their gradient, or its FP32 softmax: Megatron-Core's vocab-parallel loss, Transformer
/// Engine's and flash-attn's fused kernels); unfused, the BF16 logits, their FP32 copy and its
/// softmax gradient (8 bytes a logit at the peak).
fn logits_memory(stack: &Stack, logits_bytes: f64) -> f64 {
    if stack.fused_cross_entropy {
        logits_bytes
    } else {
        2.0 * logits_bytes
    }
}

/// Bytes the loss moves over the FP32 logits (`logits_bytes`) of one micro-batch, forward and
/// backward. A fused cross-entropy reads them forward, reads them again backward and writes their
/// gradient: 3 passes. Unfused, the loss is a chain of element-wise kernels (cast, max, subtract,
/// exp, sum, log, softmax gradient) priced like the other element-wise work: the stack's passes
/// over 3 logit-sized tensors, forward and twice backward.
fn loss_traffic(k: &Constants, stack: &Stack, logits_bytes: f64) -> f64 {
    if stack.fused_cross_entropy {
        3.0 * logits_bytes
    } else {
        passes(k, stack) * 3.0 * logits_bytes * 3.0
    }
}

/// Per-micro-batch work of one layer kind on one chip: seconds of compute, bytes, collectives.
#[derive(Clone, Copy, Debug, Default)]
struct LayerCost {
    /// Forward GEMMs and attention, seconds.
    fwd: f64,
    /// Of `fwd`, the linear layers' GEMMs (what per-op checkpointing shares out).
    linear_fwd: f64,
    /// Forward attention core alone, seconds (what selective recompute reruns).
    attn_fwd: f64,
    /// Backward attention core, seconds (what context-parallel backward exchange hides behind).
    attn_bwd: f64,
    /// Backward, seconds.
    bwd: f64,
    /// Stored activation bytes (no recompute).
    act_bytes: f64,
    /// Activation bytes outside the attention core (stored under selective recompute).
    act_bytes_selective: f64,
    /// Of `act_bytes`, what routed tokens of a MoE layer store (permuted copies, expert activations).
    moe_bytes: f64,
    /// Of `moe_bytes`, what a fused expert MLP never runs element-wise kernels over (the gate/up
    /// outputs and the activation's output, 6 fe per routed copy): 0 unless the stack fuses it.
    moe_fused_bytes: f64,
    /// Of `linear_inputs`, the elements a fused expert MLP quantises inside its GEMM's epilogue
    /// instead of in a separate cast (the down projection's input): 0 unless the stack fuses it.
    fused_casts: f64,
    /// Elements entering linear layers (what FP8 training casts), per micro-batch.
    linear_inputs: f64,
    /// Exposed-before-overlap collectives: TP, CP, EP, seconds per micro-batch (forward + backward).
    tp: f64,
    cp: f64,
    ep: f64,
    /// TP forward part (rerun under full recompute).
    tp_fwd: f64,
    /// TP forward collectives the recompute modules rerun (the dense MLP's pair under `mlp`).
    tp_module_rerun: f64,
    /// Stored bytes the layout's recompute modules discard (outside the attention core).
    module_bytes: f64,
    /// Seconds of forward work those modules rerun in backward.
    module_rerun: f64,
    /// Of `linear_fwd`, a MoE layer's shared experts' GEMMs (what the dispatch and combine can
    /// run under: Megatron-Core's `moe_shared_expert_overlap`).
    shared_fwd: f64,
}

impl LayerCost {
    /// Add `w` layers of cost `c`.
    fn add_scaled(&mut self, c: &LayerCost, w: f64) {
        self.fwd += w * c.fwd;
        self.linear_fwd += w * c.linear_fwd;
        self.attn_fwd += w * c.attn_fwd;
        self.attn_bwd += w * c.attn_bwd;
        self.bwd += w * c.bwd;
        self.act_bytes += w * c.act_bytes;
        self.act_bytes_selective += w * c.act_bytes_selective;
        self.moe_bytes += w * c.moe_bytes;
        self.moe_fused_bytes += w * c.moe_fused_bytes;
        self.linear_inputs += w * c.linear_inputs;
        self.fused_casts += w * c.fused_casts;
        self.tp += w * c.tp;
        self.tp_fwd += w * c.tp_fwd;
        self.tp_module_rerun += w * c.tp_module_rerun;
        self.module_bytes += w * c.module_bytes;
        self.module_rerun += w * c.module_rerun;
        self.cp += w * c.cp;
        self.ep += w * c.ep;
        self.shared_fwd += w * c.shared_fwd;
    }
}

/// Inputs shared by every layer of one estimate.
struct Ctx<'a> {
    a: &'a Arch,
    l: Layout,
    r: &'a Rates,
    k: &'a Constants,
    stack: &'a Stack,
    precision: Precision,
    s: f64,
    tok: f64,
}

impl Ctx<'_> {
    /// Activation bytes the heaviest chip holds, on the chip and in host memory: what one
    /// micro-batch stores under the layout's recompute mode, times the micro-batches in flight on
    /// the first pipeline stage; `offload` of the stage's layers keep theirs in host memory, and
    /// the chip keeps two layers' worth of staging buffers (one layer leaving, one coming back).
    /// `act_stored`: what one micro-batch stores across the stage ([`Self::stored_per_micro_batch`]).
    fn activation_memory(&self, sum: &LayerCost, act_stored: f64, stage_layers: f64, n_micro: usize) -> (f64, f64) {
        self.stage_activations(sum, act_stored, stage_layers, self.first_stage_in_flight(n_micro))
    }

    /// Micro-batches' worth of the first stage's activations in flight: 1F1B and ZB-H1 keep
    /// min(m, p), ZB-H2 min(m, 2p - 1), DualPipe min(m, p + 1) ([`Schedule`]); interleaving adds
    /// (p-1)/(p v) of that (Korthikanti, section 4.2.3).
    fn first_stage_in_flight(&self, n_micro: usize) -> f64 {
        let (p, v) = (self.l.pp as f64, self.l.v as f64);
        let warm = match self.l.schedule {
            Schedule::OneFOneB | Schedule::ZbH1 => self.l.pp,
            Schedule::ZbH2 => 2 * self.l.pp - 1,
            Schedule::DualPipe => self.l.pp + 1,
        };
        (n_micro.min(warm) as f64) * if self.l.v > 1 { 1.0 + (p - 1.0) / (p * v) } else { 1.0 }
    }

    /// The last pipeline stage's stored activations (and those held in host memory): 1F1B starts
    /// its backward after one forward there, so one micro-batch is in flight; the interleaved
    /// schedule warms the last rank up with (v-1) p chunks of a v-th of its layers, so
    /// ((v-1) p + 1) / v stage-fulls (Megatron-Core's `get_pp_rank_microbatches`: warm-up
    /// (p - rank - 1) x 2 + (v - 1) p), never more than the first stage holds.
    fn last_stage_activation_memory(
        &self,
        sum: &LayerCost,
        act_stored: f64,
        stage_layers: f64,
        n_micro: usize,
    ) -> (f64, f64) {
        let (p, v) = (self.l.pp as f64, self.l.v as f64);
        let in_flight = (((v - 1.0) * p + 1.0) / v).min(self.first_stage_in_flight(n_micro));
        self.stage_activations(sum, act_stored, stage_layers, in_flight)
    }

    /// Under pipeline parallelism, the activations (on the chip, in host memory) and logits of
    /// the stage whose memory peaks: the first stage holds the most micro-batches in flight, the
    /// last one the logits (and the multi-token prediction modules' activations); the chip needs
    /// the larger of the two. The first stage is counted with the most layers a stage without
    /// the LM head holds (the second stage's where the first holds fewer: one micro-batch fewer
    /// in flight there, counted as the first's).
    /// `first_sum`: the costs of a stage with the most layers a stage without the head holds.
    fn peak_stage_activations(
        &self,
        split: &StageSplit,
        last: &LastStage,
        first_sum: &LayerCost,
        n_micro: usize,
    ) -> (f64, f64, f64) {
        let body = split.body();
        let first_stored = self.stored_per_micro_batch(first_sum, body);
        let (first, offloaded) = self.activation_memory(first_sum, first_stored, body, n_micro);
        let last_stored = self.stored_per_micro_batch(&last.layers, split.last);
        let (last_acts, _) = self.last_stage_activation_memory(&last.layers, last_stored, split.last, n_micro);
        let logits = (1.0 + last.depths) * logits_memory(self.stack, last.logits_bytes);
        if last_acts + logits > first {
            (last_acts, offloaded, logits)
        } else {
            (first, offloaded, 0.0)
        }
    }

    /// Stored activations of a stage with `in_flight` micro-batches' worth in flight, and the part
    /// of them held in host memory under `offload`.
    fn stage_activations(&self, sum: &LayerCost, act_stored: f64, stage_layers: f64, in_flight: f64) -> (f64, f64) {
        let l = &self.l;
        let off = self.offloaded_share(stage_layers);
        let staging = if off > 0.0 { 2.0 * act_stored / stage_layers } else { 0.0 };
        let mut activations = act_stored * in_flight * (1.0 - off) + staging;
        if l.recompute == Recompute::Full {
            activations += sum.act_bytes / stage_layers; // one layer rematerialised during its backward
        }
        (activations, act_stored * in_flight * off)
    }

    /// Bytes saved by storing `linear_inputs` elements as their quantized copies: Transformer
    /// Engine keeps the quantized copy of each linear layer's input for the weight gradient, not
    /// the BF16 one (one byte instead of two in FP8, 0.5625 in NVFP4); a stack that keeps BF16
    /// inputs (`stores_quantized_inputs` false) saves nothing.
    fn quantized_saving(&self, linear_inputs: f64) -> f64 {
        if self.stack.stores_quantized_inputs {
            linear_inputs * (2.0 - self.precision.operand_bytes())
        } else {
            0.0
        }
    }

    /// Bytes one micro-batch stores across the stage's layers under the layout's recompute mode.
    fn stored_per_micro_batch(&self, sum: &LayerCost, stage_layers: f64) -> f64 {
        let (l, tok) = (&self.l, self.tok);
        let h = self.a.d_model as f64;
        let quantized_saving = self.quantized_saving(sum.linear_inputs);
        match l.recompute {
            Recompute::None => sum.act_bytes - quantized_saving - sum.module_bytes,
            Recompute::Selective => sum.act_bytes_selective - quantized_saving - sum.module_bytes,
            Recompute::Full => {
                // The recomputed layers keep their inputs; a partial recompute's others keep all.
                let share = l.recomputed_share(stage_layers);
                share * stage_layers * 2.0 * tok * h / self.sp_split()
                    + (1.0 - share) * (sum.act_bytes - quantized_saving)
            }
        }
    }

    /// Seconds per micro-batch of moving the offloaded layers' stored activations (of `act_stored`
    /// a micro-batch stores across the stage) to host memory in forward and back in backward, each
    /// way at the chip's host link.
    fn offload_copies(&self, act_stored: f64, stage_layers: f64) -> f64 {
        let bytes = act_stored * self.offloaded_share(stage_layers);
        match self.r.host_link {
            Some(link) if bytes > 0.0 => 2.0 * bytes / link,
            _ => 0.0,
        }
    }

    /// Share of a stage's layers whose stored activations live in host memory.
    fn offloaded_share(&self, stage_layers: f64) -> f64 {
        (self.l.offload as f64).min(stage_layers) / stage_layers
    }

    /// The stage's layers ([`Self::stage`]) with the layout's `bf16_layers` share of the model's
    /// layers priced in BF16 under a quantized precision: their GEMMs at the BF16 rate, no casts,
    /// their stored linear inputs in BF16 (no quantized linear inputs).
    fn stage_in_precisions(&self, stage_layers: f64, moe_frac: f64) -> LayerCost {
        let share = (self.l.bf16_layers as f64 / self.a.layers as f64).min(1.0);
        if share == 0.0 || !self.precision.quantized() {
            return self.stage(stage_layers, moe_frac);
        }
        let bf16 = Ctx { precision: Precision::Bf16, ..*self };
        let mut kept = bf16.stage(stage_layers, moe_frac);
        (kept.linear_inputs, kept.fused_casts) = (0.0, 0.0);
        let mut sum = LayerCost::default();
        sum.add_scaled(&self.stage(stage_layers, moe_frac), 1.0 - share);
        sum.add_scaled(&kept, share);
        sum
    }

    /// The heaviest pipeline stage's layers (`stage_layers`, a `moe_frac` of them MoE) summed by
    /// kind, dense or MoE and full or windowed attention, in proportion to their counts; a
    /// hybrid's by block, attention, Mamba-2, dense MLP and MoE, in its pattern's proportions.
    fn stage(&self, stage_layers: f64, moe_frac: f64) -> LayerCost {
        let win_frac = self.a.window.map_or(0.0, |(_, f)| f);
        if self.a.hybrid.is_some() {
            let b = self.a.blocks_per_layer();
            let blocks: [(f64, &dyn Fn() -> LayerCost); 6] = [
                (b.attention * (1.0 - win_frac), &|| self.attention_block(false)),
                (b.attention * win_frac, &|| self.attention_block(true)),
                (b.mamba, &|| self.mamba_block()),
                (b.gdn, &|| self.gdn_block()),
                (b.mlp, &|| self.mlp_block(false)),
                (b.moe, &|| self.mlp_block(true)),
            ];
            let mut sum = LayerCost::default();
            for (per_layer, cost) in blocks.into_iter().filter(|(w, _)| *w > 0.0) {
                sum.add_scaled(&cost(), per_layer * stage_layers);
            }
            return sum;
        }
        let kinds = [
            (false, false, (1.0 - moe_frac) * (1.0 - win_frac)),
            (false, true, (1.0 - moe_frac) * win_frac),
            (true, false, moe_frac * (1.0 - win_frac)),
            (true, true, moe_frac * win_frac),
        ];
        let mut sum = LayerCost::default();
        for (moe, win, frac) in kinds.into_iter().filter(|k| k.2 > 0.0) {
            sum.add_scaled(&self.layer(moe, win), frac * stage_layers);
        }
        sum
    }

    fn t(&self) -> f64 {
        self.l.tp as f64
    }

    /// What the activations outside the TP region are split by: the TP degree under sequence
    /// parallelism, else 1 (every TP rank holds them whole).
    fn sp_split(&self) -> f64 {
        if self.l.sp && self.l.tp > 1 {
            self.t()
        } else {
            1.0
        }
    }

    /// Seconds for `flops` of linear-layer GEMM of shape tokens x k -> n (per chip).
    fn linear(&self, flops: f64, m: f64, n: f64, kk: f64) -> f64 {
        let (peak, bytes, extra) = match (self.precision, self.r.peak_8bit) {
            (q, Some(p)) if q.quantized() => (p, q.operand_bytes(), quantized_gemm_eff(self.k, q)),
            _ => (self.r.peak_bf16, 2.0, 1.0),
        };
        gemm_time(self.k, peak * extra, peak, self.r.mem_bw, flops, m, n, kk, bytes)
    }

    /// Seconds for a BF16 GEMM (LM head, unfused attention).
    fn bf16(&self, flops: f64, m: f64, n: f64, kk: f64) -> f64 {
        let p = self.r.peak_bf16;
        gemm_time(self.k, p, p, self.r.mem_bw, flops, m, n, kk, 2.0)
    }

    /// Forward and backward seconds of the attention core for one layer (with DeepSeek Sparse
    /// Attention's indexer, [`Self::indexer`]), and the bytes a token stores of an unfused core's
    /// scores.
    fn attention(&self, windowed: bool) -> (f64, f64, f64) {
        let (fwd, bwd, scores) = self.attention_core(windowed);
        let (idx_fwd, idx_bwd) = self.indexer();
        (fwd + idx_fwd, bwd + idx_bwd, scores)
    }

    /// Forward and backward seconds of DeepSeek Sparse Attention's lightning indexer for one
    /// layer (none without one): every query scores every causal key (s / 2 a query on average,
    /// the index_topk cap applies to the core only), `index_n_heads` dot products of
    /// `index_head_dim` and the ReLU-weighted sum over heads ([`crate::model::Dsa`]); no softmax
    /// and no values, so no exponentials. Forward at the fused-attention rate (the indexer is its
    /// own kernel: DeepGEMM's `fp8_mqa_logits`, TileLang's in Megatron-Core, not cuDNN's
    /// attention), backward at twice that: the indexer trains through its KL loss against the
    /// core's attention (DeepSeek-V3.2 report, section 2.1), so its scores' gradient runs the two
    /// products of a matmul's backward over every causal pair, as Megatron-Core's default dense
    /// indexer loss does (Megatron-Bridge's model-FLOPs count: forward over every causal pair,
    /// backward 2x over every pair for the dense loss, over the top-k pairs for the sparse one).
    /// DeepSeek's sparse training stage takes the loss over the selected keys only, for which this
    /// backward is an upper bound; the loss's teacher (the core's scores summed over heads) is
    /// not priced. Megatron-Core duplicates the indexer on every tensor-parallel rank
    /// (`DSAIndexer`, parallel_mode "duplicated"), so TP does not split this work.
    fn indexer(&self) -> (f64, f64) {
        let flops = self.tok * self.a.indexer_flops_per_token(self.s as usize);
        if flops == 0.0 {
            return (0.0, 0.0);
        }
        let t = flops / (self.attention_peak() * self.k.attn_eff * self.r.attention_kernel(self.stack));
        (t, 2.0 * t)
    }

    /// Forward and backward seconds of the attention core (scores and values) for one layer.
    fn attention_core(&self, windowed: bool) -> (f64, f64, f64) {
        let a = self.a;
        let span = match (windowed, a.window) {
            (true, Some((w, _))) => (w as f64).min(self.s / 2.0),
            _ if self.stack.flash_attention => self.s / 2.0,
            _ => self.s,
        };
        let flops = 2.0 * self.tok * span * (a.qk_dim + a.v_dim) as f64 / self.t();
        if self.stack.flash_attention {
            let t = flops / (self.attention_peak() * self.fused_attention_eff());
            let exps = self.r.exp_rate.map_or(0.0, |r| self.tok * span * a.heads as f64 / self.t() / r);
            let (fwd, bwd) = (t, 2.5 * t);
            if self.r.softmax_under_products(self.stack) {
                // Asynchronous MMA (wgmma, tcgen05: cuDNN, FlashAttention-3/4) runs one tile's
                // softmax while the tensor cores multiply another (FlashAttention-3's ping-pong and
                // intra-warpgroup pipelining): the slower of the two sets the time.
                (fwd.max(exps), bwd.max(exps), 0.0)
            } else {
                // Warp-synchronous MMA (FlashAttention-2, any kernel on an A100): a warp's
                // exponentials wait for its products and its next products for its exponentials.
                (fwd + exps, bwd + exps, 0.0)
            }
        } else {
            // Batched GEMMs over heads of width head_dim, and per token the softmax output (2 a s
            // bytes) and, under dropout, its mask and dropped copy (3 a s): Korthikanti's 5as/h term.
            let hd = a.qk_dim as f64 / a.heads as f64;
            let t = self.bf16(flops, self.s, self.s, hd);
            let per_score = 2.0 + 3.0 * self.dropout();
            let scores = per_score * a.heads as f64 * self.s * self.tok / self.t();
            (t, 2.0 * t, scores)
        }
    }

    /// Fraction of the attention peak `self.stack`'s fused attention reaches: `attn_eff`, times
    /// the chip's `sync_mma_fraction` for a FlashAttention-2-class kernel, or times
    /// (1 + `attn_gain_2025`) for the cuDNN of 2025.
    fn fused_attention_eff(&self) -> f64 {
        self.k.attn_eff * self.r.attention_kernel(self.stack) * cudnn_2025_speedup(self.stack, self.k)
    }

    /// 1 when the recipe trains with dropout (its masks are stored), else 0.
    fn dropout(&self) -> f64 {
        if self.stack.dropout {
            1.0
        } else {
            0.0
        }
    }

    /// Whether the experts' grouped MLP runs as Transformer Engine's fused CuTe DSL kernels: the
    /// stack asks for it and the recipe is MXFP8 (`fuse_forward_ops` fuses nothing otherwise).
    fn fuses_expert_mlp(&self) -> bool {
        self.stack.fused_expert_mlp && self.precision == Precision::Fp8
    }

    /// The peak fused attention runs against: BF16, or with a stack that runs attention in FP8
    /// during FP8 training, the FP8 peak times the FP8 GEMM efficiency (the same scaling and casting
    /// as the linear layers' FP8 GEMMs).
    fn attention_peak(&self) -> f64 {
        match (self.precision, self.r.peak_8bit) {
            (Precision::Fp8, Some(p)) if self.stack.fp8_attention => p * self.k.fp8_gemm_eff,
            _ => self.r.peak_bf16,
        }
    }

    /// Ring time of a TP collective pair (all-gather + reduce-scatter, or one all-reduce) of the b s h activation.
    fn tp_pair(&self) -> f64 {
        let t = self.l.tp;
        if t == 1 {
            return 0.0;
        }
        let tf = t as f64;
        let bytes = self.tok * self.a.d_model as f64 * 2.0;
        comm(2.0 * (tf - 1.0) / tf * bytes, self.r.link(1, t), 2.0 * (tf - 1.0), self.k, self.r.crosses(t))
    }

    /// One layer of the given kind.
    fn layer(&self, moe: bool, windowed: bool) -> LayerCost {
        let mut c = self.attention_block(windowed);
        c.add_scaled(&self.mlp_block(moe), 1.0);
        // torchtitan's per-op checkpointing decides over the whole layer's matmuls.
        let (sac_bytes, sac_rerun) = self.op_sac(moe, c.linear_fwd, c.act_bytes_selective);
        c.module_bytes += sac_bytes;
        c.module_rerun += sac_rerun;
        c
    }

    /// One multi-token prediction depth: an attention block, an MLP block (MoE where the model
    /// has experts) and the projection of [embedding; hidden state] (2h -> h) before them.
    fn mtp_block(&self) -> LayerCost {
        let (h, t, tok) = (self.a.d_model as f64, self.t(), self.tok);
        // DeepSeek Sparse Attention's depths attend their index_topk keys as the layers do.
        let mut c = self.attention_block(self.a.dsa.is_some());
        c.add_scaled(&self.mlp_block(self.a.moe.is_some()), 1.0);
        let proj = self.linear(2.0 * tok * 2.0 * h * h / t, tok, h / t, 2.0 * h);
        c.fwd += proj;
        c.linear_fwd += proj;
        c.bwd += 2.0 * proj;
        c.linear_inputs += tok * 2.0 * h / t;
        c
    }

    /// Stored bytes per token outside the TP region of one block (Korthikanti's 34 s b h for
    /// GPT, generalised, per half layer): the norm's input and the block's input (4h) and, under
    /// dropout, the block's 1-byte mask (h).
    fn outside_bytes(&self) -> f64 {
        (4.0 + self.dropout()) * self.a.d_model as f64 / self.sp_split()
    }

    /// The layout's `layernorm` recompute over one block's norm: (bytes not stored, rerun
    /// seconds): its output of h per token; rerun: read the input (2 B) and write the output.
    fn norm_recompute(&self) -> (f64, f64) {
        if !self.l.modules.layernorm {
            return (0.0, 0.0);
        }
        let (h, sp, tok) = (self.a.d_model as f64, self.sp_split(), self.tok);
        // A stored linear input is its 1-byte cast in FP8 (Transformer Engine keeps that copy).
        let lin = self.precision.operand_bytes();
        (tok * h * lin / sp, tok * h * (2.0 + lin) / sp / self.r.mem_bw)
    }

    /// One attention block: its norm, projections and core, the TP pair around it and the
    /// context-parallel exchange.
    fn attention_block(&self, windowed: bool) -> LayerCost {
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        // DeepSeek Sparse Attention's indexer projections run whole on every TP rank.
        let indexer = a.indexer_params();
        let split = a.attn_params - indexer;
        let mut linear_fwd = self.linear(2.0 * tok * split / t, tok, split / h / t, h);
        // Their input is detached from the model's graph (the indexer trains on its own loss):
        // backward computes their weight gradients, not their inputs'.
        let mut no_dgrad = 0.0;
        if indexer > 0.0 {
            no_dgrad = self.linear(2.0 * tok * indexer, tok, indexer / h, h);
            linear_fwd += no_dgrad;
        }
        let (attn_fwd, attn_bwd, score_bytes) = self.attention(windowed);
        // q, k and v (k and v at the key/value width: GQA stores kv_heads of them), the core output.
        let mut attn_inside = (2.0 * (a.qk_dim + a.kv_exchange) as f64 + 2.0 * a.v_dim as f64) / t;
        if let Some(d) = a.dsa {
            // The indexer's queries, key and head weights (BF16) and the index_topk key indices
            // the sparse core and the indexer's KL loss read back in backward (int32), on every
            // TP rank.
            attn_inside += 2.0 * (d.heads * d.head_dim + d.head_dim + d.heads) as f64 + 4.0 * d.topk as f64;
        }
        let act_selective = tok * (self.outside_bytes() + attn_inside);
        let (mut module_bytes, mut module_rerun) = self.norm_recompute();
        if self.l.modules.mla_up_proj && a.mla_up_params > 0.0 {
            // Per-head queries, keys and values (BF16, what the attention core reads); rerun: the
            // up-projection GEMMs from the stored latents.
            module_bytes += tok * 2.0 * (a.qk_dim + a.kv_exchange) as f64 / t;
            let params = a.mla_up_params / t;
            module_rerun += self.linear(2.0 * tok * params, tok, params / a.mla_up_rank, a.mla_up_rank);
        }
        let tp_pair = self.tp_pair();
        LayerCost {
            fwd: linear_fwd + attn_fwd,
            linear_fwd,
            attn_fwd,
            attn_bwd,
            bwd: 2.0 * linear_fwd + attn_bwd - no_dgrad,
            act_bytes: act_selective + score_bytes,
            act_bytes_selective: act_selective,
            linear_inputs: tok * (h + a.v_dim as f64) / t,
            tp: 2.0 * tp_pair,
            tp_fwd: tp_pair,
            cp: self.cp_exchange(),
            module_bytes,
            module_rerun,
            ..LayerCost::default()
        }
    }

    /// One MLP block, dense or a mixture of experts: its norm, matmuls, the experts' all-to-all
    /// (and expert-TP pair) and, around a dense MLP or shared experts, the TP pair.
    fn mlp_block(&self, moe: bool) -> LayerCost {
        let a = self.a;
        let tok = self.tok;
        let mut c = LayerCost::default();
        let MlpShape { inside: mlp_inside, routed, inside_linear_inputs } = match (moe, a.moe) {
            (true, Some(m)) => self.routed_experts(&m, &mut c),
            _ => self.dense_mlp(&mut c),
        };
        c.act_bytes_selective = tok * (self.outside_bytes() + mlp_inside);
        c.act_bytes = c.act_bytes_selective;
        (c.module_bytes, c.module_rerun) = self.mlp_recompute(routed);
        let (extra_fwd, extra_bwd) = self.unfused_expert_extras(routed);
        if self.l.modules.moe_act && !self.stack.fused_expert_mlp {
            // The clamp runs inside the checkpointed activation, so it reruns with it.
            c.module_rerun += self.unfused_clamp(routed).0;
        }
        if self.l.modules.moe && routed > 0.0 {
            // The whole MoE layer reruns: all it stores but its input leaves memory (what moe_act
            // and shared_experts would drop is part of it; its linear inputs as stored, quantized
            // in FP8), and backward reruns its forward GEMMs, element-wise extras and the forward
            // all-to-all pair (half of `ep`).
            let (norm_bytes, norm_rerun) = self.norm_recompute();
            let quantized_saving = self.quantized_saving(inside_linear_inputs);
            c.module_bytes = norm_bytes + tok * mlp_inside - quantized_saving;
            c.module_rerun = norm_rerun + c.linear_fwd + extra_fwd + c.ep / 2.0;
        }
        // A dense MLP (or a MoE layer's shared experts, split over TP as one) gathers the
        // sequence-parallel tokens and reduce-scatters its output. Routed experts take the
        // chip's own tokens to the all-to-all and back (Megatron-Core's dispatchers): no TP pair
        // of their own, the expert-TP pair in `ep` where etp > 1.
        let tp_pair = match a.moe {
            Some(m) if moe && m.shared == 0 => 0.0,
            _ => self.tp_pair(),
        };
        c.fwd = c.linear_fwd + extra_fwd;
        c.bwd = 2.0 * c.linear_fwd + extra_bwd;
        c.tp = 2.0 * tp_pair;
        c.tp_fwd = tp_pair;
        // The dense MLP rerun under `mlp` gathers its input and reduce-scatters its output again.
        c.tp_module_rerun = if self.l.modules.mlp && routed == 0.0 { tp_pair } else { 0.0 };
        c
    }

    /// A dense MLP's GEMMs and linear inputs into `c`, and what it stores.
    fn dense_mlp(&self, c: &mut LayerCost) -> MlpShape {
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let f = a.d_ff as f64;
        c.linear_fwd = self.linear(2.0 * tok * a.dense_mlp_params / t, tok, a.dense_mlp_params / h / t, h);
        c.linear_inputs = tok * (h + f) / t;
        MlpShape { inside: 2.0 * (a.mlp_up as f64 + 1.0) * f / t, routed: 0.0, inside_linear_inputs: 0.0 }
    }

    /// A MoE layer's experts (routed, shared, a latent MoE's projections) and router: their
    /// GEMMs, stored bytes, linear inputs, what the fused expert MLP takes off them and the
    /// all-to-all into `c`, and what the layer stores and routes.
    fn routed_experts(&self, m: &Moe, c: &mut LayerCost) -> MlpShape {
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let fe = m.expert_d_ff as f64;
        let (mats, io) = (m.expert_matrices(), m.expert_io(a.d_model));
        // Shared experts run as one dense MLP of their summed width.
        let fs = (m.shared_d_ff * m.shared) as f64;
        let (e, et) = (self.l.ep as f64, self.l.etp as f64);
        let routed = tok / t * m.top_k as f64;
        // Under expert tensor parallelism a chip runs the `etp` ranks' gathered copies
        // through its 1/etp slice of each expert: the same FLOPs, taller and narrower GEMMs.
        let per_expert = (routed * et * e / m.experts as f64).max(1.0);
        c.linear_fwd = self.linear(2.0 * mats * io * fe * routed, per_expert, fe / et, io);
        if m.latent > 0 {
            // The projections to the latent width before routing and back after it.
            c.linear_fwd += 2.0 * self.linear(2.0 * tok * h * io / t, tok, io / t, h);
        }
        if m.shared > 0 {
            c.shared_fwd = self.linear(2.0 * mats * h * fs * tok / t, tok, fs / t, h);
            c.linear_fwd += c.shared_fwd;
        }
        c.linear_fwd += self.bf16(2.0 * h * m.experts as f64 * tok / t, tok, m.experts as f64, h);
        // Stored: the permuted inputs (all `etp` ranks' copies, gathered), up outputs and
        // activation of each routed copy (its 1/etp slice of them) and a latent MoE's two
        // projection inputs per token.
        let kept = 2.0 * mats * fe;
        let latent_in = if m.latent > 0 { tok / t * (h + io) } else { 0.0 };
        let inside = (routed * (2.0 * io * et + kept) + tok / t * 2.0 * mats * fs + 2.0 * latent_in) / tok;
        c.moe_bytes = routed * (2.0 * io * et + kept);
        let inside_linear_inputs = routed * (io * et + fe) + tok / t * fs + latent_in;
        c.linear_inputs = inside_linear_inputs + tok / t * h * m.shared as f64;
        if self.fuses_expert_mlp() {
            // The fused grouped MLP (Transformer Engine's ForwardGroupedMLP_CuTeGEMMSwiGLU_MXFP8
            // and its backward twin) applies the activation, the routing probabilities and
            // the MXFP8 cast of the down projection's input in the up projection's epilogue;
            // Transformer Engine fuses them only under an MXFP8 recipe (fuse_forward_ops).
            c.moe_fused_bytes = routed * kept;
            c.fused_casts = routed * fe;
        }
        if self.l.ep > 1 {
            c.ep = self.expert_all_to_all(tok / t, m.top_k, m.experts, io);
        }
        c.ep += 2.0 * self.expert_tensor_pair(routed, io);
        MlpShape { inside, routed, inside_linear_inputs }
    }

    /// One Mamba-2 mixer block (Megatron-Core's `MambaMixer`): its norm, the input projection to
    /// z, x, B, C and dt, the causal convolution over x, B and C, the chunked scan, the gated
    /// RMSNorm and the output projection; heads split over TP as attention's do.
    ///
    /// The projections are linear GEMMs. The convolution and the scan (SSD) run as mamba_ssm's
    /// chain of Triton kernels, small per-chunk matmuls with element-wise decays between them,
    /// each through HBM: forward and backward each cost the larger of the scan's FLOPs at
    /// `attn_eff` (backward 2.5x forward, as fused attention) and the kernels' traffic
    /// ([`crate::model::Hybrid::scan_bytes_per_token`]) at the measured bandwidth. Stored per token: the projection's output, the
    /// convolution's output, the scan's output and the gated norm's output (the output
    /// projection's input), BF16, and the scan's FP32 dt and its cumulative decay per head.
    fn mamba_block(&self) -> LayerCost {
        let Some(hy) = self.a.hybrid else {
            return LayerCost::default();
        };
        let (inp, di, conv) = (hy.in_proj_width() as f64, hy.d_inner() as f64, hy.conv_width() as f64);
        let kernels = self.chunked_mixer(hy.scan_flops_per_token(), hy.scan_bytes_per_token());
        let inside = 2.0 * inp + 2.0 * conv + 4.0 * di + 8.0 * hy.mamba_heads as f64;
        self.mixer_block(inp, di, kernels, inside)
    }

    /// A mixer block of `in_width` projected channels and an `inner`-wide output (both for the
    /// whole mixer, split over TP here) whose kernels between the two projections take
    /// `kernels` seconds (forward, backward) and store `inside` bytes a token: its norm, the
    /// projections as linear GEMMs and the TP pair around it.
    fn mixer_block(&self, in_width: f64, inner: f64, (kernel_fwd, kernel_bwd): (f64, f64), inside: f64) -> LayerCost {
        let (h, tok, t) = (self.a.d_model as f64, self.tok, self.t());
        let linear_fwd = self.linear(2.0 * tok * h * in_width / t, tok, in_width / t, h)
            + self.linear(2.0 * tok * inner * h / t, tok, h, inner / t);
        let act = tok * (self.outside_bytes() + inside / t);
        let (module_bytes, module_rerun) = self.norm_recompute();
        let tp_pair = self.tp_pair();
        LayerCost {
            fwd: linear_fwd + kernel_fwd,
            linear_fwd,
            bwd: 2.0 * linear_fwd + kernel_bwd,
            act_bytes: act,
            act_bytes_selective: act,
            linear_inputs: tok * (h + inner) / t,
            tp: 2.0 * tp_pair,
            tp_fwd: tp_pair,
            module_bytes,
            module_rerun,
            ..LayerCost::default()
        }
    }

    /// Forward and backward seconds of a mixer's chunked kernels (Mamba-2's scan, the Gated
    /// DeltaNet's delta rule) of `flops` a token forward and `bytes` (forward, backward) a token
    /// of HBM traffic, both for the whole mixer (split over TP here): each pass costs the larger
    /// of its FLOPs at the fused-attention rate (backward 2.5x forward, as FlashAttention) and
    /// its traffic at the measured bandwidth.
    fn chunked_mixer(&self, flops: f64, (fwd_bytes, bwd_bytes): (f64, f64)) -> (f64, f64) {
        let per_rank = self.tok / self.t();
        let math = per_rank * flops / (self.attention_peak() * self.k.attn_eff * self.r.attention_kernel(self.stack));
        let stream = per_rank / (self.r.mem_bw * MEM_BW_EFF);
        (math.max(fwd_bytes * stream), (2.5 * math).max(bwd_bytes * stream))
    }

    /// One Gated DeltaNet mixer block (Megatron-Core's `GatedDeltaNet`, Qwen3-Next's and
    /// Qwen3.5's linear attention): its norm, the input projection to q, k, v, the output gate
    /// z, beta and the decay's input; the causal convolution over q, k and v; the chunked gated
    /// delta rule ([`Self::chunked_mixer`], [`crate::model::Hybrid::gdn_bytes_per_token`]); the
    /// gated RMSNorm and the output projection; heads split over TP. Stored per token: the
    /// projection's output, the convolution's, q, k (at the value heads) and v, the chunk's WY
    /// matrix (FP32), the output and the gated norm's output, and beta and the decay (FP32).
    ///
    /// Kimi Delta Attention (Kimi Linear's `KimiDeltaAttention`, `kda_gate_rank` > 0) is this
    /// block with its low-rank gates: the input projection gives q, k, v, beta and the
    /// rank-wide inputs of the output gate and the decay, which two small up projections take to
    /// the value width and to one decay per key channel (vLLM
    /// vllm/model_executor/layers/kda.py at 01a7e5d: `f_a_proj`/`f_b_proj`, `g_a_proj`/`g_b_proj`),
    /// priced as one input GEMM of their summed weights; it stores those up projections' outputs
    /// and the decay per key channel (FP32) instead of per head. Its kernels are the gated delta
    /// rule's at its widths ([`crate::model::Hybrid::gdn_flops_per_token`]).
    fn gdn_block(&self) -> LayerCost {
        let Some(hy) = self.a.hybrid else {
            return LayerCost::default();
        };
        let (inp, v) = (hy.gdn_in_proj_width() as f64, hy.gdn_v_width() as f64);
        let up = hy.kda_gate_up_width() as f64;
        let kernels = self.chunked_mixer(hy.gdn_flops_per_token(), hy.gdn_bytes_per_token());
        let heads = hy.gdn_value_heads as f64;
        let (k, wy) = (heads * hy.gdn_key_dim as f64, heads * crate::model::GDN_CHUNK as f64);
        // The decay in FP32: one a value head (Gated DeltaNet), or one a key channel (KDA).
        let decay = if hy.kda_gate_rank > 0 { 4.0 * k } else { 4.0 * heads };
        let inside = 2.0 * (inp + up)
            + 2.0 * hy.gdn_conv_width() as f64
            + 2.0 * (2.0 * k + v)
            + 4.0 * wy
            + 4.0 * v
            + 4.0 * heads
            + decay;
        // KDA's up projections from its gate rank, as input-GEMM width (their weights over d_model).
        let in_width = inp + hy.kda_gate_rank as f64 * up / self.a.d_model as f64;
        self.mixer_block(in_width, v, kernels, inside)
    }

    /// Seconds of the expert-parallel all-to-all per micro-batch: dispatch and combine forward, the
    /// same two backward, for `tokens` tokens per chip each routed to `top_k` of `experts` experts.
    ///
    /// Each routed copy is `width` wide (the hidden width, or a latent MoE's latent width).
    /// A plain all-to-all sends every routed copy (2 width bytes) to its expert's rank: the copies for
    /// ranks in the chip's scale-up domain over its link, the others over its NIC. A flex
    /// dispatcher (DeepEP, HybridEP) sends a token over the scale-out network once per other domain
    /// that holds any of its experts and fans it out there over the scale-up link, so a domain's
    /// NICs carry tokens x the expected number of other domains hit, not tokens x top-k x the
    /// other domains' share (DeepSeek-V3 report section 3.2.2).
    ///
    /// An expert-parallel group's ranks sit `etp` chips apart (Megatron-Core orders an expert's
    /// ranks etp, then ep), so it spans ep x etp chips and a domain holds domain / etp of them.
    fn expert_all_to_all(&self, tokens: f64, top_k: usize, experts: usize, width: f64) -> f64 {
        let h = width;
        let (e, span) = (self.l.ep as f64, self.l.expert_model_parallel());
        let d = (self.r.domain.min(span) / self.l.etp).max(1) as f64;
        let copies = tokens * top_k as f64;
        let crosses = self.r.crosses(span);
        let (intra, inter) = if self.stack.moe_flex_dispatcher && crosses {
            let other_domains = other_domains_hit(top_k, experts, (e / d).round() as usize);
            (copies * 2.0 * h * (d - 1.0) / d, tokens * 2.0 * h * other_domains)
        } else {
            (copies * 2.0 * h * (d - 1.0) / e, copies * 2.0 * h * (e - d) / e)
        };
        let inter_s = match self.r.scaleout {
            Some(so) if crosses => inter / so,
            _ => 0.0,
        };
        let hop = self.k.hop_latency_us * 1e-6 * if crosses { 2.0 } else { 1.0 };
        4.0 * ((intra / self.r.scaleup).max(inter_s) + 2.0 * hop)
    }

    /// One direction's collective pair of expert tensor parallelism (forward, or backward): the
    /// `etp` ranks all-gather the `routed` copies (each `width` wide, BF16) the all-to-all brought
    /// each of them before the experts and reduce-scatter the experts' outputs after them
    /// (Megatron-Core's dispatchers, `gather_from_sequence_parallel_region` over the expert TP
    /// group); rings over the scale-up link as the TP pair's. 0 at etp = 1.
    fn expert_tensor_pair(&self, routed: f64, width: f64) -> f64 {
        let et = self.l.etp;
        if et == 1 {
            return 0.0;
        }
        let ef = et as f64;
        let bytes = routed * ef * width * 2.0;
        comm(2.0 * (ef - 1.0) / ef * bytes, self.r.link(1, et), 2.0 * (ef - 1.0), self.k, self.r.crosses(et))
    }

    /// Seconds, forward and backward, of the element-wise kernels Megatron-Core's grouped expert
    /// MLP runs outside its fused activation for experts with biases or a clamped activation
    /// (GPT-OSS), for `routed` routed token copies; (0, 0) for other experts.
    fn unfused_expert_extras(&self, routed: f64) -> (f64, f64) {
        if self.fuses_expert_mlp() {
            return (0.0, 0.0);
        }
        let (clamp_fwd, clamp_bwd) = self.unfused_clamp(routed);
        let (bias_fwd, bias_bwd) = self.unfused_output_bias(routed);
        (clamp_fwd + bias_fwd, clamp_bwd + bias_bwd)
    }

    /// The clamp before the fused quick-GEGLU (`weighted_bias_quick_geglu_impl`, megatron/core/
    /// fusions/fused_bias_geglu.py, at the Megatron-LM submodule commits of Megatron-Bridge v0.2.0
    /// to v0.4.2, containers 25.11 to 26.04.01): two `clamp`s over the halves of the
    /// fc1 output (2 fe per routed copy, BF16) and a `torch.cat` of them, each reading and writing
    /// its tensor: 4 x 2 fe x 2 B forward. Backward: each clamp's gradient reads the gradient and
    /// the input and writes the gradient (3 x fe x 2 B each), and `chunk`'s backward concatenates
    /// the two halves (2 x 2 fe x 2 B). Streaming traffic at the measured bandwidth, no fitted pass count.
    fn unfused_clamp(&self, routed: f64) -> (f64, f64) {
        let Some(m) = self.a.moe.filter(|m| m.clamped_activation) else {
            return (0.0, 0.0);
        };
        let fe = m.expert_d_ff as f64;
        let bw = self.r.mem_bw * MEM_BW_EFF;
        (routed * 16.0 * fe / bw, routed * 20.0 * fe / bw)
    }

    /// The fc2 bias of experts with biases: Megatron-Core's `TEGroupedMLP._apply_bias` (megatron/
    /// core/transformer/moe/experts.py, same commits) adds bias x routing probability per local expert,
    /// `(t + b * p).to(bf16)`, over the h-wide output of each routed copy. The probabilities are
    /// FP32 behind a flex dispatcher (token_dispatcher.py casts them for DeepEP and HybridEP) and
    /// BF16 otherwise (the router's softmax is `type_as` its BF16 logits unless
    /// `moe_router_dtype` is set, which no GPT-OSS recipe does); with p bytes each, forward: b * p
    /// written (p), the sum read (2 + p) and written (p), `torch.cat` (p + p) and, in FP32, the
    /// cast back (4 + 2). Backward: in FP32 the two casts (2 + 4, 4 + 2); the gradients of b and
    /// p, each a product read, written and reduced (3 p each).
    fn unfused_output_bias(&self, routed: f64) -> (f64, f64) {
        let Some(_) = self.a.moe.filter(|m| m.expert_bias) else {
            return (0.0, 0.0);
        };
        let (h, bw) = (self.a.d_model as f64, self.r.mem_bw * MEM_BW_EFF);
        let (p, casts) = if self.stack.moe_flex_dispatcher { (4.0, 1.0) } else { (2.0, 0.0) };
        let fwd = 2.0 + 5.0 * p + 6.0 * casts;
        let bwd = 6.0 * p + 12.0 * casts;
        (routed * fwd * h / bw, routed * bwd * h / bw)
    }

    /// Bytes the layout's MLP recompute modules keep from being stored in one MLP block with
    /// `routed` routed token copies (0 for a dense MLP), and the seconds their forward reruns in
    /// backward.
    fn mlp_recompute(&self, routed: f64) -> (f64, f64) {
        let (a, m) = (self.a, self.l.modules);
        let (h, t) = (a.d_model as f64, self.t());
        // A stored linear input is its 1-byte cast in FP8 (Transformer Engine keeps that copy).
        let lin = self.precision.operand_bytes();
        let (mut bytes, mut rerun) = self.norm_recompute();
        if m.moe_act && routed > 0.0 {
            let (fe, ups) = a.moe.map_or((0.0, 0.0), |x| (x.expert_d_ff as f64, x.expert_up as f64));
            // The activation's output (fe per routed copy); rerun: read the up outputs (ups fe x
            // 2 B), write the output.
            bytes += routed * fe * lin;
            rerun += routed * fe * (2.0 * ups + lin) / self.r.mem_bw;
        }
        if let Some(x) = a.moe.filter(|x| m.shared_experts && routed > 0.0 && x.shared > 0) {
            // The shared experts' up outputs and activation output (BF16, or the down
            // projection's cast input), as the dense MLP's below; rerun: their GEMMs and activation.
            let (fs, ups) = ((x.shared_d_ff * x.shared) as f64, x.expert_up as f64);
            let (b, r) = self.whole_mlp_rerun(2.0 * ups * fs + lin * fs, (ups + 1.0) * h * fs / t, fs / t);
            (bytes, rerun) = (bytes + b, rerun + r);
        }
        if m.mlp && routed == 0.0 && a.dense_mlp_params > 0.0 {
            // The up projections' outputs (BF16) and the activation's output (the down
            // projection's stored input); rerun: the MLP's GEMMs and its activation, which reads
            // the up outputs and writes its own.
            let f = a.d_ff as f64;
            let ups = 2.0 * a.mlp_up as f64 * f;
            let params = a.dense_mlp_params / t;
            let (b, r) = self.whole_mlp_rerun(ups + lin * f, params, params / h);
            (bytes, rerun) = (bytes + b, rerun + r);
        }
        (bytes, rerun)
    }

    /// An MLP checkpointed whole (the modules `mlp` and `shared_experts`), which stores `stored`
    /// bytes a token inside it (its up projections' and activation's outputs): (bytes it no
    /// longer stores, seconds backward reruns: its GEMMs of `params` weights per rank, shaped
    /// tok x h -> `n` as the block prices them, and its activation, which reads and writes those
    /// bytes once).
    fn whole_mlp_rerun(&self, stored: f64, params: f64, n: f64) -> (f64, f64) {
        let (h, t, tok) = (self.a.d_model as f64, self.t(), self.tok);
        let bytes = tok * stored / t;
        (bytes, self.linear(2.0 * tok * params, tok, n, h) + bytes / self.r.mem_bw)
    }

    /// torchtitan's per-op selective checkpointing ([`Modules::op_sac`]) of one layer whose linear
    /// GEMMs take `linear_fwd` seconds forward and whose stored activations are `act_bytes`:
    /// (bytes it does not store, seconds it reruns in backward); (0, 0) when it is off.
    ///
    /// It keeps the layer's input, the attention core's output and the outputs of every other
    /// matmul in the layer's order (q, k, v, o, the MLP's up projections, its down projection:
    /// for Llama it keeps q, v and w1 and reruns k, o and w3, 36% of the linear FLOPs); a MoE
    /// layer is taken as half of its linear time. Every element-wise op reruns too: the stack's
    /// passes over the stored bytes, as in a full recompute.
    fn op_sac(&self, moe: bool, linear_fwd: f64, act_bytes: f64) -> (f64, f64) {
        if !self.l.modules.op_sac {
            return (0.0, 0.0);
        }
        let a = self.a;
        let (h, t, tok) = (a.d_model as f64, self.t(), self.tok);
        let (qk, kv, v, f) = (a.qk_dim as f64, a.kv_exchange as f64 / 2.0, a.v_dim as f64, a.d_ff as f64);
        // Output widths of the matmuls in forward order, and the share of the FLOPs the odd ones
        // (rerun) carry; each has the weight h x width except o (v x h) and down (f x h).
        let mut widths = vec![(qk, h), (kv, h), (kv, h), (h, v)];
        widths.extend(std::iter::repeat_n((f, h), a.mlp_up));
        widths.push((h, f));
        let total: f64 = widths.iter().map(|(o, i)| o * i).sum();
        let rerun: f64 = widths.iter().skip(1).step_by(2).map(|(o, i)| o * i).sum();
        let kept_out: f64 = widths.iter().step_by(2).map(|(o, _)| o).sum();
        let share = if moe { 0.5 } else { rerun / total };
        let kept = tok * 2.0 * (h + v + kept_out) / t;
        let elementwise = passes(self.k, self.stack) * act_bytes / self.r.mem_bw;
        ((act_bytes - kept).max(0.0), share * linear_fwd + elementwise)
    }

    /// Fixed seconds per micro-batch (forward and backward) of `layers` layers, `moe_layers` of
    /// them MoE: `layer_overhead_us` per layer, the launches of its kernels, which a stack that
    /// replays the whole iteration as one CUDA graph does not pay; and `expert_overhead_us` per
    /// local expert of a MoE layer, its grouped-GEMM slice launching and draining on its own,
    /// which the fused expert MLP does not pay (its CuTe DSL kernels schedule every local
    /// expert's tiles in one grouped kernel: `tile_idx_to_expert_idx`).
    fn fixed_overhead(&self, layers: f64, moe_layers: f64) -> f64 {
        let k = self.k;
        // A hybrid's layer is one block, half a transformer layer's kernels.
        let layers = if self.a.hybrid.is_some() { layers / 2.0 } else { layers };
        let per_layer = if self.stack.full_iteration_cuda_graph { 0.0 } else { k.layer_overhead_us };
        let local_experts = self.a.moe.map_or(0.0, |m| (m.experts / self.l.ep) as f64);
        let per_expert = if self.fuses_expert_mlp() { 0.0 } else { k.expert_overhead_us };
        (layers * per_layer + moe_layers * local_experts * per_expert) * 1e-6
    }

    /// The last pipeline stage's `layers` (a `moe_frac` of them MoE), its multi-token
    /// prediction modules (per depth one attention and one MLP block and the projection of
    /// [embedding; hidden state]) and its LM head and loss (BF16), once per prediction depth.
    fn last_stage(&self, layers: f64, moe_frac: f64) -> LastStage {
        let mut sum = self.stage_in_precisions(layers, moe_frac);
        let depths = self.a.mtp.map_or(0.0, |m| m.depths as f64);
        if depths > 0.0 {
            sum.add_scaled(&self.mtp_block(), depths);
        }
        let (h, t, vocab) = (self.a.d_model as f64, self.t(), self.a.vocab as f64);
        let head = (1.0 + depths) * self.bf16(2.0 * self.tok * h * vocab / t, self.tok, vocab / t, h);
        LastStage { layers: sum, depths, head, logits_bytes: self.tok * vocab / t * 4.0 }
    }

    /// Context-parallel ring exchange of keys and values per layer (forward + backward).
    fn cp_exchange(&self) -> f64 {
        let c = self.l.cp;
        if c == 1 {
            return 0.0;
        }
        let cf = c as f64;
        let block = self.tok * self.a.kv_exchange as f64 * 2.0 / self.t();
        let span = self.l.tp * c;
        let bw = self.r.link(self.l.tp, span);
        // Forward passes each K/V block c-1 times; backward passes K/V and their gradients.
        3.0 * comm((cf - 1.0) * block, bw, cf - 1.0, self.k, self.r.crosses(span))
    }
}

/// What an MLP block's FFN stores and routes, per token of the micro-batch ([`Ctx::mlp_block`]).
struct MlpShape {
    /// Bytes stored inside the block (beyond its input), per token.
    inside: f64,
    /// Routed token copies on the chip (0 for a dense MLP).
    routed: f64,
    /// Of the linear inputs, those stored inside the MoE layer (not its input).
    inside_linear_inputs: f64,
}

/// The last pipeline stage's work per micro-batch ([`Ctx::last_stage`]).
struct LastStage {
    /// Its layers and multi-token prediction modules.
    layers: LayerCost,
    /// Multi-token prediction depths.
    depths: f64,
    /// The forward GEMMs of its LM heads.
    head: f64,
    /// One head's FP32 logits.
    logits_bytes: f64,
}

impl LastStage {
    /// Seconds of its `layers` layers' and heads' GEMMs and attention under `l`'s recompute (the
    /// element-wise work aside; heads are never recomputed): what decides whether it or a stage
    /// without the head binds the pipeline.
    fn work(&self, l: &Layout, layers: f64) -> f64 {
        layer_work(&self.layers, l, layers) + 3.0 * self.head
    }
}

/// Seconds of a stage's `layers` layers' GEMMs and attention, forward, backward and what `l`'s
/// recompute reruns.
fn layer_work(sum: &LayerCost, l: &Layout, layers: f64) -> f64 {
    let rerun = match l.recompute {
        Recompute::None => sum.module_rerun,
        Recompute::Selective => sum.attn_fwd + sum.module_rerun,
        Recompute::Full => l.recomputed_share(layers) * sum.fwd,
    };
    sum.fwd + sum.bwd + rerun
}

/// The expert-parallel all-to-all a micro-batch leaves exposed: under another micro-batch's
/// computation where the stack overlaps it (`overlap_ep`), else, where the stack computes the
/// shared experts during the dispatch and combine (`shared_expert_overlap`, Megatron-Core's
/// `moe_shared_expert_overlap` on its all-to-all dispatcher; DeepSeek-V2's HAI-LLM), under their
/// forward and backward GEMMs; else all of it.
fn ep_exposed(sum: &LayerCost, busy: f64, stack: &Stack, k: &Constants) -> f64 {
    if stack.overlap_ep {
        exposed(sum.ep, busy, true, k)
    } else if stack.shared_expert_overlap && !stack.moe_flex_dispatcher {
        exposed(sum.ep, 3.0 * sum.shared_fwd, true, k)
    } else {
        sum.ep
    }
}

/// Predict one step of `job` on `layout`. Errors only for layouts that are not well-formed.
pub fn estimate(
    job: &Job,
    layout: &Layout,
    rates: &Rates,
    k: &Constants,
    stack: &Stack,
    capacity: f64,
) -> Result<Estimate> {
    check_layout(job, layout)?;
    check_offload(layout, stack, rates)?;
    stack.check_runs(layout)?;
    let a = job.arch;
    // A framework that balances an uneven split runs it where the layout names none.
    let l = layout.balanced_on(job.arch.layers, stack);
    let n_micro = job.global_batch / (l.dp * l.mb);
    let s = job.seq as f64;
    let tok = (l.mb * job.seq / l.cp) as f64;
    let cx = Ctx { a, l, r: rates, k, stack, precision: job.precision, s, tok };
    let stage = cx.binding_stage();
    let mb = cx.micro_batch(&stage);
    let bubble = l.schedule.bubble(
        mb.total,
        mb.forward,
        stage.sum.linear_fwd + stage.head,
        l.pp as f64,
        l.v as f64,
        n_micro as f64,
    );

    let states = states_on_ranks(job, &l, stack);
    let nm = n_micro as f64;
    let dp_time = dp_exposed(&cx, &states, mb.compute, mb.recompute, nm);
    // The update streams the optimizer states once; a distributed step's end also pays fixed
    // host work every rank waits at (clipping's norm all-reduce and host sync, the update's
    // launches, loss logging) that no micro-batch hides, most of a step only on the shortest
    // steps (MLPerf's 0.1 s ones). Fitted on runs of 8 chips and more; one chip syncs with no one.
    let step_end = if l.chips() > 1 { k.step_overhead_ms * 1e-3 } else { 0.0 };
    let t_opt = states.optimizer_bytes_moved / rates.mem_bw + step_end;

    let time = StepTime {
        compute: mb.compute * nm,
        recompute: mb.recompute * nm,
        tp_comm: mb.tp * nm,
        cp_comm: mb.cp * nm,
        ep_comm: mb.ep * nm,
        pp_comm: mb.pp * nm,
        bubble,
        dp_comm: dp_time,
        optimizer: t_opt,
        offload: mb.offload * nm,
    }
    .scaled(k.chip_factor(&rates.chip));
    let memory = cx.memory(&stage, &states, mb.act_stored, n_micro);
    let tokens_per_s = (job.global_batch * job.seq) as f64 / time.total();
    let chips = layout.chips() as f64;
    let mfu = tokens_per_s * a.model_flops_per_token(job.seq) / (chips * rates.nominal_bf16);
    Ok(Estimate {
        layout: l,
        precision: job.precision,
        global_batch: job.global_batch,
        micro_batches: n_micro,
        time,
        memory,
        capacity,
        host_capacity: rates.host_memory,
        tokens_per_s,
        mfu,
    })
}

/// Offloading activations needs a stack that does it and the chip's link to host memory.
fn check_offload(layout: &Layout, stack: &Stack, rates: &Rates) -> Result<()> {
    if layout.offload > 0 && !stack.activation_offload {
        bail!(
            "layout {layout}: stack {} does not offload activations; use a stack that does (nemo-2025, megatron-core-2024, maxtext-2025) or a stack file with activation_offload = true",
            stack.name
        );
    }
    if layout.offload > 0 && rates.host_link.is_none() {
        bail!(
            "layout {layout}: offload needs the chip's link to host memory, host_link_gbs; give it with --override {}.host_link_gbs=GB/S (one direction)",
            rates.chip
        );
    }
    Ok(())
}

/// The chip's parameters and states; under DualPipe each rank holds its stage of both
/// directions: the weights and gradients twice, and both copies' gradients reduced and weights
/// gathered over data parallel (one optimizer state serves the two).
fn states_on_ranks(job: &Job, l: &Layout, stack: &Stack) -> States {
    let mut states = states_per_chip(job, l, stack);
    if l.schedule == Schedule::DualPipe {
        states.weights *= 2.0;
        states.gradients *= 2.0;
        states.dense_params *= 2.0;
        states.expert_params *= 2.0;
    }
    states
}

/// The pipeline stage whose work sets the step ([`Ctx::binding_stage`]).
struct BindingStage {
    /// The pipeline's split of the layers.
    split: StageSplit,
    /// The last stage (layers, MTP modules, LM heads), binding or not.
    last: LastStage,
    /// The MoE share of the layers, every stage priced in the model's proportions.
    moe_frac: f64,
    /// Layers of the binding stage.
    layers: f64,
    /// Its layers' (and MTP modules') costs per micro-batch.
    sum: LayerCost,
    /// Under pipelining, the costs of the most layers a stage without the LM head holds
    /// ([`StageSplit::body`]): whether such a stage binds, and the first stage's memory.
    body_sum: Option<LayerCost>,
    /// Its multi-token prediction depths (0 for a stage without the head).
    depths: f64,
    /// LM heads on it (1 + depths on the last stage, else 0).
    heads: f64,
    /// The forward GEMMs of its heads.
    head: f64,
}

/// One micro-batch on the binding stage, seconds: what the step multiplies by the micro-batches.
struct MicroBatch {
    /// GEMMs, attention, element-wise traffic and fixed costs, forward and backward.
    compute: f64,
    /// What recompute reruns.
    recompute: f64,
    /// Exposed tensor-, context-, expert- and pipeline-parallel communication and offload copies.
    tp: f64,
    cp: f64,
    ep: f64,
    pp: f64,
    offload: f64,
    /// All of it, and its forward part (what the schedule's bubble is made of).
    total: f64,
    forward: f64,
    /// Activation bytes it stores across the stage.
    act_stored: f64,
}

impl Ctx<'_> {
    /// Layers of the heaviest stage, split by kind in proportion: the last stage's, with the
    /// multi-token prediction modules and the LM head, unless an uneven split leaves a stage
    /// without them more work.
    fn binding_stage(&self) -> BindingStage {
        let (a, l) = (self.a, &self.l);
        let split = l.stage_split(a.layers);
        let moe_frac = a.moe_layers() as f64 / a.layers as f64;
        let last = self.last_stage(split.last, moe_frac);
        let body = split.body();
        let body_sum = (l.pp > 1).then(|| self.stage_in_precisions(body, moe_frac));
        let (layers, sum, depths, heads) = match body_sum {
            Some(b) if body > split.last && layer_work(&b, l, body) > last.work(l, split.last) => (body, b, 0.0, 0.0),
            _ => (split.last, last.layers, last.depths, 1.0 + last.depths),
        };
        let head = if heads > 0.0 { last.head } else { 0.0 };
        BindingStage { split, last, moe_frac, layers, sum, body_sum, depths, heads, head }
    }

    /// Element-wise traffic of a micro-batch on `stage`: each stored byte is touched `passes`
    /// times forward, twice that backward. Routed tokens go through top-k, permutation,
    /// un-permutation and weighted combine: their own pass count (`moe_passes`).
    fn elementwise(&self, stage: &BindingStage) -> f64 {
        let (k, stack, sum, bw) = (self.k, self.stack, &stage.sum, self.r.mem_bw);
        let dense_bytes = sum.act_bytes - sum.moe_bytes;
        let moe_elementwise = sum.moe_bytes - sum.moe_fused_bytes;
        let mut elem = (passes(k, stack) * dense_bytes + k.moe_passes * moe_elementwise) * 3.0 / bw
            + stage.heads * loss_traffic(k, stack, stage.last.logits_bytes) / bw;
        if self.precision.quantized() {
            // Transformer Engine casts every linear input to FP8 (AQT to INT8, the nvfp4 recipe to
            // FP4 alike): forward input, backward output gradient and the transposed copy for the
            // weight gradient; each cast reads the BF16 tensor twice (amax, then scale) and writes
            // the quantized operand.
            let per_cast = 4.0 + self.precision.operand_bytes();
            elem += 3.0 * per_cast * (sum.linear_inputs - sum.fused_casts) / bw;
        }
        elem
    }

    /// A micro-batch on `stage`: its compute, recompute and the communication it leaves exposed.
    fn micro_batch(&self, stage: &BindingStage) -> MicroBatch {
        let (l, k, stack, rates, sum) = (&self.l, self.k, self.stack, self.r, &stage.sum);
        let elem = self.elementwise(stage);
        let mtp_moe = if self.a.moe.is_some() { stage.depths } else { 0.0 };
        let overhead = self.fixed_overhead(stage.layers + stage.depths, stage.layers * stage.moe_frac + mtp_moe);
        let compute = sum.fwd + sum.bwd + 3.0 * stage.head + elem + overhead;
        let share = l.recomputed_share(stage.layers);
        let recompute = match l.recompute {
            Recompute::None => sum.module_rerun,
            Recompute::Selective => sum.attn_fwd + sum.module_rerun,
            Recompute::Full => share * (sum.fwd + passes(k, stack) * sum.act_bytes / rates.mem_bw + overhead / 3.0),
        };
        let busy = compute + recompute;
        // A full recompute reruns the forward's TP collectives; torchtitan's per-op checkpointing
        // keeps the reduce-scatters' outputs (in its save list) and reruns the all-gathers: half.
        let tp_rerun = match (l.recompute, l.modules.op_sac) {
            (Recompute::Full, _) => share * sum.tp_fwd,
            (_, true) => 0.5 * sum.tp_fwd,
            _ => sum.tp_module_rerun,
        };
        let tp = exposed(sum.tp + tp_rerun, busy, stack.overlap_tp, k);
        // Ring attention overlaps the exchange with the attention it feeds, in every stack.
        let cp = exposed(sum.cp, sum.attn_fwd + sum.attn_bwd, true, k);
        let ep = ep_exposed(sum, busy, stack, k);
        let pp = self.pipeline_sends(busy);
        // Offload copies run on the copy engines, not the SMs (Megatron-Core's offloading streams):
        // hidden under the micro-batch's compute, only what outlasts it shows; taking no SMs, they
        // pay none of the contention the overlapped collectives pay.
        let act_stored = self.stored_per_micro_batch(sum, stage.layers);
        let offload = (self.offload_copies(act_stored, stage.layers) - busy).max(0.0);
        let total = busy + tp + cp + ep + pp + offload;
        // The schedule splits a micro-batch into its forward (with its third of the element-wise
        // work and fixed costs, the exposed communication in proportion) and its weight
        // gradients, whose GEMMs are as long as the forward's linears.
        let forward = total * (sum.fwd + stage.head + (elem + overhead) / 3.0) / busy;
        MicroBatch { compute, recompute, tp, cp, ep, pp, offload, total, forward, act_stored }
    }

    /// The exposed pipeline sends of a micro-batch (a send per chunk boundary, forward and
    /// backward), hidden up to `busy` where the stack overlaps them.
    fn pipeline_sends(&self, busy: f64) -> f64 {
        let (l, rates, k) = (&self.l, self.r, self.k);
        if l.pp == 1 {
            return 0.0;
        }
        let (h, v) = (self.a.d_model as f64, l.v as f64);
        let bytes = self.tok * h * 2.0 / self.sp_split();
        let span = l.tp * l.cp * l.dp * 2;
        let sends = comm(2.0 * v * bytes, rates.link(l.tp * l.cp * l.dp, span), 2.0 * v, k, rates.crosses(span));
        exposed(sends, busy, self.stack.overlap_pp, k)
    }

    /// The heaviest chip's memory: its states and the activations in flight on its stage.
    fn memory(&self, stage: &BindingStage, states: &States, act_stored: f64, n_micro: usize) -> Memory {
        let (activations, offloaded, logits) = if let Some(first_sum) = &stage.body_sum {
            self.peak_stage_activations(&stage.split, &stage.last, first_sum, n_micro)
        } else {
            let (first, offloaded) = self.activation_memory(&stage.sum, act_stored, stage.layers, n_micro);
            (first, offloaded, stage.heads * logits_memory(self.stack, stage.last.logits_bytes))
        };
        Memory {
            weights: states.weights,
            gradients: states.gradients,
            optimizer: states.optimizer,
            gathered: states.gathered,
            activations,
            logits,
            reserve: self.k.reserve_gib * GIB,
            offloaded,
        }
    }
}

/// Why an uneven pipeline split (`first`, `last`) cannot place `layers`.
fn check_stage_split(l: &Layout, layers: usize) -> Result<()> {
    let given: Vec<usize> = [l.first_layers, l.last_layers].into_iter().flatten().collect();
    if given.is_empty() {
        return Ok(());
    }
    if l.pp < 2 {
        bail!("layout {l}: first= and last= set the layers of the first and last pipeline stages; give pp=2 or more");
    }
    if given.contains(&0) {
        bail!("layout {l}: first= and last= count the layers of a stage: give 1 or more");
    }
    let (pinned, others) = (given.iter().sum::<usize>(), l.pp - given.len());
    let rest = layers.checked_sub(pinned).filter(|&r| if others == 0 { r == 0 } else { r >= others * l.v });
    if rest.is_none() {
        bail!(
            "layout {l}: first/last stages hold {pinned} of the model's {layers} layers, leaving {} for the other {others} stages; they must leave every other stage at least vp={} layers{}",
            layers as i64 - pinned as i64,
            l.v,
            if others == 0 { " (with pp=2, first + last = layers)" } else { "" }
        );
    }
    Ok(())
}

/// Why a layout cannot run this job at all (as opposed to not fitting in memory).
pub fn check_layout(job: &Job, l: &Layout) -> Result<()> {
    check_degrees(job, l)?;
    check_pipeline(job.arch, l)?;
    check_splits(job, l)?;
    check_experts(job.arch, l)?;
    let a = job.arch;
    if l.bf16_layers > a.layers {
        bail!("layout {l}: bf16={} is more than the model's {} layers", l.bf16_layers, a.layers);
    }
    check_stage_split(l, a.layers)?;
    if l.offload > a.layers.div_ceil(l.pp) {
        bail!("layout {l}: offload={} is more than a stage's {} layers", l.offload, a.layers.div_ceil(l.pp));
    }
    check_recompute_layers(l, a.layers)
}

/// `recompute_layers` only under a full recompute, and no more than a chunk's layers.
fn check_recompute_layers(l: &Layout, layers: usize) -> Result<()> {
    if l.recompute_layers == 0 {
        return Ok(());
    }
    if l.recompute != Recompute::Full {
        bail!(
            "layout {l}: recompute_layers={} needs recompute=full (the layers of each chunk that rerun their forward)",
            l.recompute_layers
        );
    }
    let chunk = l.chunk_layers(layers);
    if l.recompute_layers > chunk {
        bail!(
            "layout {l}: recompute_layers={} is more than a chunk's {chunk} layers; give at most {chunk} (or leave it out to recompute every layer)",
            l.recompute_layers
        );
    }
    Ok(())
}

/// Every degree at least 1, a ZeRO stage that exists, shard groups that divide data parallel,
/// and a global batch that the data-parallel micro-batches divide.
fn check_degrees(job: &Job, l: &Layout) -> Result<()> {
    if [l.tp, l.pp, l.dp, l.cp, l.mb, l.v, l.ep, l.etp].contains(&0) {
        bail!("layout {l}: every degree must be at least 1");
    }
    if l.zero > 3 {
        bail!("layout {l}: zero must be 0, 1, 2 or 3");
    }
    if l.shard > 0 && !l.dp.is_multiple_of(l.shard) {
        bail!("layout {l}: shard={} must divide dp={} (each group of shard replicas holds one copy)", l.shard, l.dp);
    }
    if l.replicas() > 1 && l.zero == 0 {
        bail!("layout {l}: shard={} shards a ZeRO stage: give zero=1, 2 or 3", l.shard);
    }
    if !job.global_batch.is_multiple_of(l.dp * l.mb) {
        bail!("layout {l}: global batch {} is not a multiple of dp x mb = {}", job.global_batch, l.dp * l.mb);
    }
    Ok(())
}

/// Stages the layers can fill, interleaved chunks a stage can hold, and a schedule the
/// pipeline can run.
fn check_pipeline(a: &Arch, l: &Layout) -> Result<()> {
    if l.pp > a.layers {
        bail!("layout {l}: {} layers cannot fill {} pipeline stages", a.layers, l.pp);
    }
    if l.v > a.layers.div_ceil(l.pp) {
        bail!(
            "layout {l}: a stage of {} layers cannot be split into vp={} interleaved chunks",
            a.layers.div_ceil(l.pp),
            l.v
        );
    }
    if l.v > 1 && l.pp == 1 {
        bail!("layout {l}: interleave vp={} needs pipeline parallelism (pp > 1)", l.v);
    }
    if l.schedule != Schedule::OneFOneB {
        if l.pp == 1 {
            bail!("layout {l}: schedule={} needs pipeline parallelism (pp > 1)", l.schedule);
        }
        if l.v > 1 {
            bail!(
                "layout {l}: schedule={} runs one chunk per stage; use vp=1 (or schedule=1f1b to interleave)",
                l.schedule
            );
        }
    }
    if l.schedule == Schedule::DualPipe && !l.pp.is_multiple_of(2) {
        bail!("layout {l}: schedule=dualpipe pairs the stages from both ends: pp must be even");
    }
    Ok(())
}

/// Heads (attention, Mamba-2, Gated DeltaNet) that tensor parallelism splits, and a sequence
/// that context parallelism splits where it is priced.
fn check_splits(job: &Job, l: &Layout) -> Result<()> {
    let a = job.arch;
    if !a.heads.is_multiple_of(l.tp) {
        bail!("layout {l}: {} attention heads do not split over tp={}", a.heads, l.tp);
    }
    if !job.seq.is_multiple_of(l.cp) {
        bail!("layout {l}: sequence {} is not a multiple of cp {}", job.seq, l.cp);
    }
    if let Some(hy) = a.hybrid.filter(|hy| hy.mamba > 0) {
        if l.cp > 1 {
            bail!("layout {l}: context parallelism over Mamba-2 layers is not priced; use cp=1");
        }
        if !hy.mamba_heads.is_multiple_of(l.tp) || !hy.mamba_groups.is_multiple_of(l.tp) {
            bail!(
                "layout {l}: {} Mamba-2 heads in {} groups do not split over tp={}",
                hy.mamba_heads,
                hy.mamba_groups,
                l.tp
            );
        }
    }
    if let Some(hy) = a.hybrid.filter(|hy| hy.gdn > 0) {
        if l.cp > 1 {
            bail!("layout {l}: context parallelism over Gated DeltaNet layers is not priced; use cp=1");
        }
        if !hy.gdn_key_heads.is_multiple_of(l.tp) {
            bail!("layout {l}: {} Gated DeltaNet key heads do not split over tp={}", hy.gdn_key_heads, l.tp);
        }
    }
    Ok(())
}

/// Expert parallelism only on a MoE model, its experts and their width splitting over ep and
/// etp, and the expert grid fitting the ranks it is folded onto.
fn check_experts(a: &Arch, l: &Layout) -> Result<()> {
    match a.moe {
        None if l.ep > 1 => bail!("layout {l}: ep={} needs a mixture-of-experts model", l.ep),
        None if l.etp > 1 => bail!("layout {l}: etp={} needs a mixture-of-experts model", l.etp),
        Some(m) if m.experts % l.ep != 0 => bail!("layout {l}: {} experts do not split over ep={}", m.experts, l.ep),
        Some(m) if m.expert_d_ff % l.etp != 0 => {
            bail!("layout {l}: the experts' width {} does not split over etp={}", m.expert_d_ff, l.etp)
        }
        _ => {}
    }
    if !(l.tp * l.cp * l.dp).is_multiple_of(l.expert_model_parallel()) {
        bail!("layout {l}: ep x etp = {} must divide tp x cp x dp = {}", l.expert_model_parallel(), l.tp * l.cp * l.dp);
    }
    Ok(())
}

/// Parameters and state bytes of one chip.
struct States {
    /// Non-expert parameters on the chip (before data-parallel sharding).
    dense_params: f64,
    /// Expert parameters on the chip (before expert-data-parallel sharding).
    expert_params: f64,
    /// Ranks one sharded copy of the non-expert parameters spans (the data-parallel group, or
    /// its shard group under hybrid sharding).
    n_dp: f64,
    /// The same for the expert parameters.
    n_edp: f64,
    /// Sharded copies of the non-expert states (1 unless hybrid sharding).
    dp_copies: f64,
    /// Sharded copies of the expert states.
    edp_copies: f64,
    weights: f64,
    gradients: f64,
    optimizer: f64,
    gathered: f64,
    optimizer_bytes_moved: f64,
}

/// One MoE layer's parameters on a chip of layout `l`: (non-expert: router, shared experts and a
/// latent MoE's projections, split over TP; the chip's `experts / ep` local experts, each split
/// over `etp`).
fn moe_layer_params(a: &Arch, m: &crate::model::Moe, l: &Layout) -> (f64, f64) {
    let (h, t) = (a.d_model as f64, l.tp as f64);
    let (mats, io) = (m.expert_matrices(), m.expert_io(a.d_model));
    let dense = h * m.experts as f64 + (mats * h * (m.shared_d_ff * m.shared) as f64 + m.latent_params(a.d_model)) / t;
    (dense, (m.experts / l.ep) as f64 * mats * io * m.expert_d_ff as f64 / l.etp as f64)
}

/// Non-expert and expert parameters of a rank holding `stage_layers` layers, its share of the
/// multi-token prediction modules, the embedding and the LM head, before data-parallel sharding.
fn params_on_rank(a: &Arch, l: &Layout, stage_layers: f64) -> (f64, f64) {
    let t = l.tp as f64;
    let moe_frac = a.moe_layers() as f64 / a.layers as f64;
    let h = a.d_model as f64;
    let b = a.blocks_per_layer();
    let (mut dense, mut expert) = (stage_layers * b.attention * a.attn_params_on(l.tp), 0.0);
    dense += stage_layers * b.mlp * a.dense_mlp_params / t;
    if let Some(hy) = a.hybrid {
        dense += stage_layers * (b.mamba * hy.mamba_params(a.d_model) + b.gdn * hy.gdn_params(a.d_model)) / t;
    }
    if let Some(m) = a.moe {
        let moe_layers = stage_layers * moe_frac;
        let (d, e) = moe_layer_params(a, &m, l);
        dense += moe_layers * d;
        expert = moe_layers * e;
    }
    // Multi-token prediction modules on the last stage.
    if let Some(mtp) = a.mtp {
        let n = mtp.modules as f64;
        dense += n * (a.attn_params_on(l.tp) + 2.0 * h * h / t);
        match a.moe {
            Some(m) => {
                let (d, e) = moe_layer_params(a, &m, l);
                dense += n * d;
                expert += n * e;
            }
            None => dense += n * a.dense_mlp_params / t,
        }
    }
    // Embedding on the first stage, LM head on the last (both on one chip when pp = 1).
    dense += (a.vocab * a.d_model) as f64 / t * if l.pp == 1 && !a.tied { 2.0 } else { 1.0 };
    (dense, expert)
}

/// The heaviest rank's parameters and its weight, gradient, optimizer-state and gathered bytes
/// under the layout's ZeRO stage (or hybrid sharding) and the stack's byte widths.
fn states_per_chip(job: &Job, l: &Layout, stack: &Stack) -> States {
    // The rank with the most layers, counted with the embedding or LM head and the multi-token
    // prediction modules as if it held them too (exact for an even split, at most a layer's
    // states over for an uneven one).
    let stage_layers = l.stage_split(job.arch.layers).most();
    let (dense, expert) = params_on_rank(job.arch, l, stage_layers);
    // The groups the states are sharded over: one copy per `replicas` (hybrid sharding).
    let replicas = l.replicas() as f64;
    let n_dp = (l.dp * l.cp) as f64 / replicas;
    // An expert shard's data-parallel ranks inside one copy: the copy's chips over ep x etp (one
    // when an expert-parallel group spans several copies).
    let all = l.tp * l.cp * l.dp;
    let expert_mp = l.expert_model_parallel();
    let n_edp = ((all / l.replicas()) / expert_mp).max(1) as f64;
    let edp_copies = ((all / expert_mp) as f64 / n_edp).max(1.0);
    let shard = |p: f64, n: f64, on: bool| if on { p / n } else { p };
    let zero = l.zero;
    let opt_sharded = zero >= 1 || stack.distributed_optimizer;
    // Transformer Engine keeps a quantized copy of the weights (FP8, or NVFP4's 0.5625 bytes);
    // AQT quantizes INT8 weights on the fly.
    let quantized_copy = match job.precision {
        Precision::Fp8 | Precision::Fp4 => job.precision.operand_bytes(),
        Precision::Bf16 | Precision::Int8 => 0.0,
    };
    let weights = (2.0 + quantized_copy) * (shard(dense, n_dp, zero >= 3) + shard(expert, n_edp, zero >= 3));
    let gradients = stack.main_grad_bytes * (shard(dense, n_dp, zero >= 2) + shard(expert, n_edp, zero >= 2));
    // The parameters whose optimizer states this chip holds and updates.
    let updated = shard(dense, n_dp, opt_sharded) + shard(expert, n_edp, opt_sharded);
    let optimizer = stack.optimizer_state_bytes * updated;
    let gathered = if zero >= 3 {
        if stack.zero3_keep_gathered {
            2.0 * (dense + expert)
        } else {
            // Two layers in flight: the one computing and the one prefetched.
            2.0 * 2.0 * (dense + expert) / stage_layers.max(1.0)
        }
    } else {
        0.0
    };
    States {
        dense_params: dense,
        expert_params: expert,
        n_dp,
        n_edp,
        dp_copies: replicas,
        edp_copies,
        weights,
        gradients,
        optimizer,
        gathered,
        // AdamW: read the states and the FP32 gradient, write the states and the BF16 weights.
        optimizer_bytes_moved: updated * (2.0 * stack.optimizer_state_bytes + 4.0 + 2.0),
    }
}

/// Gradient buckets of a data-parallel group of `n` ranks holding `params` parameters:
/// Megatron-Core's default bucket holds max(40M, 1M x n) parameters
/// (megatron/training/training.py, `resolve_ddp_bucket_size`).
fn dp_buckets(params: f64, n: f64) -> f64 {
    (params / 40e6f64.max(1e6 * n)).ceil().max(1.0)
}

/// Exposed data-parallel communication per step.
///
/// Under hybrid sharding (`Layout::shard`) the ZeRO collectives run inside each shard group
/// (consecutive ranks, usually one node or slice) and the `replicas` copies all-reduce the
/// reduce-scattered gradient shard across groups, a 1/n share of the gradients per rank, after the
/// reduce-scatter, overlapped with backward as a data-parallel gradient reduction is (ZeRO-3:
/// every micro-batch, as its reduce-scatter).
fn dp_exposed(cx: &Ctx, st: &States, compute_mb: f64, recompute_mb: f64, nm: f64) -> f64 {
    let l = cx.l;
    let all = l.tp * l.cp * l.dp;
    // Megatron-Core orders an expert's ranks etp, then ep, then expert data parallel.
    let expert_mp = l.expert_model_parallel();
    let groups = [
        DpGroup { params: st.dense_params, n: st.n_dp, replicas: st.dp_copies, stride: l.tp, span: all / l.replicas() },
        DpGroup {
            params: st.expert_params,
            n: st.n_edp,
            replicas: st.edp_copies,
            stride: expert_mp,
            span: st.n_edp as usize * expert_mp,
        },
    ];
    // Backward runs the recomputed forward too, and the collectives overlap it as well.
    let windows = (compute_mb * 2.0 / 3.0 + recompute_mb, compute_mb / 3.0);
    let mut total = 0.0;
    for g in groups.iter().filter(|g| g.params != 0.0 && g.n * g.replicas > 1.0) {
        total += group_exposed(cx, g, windows, nm);
    }
    total
}

/// Parameters synchronised over one data-parallel group: `n` ranks of one sharded copy,
/// `replicas` copies, the copy's ranks `stride` apart and spanning `span` chips.
struct DpGroup {
    params: f64,
    n: f64,
    replicas: f64,
    stride: usize,
    span: usize,
}

/// The exposed collectives of group `g` per step under the layout's ZeRO stage, hidden up to a
/// micro-batch's (backward, forward) `windows` where the stack overlaps them.
fn group_exposed(cx: &Ctx, g: &DpGroup, (bwd_window, fwd_window): (f64, f64), nm: f64) -> f64 {
    let (l, r, k, stack) = (cx.l, cx.r, cx.k, cx.stack);
    let (params, n, replicas) = (g.params, g.n, g.replicas);
    let all = l.tp * l.cp * l.dp;
    let frac = (n - 1.0) / n;
    let bw = r.link(g.stride, g.span);
    let crosses = r.crosses(g.span);
    // Each bucket is a collective whose latency grows with log2 of the group (NCCL trees
    // across nodes, rings inside).
    let steps = dp_buckets(params, n) * 2.0 * n.log2().max(1.0);
    let grads = params * stack.grad_comm_bytes;
    // A stack that gathers FP8 parameters moves 1 byte a weight in FP8 training.
    let weights = params * if stack.fp8_param_gather && matches!(cx.precision, Precision::Fp8) { 1.0 } else { 2.0 };
    let (rs, ag) = (frac * grads, frac * weights);
    // A collective inside one sharded copy (none when the copy is one rank).
    let inside = |bytes: f64| if n > 1.0 { comm(bytes, bw, steps, k, crosses) } else { 0.0 };
    // The copies' all-reduce of each rank's gradient shard, between ranks one copy's span
    // apart (none without hybrid sharding).
    let across = if replicas > 1.0 {
        let steps = dp_buckets(params, n * replicas) * 4.0 * replicas.log2().max(1.0);
        let bytes = 2.0 * (replicas - 1.0) / replicas * grads / n;
        comm(bytes, r.link(g.span, all), steps, k, r.crosses(all))
    } else {
        0.0
    };
    let ov = stack.overlap_dp;
    match l.zero {
        3 => {
            let (ag_mb, rs_mb) = (inside(ag), inside(rs));
            // Prefetched a layer ahead on their own stream, the gathers and scatters run
            // under the compute as far as it lasts and pay there what every overlapped
            // collective pays, (1 - overlap_hidden) of themselves: NCCL's kernels take SMs
            // and memory bandwidth from the GEMMs beside them. (Priced fully hidden until
            // 2026-12-05, when the fit on 263 rows put the hidden fraction at 1; with the
            // llm-foundry and torchtitan FSDP rows the shared constant predicts better out
            // of sample: docs/results.md.)
            let z3 = |t: f64, w: f64| exposed(t, w, ov, k);
            // The copies' all-reduce is a bulk gradient reduction, overlapped as data
            // parallelism's is.
            let gathers = if stack.zero3_keep_gathered {
                z3(ag_mb, fwd_window) + nm * z3(rs_mb, bwd_window)
            } else {
                nm * (z3(ag_mb, fwd_window) + z3(ag_mb + rs_mb, bwd_window))
            };
            gathers + nm * exposed(across, bwd_window, ov, k)
        }
        // ZeRO-2 keeps only its shard of the gradients, so it cannot sum a step's micro-batches
        // locally: each micro-batch's gradients are reduce-scattered as its backward makes them
        // (DeepSpeed's stage 2, FSDP's SHARD_GRAD_OP, Paddle's sharding stage 2), the updated
        // weights all-gathered once per step.
        2 => nm * exposed(inside(rs) + across, bwd_window, ov, k) + exposed(inside(ag), fwd_window, ov, k),
        z if z >= 1 || stack.distributed_optimizer => {
            exposed(inside(rs) + across, bwd_window, ov, k) + exposed(inside(ag), fwd_window, ov, k)
        }
        _ => exposed(comm(2.0 * frac * grads, bw, 2.0 * steps, k, crosses), bwd_window, ov, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_loss_moves_the_logits_three_times() {
        let k = Constants::prior();
        let m = crate::model::resolve("llama-30m").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let chip = db.find("h20").unwrap();
        let job = Job { arch: &m.arch, seq: 256, global_batch: 32, precision: Precision::Bf16 };
        let l = Layout { mb: 32, ..Layout::data_parallel(1) };
        let r = Rates::of(chip, &k, 1, Precision::Bf16).unwrap();
        let fused = crate::stack::find("nemo-2025").unwrap();
        let unfused = crate::stack::Stack { fused_cross_entropy: false, ..fused.clone() };
        let step = |st: &Stack| estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.total();
        // 32 x 256 tokens x the vocabulary in FP32: 3 passes fused, 3 x 3 x elementwise_passes unfused.
        let logits = 32.0 * 256.0 * m.arch.vocab as f64 * 4.0;
        let want = (9.0 * k.elementwise_passes - 3.0) * logits / r.mem_bw;
        let got = step(&unfused) - step(&fused);
        assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn schedules_price_their_published_bubbles() {
        // F = B = W = 1 a micro-batch on 8 stages (t_mb 3, forward 1, weight gradients 1):
        // 1F1B (p-1)(F+B+W) = 21; ZB-H1 (p-1)(F+B-W) = 7; ZB-H2 (p-1)(F+B-2W) = 0 (Qi et al.,
        // Table 1); DualPipe (p/2-1)(F&B+B-3W) in chunk times (half a rank's: F&B 1.5, B 1,
        // W 0.5) = 3 (DeepSeek-V3 report, Table 2); interleaving over 2 chunks halves 1F1B's.
        let b = |s: Schedule, v: f64| s.bubble(3.0, 1.0, 1.0, 8.0, v, 64.0);
        assert_eq!(
            [b(Schedule::OneFOneB, 1.0), b(Schedule::OneFOneB, 2.0), b(Schedule::ZbH1, 1.0), b(Schedule::ZbH2, 1.0)],
            [21.0, 10.5, 7.0, 0.0]
        );
        assert!((b(Schedule::DualPipe, 1.0) - 3.0).abs() < 1e-12);
        // With 7 micro-batches or more every idle slot is filled; with 2, the B-only backward
        // chain saves (p-1)W = 7 and the filling 2/7 of the other 7: 21 - 7 - 2 = 12.
        assert_eq!(Schedule::ZbH1.bubble(3.0, 1.0, 1.0, 8.0, 1.0, 7.0), 7.0);
        assert!((Schedule::ZbH1.bubble(3.0, 1.0, 1.0, 8.0, 1.0, 2.0) - 12.0).abs() < 1e-12);
        for s in ["1f1b", "zb-h1", "zb-h2", "dualpipe"] {
            assert_eq!(Schedule::parse(s).unwrap().to_string(), s);
        }
        assert!(Schedule::parse("zb-v").is_err());
    }

    #[test]
    fn zero_bubble_schedules_trade_bubble_for_memory_as_published() {
        // Llama 3 8B on 8 H100 in 8 stages, 64 micro-batches: the weight gradients W come off the
        // bubble twice under ZB-H1 and once more under ZB-H2, so 1F1B - ZB-H1 = 2 (ZB-H1 - ZB-H2);
        // ZB-H1 keeps 1F1B's memory, ZB-H2 holds 2p - 1 micro-batches where 1F1B holds p, and
        // DualPipe p + 1 and its stage's weights and gradients twice.
        let k = Constants::prior();
        let m = crate::model::resolve("llama3-8b").unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        let st = crate::stack::find("megatron-core-2024").unwrap();
        let run = |schedule| h100_job(&job, &k, &st, Layout { pp: 8, dp: 1, schedule, ..Layout::data_parallel(1) });
        let [one, h1, h2, dual] = [Schedule::OneFOneB, Schedule::ZbH1, Schedule::ZbH2, Schedule::DualPipe].map(run);
        let (b1, bh1, bh2) = (one.time.bubble, h1.time.bubble, h2.time.bubble);
        assert!(b1 > bh1 && bh1 > bh2 && bh2 > 0.0, "{b1} {bh1} {bh2}");
        assert!(((b1 - bh1) - 2.0 * (bh1 - bh2)).abs() < 1e-9 * b1, "{b1} {bh1} {bh2}");
        assert!(dual.time.bubble < bh1, "{dual:?}");
        let act = one.memory.activations;
        assert_eq!(h1.memory.activations, act);
        assert!((h2.memory.activations / act - 15.0 / 8.0).abs() < 1e-9, "{:?}", h2.memory);
        assert!((dual.memory.activations / act - 9.0 / 8.0).abs() < 1e-9, "{:?}", dual.memory);
        assert_eq!(dual.memory.weights, 2.0 * one.memory.weights);
        assert_eq!(dual.memory.optimizer, one.memory.optimizer);
    }

    #[test]
    fn an_uneven_pipeline_split_prices_the_stage_that_binds() {
        // Llama 3 8B (32 layers; its LM head and loss about three layers' time) over 4 stages of
        // 8 H100.
        // Every per-micro-batch cost is linear in a stage's layers, so: with the last stage at 2
        // layers a middle one of ceil(30 / 3) = 10 binds, with first 9 and last 5 one of 9 (the
        // last stage's 5 and the head come to less), 10 / 9 of it; with first 6 and last 8 the
        // middle stages hold 9, but the last stage's 8 and the head bind, as in the even split.
        let k = Constants::prior();
        let m = crate::model::resolve("llama3-8b").unwrap();
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
        let st = crate::stack::find("megatron-core-2024").unwrap();
        let at = |first, last| {
            let l = Layout { pp: 4, dp: 2, first_layers: first, last_layers: last, ..Layout::data_parallel(8) };
            h100_job(&job, &k, &st, l)
        };
        let compute = |e: &Estimate| e.time.compute;
        let (even, ten, nine, same) = (at(None, None), at(None, Some(2)), at(Some(9), Some(5)), at(Some(6), Some(8)));
        assert!((compute(&ten) / compute(&nine) - 10.0 / 9.0).abs() < 1e-9, "{ten:?} {nine:?}");
        assert!(compute(&nine) < compute(&even), "{even:?}");
        assert_eq!(compute(&same), compute(&even));
        // The first stage's p micro-batches in flight hold the memory: 9 layers' worth against 8.
        let act = |e: &Estimate| e.memory.activations;
        assert!((act(&nine) / act(&even) - 9.0 / 8.0).abs() < 1e-9, "{:?} {:?}", nine.memory, even.memory);
    }

    #[test]
    fn a_megatron_core_stack_balances_the_splits_it_must() {
        // Layers that do not divide over the pp x vp chunks: Megatron-Core's recipes count the
        // embedding and the loss as layers (Llama 3.1 405B's 126 at pp 8, vp 8: 15 on the end
        // stages, 16 between; Qwen3-235B-A22B's 94 at pp 8, vp 4: 11), or give DeepSeek-V3's 61
        // a layout whose last chunk holds one layer (the last rank 64/pp - 3: 1 at pp 16, 13 at
        // pp 4 with vp 4). Layers that divide run the even split, and a stack that does not
        // balance (the default `unknown`) keeps ceil(layers / pp) on every stage.
        let nemo = crate::stack::find("nemo-2025").unwrap();
        let unknown = crate::stack::find("unknown").unwrap();
        let split = |model: &str, pp, v, st: &Stack| {
            let layers = crate::model::resolve(model).unwrap().arch.layers;
            let l = Layout { pp, v, ..Layout::data_parallel(1) }.balanced_on(layers, st);
            (l.first_layers, l.last_layers)
        };
        assert_eq!(split("llama3-405b", 8, 8, &nemo), (Some(15), Some(15)));
        assert_eq!(split("llama3-405b", 16, 4, &nemo), (Some(7), Some(7)));
        assert_eq!(split("qwen3-235b-a22b", 8, 4, &nemo), (Some(11), Some(11)));
        assert_eq!(split("deepseek-v3", 16, 1, &nemo), (None, Some(1)));
        assert_eq!(split("deepseek-v3", 4, 4, &nemo), (None, Some(13)));
        assert_eq!(split("llama3-8b", 4, 1, &nemo), (None, None));
        assert_eq!(split("llama3-70b", 2, 1, &nemo), (None, None));
        assert_eq!(split("llama3-405b", 8, 8, &unknown), (None, None));
        // A layout that names its split keeps it.
        let named = Layout { pp: 8, v: 8, first_layers: Some(14), ..Layout::data_parallel(1) };
        assert_eq!(named.balanced_on(126, &nemo), named);
    }

    #[test]
    fn shared_experts_hide_the_all_to_all_only_where_the_stack_overlaps_them() {
        // DeepSeek-V3 (one shared expert) at EP 8 on 8 H100: with moe_shared_expert_overlap the
        // dispatch and combine run under the shared expert's GEMMs, so less of them shows, and
        // nothing else moves; Qwen3-30B-A3B has no shared expert to hide under; a flex
        // dispatcher (DeepEP) does not take the overlap.
        let k = Constants::prior();
        let plain = crate::stack::find("nemo-2025").unwrap();
        let shared = crate::stack::find("nemo-2025-shared-overlap").unwrap();
        let flex = crate::stack::find("nemo-2025-flex").unwrap();
        let flex_shared = Stack { shared_expert_overlap: true, ..flex.clone() };
        let step = |model: &str, st: &Stack| {
            let m = crate::model::resolve(model).unwrap();
            let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
            h100_job(&job, &k, st, Layout { ep: 8, ..Layout::data_parallel(8) }).time
        };
        let (a, b) = (step("deepseek-v3", &plain), step("deepseek-v3", &shared));
        assert!(b.ep_comm < 0.9 * a.ep_comm && b.ep_comm > 0.0, "{} -> {}", a.ep_comm, b.ep_comm);
        assert_eq!((a.compute, a.dp_comm), (b.compute, b.dp_comm));
        let (q, qs) = (step("qwen3-30b-a3b", &plain), step("qwen3-30b-a3b", &shared));
        assert_eq!(q.ep_comm, qs.ep_comm);
        assert_eq!(step("deepseek-v3", &flex).ep_comm, step("deepseek-v3", &flex_shared).ep_comm);
    }

    #[test]
    fn an_uneven_split_that_cannot_place_the_layers_is_one_line() {
        let m = crate::model::resolve("llama3-8b").unwrap();
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
        let bad = |pp, first, last| {
            let l = Layout { pp, dp: 8 / pp, first_layers: first, last_layers: last, ..Layout::data_parallel(8) };
            check_layout(&job, &l).unwrap_err().to_string()
        };
        assert!(bad(1, Some(4), None).contains("give pp=2 or more"));
        assert!(bad(4, Some(0), None).contains("give 1 or more"));
        assert!(bad(4, Some(20), Some(12)).contains("leaving 0 for the other 2 stages"));
        assert!(bad(2, Some(20), Some(10)).contains("first + last = layers"));
        let ok = Layout { pp: 2, dp: 4, first_layers: Some(15), last_layers: Some(17), ..Layout::data_parallel(8) };
        check_layout(&job, &ok).unwrap();
        assert_eq!(ok.to_string(), "tp1 pp2 dp4 mb1 rc:none zero0 first:15 last:17");
    }

    #[test]
    fn under_pipeline_parallelism_the_peak_stage_holds_the_memory() {
        // Llama 3 8B on 8 H100 at 8k tokens, at least p micro-batches a step per replica: the
        // first stage keeps p micro-batches of its 32 / p layers in flight (32 layer-micro-batches
        // at any p), the last stage one and the logits; the chip needs the larger, not both.
        let k = Constants::prior();
        let m = crate::model::resolve("llama3-8b").unwrap();
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
        let st = crate::stack::find("megatron-core-2024").unwrap();
        let mem = |pp: usize| h100_job(&job, &k, &st, Layout { pp, dp: 8 / pp, ..Layout::data_parallel(8) }).memory;
        let one = mem(1);
        let (act, logits) = (one.activations, one.logits);
        assert!(logits > 0.0, "{one:?}");
        for pp in [2, 4, 8] {
            let m = mem(pp);
            let (first, last) = (act, act / pp as f64 + logits);
            let want = first.max(last);
            assert!(((m.activations + m.logits) / want - 1.0).abs() < 1e-9, "pp {pp}: {m:?}, want {want}");
            assert_eq!(m.logits > 0.0, last > first, "pp {pp}: the logits count only when the last stage binds");
        }
    }

    #[test]
    fn dropout_masks_are_stored_only_when_the_recipe_trains_with_dropout() {
        // llama-30m, one chip, one micro-batch of 4 x 256 tokens, nothing recomputed: each layer
        // keeps its two 1-byte masks of h per token (2 b s h), and with unfused attention the
        // scores' mask and dropped copy too (3 a s^2 b).
        let k = Constants::prior();
        let m = crate::model::resolve("llama-30m").unwrap();
        let job = Job { arch: &m.arch, seq: 256, global_batch: 4, precision: Precision::Bf16 };
        let l = Layout { mb: 4, ..Layout::data_parallel(1) };
        let stored = |st: &Stack| h100_job(&job, &k, st, l).memory.activations;
        let (a, tok, s) = (&m.arch, 4.0 * 256.0, 256.0);
        for (name, scores) in [("nemo-2025", 0.0), ("megatron-2021", 3.0 * a.heads as f64 * s)] {
            let with = Stack { dropout: true, ..crate::stack::find(name).unwrap() };
            let without = Stack { dropout: false, ..with.clone() };
            let want = a.layers as f64 * tok * (2.0 * a.d_model as f64 + scores);
            let got = stored(&with) - stored(&without);
            assert!((got / want - 1.0).abs() < 1e-9, "{name}: {got} vs {want}");
        }
    }

    #[test]
    fn other_domains_hit_is_the_chance_a_domain_holds_one_of_the_experts() {
        // One expert per token: it is in another of 4 domains with probability 3/4.
        assert!((other_domains_hit(1, 128, 4) - 0.75).abs() < 1e-12);
        assert_eq!(other_domains_hit(8, 128, 1), 0.0);
        // Top-8 of 128 over 2 domains: the other one is missed only if all 8 fall in this one,
        // C(64, 8) / C(128, 8).
        let miss: f64 = (0..8).map(|i| (64.0 - i as f64) / (128.0 - i as f64)).product();
        assert!((other_domains_hit(8, 128, 2) - (1.0 - miss)).abs() < 1e-12);
        // More experts per token than domains: every other domain is hit.
        assert!((other_domains_hit(16, 16, 4) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_flex_dispatcher_sends_a_token_across_domains_once_per_domain() {
        let k = Constants::prior();
        let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let chip = db.find("h100").unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Fp8 };
        let alltoall = crate::stack::find("nemo-2025").unwrap();
        let flex = crate::stack::find("nemo-2025-flex").unwrap();
        let ep_time = |ep: usize, st: &Stack| {
            let l = Layout { ep, zero: 1, ..Layout::data_parallel(16) };
            let r = Rates::of(chip, &k, l.chips(), Precision::Fp8).unwrap();
            estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.ep_comm
        };
        // Inside one 8-GPU domain the dispatchers move the same bytes.
        assert_eq!(ep_time(8, &alltoall), ep_time(8, &flex));
        // Over 2 domains a plain all-to-all sends 8 x 1/2 = 4 copies of a token over the NIC, a
        // flex dispatcher one (the other domain is hit with probability 0.997); NVLink then carries
        // the fan-out, still below the NIC time, so the NIC part sets the ratio: about 4.
        let ratio = ep_time(16, &alltoall) / ep_time(16, &flex);
        assert!((3.5..4.1).contains(&ratio), "all-to-all / flex over 2 domains: {ratio}");
    }

    #[test]
    fn expert_biases_and_clamp_cost_their_unfused_traffic_unless_the_mlp_is_fused() {
        let k = Constants::prior();
        let m = crate::model::resolve("gpt-oss-120b").unwrap();
        let plain = {
            let mut a = m.arch.clone();
            a.moe = a.moe.map(|x| crate::model::Moe { expert_bias: false, clamped_activation: false, ..x });
            a
        };
        let db = crate::chips::ChipDb::builtin();
        let chip = db.find("b200").unwrap();
        let l = Layout { ep: 8, zero: 1, ..Layout::data_parallel(8) };
        let r = Rates::of(chip, &k, l.chips(), Precision::Bf16).unwrap();
        let unfused = crate::stack::find("nemo-2025").unwrap();
        let fused = crate::stack::find("nemo-2026-fused-mlp").unwrap();
        let step_in = |a: &Arch, st: &Stack, precision: Precision| {
            let r = Rates::of(chip, &k, l.chips(), precision).unwrap();
            let job = Job { arch: a, seq: 4096, global_batch: 8, precision };
            estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
        };
        let step = |a: &Arch, st: &Stack| step_in(a, st, Precision::Bf16);
        // One micro-batch of 4096 tokens, top-4, 36 layers: (16 + 20) fe bytes of clamp per
        // routed copy, and of bias (12 + 12) h with BF16 probabilities (plain all-to-all) or
        // (28 + 36) h with FP32 ones (flex dispatcher), at the streaming bandwidth.
        let (h, fe) = (2880.0, 2880.0);
        let copies = 36.0 * 4096.0 * 4.0 / (r.mem_bw * MEM_BW_EFF);
        let got = step(&m.arch, &unfused) - step(&plain, &unfused);
        let want = copies * (36.0 * fe + 24.0 * h);
        assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
        let flex = crate::stack::find("nemo-2025-flex").unwrap();
        let got = step(&m.arch, &flex) - step(&plain, &flex);
        let want = copies * (36.0 * fe + 64.0 * h);
        assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
        // The fused grouped MLP applies bias and clamp inside its kernels, but Transformer Engine
        // fuses it only under an MXFP8 recipe: in BF16 the fused stack pays them like any other
        // flex-dispatcher stack, in FP8 not at all.
        let got = step(&m.arch, &fused) - step(&plain, &fused);
        assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
        let fp8 = Precision::Fp8;
        assert_eq!(step_in(&m.arch, &fused, fp8), step_in(&plain, &fused, fp8));
    }

    #[test]
    fn a_fused_expert_mlp_drops_activation_passes_casts_and_per_expert_launches_in_fp8() {
        let k = Constants::prior();
        let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let chip = db.find("b200").unwrap();
        let l = Layout { ep: 8, zero: 1, ..Layout::data_parallel(8) };
        let unfused = crate::stack::find("nemo-2025-a2a-overlap-flex").unwrap();
        let fused = Stack { fused_expert_mlp: true, ..unfused.clone() };
        let compute = |st: &Stack, precision: Precision| {
            let r = Rates::of(chip, &k, l.chips(), precision).unwrap();
            let job = Job { arch: &m.arch, seq: 4096, global_batch: 8, precision };
            (estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute, r.mem_bw)
        };
        // One micro-batch of 4096 tokens, top-8, 48 MoE layers: per routed copy the gate/up outputs
        // and the activation's output (6 fe bytes) leave the moe_passes traffic (forward and twice
        // backward), the down projection's input (fe elements) its three FP8 casts of 5 bytes, and
        // the 16 local experts of each layer their own launch and drain.
        let (with, bw) = compute(&fused, Precision::Fp8);
        let (without, _) = compute(&unfused, Precision::Fp8);
        let fe = 768.0;
        let copies = 48.0 * 4096.0 * 8.0;
        let want =
            copies * (k.moe_passes * 6.0 * fe * 3.0 + 15.0 * fe) / bw + 48.0 * 16.0 * k.expert_overhead_us * 1e-6;
        assert!(((without - with) / want - 1.0).abs() < 1e-9, "{} vs {want}", without - with);
        // Replaying the iteration as one CUDA graph drops the per-layer launches.
        let graph = Stack { full_iteration_cuda_graph: true, ..fused.clone() };
        let saved = with - compute(&graph, Precision::Fp8).0;
        assert!((saved / (48.0 * k.layer_overhead_us * 1e-6) - 1.0).abs() < 1e-9, "{saved}");
        // Transformer Engine fuses the grouped MLP only under an MXFP8 recipe: nothing changes in BF16.
        assert_eq!(compute(&fused, Precision::Bf16).0, compute(&unfused, Precision::Bf16).0);
    }

    #[test]
    fn fp4_gemms_run_at_their_own_efficiency_and_fp8_and_int8_at_fp8s() {
        let m = crate::model::resolve("llama3-70b").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let st = crate::stack::find("nemo-2025").unwrap();
        let l = Layout { tp: 4, ..Layout::data_parallel(1) };
        let compute = |chip: &str, precision: Precision, k: &Constants| {
            let r = Rates::of(db.find(chip).unwrap(), k, 4, precision).unwrap();
            let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision };
            estimate(&job, &l, &r, k, &st, f64::INFINITY).unwrap().time.compute
        };
        let base = Constants::prior();
        let fp8_slower = Constants { fp8_gemm_eff: base.fp8_gemm_eff / 2.0, ..base.clone() };
        let fp4_slower = Constants { fp4_gemm_eff: base.fp4_gemm_eff / 2.0, ..base.clone() };
        // Each quantized format reads its own efficiency and only its own.
        assert_eq!(compute("gb200", Precision::Fp4, &base), compute("gb200", Precision::Fp4, &fp8_slower));
        assert!(compute("gb200", Precision::Fp4, &fp4_slower) > 1.2 * compute("gb200", Precision::Fp4, &base));
        assert_eq!(compute("gb200", Precision::Fp8, &base), compute("gb200", Precision::Fp8, &fp4_slower));
        assert!(compute("gb200", Precision::Fp8, &fp8_slower) > 1.2 * compute("gb200", Precision::Fp8, &base));
        assert!(compute("tpu-v5e", Precision::Int8, &fp8_slower) > 1.2 * compute("tpu-v5e", Precision::Int8, &base));
    }

    #[test]
    fn fp8_attention_runs_at_the_fp8_gemm_rate_only_in_fp8_training() {
        let k = Constants::prior();
        let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let chip = db.find("gb200").unwrap();
        let l = Layout { recompute: Recompute::Selective, ..Layout::data_parallel(1) };
        let bf16_attn = crate::stack::find("nemo-2026-fused-mlp").unwrap();
        let fp8_attn = crate::stack::find("nemo-2026-fused-mlp-fp8-attn").unwrap();
        let recompute = |st: &Stack, precision: Precision| {
            let r = Rates::of(chip, &k, 1, precision).unwrap();
            let job = Job { arch: &m.arch, seq: 4096, global_batch: 1, precision };
            estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.recompute
        };
        // Selective recompute reruns exactly the attention core's forward: its products run in
        // FP8 at 5000 x fp8_gemm_eff instead of 2500 TFLOP/s on a GB200; its softmax exponentials
        // (one per causal score of each of the 32 heads, 48 layers) stay on the SFUs, under the
        // products in both (cuDNN's asynchronous kernels).
        let exps = 48.0 * 4096.0 * 2048.0 * 32.0 / (chip.get("sfu_exp_tops").unwrap() * 1e12);
        let fp8 = recompute(&fp8_attn, Precision::Fp8);
        assert!(fp8 > exps, "{fp8} {exps}");
        let ratio = recompute(&bf16_attn, Precision::Fp8) / fp8;
        assert!((ratio / (2.0 * k.fp8_gemm_eff) - 1.0).abs() < 1e-9, "{ratio}");
        assert_eq!(recompute(&bf16_attn, Precision::Bf16), recompute(&fp8_attn, Precision::Bf16));
    }

    #[test]
    fn softmax_exponentials_hide_under_asynchronous_attention_and_add_to_synchronous() {
        let k = Constants::prior();
        let m = crate::model::resolve("llama3-8b").unwrap();
        let db = crate::chips::ChipDb::builtin();
        let cudnn = crate::stack::find("nemo-2025").unwrap();
        let fa2 = Stack { sync_mma_attention: true, ..cudnn.clone() };
        let l = Layout::data_parallel(1);
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision: Precision::Bf16 };
        // The step's compute on `chip` under `st`, the chip's SFU rate divided by `slower`
        // (infinity: no exponentials at all).
        let compute = |chip: &str, st: &Stack, slower: f64| {
            let r = Rates::of(db.find(chip).unwrap(), &k, 1, Precision::Bf16).unwrap();
            let r = Rates { exp_rate: r.exp_rate.filter(|_| slower.is_finite()).map(|e| e / slower), ..r };
            estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
        };
        let none = f64::INFINITY;
        // An H100's SFUs keep up with its tensor cores at attn_eff: under cuDNN's asynchronous
        // kernels the exponentials cost nothing more; after FlashAttention-2's products they do,
        // and on an A100, whose tensor cores are all warp-synchronous, after any kernel's.
        assert_eq!(compute("h100", &cudnn, 1.0), compute("h100", &cudnn, none));
        assert!(compute("h100", &fa2, 1.0) > compute("h100", &fa2, none));
        assert!(compute("a100", &cudnn, 1.0) > compute("a100", &cudnn, none));
        // SFUs a hundred times slower set the asynchronous kernel's pace.
        assert!(compute("h100", &cudnn, 100.0) > 1.5 * compute("h100", &cudnn, none));
    }

    #[test]
    fn the_cudnn_of_2025_gains_only_on_its_stacks_and_asynchronous_kernels() {
        let m = crate::model::resolve("llama3-8b").unwrap();
        let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
        let l = Layout::data_parallel(1);
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision: Precision::Bf16 };
        let compute = |st: &Stack, gain: f64| {
            let k = Constants { attn_gain_2025: gain, ..Constants::prior() };
            let r = Rates::of(&chip, &k, 1, Precision::Bf16).unwrap();
            estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
        };
        let new = crate::stack::find("nemo-2025").unwrap();
        assert!(new.cudnn_attention_2025);
        let old = crate::stack::find("nemo-2023").unwrap();
        let fa2 = Stack { sync_mma_attention: true, ..new.clone() };
        assert!(compute(&new, 0.5) < compute(&new, 0.0));
        assert_eq!(compute(&old, 0.5), compute(&old, 0.0));
        assert_eq!(compute(&fa2, 0.5), compute(&fa2, 0.0));
    }

    #[test]
    fn a_measured_max_achievable_gemm_rate_caps_the_tensor_clock() {
        let k = Constants::prior();
        let db = crate::chips::ChipDb::builtin();
        let mi325x = db.find("mi325x").unwrap();
        // AMD: 843 TFLOP/s of BF16 GEMM at best, so at gemm_eff the clock is 843 / (1307.4 gemm_eff).
        let want = 843.0 / (1307.4 * k.gemm_eff);
        assert!(want < 1.0 && (power_clock(mi325x, &k) - want).abs() < 1e-12, "{}", power_clock(mi325x, &k));
        assert_eq!(maf_clock(db.find("h100").unwrap(), &k), 1.0);
        // Its large GEMMs then run at that measured rate, not at gemm_eff of the datasheet's peak.
        let r = Rates::of(mi325x, &k, 1, Precision::Bf16).unwrap();
        assert!((r.peak_bf16 * k.gemm_eff / 843e12 - 1.0).abs() < 1e-9, "{}", r.peak_bf16);
    }

    #[test]
    fn a_chip_rated_at_fewer_watts_per_tflop_runs_its_tensor_work_slower() {
        let k = Constants { power_w_per_tflop: 0.56, ..Constants::prior() };
        let db = crate::chips::ChipDb::builtin();
        let (gb200, gb300, h100) = (db.find("gb200").unwrap(), db.find("gb300").unwrap(), db.find("h100").unwrap());
        // Both list 2,500 dense BF16 TFLOP/s; GB200 within 1,200 W, GB300 within 1,400 W
        // (0.56 W per TFLOP/s, the limit here), H100 at 700 W for 989 TFLOP/s.
        let clock = power_clock(gb200, &k);
        assert!((clock - (1200.0 / 2500.0 / 0.56f64).cbrt()).abs() < 1e-12, "{clock}");
        assert!((power_clock(gb300, &k) - 1.0).abs() < 1e-12);
        assert_eq!(power_clock(h100, &k), 1.0);
        let mut unknown = gb200.clone();
        unknown.specs.remove("tdp_w");
        assert_eq!(power_clock(&unknown, &k), 1.0);
        // Tensor work (BF16, FP8, softmax exponentials) runs at the sustained clock; the nominal
        // peak stays what MFU is reported against, and memory bandwidth is not scaled.
        let r = Rates::of(gb200, &k, 1, Precision::Fp8).unwrap();
        assert_eq!(r.nominal_bf16, 2500e12);
        assert!((r.peak_bf16 / (2500e12 * clock) - 1.0).abs() < 1e-12);
        assert!((r.peak_8bit.unwrap() / (5000e12 * clock) - 1.0).abs() < 1e-12);
        assert!((r.exp_rate.unwrap() / (gb200.get("sfu_exp_tops").unwrap() * 1e12 * clock) - 1.0).abs() < 1e-12);
        assert_eq!(r.mem_bw, gb200.get("mem_bw_tbs").unwrap() * 1e12);
    }

    #[test]
    fn data_parallel_buckets_grow_with_the_group_as_megatron_core_sizes_them() {
        // 8B parameters: 200 buckets of 40M over 32 ranks, 32 of 256M over 256; a small model one.
        assert_eq!(dp_buckets(8e9, 32.0), 200.0);
        assert_eq!(dp_buckets(8e9, 256.0), 32.0);
        assert_eq!(dp_buckets(1e6, 8.0), 1.0);
    }

    #[test]
    fn prefetched_zero3_traffic_pays_the_contention_of_any_overlapped_collective() {
        // The overlapped part of a collective costs (1 - hidden) of itself, the rest in full.
        let hidden = |h: f64| Constants { overlap_hidden: h, ..Constants::prior() };
        assert_eq!(exposed(1.0, 2.0, true, &hidden(1.0)), 0.0);
        assert_eq!(exposed(3.0, 2.0, true, &hidden(1.0)), 1.0);
        assert_eq!(exposed(1.0, 2.0, true, &hidden(0.5)), 0.5);
        assert_eq!(exposed(1.0, 2.0, false, &hidden(1.0)), 1.0);
        // Llama 3 8B, ZeRO-3 over one 8-GPU NVLink node at micro-batch 4: every gather and
        // scatter fits in the compute it is prefetched under, so the step pays
        // (1 - overlap_hidden) of what the same traffic costs run serially, as ZeRO-1's buckets do.
        let k = Constants::prior();
        let fsdp = crate::stack::find("pytorch-fsdp").unwrap();
        let serial = Stack { overlap_dp: false, ..fsdp.clone() };
        let l = Layout { zero: 3, mb: 4, ..Layout::data_parallel(8) };
        let (overlapped, alone) =
            (fsdp_dp_time("llama3-8b", 4096, l, &fsdp), fsdp_dp_time("llama3-8b", 4096, l, &serial));
        assert!(alone > 0.0);
        assert!((overlapped / alone - (1.0 - k.overlap_hidden)).abs() < 1e-9, "{overlapped} against {alone}");
    }

    /// Exposed data-parallel seconds of a BF16 step of `model` on H100s under `stack`, global
    /// batch 64, prior constants.
    fn fsdp_dp_time(model: &str, seq: usize, l: Layout, stack: &Stack) -> f64 {
        h100_step(model, seq, &Constants::prior(), stack, l, Precision::Bf16, 64).time.dp_comm
    }

    /// One step of Llama 3 8B on 64 H100s (seq 4096, global batch 64) under `stack`, prior constants.
    fn llama8b_on_64(stack: &str, l: Layout) -> Estimate {
        llama8b_h100(&Constants::prior(), &crate::stack::find(stack).unwrap(), l, Precision::Bf16, 64)
    }

    /// One step of Llama 3 8B at 4,096 tokens on `l.chips()` H100s.
    fn llama8b_h100(k: &Constants, st: &Stack, l: Layout, precision: Precision, global_batch: usize) -> Estimate {
        h100_step("llama3-8b", 4096, k, st, l, precision, global_batch)
    }

    /// One step of `model` at `seq` tokens on `l.chips()` H100s.
    fn h100_step(
        model: &str,
        seq: usize,
        k: &Constants,
        st: &Stack,
        l: Layout,
        precision: Precision,
        global_batch: usize,
    ) -> Estimate {
        let m = crate::model::resolve(model).unwrap();
        let job = Job { arch: &m.arch, seq, global_batch, precision };
        h100_job(&job, k, st, l)
    }

    /// `job` on `l.chips()` H100s.
    fn h100_job(job: &Job, k: &Constants, st: &Stack, l: Layout) -> Estimate {
        let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
        let r = Rates::of(&chip, k, l.chips(), job.precision).unwrap();
        estimate(job, &l, &r, k, st, f64::INFINITY).unwrap()
    }

    /// `arch` priced on H100s at `l` under nemo-2025 (BF16, 4,096 tokens, 64 sequences).
    fn h100_arch_step(arch: &Arch, l: Layout) -> Estimate {
        let job = Job { arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        h100_job(&job, &crate::calib::shipped(), &crate::stack::find("nemo-2025").unwrap(), l)
    }

    /// A hybrid model with `pattern`, Llama 3 8B's widths and small Mamba-2 mixers.
    fn hybrid_8b(pattern: &str) -> Arch {
        hybrid_8b_file(pattern).to_arch().unwrap()
    }

    /// [`hybrid_8b`]'s model file.
    fn hybrid_8b_file(pattern: &str) -> crate::model::ModelFile {
        crate::model::ModelFile {
            name: "h".into(),
            arch: "hybrid".into(),
            vocab: 128256,
            layers: pattern.len(),
            heads: 32,
            kv_heads: Some(8),
            d_model: 4096,
            d_ff: Some(14336),
            pattern: Some(pattern.into()),
            mamba_heads: Some(64),
            mamba_head_dim: Some(64),
            mamba_state: Some(128),
            mamba_groups: Some(8),
            ..Default::default()
        }
    }

    #[test]
    fn a_hybrid_of_attention_and_mlp_blocks_prices_as_the_transformer() {
        // 32 layers of attention then MLP, written as a 64-layer hybrid pattern, are Llama 3 8B:
        // the same step to the rounding, the same memory, for a plain and a TP/SP layout with
        // selective recompute modules.
        let llama = crate::model::resolve("llama3-8b").unwrap().arch;
        let hybrid = hybrid_8b(&"*-".repeat(32));
        let sel = Layout {
            tp: 2,
            sp: true,
            modules: Modules::parse(["layernorm", "mlp"]).unwrap(),
            ..Layout::data_parallel(4)
        };
        for l in [Layout::data_parallel(8), sel] {
            let (a, b) = (h100_arch_step(&llama, l), h100_arch_step(&hybrid, l));
            assert!((a.time.total() / b.time.total() - 1.0).abs() < 1e-9, "{l}: {:?} vs {:?}", a.time, b.time);
            assert!((a.memory.total() / b.memory.total() - 1.0).abs() < 1e-9, "{l}");
        }
        assert_eq!(llama.total_params(), hybrid.total_params());
    }

    #[test]
    fn a_mamba_layer_costs_its_projections_scan_and_stored_stream() {
        // Replacing attention blocks by Mamba-2 mixers changes the step by the difference of the
        // blocks: more projection weights (4096 x (2 x 4096 + 2 x 8 x 128 + 64 + 4096)) than
        // attention's (4096 x 6144), no attention core.
        let attn = h100_arch_step(&hybrid_8b(&"*-".repeat(32)), Layout::data_parallel(8));
        let mamba = h100_arch_step(&hybrid_8b(&"M-".repeat(32)), Layout::data_parallel(8));
        let hy = hybrid_8b("M-").hybrid.unwrap();
        assert_eq!(hy.in_proj_width(), 2 * 4096 + 2 * 8 * 128 + 64);
        // Per token: 8 groups x 2 x 128 x 128 + 64 heads x (2 x 128 x 64 + 4 x 128 x 64).
        assert_eq!(
            hy.scan_flops_per_token(),
            8.0 * 2.0 * 128.0 * 128.0 + 64.0 * (2.0 * 128.0 * 64.0 + 4.0 * 128.0 * 64.0)
        );
        assert!(mamba.time.compute != attn.time.compute);
        assert!(mamba.memory.activations > attn.memory.activations, "the mixer stores its projection's output");
        // Context parallelism over Mamba-2 layers is refused, not priced as attention.
        let job = Job { arch: &hybrid_8b("M-"), seq: 4096, global_batch: 8, precision: Precision::Bf16 };
        let e = check_layout(&job, &Layout { cp: 2, ..Layout::data_parallel(4) }).unwrap_err().to_string();
        assert!(e.contains("Mamba-2"), "{e}");
    }

    #[test]
    fn a_mamba_scan_is_bound_by_the_hbm_traffic_of_its_kernels() {
        // 64 heads of 64, state 128, 8 groups, chunk 128: D = 4096, S = Q = 1024, R = 1. Forward
        // 14 D + 12 R D + 16 S + 8 Q bytes a token, backward 44 D + 34 R D + 56 S + 24 Q.
        let arch = hybrid_8b("M-");
        let hy = arch.hybrid.unwrap();
        let (d, s) = (4096.0, 1024.0);
        assert_eq!(hy.scan_bytes_per_token(), (26.0 * d + 24.0 * s, 78.0 * d + 80.0 * s));
        // On an H100 the ~4 MFLOP a token of the scan take a few nanoseconds at the attention
        // rate; its ~0.5 MB a token take ~190 ns at the measured bandwidth: the traffic prices it.
        let (m, stream) = on_h100(&arch, |cx| (cx.mamba_block(), cx.tok / (cx.r.mem_bw * MEM_BW_EFF)));
        let (fwd, bwd) = hy.scan_bytes_per_token();
        assert!((m.fwd - m.linear_fwd - fwd * stream).abs() < 1e-12, "{} vs {}", m.fwd - m.linear_fwd, fwd * stream);
        assert!((m.bwd - 2.0 * m.linear_fwd - bwd * stream).abs() < 1e-12);
    }

    /// `f` of the context pricing `arch` on 8 H100s, data parallel, 4,096 tokens a micro-batch,
    /// BF16 under nemo-2025 and the shipped constants.
    fn on_h100<T>(arch: &Arch, f: impl FnOnce(&Ctx) -> T) -> T {
        on_h100_at(arch, 4096, Layout::data_parallel(8), f)
    }

    /// [`on_h100`] at `seq` tokens a micro-batch (one sequence) on layout `l`.
    fn on_h100_at<T>(arch: &Arch, seq: usize, l: Layout, f: impl FnOnce(&Ctx) -> T) -> T {
        let (k, st) = (crate::calib::shipped(), crate::stack::find("nemo-2025").unwrap());
        let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
        let r = Rates::of(&chip, &k, l.chips(), Precision::Bf16).unwrap();
        let (s, tok) = (seq as f64, seq as f64);
        f(&Ctx { a: arch, l, r: &r, k: &k, stack: &st, precision: Precision::Bf16, s, tok })
    }

    /// A published config.json fixture (crates/plan/tests/hf_configs) as an architecture.
    fn fixture_arch(dir: &str) -> Arch {
        let path = format!("{}/tests/hf_configs/{dir}", env!("CARGO_MANIFEST_DIR"));
        crate::model::resolve(&path).unwrap().arch
    }

    #[test]
    fn sparse_attention_caps_the_core_at_index_topk_keys_and_its_indexer_scores_every_key() {
        // DeepSeek-V3.2 is DeepSeek-V3 with DeepSeek Sparse Attention: each query's core attends
        // its 2,048 best keys, and the indexer scores every causal key with 64 heads of 128.
        let (v3, v32) = (fixture_arch("DeepSeek-V3"), fixture_arch("DeepSeek-V3.2"));
        let dp = Layout::data_parallel(8);
        let at = |arch: &Arch, seq| on_h100_at(arch, seq, dp, |cx| (cx.attention(arch.window.is_some()), cx.indexer()));
        // 4,096 tokens: a query's mean causal span, 2,048 keys, is index_topk, so V3.2's core
        // costs V3's, and the indexer comes on top (16,640 FLOPs a pair against the core's
        // 81,920: about a fifth).
        let ((dense_4k, _, _), _) = at(&v3, 4096);
        let ((sparse_4k, sparse_4k_bwd, _), (idx_4k, idx_4k_bwd)) = at(&v32, 4096);
        assert!(((sparse_4k - idx_4k) / dense_4k - 1.0).abs() < 1e-12, "{sparse_4k} - {idx_4k} vs {dense_4k}");
        assert!(idx_4k > 0.1 * dense_4k && idx_4k < 0.5 * dense_4k, "indexer {idx_4k} vs core {dense_4k}");
        assert_eq!(idx_4k_bwd, 2.0 * idx_4k);
        assert!(sparse_4k_bwd > idx_4k_bwd);
        // 131,072 tokens, 32x the queries: the core still attends 2,048 keys a query (32x its
        // time), the indexer scores 32x the keys for each of them (1,024x), and dense attention
        // grows 1,024x too.
        let ((dense_128k, _, _), _) = at(&v3, 131_072);
        let ((sparse_128k, _, _), (idx_128k, _)) = at(&v32, 131_072);
        let core = |total: f64, idx: f64| total - idx;
        let capped = core(sparse_128k, idx_128k) / core(sparse_4k, idx_4k);
        assert!((capped / 32.0 - 1.0).abs() < 1e-9, "core grew {capped}x");
        assert!((idx_128k / idx_4k / 1024.0 - 1.0).abs() < 1e-9, "indexer grew {}x", idx_128k / idx_4k);
        assert!((dense_128k / dense_4k / 1024.0 - 1.0).abs() < 1e-9);
        // (0.31 of it with the constants of 2026-12-07: the indexer's and the core's rates are fitted.)
        assert!(sparse_128k < 0.35 * dense_128k, "{sparse_128k} vs {dense_128k}");
        // Tensor parallelism splits the core's heads, not the indexer (duplicated on every rank).
        let tp = Layout { tp: 8, ..Layout::data_parallel(1) };
        let (idx_tp, core_tp) =
            on_h100_at(&v32, 4096, tp, |cx| (cx.indexer().0, cx.attention(true).0 - cx.indexer().0));
        assert!((idx_tp / idx_4k - 1.0).abs() < 1e-12, "{idx_tp} vs {idx_4k}");
        assert!((core_tp * 8.0 / (sparse_4k - idx_4k) - 1.0).abs() < 1e-12);
        // The MFU numerator: 61 indexers' weights (4x: their input is detached, so no input
        // gradient), the core's span capped at 2,048 and 3x the indexer's forward FLOPs (16,640
        // a pair, s / 2 keys a query).
        let s = 131_072;
        let (qkv, pair, weights) = ((v3.qk_dim + v3.v_dim) as f64, 2.0 * 64.0 * 129.0, 13_959_168.0);
        let want = 4.0 * 61.0 * weights + 6.0 * 61.0 * (2048.0 - 65_536.0) * qkv + 3.0 * 61.0 * 65_536.0 * pair;
        let got = v32.model_flops_per_token(s) - v3.model_flops_per_token(s);
        assert!((got / want - 1.0).abs() < 1e-9, "{got:.6e} vs {want:.6e}");
        // A step holds all of it: at 4,096 tokens V3.2 is slower than V3 (the indexer), at
        // 32,768 faster (the cap), and it stores the indexer's activations. (Without TP, as
        // DeepSeek trains: at tp=8 each rank's whole indexer outweighs its eighth of the core.)
        let step = |arch: &Arch, seq| {
            let job = Job { arch, seq, global_batch: 64, precision: Precision::Bf16 };
            let l = Layout { pp: 8, ep: 8, ..Layout::data_parallel(8) };
            h100_job(&job, &crate::calib::shipped(), &crate::stack::find("nemo-2025").unwrap(), l)
        };
        let (a, b) = (step(&v3, 4096), step(&v32, 4096));
        assert!(b.time.total() > a.time.total() && b.memory.activations > a.memory.activations);
        assert!(step(&v32, 32_768).time.total() < step(&v3, 32_768).time.total());
    }

    /// Llama 3 8B's widths with Gated DeltaNet mixers of Qwen3-Next's heads (16 key, 32 value,
    /// 128 wide) in `pattern`.
    fn gdn_8b(pattern: &str) -> Arch {
        crate::model::ModelFile {
            gdn_key_heads: Some(16),
            gdn_value_heads: Some(32),
            gdn_key_head_dim: Some(128),
            gdn_value_head_dim: Some(128),
            mamba_heads: None,
            mamba_head_dim: None,
            mamba_state: None,
            mamba_groups: None,
            ..hybrid_8b_file(pattern)
        }
        .to_arch()
        .unwrap()
    }

    #[test]
    fn a_gated_deltanet_mixer_is_bound_by_the_hbm_traffic_of_its_kernels() {
        // Per token: Kk = 16 x 128, K = V = 32 x 128, S = V x 128 / 64, A = 32 x 64.
        let arch = gdn_8b("G-");
        let hy = arch.hybrid.unwrap();
        let (kk, k, st, a) = (2048.0, 4096.0, 8192.0, 2048.0);
        let want = (
            16.0 * k + 22.0 * k + 4.0 * st + 2.0 * a + 20.0 * kk,
            46.0 * k + 46.0 * k + 8.0 * st + 4.0 * a + 28.0 * kk,
        );
        assert_eq!(hy.gdn_bytes_per_token(), want);
        assert_eq!(hy.gdn_flops_per_token(), 32.0 * (6.0 * 64.0 * 128.0 + 4.0 * 64.0 * 128.0 + 6.0 * 128.0 * 128.0));
        assert_eq!(hy.gdn_params(4096), 4096.0 * (2.0 * 2048.0 + 2.0 * 4096.0 + 64.0 + 4096.0));
        // On an H100 its ~5.8 MFLOP a token take ~17 ns at the attention rate, its ~0.5 MB ~190 ns
        // at the measured bandwidth: the traffic prices both passes.
        let (g, stream) = on_h100(&arch, |cx| (cx.gdn_block(), cx.tok / (cx.r.mem_bw * MEM_BW_EFF)));
        assert!(
            (g.fwd - g.linear_fwd - want.0 * stream).abs() < 1e-12,
            "{} vs {}",
            g.fwd - g.linear_fwd,
            want.0 * stream
        );
        assert!((g.bwd - 2.0 * g.linear_fwd - want.1 * stream).abs() < 1e-12);
        // The step holds the mixers: a G- model is slower than the same model with them dropped.
        let with = h100_arch_step(&gdn_8b(&"G-*-".repeat(8)), Layout::data_parallel(8));
        let without = h100_arch_step(&gdn_8b(&"-*-".repeat(8)), Layout::data_parallel(8));
        assert!(with.time.total() > without.time.total());
        // Context parallelism over them is refused; TP must split the key heads.
        let job = Job { arch: &arch, seq: 4096, global_batch: 8, precision: Precision::Bf16 };
        let e = check_layout(&job, &Layout { cp: 2, ..Layout::data_parallel(4) }).unwrap_err().to_string();
        assert!(e.contains("Gated DeltaNet"), "{e}");
        let e = check_layout(&job, &Layout { tp: 32, ..Layout::data_parallel(1) }).unwrap_err().to_string();
        assert!(e.contains("key heads") || e.contains("heads"), "{e}");
    }

    #[test]
    fn a_kimi_delta_attention_mixer_is_a_gated_deltanet_with_low_rank_gates() {
        // Kimi Linear's KDA widths (32 heads of 128 for queries, keys and values, gate rank 128)
        // on the 8B hybrid's 4,096-wide stream, against a Gated DeltaNet of the same heads.
        let mixer = |rank: Option<usize>| {
            crate::model::ModelFile {
                gdn_key_heads: Some(32),
                gdn_value_heads: Some(32),
                gdn_key_head_dim: Some(128),
                gdn_value_head_dim: Some(128),
                kda_gate_rank: rank,
                mamba_heads: None,
                mamba_head_dim: None,
                mamba_state: None,
                mamba_groups: None,
                ..hybrid_8b_file("G-")
            }
            .to_arch()
            .unwrap()
        };
        let (kda, gdn) = (mixer(Some(128)), mixer(None));
        let (k, g) = (kda.hybrid.unwrap(), gdn.hybrid.unwrap());
        // KDA: q, k, v, beta and the two gates' rank-128 inputs from the stream, the gates taken
        // up to 4,096 each (the output gate, one decay a key channel), the output projection.
        let h = 4096.0;
        assert_eq!(k.gdn_in_proj_width(), 3 * 4096 + 32 + 2 * 128);
        assert_eq!(k.gdn_params(4096), h * (12_576.0 + 4096.0) + 128.0 * 8192.0);
        assert_eq!(g.gdn_params(4096), h * (16_448.0 + 4096.0));
        let (kb, gb) = (on_h100(&kda, |cx| cx.gdn_block()), on_h100(&gdn, |cx| cx.gdn_block()));
        // The same chunked delta rule at the same widths: the kernels cost the same.
        // (Equal to rounding: each side is a sum less its GEMMs, so the last bits may differ.)
        let same = |a: f64, b: f64| assert!((a / b - 1.0).abs() < 1e-12, "{a} {b}");
        same(kb.fwd - kb.linear_fwd, gb.fwd - gb.linear_fwd);
        same(kb.bwd - 2.0 * kb.linear_fwd, gb.bwd - 2.0 * gb.linear_fwd);
        // Fewer projection weights, fewer GEMM seconds.
        assert!(kb.linear_fwd < gb.linear_fwd && kb.linear_fwd > 0.7 * gb.linear_fwd);
        // Stored a token: the input projection's and the gates' up projections' outputs (BF16:
        // 2 x (12,576 + 8,192) against 2 x 16,448) and the decay in FP32 a key channel
        // (4 x 4,096) rather than a head (4 x 32).
        let extra = 2.0 * (12_576.0 + 8_192.0 - 16_448.0) + 4.0 * (4_096.0 - 32.0);
        assert_eq!(kb.act_bytes - gb.act_bytes, 4096.0 * extra);
        // The rank describes G layers only.
        let e = crate::model::ModelFile { kda_gate_rank: Some(128), ..hybrid_8b_file("M*-M") }.to_arch().unwrap_err();
        assert!(e.to_string().contains("kda_gate_rank"), "{e}");
    }

    /// Qwen3-30B-A3B as a model file, with `latent` and `mtp` multi-token prediction depths.
    fn qwen3_moe(latent: Option<usize>, mtp: Option<usize>) -> Arch {
        crate::model::ModelFile {
            name: "q".into(),
            arch: "moe".into(),
            vocab: 151936,
            layers: 48,
            heads: 32,
            kv_heads: Some(4),
            head_dim: Some(128),
            d_model: 2048,
            experts: Some(128),
            experts_per_token: Some(8),
            expert_d_ff: Some(768),
            moe_latent: latent,
            mtp_layers: mtp,
            ..Default::default()
        }
        .to_arch()
        .unwrap()
    }

    #[test]
    fn a_latent_moe_routes_and_computes_its_tokens_at_the_latent_width() {
        // Experts on a 512-wide projection of the 2,048-wide stream: a quarter of the all-to-all
        // bytes, fewer expert weights, two projections more.
        let l = Layout { ep: 8, ..Layout::data_parallel(8) };
        let (full, latent) = (qwen3_moe(None, None), qwen3_moe(Some(512), None));
        let (a, b) = (h100_arch_step(&full, l), h100_arch_step(&latent, l));
        // A quarter of the bytes; the per-hop latency does not shrink with them.
        let ratio = b.time.ep_comm / a.time.ep_comm;
        assert!(ratio > 0.25 && ratio < 0.3, "{} vs {}", b.time.ep_comm, a.time.ep_comm);
        let m = latent.moe.unwrap();
        let per_layer = 2048.0 * 128.0 + 3.0 * 512.0 * 768.0 * 128.0 + 2.0 * 2048.0 * 512.0;
        assert_eq!(latent.moe_mlp_params(), per_layer);
        assert_eq!(m.expert_io(2048), 512.0);
        assert!(b.memory.weights < a.memory.weights);
    }

    #[test]
    fn expert_tensor_parallelism_splits_the_experts_and_gathers_their_tokens() {
        // A Qwen3-30B-A3B-shaped model on 8 H100s at tp 2, ep 4: experts whole (etp 1) or split
        // over the TP pair (etp 2).
        let arch = qwen3_moe(None, None);
        let base = Layout { tp: 2, ep: 4, sp: true, ..Layout::data_parallel(4) };
        let (whole, split) = (h100_arch_step(&arch, base), h100_arch_step(&arch, Layout { etp: 2, ..base }));
        // Each chip holds half of each of its 32 local experts: half their BF16 weights. (The
        // distributed optimizer's shard is the same: an expert's data-parallel group halves.)
        let local_experts = 48.0 * 32.0 * 3.0 * 2048.0 * 768.0;
        let saved = whole.memory.weights - split.memory.weights;
        assert!((saved / (2.0 * local_experts / 2.0) - 1.0).abs() < 1e-9, "{saved:.4e}");
        assert!((split.memory.optimizer / whole.memory.optimizer - 1.0).abs() < 1e-9);
        // The gathers and scatters of the routed copies come on top of the all-to-all.
        assert!(split.time.ep_comm > whole.time.ep_comm, "{} vs {}", split.time.ep_comm, whole.time.ep_comm);
        // The same FLOPs in taller, narrower GEMMs.
        let ratio = split.time.compute / whole.time.compute;
        assert!(ratio > 0.9 && ratio < 1.1, "{ratio}");
        // Megatron-Core's expert groups: ep x etp must divide tp x cp x dp, etp the experts' width.
        let job = Job { arch: &arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        assert!(check_layout(&job, &Layout { ep: 8, etp: 2, ..base }).is_err());
        assert!(check_layout(&job, &Layout { tp: 8, etp: 8, ep: 1, ..Layout::data_parallel(1) }).is_ok());
        let dense = crate::model::resolve("llama3-8b").unwrap().arch;
        let dense_job = Job { arch: &dense, ..job };
        assert!(check_layout(&dense_job, &Layout { etp: 2, ..Layout { tp: 2, ..Layout::data_parallel(4) } }).is_err());
    }

    #[test]
    fn routed_experts_pay_no_tp_pair_of_their_own_and_shared_experts_do() {
        // At tp 2 without TP overlap, a layer of attention and routed experts exchanges the
        // attention block's pair only; shared experts (a dense MLP split over TP) add a second,
        // as large (both move the layer's b s h activations).
        let st = crate::stack::find("megatron-core-2024-no-overlap").unwrap();
        let l = Layout { tp: 2, ep: 4, sp: true, ..Layout::data_parallel(4) };
        let tp_comm = |arch: &Arch| {
            let job = Job { arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
            h100_job(&job, &crate::calib::shipped(), &st, l).time.tp_comm
        };
        let routed = qwen3_moe(None, None);
        let mut shared = routed.clone();
        let m = shared.moe.as_mut().unwrap();
        (m.shared, m.shared_d_ff) = (1, 768);
        let ratio = tp_comm(&shared) / tp_comm(&routed);
        assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn each_multi_token_prediction_depth_adds_a_layer_a_projection_and_an_lm_head() {
        let l = Layout { ep: 8, ..Layout::data_parallel(8) };
        let (plain, mtp) = (h100_arch_step(&qwen3_moe(None, None), l), h100_arch_step(&qwen3_moe(None, Some(1)), l));
        assert_eq!(mtp.memory.logits, 2.0 * plain.memory.logits);
        // More than the extra LM head and loss alone, less than a second model.
        let extra = mtp.time.compute / plain.time.compute - 1.0;
        assert!(extra > 0.05 && extra < 0.3, "{extra}");
        let arch = qwen3_moe(None, Some(1));
        let module = arch.attn_params + arch.moe_mlp_params() + 2.0 * 2048.0 * 2048.0;
        assert_eq!(arch.total_params() - qwen3_moe(None, None).total_params(), module);
    }

    #[test]
    fn layers_a_quantized_recipe_keeps_in_bf16_compute_at_the_bf16_rate() {
        // Llama 3 8B's 32 layers in FP8 with none, half and all of them kept in BF16: all kept is
        // the BF16 step's compute (no casts, BF16 GEMMs), half lies between.
        let k = crate::calib::shipped();
        let st = crate::stack::find("nemo-2025").unwrap();
        let step = |precision, bf16_layers| {
            let l = Layout { bf16_layers, ..Layout::data_parallel(8) };
            llama8b_h100(&k, &st, l, precision, 64).time.compute
        };
        let (fp8, half, all, bf16) =
            (step(Precision::Fp8, 0), step(Precision::Fp8, 16), step(Precision::Fp8, 32), step(Precision::Bf16, 0));
        assert!(fp8 < half && half < all, "{fp8} {half} {all}");
        assert!((all / bf16 - 1.0).abs() < 1e-12, "{all} vs {bf16}");
        assert_eq!(step(Precision::Bf16, 16), bf16, "ignored in BF16");
    }

    #[test]
    fn hybrid_sharding_keeps_one_copy_per_shard_group() {
        let full = llama8b_on_64("pytorch-fsdp", Layout { zero: 3, ..Layout::data_parallel(64) }).memory;
        let hybrid = llama8b_on_64("pytorch-fsdp", Layout { zero: 3, shard: 8, ..Layout::data_parallel(64) }).memory;
        for (what, f, h) in [
            ("weights", full.weights, hybrid.weights),
            ("gradients", full.gradients, hybrid.gradients),
            ("optimizer", full.optimizer, hybrid.optimizer),
        ] {
            assert!((h / f - 8.0).abs() < 1e-9, "{what}: {h} against {f}");
        }
    }

    #[test]
    fn experts_whose_parallel_group_outgrows_the_copy_are_not_sharded_further() {
        // Qwen3-30B-A3B on 64 H100s, ZeRO-3 in groups of 8 replicas (one node) with ep = 16: an
        // expert-parallel group spans two copies, so each chip keeps its 1/16 of the experts
        // whole, while the rest of the model is sharded over the node's 8 chips.
        let k = Constants::prior();
        let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
        let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
        let l = Layout { ep: 16, zero: 3, shard: 8, ..Layout::data_parallel(64) };
        let r = Rates::of(&chip, &k, 64, Precision::Bf16).unwrap();
        let st = crate::stack::find("nemo-2025").unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        let opt = estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().memory.optimizer;
        let moe = m.arch.moe.unwrap();
        let experts = (m.arch.moe_layers() * moe.experts * 3 * m.arch.d_model * moe.expert_d_ff) as f64;
        let want = 12.0 * ((m.arch.total_params() - experts) / 8.0 + experts / 16.0);
        assert!((opt / want - 1.0).abs() < 0.02, "optimizer {opt:.3e} B against {want:.3e}");
    }

    #[test]
    fn fp8_activations_are_smaller_only_where_the_stack_keeps_quantized_inputs() {
        // Transformer Engine (nemo-2025) keeps each linear input's FP8 copy; torchtitan's torchao
        // Float8 keeps the BF16 one, so its FP8 step stores what its BF16 step stores.
        let k = Constants::prior();
        let l = Layout { mb: 2, ..Layout::data_parallel(8) };
        let act = |stack: &str, p: Precision| {
            llama8b_h100(&k, &crate::stack::find(stack).unwrap(), l, p, 16).memory.activations
        };
        let (fp8, bf16) = (act("nemo-2025", Precision::Fp8), act("nemo-2025", Precision::Bf16));
        assert!(fp8 < 0.9 * bf16, "{fp8} vs {bf16}");
        assert_eq!(act("torchtitan-2024-compile", Precision::Fp8), act("torchtitan-2024-compile", Precision::Bf16));
    }

    #[test]
    fn zero_2_reduce_scatters_every_micro_batch_and_zero_1_once_a_step() {
        // ZeRO-2 keeps only its gradient shard, so each micro-batch's gradients are reduce-scattered;
        // ZeRO-1 sums them locally and reduce-scatters once. Without DP overlap the difference is
        // (micro-batches - 1) reduce-scatters: none at one micro-batch, three times two's at four.
        let st = crate::stack::find("unknown").unwrap();
        let k = Constants::prior();
        let dp = |zero: u8, batch: usize| {
            let l = Layout { zero, ..Layout::data_parallel(64) };
            llama8b_h100(&k, &st, l, Precision::Bf16, batch).time.dp_comm
        };
        assert_eq!(dp(2, 64), dp(1, 64));
        let (extra_2, extra_4) = (dp(2, 128) - dp(1, 128), dp(2, 256) - dp(1, 256));
        assert!(extra_2 > 0.0, "{extra_2}");
        assert!((extra_4 / extra_2 - 3.0).abs() < 1e-9, "{extra_4} vs {extra_2}");
    }

    #[test]
    fn optimizer_states_take_the_stacks_bytes_a_parameter() {
        // BF16 Adam moments and no master copy (4 bytes a parameter) hold a third of the default
        // FP32 master and moments (12), and the AdamW step streams 2 x 4 + 6 bytes instead of 30.
        let m = crate::model::resolve("llama3-8b").unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        let k = crate::calib::shipped();
        let fp32 = crate::stack::find("nemo-2025").unwrap();
        let bf16 = Stack { optimizer_state_bytes: 4.0, ..fp32.clone() };
        let l = Layout { zero: 1, ..Layout::data_parallel(8) };
        let (a, b) = (h100_job(&job, &k, &fp32, l), h100_job(&job, &k, &bf16, l));
        assert!((b.memory.optimizer / a.memory.optimizer - 4.0 / 12.0).abs() < 1e-9);
        assert!(b.time.optimizer < a.time.optimizer, "{} against {}", b.time.optimizer, a.time.optimizer);
    }

    #[test]
    fn a_copy_per_replica_all_reduces_like_plain_data_parallelism() {
        // ZeRO-1 over groups of one replica keeps a whole copy on every rank: what is left is the
        // copies' all-reduce of the gradients, plain data parallelism's (no overlap in this stack;
        // the collectives' latency terms differ by a few buckets).
        let plain = llama8b_on_64("megatron-2021", Layout::data_parallel(64)).time.dp_comm;
        let copies = llama8b_on_64("megatron-2021", Layout { zero: 1, shard: 1, ..Layout::data_parallel(64) });
        let dp = copies.time.dp_comm;
        assert!(plain > 0.1 && (dp / plain - 1.0).abs() < 0.05, "plain {plain} against one copy per replica {dp}");
    }

    /// Data-parallel seconds of MaxText's 16B model (seq 2048, 6 sequences a chip, one
    /// micro-batch) on `chips` TPU v5e under ZeRO-3 over `shard` replicas (0: all) with a stack
    /// that overlaps none of it, prior constants.
    fn v5e_dp_time(chips: usize, shard: usize) -> f64 {
        let k = Constants::prior();
        let m = crate::model::resolve("maxtext-16b").unwrap();
        let chip = crate::chips::ChipDb::builtin().find("tpu-v5e").unwrap().clone();
        let l = Layout { zero: 3, mb: 6, shard, ..Layout::data_parallel(chips) };
        let r = Rates::of(&chip, &k, chips, Precision::Bf16).unwrap();
        // Megatron-LM of 2021 overlaps nothing; given ZeRO-3 here to price its collectives.
        let st = Stack { zero_stages: vec![3], ..crate::stack::find("megatron-2021").unwrap() };
        let job = Job { arch: &m.arch, seq: 2048, global_batch: 6 * chips, precision: Precision::Bf16 };
        estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().time.dp_comm
    }

    #[test]
    fn hybrid_sharding_across_slices_adds_the_gradient_shards_all_reduce() {
        // Two 256-chip v5e slices joined by the data-center network (25 Gb/s a chip), a stack
        // without overlap: sharded inside each slice, a step costs one slice's gathers and
        // scatters plus the all-reduce of each chip's gradient shard with its twin in the other
        // slice: 2 x (2-1)/2 x 16e9 parameters x 2 bytes / 256 chips = 125 MB over the chip's own
        // DCN share (3.125 GB/s at scaleout_eff).
        let (hybrid, one_slice) = (v5e_dp_time(512, 256), v5e_dp_time(256, 0));
        let params = crate::model::resolve("maxtext-16b").unwrap().arch.total_params();
        let want = params * 2.0 / 256.0 / (3.125e9 * Constants::prior().scaleout_eff);
        let got = hybrid - one_slice;
        assert!((got / want - 1.0).abs() < 0.15, "all-reduce {got} s against {want} s");
    }

    #[test]
    fn int8_runs_at_the_chips_int8_rate_and_needs_one() {
        let k = Constants::prior();
        let db = crate::chips::ChipDb::builtin();
        let v6e = db.find("tpu-v6e").unwrap();
        let r = Rates::of(v6e, &k, 1, Precision::Int8).unwrap();
        assert_eq!(r.peak_8bit, Some(v6e.get("int8_tops").unwrap() * 1e12));
        // A step with INT8 matmuls is faster than BF16 on a chip with twice the INT8 rate (not
        // twice: attention, the LM head and element-wise work stay BF16, and the casts cost).
        let m = crate::model::resolve("llama3-8b").unwrap();
        let step = |p: Precision| {
            let job = Job { arch: &m.arch, seq: 2048, global_batch: 64, precision: p };
            let r = Rates::of(v6e, &k, 8, p).unwrap();
            let st = crate::stack::find("maxtext-2023").unwrap();
            let l = Layout { zero: 3, mb: 8, ..Layout::data_parallel(8) };
            estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().time.compute
        };
        let (int8, bf16) = (step(Precision::Int8), step(Precision::Bf16));
        assert!(int8 < 0.95 * bf16, "int8 {int8} s against bf16 {bf16} s");
        let gb200 = db.find("gb200").unwrap();
        let e = Rates::of(gb200, &k, 1, Precision::Int8).unwrap_err().to_string();
        assert!(e.contains("int8_tops") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn nvfp4_runs_at_the_chips_fp4_rate_with_smaller_operands() {
        let k = Constants::prior();
        let db = crate::chips::ChipDb::builtin();
        let gb300 = db.find("gb300").unwrap();
        let clock = power_clock(gb300, &k);
        let r = Rates::of(gb300, &k, 1, Precision::Fp4).unwrap();
        assert!((r.peak_8bit.unwrap() / (gb300.get("fp4_tflops").unwrap() * 1e12 * clock) - 1.0).abs() < 1e-12);
        let m = crate::model::resolve("llama3-70b").unwrap();
        let est = |p: Precision| {
            let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: p };
            let r = Rates::of(gb300, &k, 64, p).unwrap();
            let st = crate::stack::find("nemo-2025").unwrap();
            let l = Layout { tp: 4, pp: 4, mb: 1, v: 5, zero: 1, sp: true, ..Layout::data_parallel(4) };
            estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap()
        };
        let (fp4, fp8) = (est(Precision::Fp4), est(Precision::Fp8));
        assert!(fp4.time.compute < 0.9 * fp8.time.compute, "{} against {}", fp4.time.compute, fp8.time.compute);
        assert!(fp4.memory.activations < fp8.memory.activations);
        let h100 = db.find("h100").unwrap();
        let e = Rates::of(h100, &k, 1, Precision::Fp4).unwrap_err().to_string();
        assert!(e.contains("fp4_tflops") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn fp8_parameter_gathers_halve_the_all_gather_in_fp8_only() {
        // Llama 3 8B on 64 H100 at ZeRO-1, collectives not overlapped: a stack that gathers FP8
        // parameters pays less data-parallel time in FP8 training (its all-gather moves half the
        // bytes; the reduce-scatter and the latencies stay) and the same in BF16.
        let base = Stack { overlap_dp: false, ..crate::stack::find("nemo-2025").unwrap() };
        let (on, off) = (Stack { fp8_param_gather: true, ..base.clone() }, Stack { fp8_param_gather: false, ..base });
        let l = Layout { zero: 1, ..Layout::data_parallel(64) };
        let dp =
            |st: &Stack, precision: Precision| llama8b_h100(&Constants::prior(), st, l, precision, 64).time.dp_comm;
        assert_eq!(dp(&on, Precision::Bf16), dp(&off, Precision::Bf16));
        let (fp8_on, fp8_off) = (dp(&on, Precision::Fp8), dp(&off, Precision::Fp8));
        assert!(fp8_on < 0.9 * fp8_off, "{fp8_on} against {fp8_off}");
    }

    #[test]
    fn every_distributed_step_pays_the_fixed_step_overhead_once() {
        // The same job under two step overheads differs by exactly their difference, in the
        // optimizer term, whatever the number of micro-batches.
        let nemo = crate::stack::find("nemo-2025").unwrap();
        for mb in [1, 8] {
            let at = |ms: f64| {
                let k = Constants { step_overhead_ms: ms, ..Constants::prior() };
                llama8b_h100(&k, &nemo, Layout { mb, ..Layout::data_parallel(8) }, Precision::Bf16, 64).time
            };
            let (lo, hi) = (at(0.0), at(30.0));
            assert!(
                (hi.optimizer - lo.optimizer - 0.030).abs() < 1e-12,
                "mb {mb}: {} vs {}",
                hi.optimizer,
                lo.optimizer
            );
            assert!((hi.total() - lo.total() - 0.030).abs() < 1e-12, "mb {mb}");
        }
        // One chip waits for no other rank: it pays none.
        let one = |ms: f64| {
            let k = Constants { step_overhead_ms: ms, ..Constants::prior() };
            llama8b_h100(&k, &nemo, Layout { mb: 1, ..Layout::data_parallel(1) }, Precision::Bf16, 1).time.total()
        };
        assert_eq!(one(0.0), one(30.0));
    }

    #[test]
    fn the_backward_window_includes_the_recomputed_forward() {
        // Llama 3 70B, ZeRO-3 over 64 GPUs at 512 tokens a micro-batch, where the gathers
        // outlast the compute: recomputing the forward in backward lengthens the window they
        // hide under.
        let fsdp = crate::stack::find("pytorch-fsdp").unwrap();
        let dp = |recompute: Recompute| {
            fsdp_dp_time("llama3-70b", 512, Layout { zero: 3, mb: 1, recompute, ..Layout::data_parallel(64) }, &fsdp)
        };
        let (none, full) = (dp(Recompute::None), dp(Recompute::Full));
        assert!(none > 0.0 && full < none, "none {none} full {full}");
    }

    #[test]
    fn a_thin_gemm_is_held_to_the_memory_floor() {
        let k = Constants::prior();
        let (peak, bw) = (989e12, 3.35e12);
        // One token through a 4096 x 4096 weight: 2 x 4096^2 FLOPs, 2 x (4096 + 4096^2 + 4096) bytes.
        let (m, n, kk) = (1.0, 4096.0, 4096.0);
        let t = gemm_time(&k, peak, peak, bw, 2.0 * m * n * kk, m, n, kk, 2.0);
        let floor = 2.0 * (m * kk + kk * n + m * n) / (bw * MEM_BW_EFF);
        assert!((t / floor - 1.0).abs() < 1e-12, "{t} vs floor {floor}");
        // A large square GEMM is compute-bound: the floor does not apply.
        let big = 8192.0;
        let flops = 2.0 * big * big * big;
        let t = gemm_time(&k, peak, peak, bw, flops, big, big, big, 2.0);
        assert!((t - flops / (peak * gemm_efficiency(&k, peak, bw, (big, big, big), 2.0))).abs() < 1e-15);
    }
}
