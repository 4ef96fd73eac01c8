//! layer_norm and rms_norm with saved statistics, forward and backward.
//!
//! LayerNorm, per row of D features (biased variance):
//!   mean = sum x / D, rstd = 1 / sqrt(sum (x - mean)^2 / D + eps), xhat = (x - mean) rstd,
//!   y = xhat w + b.
//!   Backward with g = dy w: dx = rstd (g - mean(g) - xhat mean(g xhat));
//!   dw = sum_rows dy xhat, db = sum_rows dy.
//! RMSNorm: rstd = 1 / sqrt(sum x^2 / D + eps), xhat = x rstd, y = xhat w;
//!   dx = rstd (g - xhat mean(g xhat)), dw = sum_rows dy xhat.
//! The weight-gradient sums run over fixed chunks of rows whose partials are added in chunk
//! order, so results do not depend on the thread count.

use super::softmax::input_row;
use super::{floats, is_f32, rows_cols, Scratch};
use crate::elem::{finish_row, raw, row, row_mut, store, PAR_MIN};
use anychip_port::{invalid, Handled, Result, View};
use rayon::prelude::*;

/// Rows per partial-sum chunk of the weight gradients.
const CHUNK: usize = 32;

/// Load an optional `[D]` vector as f32.
fn vector(v: Option<&View>, d: usize) -> Result<Option<Vec<f32>>> {
    let Some(v) = v else { return Ok(None) };
    if v.numel() != d {
        return invalid(format!("norm weight/bias has {} elements, expected {d} (the feature size)", v.numel()));
    }
    let mut out = vec![0f32; d];
    // SAFETY: in bounds (checked by `raw`); read only.
    unsafe { crate::elem::load(raw(v)?, v.layout.offset, 1, &mut out) };
    Ok(Some(out))
}

fn check(x: &View, others: &[&View], stats: &[&View]) -> Result<(usize, usize)> {
    let (rows, d) = rows_cols(x);
    if others.iter().any(|v| v.shape() != x.shape()) {
        return invalid(format!("norm operands must all have x's shape {:?}", x.shape()));
    }
    if stats.iter().any(|v| v.numel() != rows) {
        return invalid(format!("norm statistics must have one value per row ({rows})"));
    }
    Ok((rows, d))
}

/// Forward of LayerNorm (`centered`) or RMSNorm, writing y and the statistics.
#[allow(clippy::too_many_arguments)]
fn forward(
    x: &View,
    weight: Option<&View>,
    bias: Option<&View>,
    eps: f32,
    y: &View,
    mean: Option<&View>,
    rstd: &View,
) -> Result<Handled> {
    if !floats(&[x, y]) || !is_f32(rstd) || mean.is_some_and(|m| !is_f32(m)) {
        return Ok(Handled::No);
    }
    let stats: Vec<&View> = [Some(rstd), mean].into_iter().flatten().collect();
    let (rows, d) = check(x, &[y], &stats)?;
    let w = vector(weight, d)?.unwrap_or_else(|| vec![1.0; d]);
    let b = vector(bias, d)?.unwrap_or_else(|| vec![0.0; d]);
    let (xr, yr, rr) = (raw(x)?, raw(y)?, raw(rstd)?);
    let mr = mean.map(raw).transpose()?;
    let alias = xr.id == yr.id;
    let (x0, y0) = (x.layout.offset, y.layout.offset);
    super::par_rows(rows, d, |s, r| {
        let [a, c, ..] = &mut s.0;
        // SAFETY: in bounds; row r of y and the stats belong to this task; aliased x is copied.
        unsafe {
            let xs = if alias { super::softmax::copy_row(xr, x0 + r * d, d, a) } else { row(xr, x0 + r * d, d, a) };
            let ys = row_mut(yr, y0 + r * d, d, c);
            let (mu, rs) = crate::math::norm_row_fwd(xs, &w, &b, mr.is_some(), eps, ys);
            finish_row(yr, y0 + r * d, ys);
            store(rr, rstd.layout.offset + r, 1, &[rs]);
            if let (Some(mr), Some(m)) = (mr, mean) {
                store(mr, m.layout.offset + r, 1, &[mu]);
            }
        }
    });
    Ok(Handled::Yes)
}

/// y = (x - mean) rstd w + b with saved mean and rstd.
pub fn layer_norm_fwd(
    x: &View,
    weight: Option<&View>,
    bias: Option<&View>,
    eps: f32,
    y: &View,
    mean: &View,
    rstd: &View,
) -> Result<Handled> {
    forward(x, weight, bias, eps, y, Some(mean), rstd)
}

/// y = x rstd w with saved rstd.
pub fn rms_norm_fwd(x: &View, weight: Option<&View>, eps: f32, y: &View, rstd: &View) -> Result<Handled> {
    forward(x, weight, None, eps, y, None, rstd)
}

/// Backward of either norm; see the module docs for the math.
#[allow(clippy::too_many_arguments)]
fn backward(
    x: &View,
    weight: Option<&View>,
    mean: Option<&View>,
    rstd: &View,
    dy: &View,
    dx: &View,
    dweight: Option<&View>,
    dbias: Option<&View>,
) -> Result<Handled> {
    if !floats(&[x, dy, dx]) || !is_f32(rstd) || mean.is_some_and(|m| !is_f32(m)) {
        return Ok(Handled::No);
    }
    let stats: Vec<&View> = [Some(rstd), mean].into_iter().flatten().collect();
    let (rows, d) = check(x, &[dy, dx], &stats)?;
    for v in [dweight, dbias].into_iter().flatten() {
        if v.numel() != d || !v.dtype.is_float() {
            return invalid(format!("norm weight/bias gradient must be a float [{d}] tensor"));
        }
    }
    let w = vector(weight, d)?.unwrap_or_else(|| vec![1.0; d]);
    let (xr, gr, dr, rr) = (raw(x)?, raw(dy)?, raw(dx)?, raw(rstd)?);
    let mr = mean.map(raw).transpose()?;
    let alias = dr.id == gr.id || dr.id == xr.id;
    let (x0, g0, d0) = (x.layout.offset, dy.layout.offset, dx.layout.offset);
    let want_dw = dweight.is_some() || dbias.is_some();
    let chunk = |s: &mut Scratch, c: usize| -> Vec<f32> {
        let mut part = if want_dw { vec![0f32; 2 * d] } else { Vec::new() };
        let [a, b, e, _] = &mut s.0;
        for r in c * CHUNK..((c + 1) * CHUNK).min(rows) {
            // SAFETY: in bounds; row r of dx belongs to this task; aliased inputs are copied.
            unsafe {
                let xs = input_row(alias, xr, x0 + r * d, d, a);
                let gs = input_row(alias, gr, g0 + r * d, d, b);
                let mut st = [0f32];
                crate::elem::load(rr, rstd.layout.offset + r, 1, &mut st);
                let rs = st[0];
                let mu = match (mr, mean) {
                    (Some(mr), Some(m)) => {
                        crate::elem::load(mr, m.layout.offset + r, 1, &mut st);
                        st[0]
                    }
                    _ => 0.0,
                };
                let xs_out = row_mut(dr, d0 + r * d, d, e);
                let (pw, pb) = part.split_at_mut(if want_dw { d } else { 0 });
                crate::math::norm_row_bwd(xs, gs, &w, mu, rs, mr.is_some(), xs_out, pw, pb);
                finish_row(dr, d0 + r * d, xs_out);
            }
        }
        part
    };
    let chunks = rows.div_ceil(CHUNK);
    let parts: Vec<Vec<f32>> = if rows * d < PAR_MIN {
        let mut s = Scratch::default();
        (0..chunks).map(|c| chunk(&mut s, c)).collect()
    } else {
        (0..chunks).into_par_iter().map_init(Scratch::default, |s, c| chunk(s, c)).collect()
    };
    if want_dw {
        let mut total = vec![0f32; 2 * d];
        for p in &parts {
            total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
        }
        for (v, part) in [(dweight, &total[..d]), (dbias, &total[d..])] {
            if let Some(v) = v {
                // SAFETY: in bounds; written by this thread only.
                unsafe { store(raw(v)?, v.layout.offset, 1, part) };
            }
        }
    }
    Ok(Handled::Yes)
}

/// Gradients of LayerNormFwd.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd(
    x: &View,
    weight: Option<&View>,
    mean: &View,
    rstd: &View,
    dy: &View,
    dx: &View,
    dweight: Option<&View>,
    dbias: Option<&View>,
) -> Result<Handled> {
    backward(x, weight, Some(mean), rstd, dy, dx, dweight, dbias)
}

/// Gradients of RmsNormFwd.
pub fn rms_norm_bwd(
    x: &View,
    weight: Option<&View>,
    rstd: &View,
    dy: &View,
    dx: &View,
    dweight: Option<&View>,
) -> Result<Handled> {
    backward(x, weight, None, rstd, dy, dx, dweight, None)
}
