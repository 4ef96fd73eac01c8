//! Analytic performance model of one training step of a decoder transformer on one chip type.
//!
//! Notation (Korthikanti et al. 2022): s sequence length, b micro-batch, h d_model, a heads,
//! l layers, V vocabulary, t tensor-, p pipeline-, d data-, c context-parallel degree, m
//! micro-batches per step, v interleaved chunks per pipeline stage.
//!
//! Step time = (m + (p-1)/v) x t_mb + exposed data-parallel time + optimizer time, where the
//! per-micro-batch time of the heaviest stage is
//!   t_mb = GEMM FLOPs / (peak x eff(h/t)) + element-wise bytes / (bandwidth x bw_eff)
//!        + exposed tensor/context-parallel collectives + pipeline sends.
//! Memory per chip follows Korthikanti for activations and ZeRO (Rajbhandari et al.) for states.

use crate::calib::{Calibration, Shared};
use crate::chips::{Chip, GIB};
use anychip_model_config::{Mlp, ModelConfig};
use anyhow::{bail, Result};
use serde::Serialize;
use std::fmt;

/// Activation recomputation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep every activation.
    None,
    /// Recompute only the attention core (Korthikanti's selective recompute).
    Selective,
    /// Keep only each layer's input and rerun the layer's forward in backward.
    Full,
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
    /// Sequences per micro-batch.
    pub mb: usize,
    /// Interleaved model chunks per pipeline stage (1 = plain 1F1B).
    pub v: usize,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// ZeRO stage of the data-parallel optimizer: 0 none, 1 optimizer states, 2 + gradients, 3 + weights.
    pub zero: u8,
    /// Sequence parallelism in the tensor-parallel group (Korthikanti).
    pub sp: bool,
}

impl Layout {
    /// Chips the layout occupies.
    pub fn chips(&self) -> usize {
        self.tp * self.pp * self.dp * self.cp
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tp{} pp{} dp{}", self.tp, self.pp, self.dp)?;
        if self.cp > 1 {
            write!(f, " cp{}", self.cp)?;
        }
        if self.v > 1 {
            write!(f, " v{}", self.v)?;
        }
        write!(f, " mb{} rc:{} zero{}", self.mb, self.recompute, self.zero)?;
        if self.sp && self.tp > 1 {
            f.write_str(" sp")?;
        }
        Ok(())
    }
}

/// What the training software does, as opposed to what the chip can do.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Software {
    /// Fused attention that never stores the s x s score matrix and skips masked blocks.
    pub flash_attention: bool,
    /// Gradient reduction overlapped with backward (bucketed DDP / distributed optimizer).
    pub overlap_dp: bool,
    /// Tensor/context-parallel collectives overlapped with GEMMs.
    pub overlap_tp: bool,
    /// Bytes per gradient element in the data-parallel reduction.
    pub grad_comm_bytes: f64,
    /// Bytes per gradient element kept between micro-batches (fp32 main grads as Megatron: 4).
    pub main_grad_bytes: f64,
}

impl Software {
    /// A current framework (Megatron-Core, TorchTitan): fused attention, overlapped collectives, bf16
    /// gradient reduction into fp32 main gradients.
    pub fn modern() -> Software {
        Software {
            flash_attention: true,
            overlap_dp: true,
            overlap_tp: true,
            grad_comm_bytes: 2.0,
            main_grad_bytes: 4.0,
        }
    }
}

/// A training job: model, sequence length, global batch in sequences.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Architecture.
    pub model: &'a ModelConfig,
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per optimizer step.
    pub global_batch: usize,
}

/// Per-chip memory, bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    /// Weights, gradients and optimizer states of the transformer layers on the chip.
    pub layer_states: f64,
    /// Weights, gradients and optimizer states of the embedding and LM head on the chip.
    pub embedding_states: f64,
    /// Stored activations (all in-flight micro-batches of the first stage).
    pub activations: f64,
    /// Logits and their gradient on the last stage.
    pub logits: f64,
    /// Framework reserve (context, communication buffers, fragmentation).
    pub reserve: f64,
}

impl Memory {
    /// Sum of all parts.
    pub fn total(&self) -> f64 {
        self.layer_states + self.embedding_states + self.activations + self.logits + self.reserve
    }
}

/// Where a step's time goes, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepTime {
    /// GEMMs of all micro-batches on the heaviest stage.
    pub gemm: f64,
    /// Memory-bound element-wise kernels.
    pub elementwise: f64,
    /// Exposed tensor- and context-parallel collectives.
    pub tp_comm: f64,
    /// Pipeline sends.
    pub pp_comm: f64,
    /// Pipeline fill and drain.
    pub bubble: f64,
    /// Exposed data-parallel / ZeRO collectives.
    pub dp_comm: f64,
    /// Optimizer update.
    pub optimizer: f64,
}

impl StepTime {
    /// The whole step.
    pub fn total(&self) -> f64 {
        self.gemm + self.elementwise + self.tp_comm + self.pp_comm + self.bubble + self.dp_comm + self.optimizer
    }
}

/// The model's prediction for one job, layout and chip.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// The layout.
    pub layout: Layout,
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
    /// Tokens per second for the whole job.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation: [`model_flops_per_token`] x tokens/s over nominal peak.
    pub mfu: f64,
}

impl Estimate {
    /// Whether the per-chip memory fits.
    pub fn fits(&self) -> bool {
        self.memory.total() <= self.capacity
    }
}

/// Weight count of one transformer layer (matmuls only; norms and biases are ~0.01%).
pub fn layer_matmul_params(m: &ModelConfig) -> f64 {
    let h = m.d_model as f64;
    let q = (m.n_head * m.head_dim) as f64;
    let kv = (m.n_kv_head * m.head_dim) as f64;
    let f = m.d_ff as f64;
    let mlp = match m.mlp {
        Mlp::Gelu => 2.0,
        Mlp::SwiGlu => 3.0,
    };
    h * (q + 2.0 * kv) + q * h + mlp * h * f
}

/// Model FLOPs per token at context `s`, the MFU numerator: 6N (N without the embedding lookup)
/// plus 6 l s d_attn for attention scores over the causal half (no recompute). Counting the full
/// s x s square (12 l s d_attn, PaLM) would credit work a causal kernel never does.
pub fn model_flops_per_token(m: &ModelConfig, s: usize) -> f64 {
    m.train_flops_per_token(s) - 6.0 * (m.n_layer * s * m.n_head * m.head_dim) as f64
}

/// GEMM efficiency at per-chip matrix width w = d_model / tp: gemm_eff x w / (w + gemm_half_width).
fn gemm_eff(cal: &Calibration, width: f64) -> f64 {
    cal.gemm_eff * width / (width + cal.gemm_half_width)
}

/// Time of a ring collective moving `factor x bytes` per rank at `bw` bytes/s.
fn ring(bytes: f64, factor: f64, bw: f64) -> f64 {
    if factor == 0.0 {
        0.0
    } else {
        factor * bytes / bw
    }
}

/// Rates of one chip needed by the model, bytes/s and FLOP/s, with the calibration applied.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// Nominal dense BF16 FLOP/s.
    pub peak: f64,
    /// Achieved memory bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Achieved scale-up link, one direction, bytes/s.
    pub scaleup: f64,
    /// Chips in one scale-up domain.
    pub domain: usize,
    /// Achieved scale-out per chip, bytes/s (`None` when not public and not needed).
    pub scaleout: Option<f64>,
}

impl Rates {
    /// Read a chip's rates; unknown figures the job needs are errors naming the field.
    pub fn of(chip: &Chip, cal: &Calibration, chips_used: usize) -> Result<Rates> {
        let peak = chip.require("bf16_tflops")? * 1e12;
        let mem_bw = chip.require("mem_bw_tbs")? * 1e12 * cal.bw_eff;
        let domain = chip.require("scaleup_domain")? as usize;
        if domain == 0 {
            bail!("chip {}: scaleup_domain must be at least 1", chip.name);
        }
        let scaleup = if chips_used > 1 { chip.require("scaleup_gbs")? * 1e9 / 2.0 * cal.scaleup_eff } else { 0.0 };
        let scaleout = if chips_used > domain {
            Some(chip.require("scaleout_gbs")? * 1e9 * cal.scaleout_eff)
        } else {
            chip.get("scaleout_gbs").map(|g| g * 1e9 * cal.scaleout_eff)
        };
        Ok(Rates { peak, mem_bw, scaleup, domain, scaleout })
    }

    /// Ring bandwidth per rank for a group of ranks `stride` apart spanning `span` consecutive chips.
    ///
    /// Inside one scale-up domain it is the scale-up link. Across domains, NCCL-style hierarchical
    /// rings run one ring per NIC, so a group with k members per domain moves its inter-domain
    /// share over k NICs at once: k x the per-chip scale-out, never more than the scale-up link.
    fn link(&self, stride: usize, span: usize) -> f64 {
        if span <= self.domain {
            return self.scaleup;
        }
        let per_domain = (self.domain / stride.max(1)).max(1) as f64;
        match self.scaleout {
            Some(so) => (so * per_domain).min(self.scaleup.max(so)),
            None => self.scaleup,
        }
    }
}

/// Predict one step of `job` on `layout`. Errors only for layouts that are not well-formed.
pub fn estimate(
    job: &Job,
    layout: &Layout,
    rates: &Rates,
    cal: &Calibration,
    sh: &Shared,
    sw: &Software,
    capacity: f64,
) -> Result<Estimate> {
    let m = job.model;
    let Layout { tp, pp, dp, cp, mb, v, recompute, zero, sp } = *layout;
    if tp == 0 || pp == 0 || dp == 0 || cp == 0 || mb == 0 || v == 0 {
        bail!("layout {layout}: every degree must be at least 1");
    }
    if job.global_batch % (dp * mb) != 0 {
        bail!("layout {layout}: global batch {} is not a multiple of dp x mb = {}", job.global_batch, dp * mb);
    }
    if pp * v > m.n_layer {
        bail!("layout {layout}: {} layers cannot fill {} pipeline chunks", m.n_layer, pp * v);
    }
    if job.seq % cp != 0 {
        bail!("layout {layout}: sequence {} is not a multiple of cp {cp}", job.seq);
    }
    let n_micro = job.global_batch / (dp * mb);
    let (s, t, p) = (job.seq as f64, tp as f64, pp as f64);
    let h = m.d_model as f64;
    let a = m.n_head as f64;
    let q = (m.n_head * m.head_dim) as f64;
    let kv = (m.n_kv_head * m.head_dim) as f64;
    let vocab = m.vocab_size as f64;
    let tok = (mb * job.seq / cp) as f64; // tokens per micro-batch on one chip's slice of the sequence
    let layers_stage = m.n_layer.div_ceil(pp) as f64;
    let sp = sp && tp > 1;

    // --- compute, per micro-batch on the heaviest (last) stage ---
    // Forward GEMM FLOPs per token per layer: 2 x weights, plus QK^T and AV (4 s d_attn), halved
    // when fused causal attention skips the masked half.
    let causal = if sw.flash_attention { 0.5 } else { 1.0 };
    let attn_core = 4.0 * s * q * causal;
    let layer_fwd = 2.0 * layer_matmul_params(m) + attn_core;
    let head_fwd = 2.0 * h * vocab;
    let recompute_fwd = match recompute {
        Recompute::None => 0.0,
        Recompute::Selective => attn_core,
        Recompute::Full => layer_fwd,
    };
    let stage_flops = tok * (layers_stage * (3.0 * layer_fwd + recompute_fwd) + 3.0 * head_fwd) / t;
    let width = h / t;
    let t_gemm = stage_flops / (rates.peak * gemm_eff(cal, width));

    // Element-wise traffic per layer: the activation bytes Korthikanti counts are what norms,
    // activations, dropout and softmax read and write.
    let per_tok_linear = if sp { 34.0 / t } else { 10.0 + 24.0 / t };
    let scores = if sw.flash_attention { 0.0 } else { 5.0 * a * s / t };
    let act_layer = tok * h * per_tok_linear + tok * scores;
    let passes_fwd = sh.elementwise_passes;
    let recompute_elem = match recompute {
        Recompute::None => 0.0,
        Recompute::Selective => tok * scores,
        Recompute::Full => act_layer,
    };
    let logits_bytes = tok * vocab / t * 4.0;
    let t_elem = passes_fwd * (layers_stage * (3.0 * act_layer + recompute_elem) + 3.0 * logits_bytes) / rates.mem_bw;

    // Tensor parallel: 2 all-reduces (or all-gather + reduce-scatter with SP, same bytes) of the
    // b s h activations per layer forward, 2 backward, 2 more when the forward is recomputed.
    let exposed = if sw.overlap_tp { 1.0 - sh.tp_overlap_hidden } else { 1.0 };
    let t_tp = if tp > 1 {
        let n_ar = 4.0 + if recompute == Recompute::Full { 2.0 } else { 0.0 };
        let bytes = tok * h * 2.0;
        layers_stage * n_ar * ring(bytes, 2.0 * (t - 1.0) / t, rates.link(1, tp)) * exposed
    } else {
        0.0
    };
    // Context parallel: K and V of the whole sequence gathered forward, their gradients
    // reduce-scattered backward, per layer.
    let t_cp = if cp > 1 {
        let c = cp as f64;
        let bytes = (mb as f64) * s * 2.0 * kv * 2.0 / t;
        layers_stage * 2.0 * ring(bytes, (c - 1.0) / c, rates.link(tp, tp * cp)) * exposed
    } else {
        0.0
    };
    // Pipeline: each chunk boundary sends the activation forward and its gradient back; with
    // SP only a 1/t slice travels (Megatron's scatter-gather).
    let t_pp = if pp > 1 {
        let bytes = tok * h * 2.0 / if sp { t } else { 1.0 };
        let link = rates.link(tp * cp * dp, tp * cp * dp * 2);
        2.0 * (v as f64) * bytes / link
    } else {
        0.0
    };
    // Fixed cost per layer and micro-batch: kernel launches and stream synchronisation, which
    // small layers cannot hide behind their GEMMs.
    let launches = if recompute == Recompute::Full { 4.0 / 3.0 } else { 1.0 };
    let t_fixed = layers_stage * launches * sh.layer_overhead_us * 1e-6;
    let t_mb = t_gemm + t_elem + t_tp + t_cp + t_pp + t_fixed;
    let bubble = t_mb * (p - 1.0) / (v as f64);

    // --- states and data parallel ---
    let layer_params = layers_stage * layer_matmul_params(m) / t;
    let emb_params = vocab * h / t * if pp == 1 && !m.tied_embeddings { 2.0 } else { 1.0 };
    let n_shard = (dp * cp) as f64;
    let states_per_param = |zero: u8| {
        let w = if zero >= 3 { 2.0 / n_shard } else { 2.0 };
        let g = if zero >= 2 { sw.main_grad_bytes / n_shard } else { sw.main_grad_bytes };
        let o = if zero >= 1 { 12.0 / n_shard } else { 12.0 };
        w + g + o
    };
    let local_params = layer_params + emb_params;
    let t_dp = if n_shard > 1.0 {
        let frac = (n_shard - 1.0) / n_shard;
        let bw = rates.link(tp, tp * cp * dp);
        let grads = local_params * sw.grad_comm_bytes;
        let weights = local_params * 2.0;
        let moved = match zero {
            0 => 2.0 * frac * grads,
            1 | 2 => frac * (grads + weights),
            // Weights gathered for forward and again for backward, once per step (no reshard
            // between micro-batches, as Llama 3 trains).
            _ => frac * (grads + 2.0 * weights),
        };
        let raw = moved / bw;
        if sw.overlap_dp {
            (raw - t_mb).max(0.0)
        } else {
            raw
        }
    } else {
        0.0
    };
    // AdamW update: reads and writes fp32 master, m, v (24 B), reads the fp32 grad, writes bf16 weights.
    let opt_params = if zero >= 1 { local_params / n_shard } else { local_params };
    let t_opt = opt_params * 30.0 / rates.mem_bw;

    let nm = n_micro as f64;
    let time = StepTime {
        gemm: t_gemm * nm,
        elementwise: (t_elem + t_fixed) * nm,
        tp_comm: (t_tp + t_cp) * nm,
        pp_comm: t_pp * nm,
        bubble,
        dp_comm: t_dp,
        optimizer: t_opt,
    };

    // --- memory of the heaviest chip ---
    let act_stored_layer = match recompute {
        Recompute::None => act_layer,
        Recompute::Selective => tok * h * per_tok_linear,
        Recompute::Full => 2.0 * tok * h / if sp { t } else { 1.0 },
    };
    // 1F1B keeps min(m, p) micro-batches in flight on the first stage; interleaving adds
    // (p-1)/(p v) of that (Korthikanti, section 4.2.3).
    let in_flight = (n_micro.min(pp) as f64) * if v > 1 { 1.0 + (p - 1.0) / (p * v as f64) } else { 1.0 };
    let mut activations = act_stored_layer * layers_stage * in_flight;
    if recompute == Recompute::Full {
        activations += act_layer; // one layer rematerialised during its backward
    }
    let memory = Memory {
        layer_states: layer_params * states_per_param(zero),
        embedding_states: emb_params * states_per_param(zero),
        activations,
        logits: 2.0 * logits_bytes,
        reserve: sh.reserve_gib * GIB,
    };

    let tokens_per_s = (job.global_batch * job.seq) as f64 / time.total();
    let chips = layout.chips() as f64;
    let mfu = tokens_per_s * model_flops_per_token(m, job.seq) / (chips * rates.peak);
    Ok(Estimate {
        layout: *layout,
        global_batch: job.global_batch,
        micro_batches: n_micro,
        time,
        memory,
        capacity,
        tokens_per_s,
        mfu,
    })
}
