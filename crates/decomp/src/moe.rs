//! Mixture-of-experts router and combine, forward and analytic backward.
//!
//! Router, for x `[N, D]` and w `[E, D]`: z = x w^T `[N, E]` in f32, probs = softmax(z) per row;
//!   dz = probs * (dprobs - rowsum(dprobs * probs));  dx = dz w `[N, D]`;  dw = dz^T x `[E, D]`.
//! It is the linear and softmax decompositions chained through an f32 scratch, z forward and dz
//! backward, so neither is rounded to a narrower dtype between the two.
//!
//! Combine: the experts' output rows weighted and summed back into their tokens' rows. For
//! y `[S, D]`, routing weights w `[S, 1]` and each row's token tok `[S]`:
//!   out `[N, D]`: out[t] = sum over the rows s with tok[s] = t of w[s] y[s] (in increasing s);
//!   dy[s] = w[s] dout[tok[s]];  dw[s] = <dout[tok[s]], y[s]>.
//! Forward is a product and a scatter-add of rows; backward a gather of rows, then a product for
//! dy and a product with a row sum for dw.

use crate::prims::{bcast, Prims};
use crate::{linear, softmax};
use anychip_port::check::moe_router as check_router;
use anychip_port::{DType, ReduceOp, Result, View};

/// z = x w^T into an f32 scratch, then probs = softmax(z).
pub(crate) fn router_fwd(k: &Prims, x: &View, w: &View, probs: &View) -> Result<()> {
    check_router(x, w, &[probs], None, None)?;
    let z = k.alloc(probs.shape())?;
    linear::fwd(k, x, w, None, &z)?;
    softmax::softmax_fwd(k, &z, probs)
}

/// dz = probs * (dprobs - rowsum(dprobs * probs)) into an f32 scratch, then dx = dz w and
/// dw = dz^T x (each when present).
pub(crate) fn router_bwd(
    k: &Prims,
    x: &View,
    w: &View,
    probs: &View,
    dprobs: &View,
    dx: Option<&View>,
    dw: Option<&View>,
) -> Result<()> {
    check_router(x, w, &[probs, dprobs], dx, dw)?;
    let dz = k.alloc(probs.shape())?;
    softmax::softmax_bwd(k, probs, dprobs, &dz)?;
    linear::bwd(k, x, w, &dz, dx, dw, None)
}

pub(crate) fn combine_fwd(k: &Prims, y: &View, w: &View, tok: &View, out: &View) -> Result<()> {
    let weighted = k.mul(&k.f32(y)?, &bcast(&k.f32(w)?, y.shape()))?;
    // Accumulate in f32: straight into out when it is F32, else in a scratch stored once.
    let acc = if out.dtype == DType::F32 { out.clone() } else { k.alloc(out.shape())? };
    k.0.fill(&acc, 0.0)?;
    k.0.scatter_add_rows(&weighted, tok, &acc)?;
    if out.dtype != DType::F32 {
        k.store(&acc, out)?;
    }
    Ok(())
}

pub(crate) fn combine_bwd(
    k: &Prims,
    y: &View,
    w: &View,
    tok: &View,
    dout: &View,
    dy: Option<&View>,
    dw: Option<&View>,
) -> Result<()> {
    let picked = k.alloc(y.shape())?;
    k.0.gather_rows(&k.f32(dout)?, tok, &picked)?;
    if let Some(dy) = dy {
        k.store(&k.mul(&picked, &bcast(&k.f32(w)?, y.shape()))?, dy)?;
    }
    if let Some(dw) = dw {
        let dots = k.reduce_last(ReduceOp::Sum, &k.mul(&picked, &k.f32(y)?)?)?;
        k.store(&dots, dw)?;
    }
    Ok(())
}
