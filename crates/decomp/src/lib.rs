//! Default decompositions of every composite into the twelve port primitives, forward and
//! analytic backward, one family per file with the math in its header.
//!
//! A port that implements only the primitives trains every model through these; a port that
//! fuses a composite is checked against them by the conformance suite. Everything is computed
//! in f32 (BF16 inputs are widened, outputs rounded on store); saved statistics are F32.

mod activation;
mod adamw;
mod attention;
mod cross_entropy;
mod dropout;
mod embedding;
mod grad_norm;
mod grouped_linear;
mod layer_norm;
mod linear;
mod moe;
mod prims;
mod rms_norm;
mod rope;
mod softmax;

use anychip_port::{Composite, Handled, Port, Result};
use prims::Prims;

/// Run the port's fused kernel for `call` if it has one, else the default decomposition.
/// This is what the engine calls for every composite.
pub fn dispatch(port: &dyn Port, call: &Composite) -> Result<()> {
    match port.composite(call)? {
        Handled::Yes => Ok(()),
        Handled::No => run(port, call),
    }
}

/// Run the default decomposition of `call` on `port`, never asking the port to fuse `call`
/// itself. (The one decomposition written against another composite, `grouped_linear`'s, runs
/// each group as a `linear` through [`dispatch`], so a port's own linear kernel serves it.)
pub fn run(port: &dyn Port, call: &Composite) -> Result<()> {
    use Composite::*;
    let k = &Prims(port);
    match call {
        SoftmaxFwd { x, y } => softmax::softmax_fwd(k, x, y),
        SoftmaxBwd { y, dy, dx } => softmax::softmax_bwd(k, y, dy, dx),
        LogSoftmaxFwd { x, y } => softmax::log_softmax_fwd(k, x, y),
        LogSoftmaxBwd { y, dy, dx } => softmax::log_softmax_bwd(k, y, dy, dx),
        LayerNormFwd { x, weight, bias, eps, y, mean, rstd } => {
            layer_norm::fwd(k, x, weight.as_ref(), bias.as_ref(), *eps, y, mean, rstd)
        }
        LayerNormBwd { x, weight, mean, rstd, dy, dx, dweight, dbias } => {
            layer_norm::bwd(k, x, weight.as_ref(), mean, rstd, dy, dx, dweight.as_ref(), dbias.as_ref())
        }
        RmsNormFwd { x, weight, eps, y, rstd } => rms_norm::fwd(k, x, weight.as_ref(), *eps, y, rstd),
        RmsNormBwd { x, weight, rstd, dy, dx, dweight } => {
            rms_norm::bwd(k, x, weight.as_ref(), rstd, dy, dx, dweight.as_ref())
        }
        GeluFwd { kind, x, y } => activation::gelu_fwd(k, *kind, x, y),
        GeluBwd { kind, x, dy, dx } => activation::gelu_bwd(k, *kind, x, dy, dx),
        SiluFwd { x, y } => activation::silu_fwd(k, x, y),
        SiluBwd { x, dy, dx } => activation::silu_bwd(k, x, dy, dx),
        SwigluFwd { x, y } => activation::swiglu_fwd(k, x, y),
        SwigluBwd { x, dy, dx } => activation::swiglu_bwd(k, x, dy, dx),
        CrossEntropyFwd { logits, targets, loss, lse } => cross_entropy::fwd(k, logits, targets, loss, lse),
        CrossEntropyBwd { logits, targets, lse, dloss, dlogits } => {
            cross_entropy::bwd(k, logits, targets, lse, dloss, dlogits)
        }
        AttentionFwd { q, k: kk, v, scale, causal, out, lse } => attention::fwd(k, q, kk, v, *scale, *causal, out, lse),
        AttentionBwd { q, k: kk, v, out, lse, dout, scale, causal, dq, dk, dv } => {
            attention::bwd(k, q, kk, v, out, lse, dout, *scale, *causal, dq, dk, dv)
        }
        EmbeddingFwd { table, ids, out } => embedding::fwd(k, table, ids, out),
        EmbeddingBwd { ids, dout, dtable } => embedding::bwd(k, ids, dout, dtable),
        RopeFwd { x, cos, sin, y } => rope::fwd(k, x, cos, sin, y),
        RopeBwd { dy, cos, sin, dx } => rope::bwd(k, dy, cos, sin, dx),
        LinearFwd { x, w, b, y } => linear::fwd(k, x, w, b.as_ref(), y),
        LinearBwd { x, w, dy, dx, dw, db } => linear::bwd(k, x, w, dy, dx.as_ref(), dw.as_ref(), db.as_ref()),
        AdamWStep { param, grad, m, v, grad_scale, lr, beta1, beta2, eps, weight_decay, step } => {
            adamw::step(k, param, grad, m, v, grad_scale.as_ref(), *lr, *beta1, *beta2, *eps, *weight_decay, *step)
        }
        GradNorm { grads, out } => grad_norm::global(k, grads, out),
        DropoutFwd { x, p, seed, offset, y, mask } => dropout::fwd(k, x, *p, *seed, *offset, y, mask),
        DropoutBwd { dy, mask, dx } => dropout::bwd(k, dy, mask, dx),
        MoeCombineFwd { y, w, tok, out } => moe::combine_fwd(k, y, w, tok, out),
        MoeCombineBwd { y, w, tok, dout, dy, dw } => moe::combine_bwd(k, y, w, tok, dout, dy.as_ref(), dw.as_ref()),
        MoeRouterFwd { x, w, probs } => moe::router_fwd(k, x, w, probs),
        MoeRouterBwd { x, w, probs, dprobs, dx, dw } => {
            moe::router_bwd(k, x, w, probs, dprobs, dx.as_ref(), dw.as_ref())
        }
        GroupedLinearFwd { x, ws, offsets, y } => grouped_linear::fwd(k, x, ws, offsets, y),
        GroupedLinearBwd { x, ws, dy, offsets, dx, dws } => {
            grouped_linear::bwd(k, x, ws, dy, offsets, dx.as_ref(), dws)
        }
    }
}
