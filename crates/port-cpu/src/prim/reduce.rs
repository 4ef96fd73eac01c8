//! reduce: sum or max over the axes where `out` has extent 1.
//!
//! Fast paths: trailing axes of a contiguous tensor (rows, e.g. softmax statistics) and leading
//! axes (columns, e.g. a bias gradient summed over the batch). Anything else takes the generic
//! strided walk, one output element per task, accumulating in f64.

use super::dense_out;
use crate::elem::{self, for_chunks, raw, store, want_float, Raw, PAR_MIN};
use anychip_port::{invalid, ReduceOp, Result, View};
use rayon::prelude::*;

/// Reduce `x` over every axis where `out` has extent 1 and `x` does not.
pub fn reduce(op: ReduceOp, x: &View, out: &View) -> Result<()> {
    want_float(x, "reduce")?;
    want_float(out, "reduce")?;
    dense_out(out)?;
    let (xs, os) = (x.shape(), out.shape());
    if xs.len() != os.len() || xs.iter().zip(os).any(|(&a, &b)| b != a && b != 1) {
        return invalid(format!("reduce from {xs:?} to {os:?}: out must have x's rank with extent 1 on reduced axes"));
    }
    let (xr, o) = (raw(x)?, raw(out)?);
    let reduced: Vec<bool> = xs.iter().zip(os).map(|(&a, &b)| b == 1 && a != 1).collect();
    let red: usize = xs.iter().zip(&reduced).filter(|p| *p.1).map(|p| *p.0).product();
    let kept = out.numel();
    let significant = |d: usize| xs[d] != 1;
    // Which axes are reduced, ignoring size-1 axes (they neither keep nor reduce anything).
    let red_axes: Vec<usize> = (0..xs.len()).filter(|&d| significant(d) && reduced[d]).collect();
    let kept_axes: Vec<usize> = (0..xs.len()).filter(|&d| significant(d) && !reduced[d]).collect();
    let contiguous = x.layout.is_contiguous();
    let x0 = x.layout.offset;
    if contiguous && kept_axes.iter().all(|&k| red_axes.iter().all(|&r| k < r)) {
        rows(op, xr, x0, kept, red, o, out);
    } else if contiguous && red_axes.iter().all(|&r| kept_axes.iter().all(|&k| r < k)) {
        columns(op, xr, x0, red, kept, o, out);
    } else {
        generic(op, x, xr, &reduced, red, o, out);
    }
    Ok(())
}

/// x is [rows, n] contiguous: one output per row.
fn rows(op: ReduceOp, xr: Raw, x0: usize, nrows: usize, n: usize, o: Raw, out: &View) {
    let one = |r: usize| {
        let mut acc = match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
        };
        // SAFETY: in bounds (checked by `raw`); x is only read.
        unsafe {
            for_chunks(xr, x0 + r * n, n, |c| match op {
                ReduceOp::Sum => acc += elem::sum(c),
                ReduceOp::Max => acc = super::elementwise::max_nan(acc, elem::max(c)),
            })
        };
        // SAFETY: one task per output element.
        unsafe { store(o, out.layout.index_of(r), 1, &[acc]) };
    };
    if nrows * n < PAR_MIN {
        (0..nrows).for_each(one);
    } else {
        (0..nrows).into_par_iter().with_min_len((PAR_MIN / n.max(1)).max(1)).for_each(one);
    }
}

/// Columns handled per task in the leading-axis reduction: a 1 KiB accumulator row.
const COLS: usize = 256;
/// Rows handled per task there: a bias gradient over 2048 rows of 256 columns is then 8 tasks
/// instead of one. Fixed (not derived from the thread count) so the summation order, and with
/// it every bit of the result, is the same on any number of threads.
const ROWS: usize = 256;

/// x is [n, cols] contiguous: one output per column, accumulated row by row within blocks of
/// [`ROWS`] rows, whose partial results are then combined in block order.
fn columns(op: ReduceOp, xr: Raw, x0: usize, n: usize, cols: usize, o: Raw, out: &View) {
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f32::NEG_INFINITY,
    };
    let combine = |a: &mut [f32], c: &[f32]| match op {
        ReduceOp::Sum => a.iter_mut().zip(c).for_each(|(a, &v)| *a += v),
        ReduceOp::Max => a.iter_mut().zip(c).for_each(|(a, &v)| *a = super::elementwise::max_nan(*a, v)),
    };
    let (cblocks, rblocks) = (cols.div_ceil(COLS), n.div_ceil(ROWS).max(1));
    // partial[rb * cols + c]: column c summed over row block rb.
    let mut partial = vec![init; rblocks * cols];
    let pp = crate::elem::Ptr(partial.as_mut_ptr() as *mut u8);
    let one = |t: usize| {
        let (rb, cb) = (t / cblocks, t % cblocks);
        let (c0, c1) = (cb * COLS, ((cb + 1) * COLS).min(cols));
        // SAFETY: task t alone writes row block rb's columns c0..c1 of `partial`.
        let acc = unsafe { std::slice::from_raw_parts_mut(pp.get::<f32>().add(rb * cols + c0), c1 - c0) };
        for r in rb * ROWS..((rb + 1) * ROWS).min(n) {
            // SAFETY: in bounds; read only.
            unsafe { for_chunks(xr, x0 + r * cols + c0, c1 - c0, |c| combine(acc, c)) };
        }
    };
    if n * cols < PAR_MIN {
        (0..rblocks * cblocks).for_each(one);
    } else {
        (0..rblocks * cblocks).into_par_iter().for_each(one);
    }
    let (first, rest) = partial.split_at_mut(cols);
    for p in rest.chunks_exact(cols) {
        combine(first, p);
    }
    for (j, &a) in first.iter().enumerate() {
        // SAFETY: in bounds (checked by `raw`).
        unsafe { store(o, out.layout.index_of(j), 1, &[a]) };
    }
}

/// Any layout: each output element walks its reduced sub-tensor, accumulating in f64.
fn generic(op: ReduceOp, x: &View, xr: Raw, reduced: &[bool], red: usize, o: Raw, out: &View) {
    let xs = x.shape();
    let red_dims: Vec<(usize, usize)> =
        (0..xs.len()).filter(|&d| reduced[d]).map(|d| (xs[d], x.layout.strides[d])).collect();
    let one = |i: usize| {
        // The output's row-major multi-index is x's on kept axes (out has extent 1 elsewhere).
        let mut rem = i;
        let mut base = x.layout.offset;
        for d in (0..xs.len()).rev() {
            let n = out.shape()[d];
            base += (rem % n) * x.layout.strides[d];
            rem /= n;
        }
        let mut acc = match op {
            ReduceOp::Sum => 0.0f64,
            ReduceOp::Max => f64::NEG_INFINITY,
        };
        let mut v = [0f32];
        for j in 0..red {
            let (mut rem, mut at) = (j, base);
            for &(n, s) in red_dims.iter().rev() {
                at += (rem % n) * s;
                rem /= n;
            }
            // SAFETY: in bounds; read only.
            unsafe { elem::load(xr, at, 1, &mut v) };
            let v = v[0] as f64;
            acc = match op {
                ReduceOp::Sum => acc + v,
                ReduceOp::Max if v.is_nan() || acc.is_nan() => f64::NAN,
                ReduceOp::Max => acc.max(v),
            };
        }
        // SAFETY: one task per output element.
        unsafe { store(o, out.layout.index_of(i), 1, &[acc as f32]) };
    };
    let n = out.numel();
    if n * red < PAR_MIN {
        (0..n).for_each(one);
    } else {
        (0..n).into_par_iter().for_each(one);
    }
}
