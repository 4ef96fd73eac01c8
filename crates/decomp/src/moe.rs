//! Mixture-of-experts combine: the experts' output rows weighted and summed back into their
//! tokens' rows, forward and analytic backward.
//!
//! For y `[S, D]`, routing weights w `[S, 1]` and each row's token tok `[S]`:
//!   out `[N, D]`: out[t] = sum over the rows s with tok[s] = t of w[s] y[s] (in increasing s);
//!   dy[s] = w[s] dout[tok[s]];  dw[s] = <dout[tok[s]], y[s]>.
//! Forward is a product and a scatter-add of rows; backward a gather of rows, then a product for
//! dy and a product with a row sum for dw.

use crate::prims::{bcast, Prims};
use anychip_port::{DType, ReduceOp, Result, View};

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
