//! The attention block: projections, the attention core (fused or unfused, windowed, latent,
//! sparse-indexed), its softmax, dropout and context-parallel exchange.

use super::*;

impl Ctx<'_> {
    /// Forward and backward seconds of the attention core for one layer (with DeepSeek Sparse
    /// Attention's indexer, [`Self::indexer`]), and the bytes a token stores of an unfused core's
    /// scores.
    pub(super) fn attention(&self, windowed: bool) -> (f64, f64, f64) {
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
    pub(super) fn indexer(&self) -> (f64, f64) {
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
    pub(super) fn dropout(&self) -> f64 {
        if self.stack.dropout {
            1.0
        } else {
            0.0
        }
    }

    /// The peak fused attention runs against: BF16, or with a stack that runs attention in FP8
    /// during FP8 training, the FP8 peak times the FP8 GEMM efficiency (the same scaling and casting
    /// as the linear layers' FP8 GEMMs).
    pub(super) fn attention_peak(&self) -> f64 {
        match (self.precision, self.r.peak_8bit) {
            (Precision::Fp8, Some(p)) if self.stack.fp8_attention => p * self.k.fp8_gemm_eff,
            _ => self.r.peak_bf16,
        }
    }

    /// One attention block: its norm, projections and core, the TP pair around it and the
    /// context-parallel exchange.
    pub(super) fn attention_block(&self, windowed: bool) -> LayerCost {
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
