//! Softmax and log-softmax over the last axis.
//!
//! m = max(x) (0 for an all -inf row, so no NaN), e = exp(x - m), s = sum(e)
//! softmax  y = e / s (s = 0 only for all -inf rows; y = 0 there)
//!   dx = y * (dy - sum(dy * y))
//! log_softmax y = x - lse, lse = m + log(s) (lse = 0 for all -inf rows, so y = -inf there)
//!   dx = dy - exp(y) * sum(dy)

use crate::prims::{rows, Prims};
use anychip_port::{CompareOp, ReduceOp, Result, UnaryOp, View};

/// Row statistics shared by softmax, log-softmax, cross-entropy and attention:
/// (e = exp(x - m), s = sum(e) with 0 replaced by 1, m with -inf replaced by 0, empty-row mask).
pub(crate) struct RowStats {
    pub e: View,
    pub s: View,
    pub m: View,
    pub empty: View,
}

pub(crate) fn row_stats(k: &Prims, x: &View) -> Result<RowStats> {
    let m = k.reduce_last(ReduceOp::Max, x)?;
    let neg_inf = k.scalar(f64::NEG_INFINITY)?;
    let empty = k.cmp(CompareOp::Eq, &m, &neg_inf)?;
    let zero = k.scalar(0.0)?;
    let m = k.select(&empty, &zero, &m)?;
    let e = k.un(UnaryOp::Exp, &k.sub(x, &m)?)?;
    let s = k.reduce_last(ReduceOp::Sum, &e)?;
    let s = k.select(&empty, &k.scalar(1.0)?, &s)?;
    Ok(RowStats { e, s, m, empty })
}

/// log-sum-exp per row (`[rows, 1]`); -inf for an all -inf row when `empty_is_neg_inf`, else 0.
pub(crate) fn lse(k: &Prims, st: &RowStats, empty_is_neg_inf: bool) -> Result<View> {
    let l = k.add(&st.m, &k.un(UnaryOp::Log, &st.s)?)?;
    if empty_is_neg_inf {
        k.select(&st.empty, &k.scalar(f64::NEG_INFINITY)?, &l)
    } else {
        Ok(l)
    }
}

pub(crate) fn softmax_fwd(k: &Prims, x: &View, y: &View) -> Result<()> {
    let x = rows(&k.f32(x)?);
    let st = row_stats(k, &x)?;
    k.store(&k.div(&st.e, &st.s)?, y)
}

pub(crate) fn softmax_bwd(k: &Prims, y: &View, dy: &View, dx: &View) -> Result<()> {
    let (y, dy) = (rows(&k.f32(y)?), rows(&k.f32(dy)?));
    let dot = k.reduce_last(ReduceOp::Sum, &k.mul(&dy, &y)?)?;
    k.store(&k.mul(&y, &k.sub(&dy, &dot)?)?, dx)
}

pub(crate) fn log_softmax_fwd(k: &Prims, x: &View, y: &View) -> Result<()> {
    let x = rows(&k.f32(x)?);
    let st = row_stats(k, &x)?;
    k.store(&k.sub(&x, &lse(k, &st, false)?)?, y)
}

pub(crate) fn log_softmax_bwd(k: &Prims, y: &View, dy: &View, dx: &View) -> Result<()> {
    let (y, dy) = (rows(&k.f32(y)?), rows(&k.f32(dy)?));
    let total = k.reduce_last(ReduceOp::Sum, &dy)?;
    k.store(&k.sub(&dy, &k.mul(&k.un(UnaryOp::Exp, &y)?, &total)?)?, dx)
}
