//! LayerNorm over the last axis (biased variance), with saved mean and rstd.
//!
//! fwd: mean = sum(x)/D, xc = x - mean, rstd = 1/sqrt(sum(xc^2)/D + eps),
//!      xhat = xc * rstd, y = xhat * w + b
//! bwd: g = dy * w, dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
//!      dw = sum_rows(dy * xhat), db = sum_rows(dy)

use crate::prims::{reshaped, rows, Prims};
use anychip_port::{ReduceOp, Result, UnaryOp, View};

pub(crate) fn fwd(
    k: &Prims,
    x: &View,
    w: Option<&View>,
    b: Option<&View>,
    eps: f32,
    y: &View,
    mean: &View,
    rstd: &View,
) -> Result<()> {
    let x = rows(&k.f32(x)?);
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let mu = k.mulc(&k.reduce_last(ReduceOp::Sum, &x)?, 1.0 / d as f64)?;
    let xc = k.sub(&x, &mu)?;
    let var = k.mulc(&k.reduce_last(ReduceOp::Sum, &k.mul(&xc, &xc)?)?, 1.0 / d as f64)?;
    let r = k.un(UnaryOp::Recip, &k.un(UnaryOp::Sqrt, &k.addc(&var, eps as f64)?)?)?;
    let mut out = k.mul(&xc, &r)?;
    if let Some(w) = w {
        out = k.mul(&out, &k.f32(w)?)?;
    }
    if let Some(b) = b {
        out = k.add(&out, &k.f32(b)?)?;
    }
    k.store(&out, y)?;
    k.store(&reshaped(&mu, &[n]), mean)?;
    k.store(&reshaped(&r, &[n]), rstd)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn bwd(
    k: &Prims,
    x: &View,
    w: Option<&View>,
    mean: &View,
    rstd: &View,
    dy: &View,
    dx: &View,
    dw: Option<&View>,
    db: Option<&View>,
) -> Result<()> {
    let (x, dy) = (rows(&k.f32(x)?), rows(&k.f32(dy)?));
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let (mu, r) = (reshaped(mean, &[n, 1]), reshaped(rstd, &[n, 1]));
    let xhat = k.mul(&k.sub(&x, &mu)?, &r)?;
    let g = match w {
        Some(w) => k.mul(&dy, &k.f32(w)?)?,
        None => dy.clone(),
    };
    let inv_d = 1.0 / d as f64;
    let mean_g = k.mulc(&k.reduce_last(ReduceOp::Sum, &g)?, inv_d)?;
    let mean_gx = k.mulc(&k.reduce_last(ReduceOp::Sum, &k.mul(&g, &xhat)?)?, inv_d)?;
    let inner = k.sub(&k.sub(&g, &mean_g)?, &k.mul(&xhat, &mean_gx)?)?;
    k.store(&k.mul(&inner, &r)?, dx)?;
    if let Some(dw) = dw {
        k.store(&k.sum_rows(&k.mul(&dy, &xhat)?)?, dw)?;
    }
    if let Some(db) = db {
        k.store(&k.sum_rows(&dy)?, db)?;
    }
    Ok(())
}
