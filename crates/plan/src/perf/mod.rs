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
//!
//! Where each part lives: `layout` (what a plan is, and the checks that it is well-formed),
//! `rates` (one chip's rates), `costs` (the GEMM, collective and exposure primitives), `layer`
//! (a layer's cost and the context it is priced in), `attention`, `mlp` (dense MLPs and experts),
//! `mixer` (Mamba-2 and Gated DeltaNet), `stage` (pipeline stages, one micro-batch through the
//! binding one, activation memory), `states` (ZeRO states and the data-parallel exchange);
//! [`estimate`] puts them together.

use crate::calib::Constants;
use crate::chips::{Chip, GIB};
use crate::model::{Arch, Moe};
use crate::stack::Stack;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

mod attention;
mod costs;
mod layer;
mod layout;
mod mixer;
mod mlp;
mod rates;
mod stage;
mod states;
#[cfg(test)]
mod tests;

pub use costs::gemm_efficiency;
use costs::*;
use layer::*;
pub(crate) use layout::balanced_split;
pub use layout::{check_layout, Layout, Modules, Precision, Recompute, Schedule, StageSplit};
use rates::*;
pub use rates::{cudnn_2025_speedup, maf_clock, power_clock, Rates};
use states::*;

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
