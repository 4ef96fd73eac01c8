//! softmax and log_softmax over the last axis, one row per task step.
//!
//! Forward, per row x: m = max x; e_i = exp(x_i - m); y_i = e_i / sum e (softmax) or
//! y_i = x_i - (m + ln sum e) (log_softmax). A row of all -inf has m = -inf: softmax gives 0
//! there and log_softmax -inf, instead of the NaN that -inf - -inf would produce.
//! Backward: softmax dx = y (dy - <dy, y>); log_softmax dx = dy - exp(y) sum dy.

use super::{floats, par_rows, rows_cols};
use crate::elem::{dot, finish_row, max, raw, row, row_mut, sum};
use crate::math::exp;
use anychip_port::{invalid, Handled, Result, View};

fn same(vs: &[&View]) -> Result<()> {
    if vs.iter().any(|v| v.shape() != vs[0].shape()) {
        return invalid(format!(
            "softmax operands differ in shape: {:?}",
            vs.iter().map(|v| v.shape()).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// y = softmax(x) over the last axis.
pub fn softmax_fwd(x: &View, y: &View) -> Result<Handled> {
    forward(x, y, false)
}

/// y = log_softmax(x) over the last axis.
pub fn log_softmax_fwd(x: &View, y: &View) -> Result<Handled> {
    forward(x, y, true)
}

fn forward(x: &View, y: &View, log: bool) -> Result<Handled> {
    if !floats(&[x, y]) {
        return Ok(Handled::No);
    }
    same(&[x, y])?;
    let (xr, yr) = (raw(x)?, raw(y)?);
    let (rows, d) = rows_cols(x);
    let (x0, y0) = (x.layout.offset, y.layout.offset);
    let alias = xr.id == yr.id;
    par_rows(rows, d, |s, r| {
        let [a, b, ..] = &mut s.0;
        // SAFETY: in bounds; row r of y belongs to this task; an aliased x is copied first.
        unsafe {
            let xs = if alias { copy_row(xr, x0 + r * d, d, a) } else { row(xr, x0 + r * d, d, a) };
            let ys = row_mut(yr, y0 + r * d, d, b);
            let m = max(xs);
            if m == f32::NEG_INFINITY {
                ys.fill(if log { f32::NEG_INFINITY } else { 0.0 });
            } else {
                let s = crate::math::exp_shift_sum(xs, m, ys);
                if log {
                    let lse = m + s.ln();
                    for (o, &v) in ys.iter_mut().zip(xs) {
                        *o = v - lse;
                    }
                } else {
                    let inv = 1.0 / s;
                    ys.iter_mut().for_each(|o| *o *= inv);
                }
            }
            finish_row(yr, y0 + r * d, ys);
        }
    });
    Ok(Handled::Yes)
}

/// dx = y (dy - <dy, y>) per row.
pub fn softmax_bwd(y: &View, dy: &View, dx: &View) -> Result<Handled> {
    backward(y, dy, dx, false)
}

/// dx = dy - exp(y) sum(dy) per row.
pub fn log_softmax_bwd(y: &View, dy: &View, dx: &View) -> Result<Handled> {
    backward(y, dy, dx, true)
}

fn backward(y: &View, dy: &View, dx: &View, log: bool) -> Result<Handled> {
    if !floats(&[y, dy, dx]) {
        return Ok(Handled::No);
    }
    same(&[y, dy, dx])?;
    let (yr, gr, xr) = (raw(y)?, raw(dy)?, raw(dx)?);
    let (rows, d) = rows_cols(y);
    let (y0, g0, x0) = (y.layout.offset, dy.layout.offset, dx.layout.offset);
    // dx may alias dy (in-place gradient); copy the inputs first when it does.
    let alias = gr.id == xr.id || yr.id == xr.id;
    par_rows(rows, d, |s, r| {
        let [a, b, c, _] = &mut s.0;
        // SAFETY: in bounds; row r of dx belongs to this task; aliased inputs are copied.
        unsafe {
            let ys = if alias { copy_row(yr, y0 + r * d, d, a) } else { row(yr, y0 + r * d, d, a) };
            let gs = if alias { copy_row(gr, g0 + r * d, d, b) } else { row(gr, g0 + r * d, d, b) };
            let xs = row_mut(xr, x0 + r * d, d, c);
            if log {
                let sg = sum(gs);
                for ((o, &g), &yv) in xs.iter_mut().zip(gs).zip(ys) {
                    *o = g - exp(yv) * sg;
                }
            } else {
                let dotv = dot(gs, ys);
                for ((o, &g), &yv) in xs.iter_mut().zip(gs).zip(ys) {
                    *o = yv * (g - dotv);
                }
            }
            finish_row(xr, x0 + r * d, xs);
        }
    });
    Ok(Handled::Yes)
}

/// Always copy (used when the output aliases this input).
pub(crate) unsafe fn copy_row(r: crate::elem::Raw, at: usize, len: usize, scratch: &mut Vec<f32>) -> &[f32] {
    scratch.resize(len, 0.0);
    crate::elem::load(r, at, 1, scratch);
    scratch
}

/// Row `[at, at + len)` as f32, copied when `alias` says the output shares its memory.
pub(crate) unsafe fn input_row(
    alias: bool,
    r: crate::elem::Raw,
    at: usize,
    len: usize,
    scratch: &mut Vec<f32>,
) -> &[f32] {
    if alias {
        copy_row(r, at, len, scratch)
    } else {
        row(r, at, len, scratch)
    }
}
