//! RMSNorm over the last axis, with saved rstd.
//!
//! fwd: rstd = 1/sqrt(sum(x^2)/D + eps), xhat = x * rstd, y = xhat * w
//! bwd: g = dy * w, dx = rstd * (g - xhat * mean(g * xhat)), dw = sum_rows(dy * xhat)

use crate::prims::{reshaped, rows, Prims};
use anychip_port::{ReduceOp, Result, UnaryOp, View};

pub(crate) fn fwd(k: &Prims, x: &View, w: Option<&View>, eps: f32, y: &View, rstd: &View) -> Result<()> {
    let x = rows(&k.f32(x)?);
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let ms = k.mulc(&k.reduce_last(ReduceOp::Sum, &k.mul(&x, &x)?)?, 1.0 / d as f64)?;
    let r = k.un(UnaryOp::Recip, &k.un(UnaryOp::Sqrt, &k.addc(&ms, eps as f64)?)?)?;
    let mut out = k.mul(&x, &r)?;
    if let Some(w) = w {
        out = k.mul(&out, &k.f32(w)?)?;
    }
    k.store(&out, y)?;
    k.store(&reshaped(&r, &[n]), rstd)
}

pub(crate) fn bwd(
    k: &Prims,
    x: &View,
    w: Option<&View>,
    rstd: &View,
    dy: &View,
    dx: &View,
    dw: Option<&View>,
) -> Result<()> {
    let (x, dy) = (rows(&k.f32(x)?), rows(&k.f32(dy)?));
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let r = reshaped(rstd, &[n, 1]);
    let xhat = k.mul(&x, &r)?;
    let g = match w {
        Some(w) => k.mul(&dy, &k.f32(w)?)?,
        None => dy.clone(),
    };
    let mean_gx = k.mulc(&k.reduce_last(ReduceOp::Sum, &k.mul(&g, &xhat)?)?, 1.0 / d as f64)?;
    k.store(&k.mul(&k.sub(&g, &k.mul(&xhat, &mean_gx)?)?, &r)?, dx)?;
    if let Some(dw) = dw {
        k.store(&k.sum_rows(&k.mul(&dy, &xhat)?)?, dw)?;
    }
    Ok(())
}
