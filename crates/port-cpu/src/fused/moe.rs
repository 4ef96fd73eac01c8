//! Mixture-of-experts router and combine, one pass each way.
//!
//! Hand-written because no crate fuses either: a BLAS or the gemm crate gives the router's
//! product x w^T, but not the softmax over each row's E values that follows it (nor, backward,
//! the softmax gradient before the two products), and none scatters weighted rows by token.
//!
//! Router, for x `[N, D]` and w `[E, D]` (widened once to an f32 copy, 8 KiB on moe-tiny, that
//! stays in L1): per block of [`FWD_ROWS`] rows, z_e = <x, w_e> (E dots of length D), then
//! probs = softmax(z) per row with the row max shifted out, the exp running over the whole
//! block (a row of -inf gives zeros, as the softmax kernel does). Backward, per row with
//! p = probs and g = dprobs: dz_e = p_e (g_e - <g, p>), dx = sum_e dz_e w_e, and dw = sum over
//! rows of dz^T x, where each fixed chunk of [`CHUNK`] rows sums into its own `[E, D]` partial
//! and the partials are added in chunk order, so dw does not depend on the thread count. The
//! row loops are `math::router_probs` and `math::router_row_bwd`, compiled for each ISA level.
//! Each call streams x once; on the Xeon (model 207) it was measured on, a core took x at about
//! 7 GB/s either way, which FMA did not change: the pass is bound by memory, not arithmetic.
//!
//! Combine, forward, for y `[S, D]`, weights w `[S, 1]` and tokens tok `[S]`: out[t] = sum over
//! the rows s with tok[s] = t, in increasing s, of w[s] y[s]. The rows are first grouped by
//! token (a counting sort, stable), so each task owns one output row and the sum runs in the
//! order of the default decomposition's scatter-add: the result is the decomposition's, bit for
//! bit, in f32. Backward: dy[s] = w[s] dout[tok[s]] and dw[s] = <dout[tok[s]], y[s]> in one pass
//! over the rows, where the decomposition makes a gathered copy, two products and a row sum.

use super::{floats, par_rows, rows_cols, Scratch};
use crate::elem::{dot, finish_row, load, raw, row, row_mut, store, Raw, PAR_MIN};
use crate::math::{router_probs, router_row_bwd};
use crate::prim::rows::{group_by_target, indices};
use anychip_port::check::moe_router as router_shape;
use anychip_port::{invalid, Handled, Result, View};
use rayon::prelude::*;

/// Rows per partial sum of the router's dw.
const CHUNK: usize = 64;

/// Rows per step of the router's forward (their softmax runs as one block).
const FWD_ROWS: usize = 16;

/// probs = softmax(x w^T) per row.
pub fn router_fwd(x: &View, w: &View, probs: &View) -> Result<Handled> {
    if !floats(&[x, w, probs]) {
        return Ok(Handled::No);
    }
    let (n, d, e) = router_shape(x, w, &[probs], None, None)?;
    let (xr, pr) = (raw(x)?, raw(probs)?);
    if pr.id == xr.id || pr.id == raw(w)?.id || d == 0 || e == 0 {
        return Ok(Handled::No);
    }
    let wv = weights(w, e * d)?;
    let (x0, p0) = (x.layout.offset, probs.layout.offset);
    par_rows(n.div_ceil(FWD_ROWS), FWD_ROWS * d * e, |sc: &mut Scratch, b| {
        let [sx, sp, ..] = &mut sc.0;
        let (r0, rows) = (b * FWD_ROWS, FWD_ROWS.min(n - b * FWD_ROWS));
        // SAFETY: rows are in bounds (contiguous views of the checked shapes); rows r0.. of
        // probs belong to this task alone and alias no input.
        unsafe {
            let xs = row(xr, x0 + r0 * d, rows * d, sx);
            let z = row_mut(pr, p0 + r0 * e, rows * e, sp);
            router_probs(xs, &wv, d, z);
            finish_row(pr, p0 + r0 * e, z);
        }
    });
    Ok(Handled::Yes)
}

/// dz = probs (dprobs - <dprobs, probs>) per row; dx = dz w and dw = dz^T x, each when present.
pub fn router_bwd(
    x: &View,
    w: &View,
    probs: &View,
    dprobs: &View,
    dx: Option<&View>,
    dw: Option<&View>,
) -> Result<Handled> {
    let outs: Vec<&View> = dx.into_iter().chain(dw).collect();
    if !floats(&[x, w, probs, dprobs]) || !floats(&outs) {
        return Ok(Handled::No);
    }
    let (n, d, e) = router_shape(x, w, &[probs, dprobs], dx, dw)?;
    let ins = [raw(x)?, raw(w)?, raw(probs)?, raw(dprobs)?];
    let (dxr, dwr) = (dx.map(raw).transpose()?, dw.map(raw).transpose()?);
    if [dxr, dwr].iter().flatten().any(|o| ins.iter().any(|i| i.id == o.id)) || d == 0 || e == 0 {
        return Ok(Handled::No);
    }
    let rows = RouterRows {
        x: (ins[0], x.layout.offset),
        probs: (ins[2], probs.layout.offset),
        dprobs: (ins[3], dprobs.layout.offset),
        dx: dxr.map(|r| (r, dx.map_or(0, |v| v.layout.offset))),
        w: weights(w, e * d)?,
        d,
        e,
        want_dw: dw.is_some(),
    };
    let chunks = n.div_ceil(CHUNK);
    let parts: Vec<Vec<f32>> = if n * d * e < PAR_MIN {
        let mut sc = Scratch::default();
        (0..chunks).map(|c| rows.chunk(&mut sc, c * CHUNK..((c + 1) * CHUNK).min(n))).collect()
    } else {
        let chunk = |sc: &mut Scratch, c: usize| rows.chunk(sc, c * CHUNK..((c + 1) * CHUNK).min(n));
        (0..chunks).into_par_iter().map_init(Scratch::default, chunk).collect()
    };
    if let (Some(dwr), Some(dw)) = (dwr, dw) {
        let mut total = vec![0f32; e * d];
        parts.iter().for_each(|p| total.iter_mut().zip(p).for_each(|(t, v)| *t += v));
        // SAFETY: dw is contiguous [E, D] (checked), in bounds by `raw`, written by this thread only.
        unsafe { store(dwr, dw.layout.offset, 1, &total) };
    }
    Ok(Handled::Yes)
}

/// What the router backward reads and writes per row: (buffer, element offset) of each view.
struct RouterRows {
    x: (Raw, usize),
    probs: (Raw, usize),
    dprobs: (Raw, usize),
    dx: Option<(Raw, usize)>,
    /// w `[E, D]` as f32.
    w: Vec<f32>,
    d: usize,
    e: usize,
    want_dw: bool,
}

impl RouterRows {
    /// dx for `rows`, and their part of dw (`[E, D]`, empty when dw is not wanted).
    fn chunk(&self, sc: &mut Scratch, rows: std::ops::Range<usize>) -> Vec<f32> {
        let (d, e) = (self.d, self.e);
        let mut part = vec![0f32; if self.want_dw { e * d } else { 0 }];
        let mut dz = vec![0f32; e];
        let [sx, sp, sg, so] = &mut sc.0;
        for r in rows {
            // SAFETY: rows are in bounds (contiguous views of the checked shapes); row r of dx
            // belongs to this task alone and no output aliases an input.
            unsafe {
                let (p, g) =
                    (row(self.probs.0, self.probs.1 + r * e, e, sp), row(self.dprobs.0, self.dprobs.1 + r * e, e, sg));
                let pg = dot(g, p);
                dz.iter_mut().zip(p.iter().zip(g)).for_each(|(z, (&p, &g))| *z = p * (g - pg));
                let xs = if self.want_dw { row(self.x.0, self.x.1 + r * d, d, sx) } else { &[] };
                let dxrow = match self.dx {
                    Some((dxr, dx0)) => row_mut(dxr, dx0 + r * d, d, so),
                    None => &mut [],
                };
                router_row_bwd(xs, &self.w, &dz, dxrow, &mut part);
                if let Some((dxr, dx0)) = self.dx {
                    finish_row(dxr, dx0 + r * d, dxrow);
                }
            }
        }
        part
    }
}

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

/// The `s` elements of w (the combine's routing weights, the router's matrix), widened to f32.
fn weights(w: &View, s: usize) -> Result<Vec<f32>> {
    let mut host = vec![0f32; s];
    // SAFETY: w is contiguous with s elements (checked), in bounds by `raw`.
    unsafe { load(raw(w)?, w.layout.offset, 1, &mut host) };
    Ok(host)
}
