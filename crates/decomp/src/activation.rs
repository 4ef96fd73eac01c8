//! GELU (tanh and erf variants) and SiLU. Forward and backward of each variant share one
//! definition of the inner terms, so they cannot drift apart.
//!
//! gelu_tanh(x) = 0.5 x (1 + t), t = tanh(u), u = c (x + a x^3), c = sqrt(2/pi), a = 0.044715
//!   d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)
//! gelu_erf(x) = 0.5 x (1 + erf(x / sqrt 2))
//!   d/dx = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
//! silu(x) = x s, s = 1 / (1 + exp(-x));  d/dx = s (1 + x (1 - s))
//! swiglu([g | u]) = silu(g) u over the two halves of the last axis;
//!   dg = dy u silu'(g), du = dy silu(g)

use crate::prims::Prims;
use anychip_port::{GeluKind, Result, UnaryOp, View};

const A: f64 = 0.044715;
const C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)

/// (0.5 (1 + t), inner) where t = tanh(u) or erf(x/sqrt 2): the shared part of gelu and its derivative.
fn half_one_plus(k: &Prims, kind: GeluKind, x: &View) -> Result<(View, View)> {
    let t = match kind {
        GeluKind::Tanh => {
            let x3 = k.mul(&k.mul(x, x)?, x)?;
            let u = k.mulc(&k.add(x, &k.mulc(&x3, A)?)?, C)?;
            k.un(UnaryOp::Tanh, &u)?
        }
        GeluKind::Erf => k.un(UnaryOp::Erf, &k.mulc(x, std::f64::consts::FRAC_1_SQRT_2)?)?,
    };
    Ok((k.mulc(&k.addc(&t, 1.0)?, 0.5)?, t))
}

pub(crate) fn gelu_fwd(k: &Prims, kind: GeluKind, x: &View, y: &View) -> Result<()> {
    let x = k.f32(x)?;
    let (h, _) = half_one_plus(k, kind, &x)?;
    k.store(&k.mul(&x, &h)?, y)
}

pub(crate) fn gelu_bwd(k: &Prims, kind: GeluKind, x: &View, dy: &View, dx: &View) -> Result<()> {
    let (x, dy) = (k.f32(x)?, k.f32(dy)?);
    let (h, t) = half_one_plus(k, kind, &x)?;
    let x2 = k.mul(&x, &x)?;
    let second = match kind {
        GeluKind::Tanh => {
            // 0.5 x (1 - t^2) c (1 + 3 a x^2)
            let one_minus_t2 = k.addc(&k.mulc(&k.mul(&t, &t)?, -1.0)?, 1.0)?;
            let du = k.mulc(&k.addc(&k.mulc(&x2, 3.0 * A)?, 1.0)?, 0.5 * C)?;
            k.mul(&k.mul(&x, &one_minus_t2)?, &du)?
        }
        GeluKind::Erf => {
            // x exp(-x^2/2) / sqrt(2 pi)
            let g = k.un(UnaryOp::Exp, &k.mulc(&x2, -0.5)?)?;
            k.mulc(&k.mul(&x, &g)?, 1.0 / (2.0 * std::f64::consts::PI).sqrt())?
        }
    };
    k.store(&k.mul(&dy, &k.add(&h, &second)?)?, dx)
}

fn sigmoid(k: &Prims, x: &View) -> Result<View> {
    let e = k.un(UnaryOp::Exp, &k.mulc(x, -1.0)?)?;
    k.un(UnaryOp::Recip, &k.addc(&e, 1.0)?)
}

pub(crate) fn silu_fwd(k: &Prims, x: &View, y: &View) -> Result<()> {
    let x = k.f32(x)?;
    k.store(&k.mul(&x, &sigmoid(k, &x)?)?, y)
}

pub(crate) fn silu_bwd(k: &Prims, x: &View, dy: &View, dx: &View) -> Result<()> {
    let (x, dy) = (k.f32(x)?, k.f32(dy)?);
    let s = sigmoid(k, &x)?;
    let one_minus_s = k.addc(&k.mulc(&s, -1.0)?, 1.0)?;
    let d = k.mul(&s, &k.addc(&k.mul(&x, &one_minus_s)?, 1.0)?)?;
    k.store(&k.mul(&dy, &d)?, dx)
}

/// The gate and up halves of the last axis of a `[..., 2F]` view (layout changes only).
fn halves(v: &View) -> (View, View) {
    let (ax, f) = (v.shape().len() - 1, v.shape().last().copied().unwrap_or(0) / 2);
    (v.narrow(ax, 0, f), v.narrow(ax, f, f))
}

pub(crate) fn swiglu_fwd(k: &Prims, x: &View, y: &View) -> Result<()> {
    let (g, u) = halves(x);
    let (g, u) = (k.f32(&g)?, k.f32(&u)?);
    k.store(&k.mul(&k.mul(&g, &sigmoid(k, &g)?)?, &u)?, y)
}

pub(crate) fn swiglu_bwd(k: &Prims, x: &View, dy: &View, dx: &View) -> Result<()> {
    let ((g, u), (dg, du)) = (halves(x), halves(dx));
    let (g, u, dy) = (k.f32(&g)?, k.f32(&u)?, k.f32(dy)?);
    let s = sigmoid(k, &g)?;
    let one_minus_s = k.addc(&k.mulc(&s, -1.0)?, 1.0)?;
    let d_silu = k.mul(&s, &k.addc(&k.mul(&g, &one_minus_s)?, 1.0)?)?;
    k.store(&k.mul(&k.mul(&dy, &u)?, &d_silu)?, &dg)?;
    k.store(&k.mul(&dy, &k.mul(&g, &s)?)?, &du)
}
