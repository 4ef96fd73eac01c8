//! Mixture-of-experts combine, one pass each way.
//!
//! Forward, for y `[S, D]`, weights w `[S, 1]` and tokens tok `[S]`: out[t] = sum over the rows
//! s with tok[s] = t, in increasing s, of w[s] y[s]. The rows are first grouped by token (a
//! counting sort, stable), so each task owns one output row and the sum runs in the order of
//! the default decomposition's scatter-add: the result is the decomposition's, bit for bit, in
//! f32. Backward: dy[s] = w[s] dout[tok[s]] and dw[s] = <dout[tok[s]], y[s]> in one pass over
//! the rows, where the decomposition makes a gathered copy, two products and a row sum.

use super::{floats, par_rows, rows_cols, Scratch};
use crate::elem::{dot, finish_row, load, raw, row, row_mut, store};
use crate::prim::rows::{group_by_target, indices};
use anychip_port::{invalid, Handled, Result, View};

/// out = 0; out[tok[s]] += w[s] y[s] for s in order.
pub fn combine_fwd(y: &View, w: &View, tok: &View, out: &View) -> Result<Handled> {
    if !floats(&[y, w, out]) {
        return Ok(Handled::No);
    }
    let ((s, d), (n, d_out)) = (rows_cols(y), rows_cols(out));
    check(y, w, tok, d_out == d && out.shape().len() == 2)?;
    let (ids, weights) = (indices(tok, n)?, weights(w, s)?);
    let (yr, outr) = (raw(y)?, raw(out)?);
    if yr.id == outr.id {
        return Ok(Handled::No);
    }
    let (starts, order) = group_by_target(&ids, n);
    let (y0, o0) = (y.layout.offset, out.layout.offset);
    par_rows(n, d, |sc: &mut Scratch, t| {
        let [sy, so, ..] = &mut sc.0;
        // SAFETY: rows are in bounds (contiguous views of the checked shapes); row t of out
        // belongs to this task alone and aliases no input.
        unsafe {
            let o = row_mut(outr, o0 + t * d, d, so);
            o.fill(0.0);
            for &r in &order[starts[t]..starts[t + 1]] {
                let (wr, yv) = (weights[r], row(yr, y0 + r * d, d, sy));
                o.iter_mut().zip(yv).for_each(|(o, &v)| *o += wr * v);
            }
            finish_row(outr, o0 + t * d, o);
        }
    });
    Ok(Handled::Yes)
}

/// dy[s] = w[s] dout[tok[s]], dw[s] = <dout[tok[s]], y[s]>, each when present.
pub fn combine_bwd(
    y: &View,
    w: &View,
    tok: &View,
    dout: &View,
    dy: Option<&View>,
    dw: Option<&View>,
) -> Result<Handled> {
    let outs: Vec<&View> = dy.into_iter().chain(dw).collect();
    if !floats(&[y, w, dout]) || !floats(&outs) {
        return Ok(Handled::No);
    }
    let ((s, d), (n, d_out)) = (rows_cols(y), rows_cols(dout));
    let shapes_ok = d_out == d && dy.is_none_or(|v| v.shape() == y.shape()) && dw.is_none_or(|v| v.numel() == s);
    check(y, w, tok, shapes_ok)?;
    let (ids, weights) = (indices(tok, n)?, weights(w, s)?);
    let (yr, gr) = (raw(y)?, raw(dout)?);
    let (dyr, dwr) = (dy.map(raw).transpose()?, dw.map(raw).transpose()?);
    if [dyr, dwr].iter().flatten().any(|o| o.id == yr.id || o.id == gr.id) {
        return Ok(Handled::No);
    }
    let (y0, g0) = (y.layout.offset, dout.layout.offset);
    let (dy0, dw0) = (dy.map_or(0, |v| v.layout.offset), dw.map_or(0, |v| v.layout.offset));
    par_rows(s, d, |sc: &mut Scratch, r| {
        let [sg, sy, sd, _] = &mut sc.0;
        // SAFETY: rows are in bounds (contiguous views of the checked shapes, token ids range
        // checked); row r of dy and element r of dw belong to this task alone; no output
        // aliases an input.
        unsafe {
            let g = row(gr, g0 + ids[r] * d, d, sg);
            if let Some(dyr) = dyr {
                let o = row_mut(dyr, dy0 + r * d, d, sd);
                o.iter_mut().zip(g).for_each(|(o, &g)| *o = weights[r] * g);
                finish_row(dyr, dy0 + r * d, o);
            }
            if let Some(dwr) = dwr {
                store(dwr, dw0 + r, 1, &[dot(g, row(yr, y0 + r * d, d, sy))]);
            }
        }
    });
    Ok(Handled::Yes)
}

fn check(y: &View, w: &View, tok: &View, rest_ok: bool) -> Result<()> {
    let s = y.shape().first().copied().unwrap_or(0);
    if y.shape().len() != 2 || w.numel() != s || tok.numel() != s || !rest_ok {
        return invalid(format!(
            "moe_combine: y {:?}, w {:?} and tok {:?} must be [S, D], [S, 1] and [S], with out or dout [N, D] and dy, dw shaped as y, w",
            y.shape(),
            w.shape(),
            tok.shape()
        ));
    }
    Ok(())
}

/// The `s` routing weights, widened to f32.
fn weights(w: &View, s: usize) -> Result<Vec<f32>> {
    let mut host = vec![0f32; s];
    // SAFETY: w is contiguous with s elements (checked), in bounds by `raw`.
    unsafe { load(raw(w)?, w.layout.offset, 1, &mut host) };
    Ok(host)
}
