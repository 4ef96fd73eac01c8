//! gelu (tanh and erf), silu and dropout: elementwise, through the strided block map.
//!
//! GELU tanh: u = k (x + c x^3), k = sqrt(2/pi), c = 0.044715, t = tanh u,
//!   y = x (1 + t) / 2, y' = (1 + t) / 2 + x (1 - t^2) k (1 + 3 c x^2) / 2.
//! GELU erf: y = x (1 + erf(x / sqrt 2)) / 2, y' = (1 + erf(x / sqrt 2)) / 2 + x phi(x),
//!   phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
//! SiLU: s = sigmoid x, y = x s, y' = s (1 + x (1 - s)).
//! SwiGLU over x = [g | u]: y = silu(g) u; dg = dy u silu'(g), du = dy silu(g). One pass each
//! way (the backward row by row, one exp per element), where SiLU and products took two and four.
//! Dropout: keep element i when uniform(seed, offset + i) >= p; mask = kept / (1 - p).

use super::floats;
use crate::elem::{finish_row, map, raw, row, row_mut, BLOCK, PAR_MIN};
use crate::math::exp;
use crate::prim::random::uniform_into;
use anychip_port::{invalid, GeluKind, Handled, Result, View};
use rayon::prelude::*;

const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// y = gelu(x).
pub fn gelu_fwd(kind: GeluKind, x: &View, y: &View) -> Result<Handled> {
    if !floats(&[x, y]) {
        return Ok(Handled::No);
    }
    match kind {
        GeluKind::Tanh => map([x], y, |[x], y| crate::math::gelu_tanh(x, y))?,
        GeluKind::Erf => map([x], y, |[x], y| {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = 0.5 * v * (1.0 + libm::erff(v * INV_SQRT2));
            }
        })?,
    }
    Ok(Handled::Yes)
}

/// dx = dy gelu'(x).
pub fn gelu_bwd(kind: GeluKind, x: &View, dy: &View, dx: &View) -> Result<Handled> {
    if !floats(&[x, dy, dx]) {
        return Ok(Handled::No);
    }
    match kind {
        GeluKind::Tanh => map([x, dy], dx, |[x, g], o| crate::math::gelu_tanh_grad(x, g, o))?,
        GeluKind::Erf => map([x, dy], dx, |[x, g], o| {
            for i in 0..o.len() {
                let v = x[i];
                let cdf = 0.5 * (1.0 + libm::erff(v * INV_SQRT2));
                o[i] = g[i] * (cdf + v * INV_SQRT_2PI * exp(-0.5 * v * v));
            }
        })?,
    }
    Ok(Handled::Yes)
}

/// y = x sigmoid(x).
pub fn silu_fwd(x: &View, y: &View) -> Result<Handled> {
    if !floats(&[x, y]) {
        return Ok(Handled::No);
    }
    map([x], y, |[x], y| crate::math::silu(x, y))?;
    Ok(Handled::Yes)
}

/// The gate and up halves of the last axis of a contiguous `[..., 2F]` view (no copy).
fn halves(v: &View) -> (View, View) {
    let f = v.shape().last().copied().unwrap_or(0) / 2;
    let last = v.layout.rank() - 1;
    (v.narrow(last, 0, f), v.narrow(last, f, f))
}

/// y = silu(g) u for x = [g | u], in one pass.
pub fn swiglu_fwd(x: &View, y: &View) -> Result<Handled> {
    if !floats(&[x, y]) {
        return Ok(Handled::No);
    }
    let (g, u) = halves(x);
    map([&g, &u], y, |[g, u], o| {
        crate::math::silu(g, o);
        o.iter_mut().zip(u).for_each(|(o, &u)| *o *= u);
    })?;
    Ok(Handled::Yes)
}

/// du = dy silu(g) and dg = dy u silu'(g) for x = [g | u], into the halves of dx: one pass over
/// the rows, one exp per element (`math::swiglu_grad`).
pub fn swiglu_bwd(x: &View, dy: &View, dx: &View) -> Result<Handled> {
    if !floats(&[x, dy, dx]) {
        return Ok(Handled::No);
    }
    let (rows, f) = super::rows_cols(dy);
    let (xr, dyr, dxr) = (raw(x)?, raw(dy)?, raw(dx)?);
    if xr.id == dxr.id || dyr.id == dxr.id {
        return Ok(Handled::No); // in place: the decomposition copies first
    }
    let (x0, d0, o0) = (x.layout.offset, dy.layout.offset, dx.layout.offset);
    let per = (PAR_MIN / (3 * f).max(1)).max(1);
    (0..rows).into_par_iter().with_min_len(per).for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(sx, sd, so), i| {
            // SAFETY: rows are in bounds (contiguous views of the checked shapes); row i of dx
            // belongs to this task alone and aliases neither input.
            unsafe {
                let xs = row(xr, x0 + i * 2 * f, 2 * f, sx);
                let ds = row(dyr, d0 + i * f, f, sd);
                let os = row_mut(dxr, o0 + i * 2 * f, 2 * f, so);
                let ((g, u), (dg, du)) = (xs.split_at(f), os.split_at_mut(f));
                crate::math::swiglu_grad(g, u, ds, dg, du);
                finish_row(dxr, o0 + i * 2 * f, os);
            }
        },
    );
    Ok(Handled::Yes)
}

/// dx = dy s (1 + x (1 - s)).
pub fn silu_bwd(x: &View, dy: &View, dx: &View) -> Result<Handled> {
    if !floats(&[x, dy, dx]) {
        return Ok(Handled::No);
    }
    map([x, dy], dx, |[x, g], o| crate::math::silu_grad(x, g, o))?;
    Ok(Handled::Yes)
}

/// Inverted dropout with a Philox mask (bit-identical to every port's `random` stream).
pub fn dropout_fwd(x: &View, p: f32, seed: u64, offset: u64, y: &View, mask: &View) -> Result<Handled> {
    if !floats(&[x, y, mask]) {
        return Ok(Handled::No);
    }
    if y.shape() != x.shape() || mask.shape() != x.shape() {
        return invalid("dropout: y and mask must have x's shape");
    }
    if !(0.0..=1.0).contains(&p) {
        return invalid(format!("dropout probability {p} is outside [0, 1]"));
    }
    let (xr, yr, mr) = (raw(x)?, raw(y)?, raw(mask)?);
    let n = x.numel();
    let keep = 1.0 / (1.0 - p);
    let (x0, y0, m0) = (x.layout.offset, y.layout.offset, mask.layout.offset);
    let alias = xr.id == yr.id || xr.id == mr.id;
    let block = |b: usize| {
        let (at, len) = (b * BLOCK, BLOCK.min(n - b * BLOCK));
        let (mut u, mut xs, mut sy, mut sm) = ([0f32; BLOCK], Vec::new(), Vec::new(), Vec::new());
        let u = &mut u[..len];
        uniform_into(seed, offset + at as u64, u);
        // SAFETY: in bounds; block b of y and mask belongs to this task; aliased x is copied.
        unsafe {
            let xv = if alias {
                super::softmax::copy_row(xr, x0 + at, len, &mut xs)
            } else {
                row(xr, x0 + at, len, &mut xs)
            };
            let ms = row_mut(mr, m0 + at, len, &mut sm);
            for (m, &r) in ms.iter_mut().zip(u.iter()) {
                *m = if r >= p { keep } else { 0.0 };
            }
            // The mask is stored (and rounded, for bf16) before y uses it, so y = x * mask holds
            // exactly for whatever dtype the mask has.
            finish_row(mr, m0 + at, ms);
            crate::elem::load(mr, m0 + at, 1, u);
            let ys = row_mut(yr, y0 + at, len, &mut sy);
            for i in 0..len {
                ys[i] = xv[i] * u[i];
            }
            finish_row(yr, y0 + at, ys);
        }
    };
    let blocks = n.div_ceil(BLOCK);
    if n < PAR_MIN {
        (0..blocks).for_each(block);
    } else {
        (0..blocks).into_par_iter().for_each(block);
    }
    Ok(Handled::Yes)
}

/// dx = dy mask.
pub fn dropout_bwd(dy: &View, mask: &View, dx: &View) -> Result<Handled> {
    if !floats(&[dy, mask, dx]) {
        return Ok(Handled::No);
    }
    map([dy, mask], dx, |[g, m], o| {
        for i in 0..o.len() {
            o[i] = g[i] * m[i];
        }
    })?;
    Ok(Handled::Yes)
}
