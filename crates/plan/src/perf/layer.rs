//! One layer's cost per micro-batch ([`LayerCost`]): the context every block is priced in
//! ([`Ctx`]), the GEMM helpers, and a layer assembled from its attention (or mixer) and MLP blocks.

use super::*;

/// Per-micro-batch work of one layer kind on one chip: seconds of compute, bytes, collectives.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LayerCost {
    /// Forward GEMMs and attention, seconds.
    pub(super) fwd: f64,
    /// Of `fwd`, the linear layers' GEMMs (what per-op checkpointing shares out).
    pub(super) linear_fwd: f64,
    /// Forward attention core alone, seconds (what selective recompute reruns).
    pub(super) attn_fwd: f64,
    /// Backward attention core, seconds (what context-parallel backward exchange hides behind).
    pub(super) attn_bwd: f64,
    /// Backward, seconds.
    pub(super) bwd: f64,
    /// Stored activation bytes (no recompute).
    pub(super) act_bytes: f64,
    /// Activation bytes outside the attention core (stored under selective recompute).
    pub(super) act_bytes_selective: f64,
    /// Of `act_bytes`, what routed tokens of a MoE layer store (permuted copies, expert activations).
    pub(super) moe_bytes: f64,
    /// Of `moe_bytes`, what a fused expert MLP never runs element-wise kernels over (the gate/up
    /// outputs and the activation's output, 6 fe per routed copy): 0 unless the stack fuses it.
    pub(super) moe_fused_bytes: f64,
    /// Of `linear_inputs`, the elements a fused expert MLP quantises inside its GEMM's epilogue
    /// instead of in a separate cast (the down projection's input): 0 unless the stack fuses it.
    pub(super) fused_casts: f64,
    /// Elements entering linear layers (what FP8 training casts), per micro-batch.
    pub(super) linear_inputs: f64,
    /// Exposed-before-overlap collectives: TP, CP, EP, seconds per micro-batch (forward + backward).
    pub(super) tp: f64,
    pub(super) cp: f64,
    pub(super) ep: f64,
    /// TP forward part (rerun under full recompute).
    pub(super) tp_fwd: f64,
    /// TP forward collectives the recompute modules rerun (the dense MLP's pair under `mlp`).
    pub(super) tp_module_rerun: f64,
    /// Stored bytes the layout's recompute modules discard (outside the attention core).
    pub(super) module_bytes: f64,
    /// Seconds of forward work those modules rerun in backward.
    pub(super) module_rerun: f64,
    /// Of `linear_fwd`, a MoE layer's shared experts' GEMMs (what the dispatch and combine can
    /// run under: Megatron-Core's `moe_shared_expert_overlap`).
    pub(super) shared_fwd: f64,
}

impl LayerCost {
    /// Add `w` layers of cost `c`.
    pub(super) fn add_scaled(&mut self, c: &LayerCost, w: f64) {
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
pub(super) struct Ctx<'a> {
    pub(super) a: &'a Arch,
    pub(super) l: Layout,
    pub(super) r: &'a Rates,
    pub(super) k: &'a Constants,
    pub(super) stack: &'a Stack,
    pub(super) precision: Precision,
    pub(super) s: f64,
    pub(super) tok: f64,
}

impl Ctx<'_> {
    pub(super) fn t(&self) -> f64 {
        self.l.tp as f64
    }

    /// What the activations outside the TP region are split by: the TP degree under sequence
    /// parallelism, else 1 (every TP rank holds them whole).
    pub(super) fn sp_split(&self) -> f64 {
        if self.l.sp && self.l.tp > 1 {
            self.t()
        } else {
            1.0
        }
    }

    /// Seconds for `flops` of linear-layer GEMM of shape tokens x k -> n (per chip).
    pub(super) fn linear(&self, flops: f64, m: f64, n: f64, kk: f64) -> f64 {
        let (peak, bytes, extra) = match (self.precision, self.r.peak_8bit) {
            (q, Some(p)) if q.quantized() => (p, q.operand_bytes(), quantized_gemm_eff(self.k, q)),
            _ => (self.r.peak_bf16, 2.0, 1.0),
        };
        gemm_time(self.k, peak * extra, peak, self.r.mem_bw, flops, m, n, kk, bytes)
    }

    /// Seconds for a BF16 GEMM (LM head, unfused attention).
    pub(super) fn bf16(&self, flops: f64, m: f64, n: f64, kk: f64) -> f64 {
        let p = self.r.peak_bf16;
        gemm_time(self.k, p, p, self.r.mem_bw, flops, m, n, kk, 2.0)
    }

    /// Ring time of a TP collective pair (all-gather + reduce-scatter, or one all-reduce) of the b s h activation.
    pub(super) fn tp_pair(&self) -> f64 {
        let t = self.l.tp;
        if t == 1 {
            return 0.0;
        }
        let tf = t as f64;
        let bytes = self.tok * self.a.d_model as f64 * 2.0;
        comm(2.0 * (tf - 1.0) / tf * bytes, self.r.link(1, t), 2.0 * (tf - 1.0), self.k, self.r.crosses(t))
    }

    /// One layer of the given kind.
    pub(super) fn layer(&self, moe: bool, windowed: bool) -> LayerCost {
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
    pub(super) fn mtp_block(&self) -> LayerCost {
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
    pub(super) fn outside_bytes(&self) -> f64 {
        (4.0 + self.dropout()) * self.a.d_model as f64 / self.sp_split()
    }

    /// The layout's `layernorm` recompute over one block's norm: (bytes not stored, rerun
    /// seconds): its output of h per token; rerun: read the input (2 B) and write the output.
    pub(super) fn norm_recompute(&self) -> (f64, f64) {
        if !self.l.modules.layernorm {
            return (0.0, 0.0);
        }
        let (h, sp, tok) = (self.a.d_model as f64, self.sp_split(), self.tok);
        // A stored linear input is its 1-byte cast in FP8 (Transformer Engine keeps that copy).
        let lin = self.precision.operand_bytes();
        (tok * h * lin / sp, tok * h * (2.0 + lin) / sp / self.r.mem_bw)
    }
}
