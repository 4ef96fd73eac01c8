//! Fused log-softmax + negative log-likelihood over the vocabulary.
//!
//! Forward, per row of V logits with target t: lse = m + ln sum_j exp(x_j - m), m = max x;
//! loss = mean over rows with t >= 0 of (lse - x_t). Only lse is saved, never the softmax.
//! Backward recomputes the probabilities from lse in one pass over the logits:
//! dx_j = dloss / count * (exp(x_j - lse) - [j == t]); ignored rows (t < 0) get zeros.

use super::{floats, is_f32, par_rows, rows_cols};
use crate::elem::{finish_row, max, raw, row, row_mut, store, Raw};
use anychip_port::{invalid, DType, Handled, Result, View};

/// Read the targets and check them against the vocabulary.
fn targets_of(t: &View, rows: usize, v: usize) -> Result<Vec<i32>> {
    if t.dtype != DType::I32 || t.numel() != rows {
        return invalid(format!(
            "cross_entropy targets must be i32 with one per row ({rows}), got {} {:?}",
            t.dtype,
            t.shape()
        ));
    }
    let r = raw(t)?;
    // SAFETY: in bounds (checked by `raw`), contiguous (checked by the dispatcher).
    let ts = unsafe { std::slice::from_raw_parts(r.ptr::<i32>().add(t.layout.offset), rows) };
    if let Some((n, &bad)) = ts.iter().enumerate().find(|(_, &x)| x >= v as i32) {
        return invalid(format!("target {bad} at row {n} is outside the vocabulary of {v}; check the tokenizer"));
    }
    Ok(ts.to_vec())
}

fn scalar(r: Raw, at: usize) -> f32 {
    let mut v = [0f32];
    // SAFETY: callers pass an in-bounds element of a checked view.
    unsafe { crate::elem::load(r, at, 1, &mut v) };
    v[0]
}

/// loss = mean NLL over counted rows; lse saved per row.
pub fn fwd(logits: &View, targets: &View, loss: &View, lse: &View) -> Result<Handled> {
    if !floats(&[logits]) || !is_f32(loss) || !is_f32(lse) {
        return Ok(Handled::No);
    }
    let (rows, v) = rows_cols(logits);
    if lse.numel() != rows || loss.numel() != 1 {
        return invalid(format!(
            "cross_entropy wants lse [{rows}] and loss [1], got {:?} and {:?}",
            lse.shape(),
            loss.shape()
        ));
    }
    let ts = targets_of(targets, rows, v)?;
    let (xr, lr) = (raw(logits)?, raw(lse)?);
    let x0 = logits.layout.offset;
    // Per-row losses, summed afterwards in row order so the result is thread-count independent.
    let mut per_row = vec![0f64; rows];
    let out = crate::elem::Ptr(per_row.as_mut_ptr() as *mut u8);
    par_rows(rows, v, |s, r| {
        // SAFETY: in bounds; lse[r] and per_row[r] belong to this task.
        unsafe {
            let xs = row(xr, x0 + r * v, v, &mut s.0[0]);
            let m = max(xs);
            let l = if m == f32::NEG_INFINITY { m } else { m + crate::math::sum_exp_shift(xs, m).ln() };
            store(lr, lse.layout.offset + r, 1, &[l]);
            let t = ts[r];
            *out.get::<f64>().add(r) = if t >= 0 { (l - xs[t as usize]) as f64 } else { 0.0 };
        }
    });
    let count = ts.iter().filter(|&&t| t >= 0).count();
    let total: f64 = per_row.iter().sum();
    let value = if count == 0 { 0.0 } else { (total / count as f64) as f32 };
    // SAFETY: in bounds; written by this thread only.
    unsafe { store(raw(loss)?, loss.layout.offset, 1, &[value]) };
    Ok(Handled::Yes)
}

/// dlogits = dloss / count * (softmax(logits) - onehot(target)).
pub fn bwd(logits: &View, targets: &View, lse: &View, dloss: &View, dlogits: &View) -> Result<Handled> {
    if !floats(&[logits, dlogits]) || !is_f32(lse) || !is_f32(dloss) {
        return Ok(Handled::No);
    }
    let (rows, v) = rows_cols(logits);
    if dlogits.shape() != logits.shape() || lse.numel() != rows || dloss.numel() != 1 {
        return invalid("cross_entropy backward: dlogits must match logits, lse be [rows], dloss [1]");
    }
    let ts = targets_of(targets, rows, v)?;
    let (xr, lr, dr) = (raw(logits)?, raw(lse)?, raw(dlogits)?);
    let count = ts.iter().filter(|&&t| t >= 0).count();
    let scale = if count == 0 { 0.0 } else { scalar(raw(dloss)?, dloss.layout.offset) / count as f32 };
    let (x0, d0, l0) = (logits.layout.offset, dlogits.layout.offset, lse.layout.offset);
    let alias = xr.id == dr.id;
    par_rows(rows, v, |s, r| {
        let [a, b, ..] = &mut s.0;
        // SAFETY: in bounds; row r of dlogits belongs to this task; aliased logits are copied.
        unsafe {
            let xs = if alias { super::softmax::copy_row(xr, x0 + r * v, v, a) } else { row(xr, x0 + r * v, v, a) };
            let ds = row_mut(dr, d0 + r * v, v, b);
            let t = ts[r];
            if t < 0 {
                ds.fill(0.0);
            } else {
                let l = scalar(lr, l0 + r);
                crate::math::scaled_exp_shift(xs, l, scale, ds);
                ds[t as usize] -= scale;
            }
            finish_row(dr, d0 + r * v, ds);
        }
    });
    Ok(Handled::Yes)
}
