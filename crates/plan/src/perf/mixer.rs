//! Mamba-2 and Gated DeltaNet mixers of hybrid models: their projections and the chunked scan,
//! priced at the larger of its FLOPs and its kernels' traffic.

use super::*;

impl Ctx<'_> {
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
    pub(super) fn mamba_block(&self) -> LayerCost {
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
    pub(super) fn gdn_block(&self) -> LayerCost {
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
}
