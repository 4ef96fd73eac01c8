//! Cross-entropy of logits `[N,V]` against I32 targets `[N]` (negative = ignored).
//!
//! fwd: lse = logsumexp(logits), picked = logits[target] (via a one-hot, built with compare
//!      against a column index row), loss = sum(valid * (lse - picked)) / max(count, 1)
//! bwd: dlogits = dloss * valid * (softmax(logits) - onehot) / max(count, 1)

use crate::prims::{reshaped, Prims};
use crate::softmax::{lse as row_lse, row_stats};
use anychip_port::{BinaryOp, CompareOp, ReduceOp, Result, UnaryOp, View};

/// (one-hot `[N,V]`, valid `[N,1]`, 1/max(count,1) `[1]`) for the targets.
fn targets_onehot(k: &Prims, targets: &View, n: usize, v: usize) -> Result<(View, View, View)> {
    let t = k.alloc(&[n])?;
    k.0.cast(targets, &t)?;
    let t = reshaped(&t, &[n, 1]);
    let cols: Vec<f32> = (0..v).map(|c| c as f32).collect();
    let cols = k.upload(&cols, &[1, v])?;
    let onehot = k.cmp(CompareOp::Eq, &t, &cols)?;
    let ignored = k.cmp(CompareOp::Lt, &t, &k.scalar(0.0)?)?;
    let valid = k.addc(&k.mulc(&ignored, -1.0)?, 1.0)?;
    let count = k.sum_all(&valid)?;
    let inv = k.un(UnaryOp::Recip, &k.bin(BinaryOp::Max, &count, &k.scalar(1.0)?)?)?;
    Ok((onehot, valid, inv))
}

pub(crate) fn fwd(k: &Prims, logits: &View, targets: &View, loss: &View, lse: &View) -> Result<()> {
    let x = k.f32(logits)?;
    let (n, v) = (x.shape()[0], x.shape()[1]);
    let st = row_stats(k, &x)?;
    let l = row_lse(k, &st, false)?;
    let (onehot, valid, inv) = targets_onehot(k, targets, n, v)?;
    let picked = k.reduce_last(ReduceOp::Sum, &k.mul(&onehot, &x)?)?;
    let per_row = k.mul(&k.sub(&l, &picked)?, &valid)?;
    k.store(&k.mul(&k.sum_all(&per_row)?, &inv)?, loss)?;
    k.store(&reshaped(&l, &[n]), lse)
}

pub(crate) fn bwd(k: &Prims, logits: &View, targets: &View, lse: &View, dloss: &View, dlogits: &View) -> Result<()> {
    let x = k.f32(logits)?;
    let (n, v) = (x.shape()[0], x.shape()[1]);
    let p = k.un(UnaryOp::Exp, &k.sub(&x, &reshaped(lse, &[n, 1]))?)?;
    let (onehot, valid, inv) = targets_onehot(k, targets, n, v)?;
    let scale = k.mul(&k.mul(&valid, &inv)?, dloss)?;
    k.store(&k.mul(&k.sub(&p, &onehot)?, &scale)?, dlogits)
}
