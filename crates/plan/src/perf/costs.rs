//! The model's primitives: one GEMM at its shape's efficiency, one collective over a link with
//! its hops, what an overlapped collective leaves exposed, and the element-wise traffic of the
//! loss.

use super::*;

/// Fraction of the nominal memory bandwidth a streaming kernel reaches: FlagPerf's A100
/// measurement, 1,328 of 1,555 GB/s (85.4%; shared/anchors/chips.md, "Measured vs nominal").
pub(super) const MEM_BW_EFF: f64 = 0.854;

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
pub(super) fn gemm_time(
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
pub(super) fn comm(bytes_per_rank: f64, bw: f64, steps: f64, k: &Constants, crosses: bool) -> f64 {
    if bytes_per_rank <= 0.0 {
        return 0.0;
    }
    let hop = k.hop_latency_us * 1e-6 * if crosses { 2.0 } else { 1.0 };
    bytes_per_rank / bw + steps * hop
}

/// What of `t` is exposed when it can overlap `window` of compute: the part beyond the window, plus
/// (1 - overlap_hidden) of the overlapped part (contention). Without overlap all of it.
pub(super) fn exposed(t: f64, window: f64, overlap: bool, k: &Constants) -> f64 {
    if !overlap {
        return t;
    }
    let under = t.min(window.max(0.0));
    (t - under) + (1.0 - k.overlap_hidden) * under
}

/// Expected number of domains other than the sender's that hold at least one of a token's `top_k`
/// experts, the `experts` spread evenly over `domains` domains and chosen uniformly (the Megatron-Bridge
/// benchmarks force-balance routing): (domains - 1) x (1 - C(E - E/D, k) / C(E, k)).
pub(super) fn other_domains_hit(top_k: usize, experts: usize, domains: usize) -> f64 {
    if domains <= 1 {
        return 0.0;
    }
    let (e, elsewhere) = (experts as f64, experts as f64 * (1.0 - 1.0 / domains as f64));
    let miss: f64 = (0..top_k).map(|i| (elsewhere - i as f64).max(0.0) / (e - i as f64)).product();
    (domains - 1) as f64 * (1.0 - miss)
}

/// Element-wise passes of a stack over the stored-activation bytes.
pub(super) fn passes(k: &Constants, stack: &Stack) -> f64 {
    // Unfused kernels read and write each tensor separately; 1.5x the fused traffic is the
    // ratio of the unfused to the fused GeLU/bias/dropout/add sequence (Narayanan SC'21 section 4.2).
    k.elementwise_passes * if stack.fused_elementwise { 1.0 } else { 1.5 }
}

/// Bytes the loss keeps over the logits of one micro-batch, whose FP32 size is `logits_bytes`:
/// a fused cross-entropy keeps one logit-sized buffer in FP32 or two in BF16 (the logits and
/// their gradient, or its FP32 softmax: Megatron-Core's vocab-parallel loss, Transformer
/// Engine's and flash-attn's fused kernels); unfused, the BF16 logits, their FP32 copy and its
/// softmax gradient (8 bytes a logit at the peak).
pub(super) fn logits_memory(stack: &Stack, logits_bytes: f64) -> f64 {
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
pub(super) fn loss_traffic(k: &Constants, stack: &Stack, logits_bytes: f64) -> f64 {
    if stack.fused_cross_entropy {
        3.0 * logits_bytes
    } else {
        passes(k, stack) * 3.0 * logits_bytes * 3.0
    }
}
