//! Fused composites: one kernel per family, forward and backward, parallel over rows or heads.
//!
//! A call whose views this port does not expect (non-contiguous, I32 where floats belong)
//! answers [`Handled::No`] so the engine falls back to the default decomposition: a fused
//! kernel may be missing, never wrong.

mod activation;
mod attention;
mod cross_entropy;
mod embedding;
mod grouped;
mod linear;
mod moe;
mod norm;
mod optim;
mod rope;
mod softmax;
mod tile;

use anychip_port::{Composite, DType, Handled, Result, View};
use rayon::prelude::*;

/// Run `call` with a fused kernel when one applies.
pub fn run(call: &Composite) -> Result<Handled> {
    use Composite::*;
    let views = views(call);
    if !views.iter().all(|v| v.layout.is_contiguous()) {
        return Ok(Handled::No);
    }
    match call {
        SoftmaxFwd { x, y } => softmax::softmax_fwd(x, y),
        SoftmaxBwd { y, dy, dx } => softmax::softmax_bwd(y, dy, dx),
        LogSoftmaxFwd { x, y } => softmax::log_softmax_fwd(x, y),
        LogSoftmaxBwd { y, dy, dx } => softmax::log_softmax_bwd(y, dy, dx),
        LayerNormFwd { x, weight, bias, eps, y, mean, rstd } => {
            norm::layer_norm_fwd(x, weight.as_ref(), bias.as_ref(), *eps, y, mean, rstd)
        }
        LayerNormBwd { x, weight, mean, rstd, dy, dx, dweight, dbias } => {
            norm::layer_norm_bwd(x, weight.as_ref(), mean, rstd, dy, dx, dweight.as_ref(), dbias.as_ref())
        }
        RmsNormFwd { x, weight, eps, y, rstd } => norm::rms_norm_fwd(x, weight.as_ref(), *eps, y, rstd),
        RmsNormBwd { x, weight, rstd, dy, dx, dweight } => {
            norm::rms_norm_bwd(x, weight.as_ref(), rstd, dy, dx, dweight.as_ref())
        }
        GeluFwd { kind, x, y } => activation::gelu_fwd(*kind, x, y),
        GeluBwd { kind, x, dy, dx } => activation::gelu_bwd(*kind, x, dy, dx),
        SiluFwd { x, y } => activation::silu_fwd(x, y),
        SiluBwd { x, dy, dx } => activation::silu_bwd(x, dy, dx),
        SwigluFwd { x, y } => activation::swiglu_fwd(x, y),
        SwigluBwd { x, dy, dx } => activation::swiglu_bwd(x, dy, dx),
        CrossEntropyFwd { logits, targets, loss, lse } => cross_entropy::fwd(logits, targets, loss, lse),
        CrossEntropyBwd { logits, targets, lse, dloss, dlogits } => {
            cross_entropy::bwd(logits, targets, lse, dloss, dlogits)
        }
        AttentionFwd { q, k, v, scale, causal, out, lse } => attention::fwd(q, k, v, *scale, *causal, out, lse),
        AttentionBwd { q, k, v, out, lse, dout, scale, causal, dq, dk, dv } => {
            attention::bwd(q, k, v, out, lse, dout, *scale, *causal, dq, dk, dv)
        }
        EmbeddingFwd { table, ids, out } => embedding::fwd(table, ids, out),
        EmbeddingBwd { ids, dout, dtable } => embedding::bwd(ids, dout, dtable),
        RopeFwd { x, cos, sin, y } => rope::rope(x, cos, sin, y, 1.0),
        RopeBwd { dy, cos, sin, dx } => rope::rope(dy, cos, sin, dx, -1.0),
        LinearFwd { x, w, b, y } => linear::fwd(x, w, b.as_ref(), y),
        LinearBwd { x, w, dy, dx, dw, db } => linear::bwd(x, w, dy, dx.as_ref(), dw.as_ref(), db.as_ref()),
        AdamWStep { param, grad, m, v, grad_scale, lr, beta1, beta2, eps, weight_decay, step } => optim::adamw(
            param,
            grad,
            m,
            v,
            grad_scale.as_ref(),
            optim::Hyper { lr: *lr, beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay, step: *step },
        ),
        GradNorm { grads, out } => optim::grad_norm(grads, out),
        DropoutFwd { x, p, seed, offset, y, mask } => activation::dropout_fwd(x, *p, *seed, *offset, y, mask),
        DropoutBwd { dy, mask, dx } => activation::dropout_bwd(dy, mask, dx),
        MoeCombineFwd { y, w, tok, out } => moe::combine_fwd(y, w, tok, out),
        MoeCombineBwd { y, w, tok, dout, dy, dw } => moe::combine_bwd(y, w, tok, dout, dy.as_ref(), dw.as_ref()),
        MoeRouterFwd { x, w, probs } => moe::router_fwd(x, w, probs),
        MoeRouterBwd { x, w, probs, dprobs, dx, dw } => moe::router_bwd(x, w, probs, dprobs, dx.as_ref(), dw.as_ref()),
        GroupedLinearFwd { x, ws, offsets, y } => grouped::fwd(x, ws, offsets, y),
        GroupedLinearBwd { x, ws, dy, offsets, dx, dws } => grouped::bwd(x, ws, dy, offsets, dx.as_ref(), dws),
    }
}

/// Every view a call touches (to check the contiguity every fused kernel assumes).
fn views<'a>(call: &'a Composite) -> Vec<&'a View> {
    use Composite::*;
    let mut v: Vec<&'a View> = Vec::new();
    let mut add = |xs: &[Option<&'a View>]| v.extend(xs.iter().flatten());
    match call {
        SoftmaxFwd { x, y } | LogSoftmaxFwd { x, y } => add(&[Some(x), Some(y)]),
        SoftmaxBwd { y, dy, dx } | LogSoftmaxBwd { y, dy, dx } => add(&[Some(y), Some(dy), Some(dx)]),
        LayerNormFwd { x, weight, bias, y, mean, rstd, .. } => {
            add(&[Some(x), weight.as_ref(), bias.as_ref(), Some(y), Some(mean), Some(rstd)])
        }
        LayerNormBwd { x, weight, mean, rstd, dy, dx, dweight, dbias } => add(&[
            Some(x),
            weight.as_ref(),
            Some(mean),
            Some(rstd),
            Some(dy),
            Some(dx),
            dweight.as_ref(),
            dbias.as_ref(),
        ]),
        RmsNormFwd { x, weight, y, rstd, .. } => add(&[Some(x), weight.as_ref(), Some(y), Some(rstd)]),
        RmsNormBwd { x, weight, rstd, dy, dx, dweight } => {
            add(&[Some(x), weight.as_ref(), Some(rstd), Some(dy), Some(dx), dweight.as_ref()])
        }
        GeluFwd { x, y, .. } | SwigluFwd { x, y } => add(&[Some(x), Some(y)]),
        GeluBwd { x, dy, dx, .. } | SwigluBwd { x, dy, dx } => add(&[Some(x), Some(dy), Some(dx)]),
        CrossEntropyFwd { logits, targets, loss, lse } => add(&[Some(logits), Some(targets), Some(loss), Some(lse)]),
        CrossEntropyBwd { logits, targets, lse, dloss, dlogits } => {
            add(&[Some(logits), Some(targets), Some(lse), Some(dloss), Some(dlogits)])
        }
        // Embedding, linear, grouped linear and SiLU go through the strided primitives and block
        // map: any layout works. Attention and RoPE check their own layouts (heads with
        // unit-stride rows).
        EmbeddingFwd { .. } | EmbeddingBwd { .. } | LinearFwd { .. } | LinearBwd { .. } => {}
        GroupedLinearFwd { .. } | GroupedLinearBwd { .. } => {}
        SiluFwd { .. } | SiluBwd { .. } => {}
        AttentionFwd { .. } | AttentionBwd { .. } | RopeFwd { .. } | RopeBwd { .. } => {}
        AdamWStep { param, grad, m, v, grad_scale, .. } => {
            add(&[Some(param), Some(grad), Some(m), Some(v), grad_scale.as_ref()])
        }
        GradNorm { grads, out } => {
            v.extend(grads.iter());
            v.push(out);
        }
        DropoutFwd { x, y, mask, .. } => add(&[Some(x), Some(y), Some(mask)]),
        DropoutBwd { dy, mask, dx } => add(&[Some(dy), Some(mask), Some(dx)]),
        MoeCombineFwd { y, w, tok, out } => add(&[Some(y), Some(w), Some(tok), Some(out)]),
        MoeCombineBwd { y, w, tok, dout, dy, dw } => {
            add(&[Some(y), Some(w), Some(tok), Some(dout), dy.as_ref(), dw.as_ref()])
        }
        MoeRouterFwd { x, w, probs } => add(&[Some(x), Some(w), Some(probs)]),
        MoeRouterBwd { x, w, probs, dprobs, dx, dw } => {
            add(&[Some(x), Some(w), Some(probs), Some(dprobs), dx.as_ref(), dw.as_ref()])
        }
    }
    v
}

/// (rows, features): all leading axes flattened, the last axis kept.
pub fn rows_cols(v: &View) -> (usize, usize) {
    let d = v.shape().last().copied().unwrap_or(1);
    (v.numel().checked_div(d).unwrap_or(0), d)
}

/// Per-task scratch rows for bf16 conversion (reused across the rows a task handles).
#[derive(Default)]
pub struct Scratch(pub [Vec<f32>; 4]);

/// Run `f(scratch, row)` for every row, in parallel when there is enough work.
pub fn par_rows(rows: usize, cols: usize, f: impl Fn(&mut Scratch, usize) + Sync + Send) {
    let work = rows * cols.max(1);
    if work < crate::elem::PAR_MIN || rows < 2 {
        let mut s = Scratch::default();
        (0..rows).for_each(|r| f(&mut s, r));
    } else {
        let min = (crate::elem::PAR_MIN / cols.max(1)).clamp(1, rows.div_ceil(4 * rayon::current_num_threads()).max(1));
        (0..rows).into_par_iter().with_min_len(min).for_each_init(Scratch::default, |s, r| f(s, r));
    }
}

/// Whether every view holds floats (fused kernels leave odd dtypes to the decomposition).
pub fn floats(vs: &[&View]) -> bool {
    vs.iter().all(|v| v.dtype.is_float())
}

/// Whether `v` is F32 (saved statistics and losses must be).
pub fn is_f32(v: &View) -> bool {
    v.dtype == DType::F32
}
