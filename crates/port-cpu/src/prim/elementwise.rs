//! unary, binary, compare and select: elementwise float maps over strided views.
//!
//! All four go through [`crate::elem::map`], whose blocks make the contiguous case one long
//! unit-stride loop and a last-axis broadcast (bias) a unit-stride row against a fixed row.

use super::dense_out;
use crate::elem::{map, want_float};
use anychip_port::{BinaryOp, CompareOp, Result, UnaryOp, View};

/// out[i] = op(x[i]).
pub fn unary(op: UnaryOp, x: &View, out: &View) -> Result<()> {
    want_float(x, "unary")?;
    want_float(out, "unary")?;
    dense_out(out)?;
    macro_rules! each {
        ($f:expr) => {
            map([x], out, |[x], o| {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = $f(x);
                }
            })
        };
    }
    match op {
        UnaryOp::Neg => each!(|x: f32| -x),
        UnaryOp::Exp => each!(f32::exp),
        UnaryOp::Log => each!(f32::ln),
        UnaryOp::Sqrt => each!(f32::sqrt),
        UnaryOp::Recip => each!(|x: f32| 1.0 / x),
        UnaryOp::Tanh => each!(f32::tanh),
        // std has no stable erf; libm's erff is a port of the well-tested FreeBSD msun one.
        UnaryOp::Erf => each!(libm::erff),
        UnaryOp::Abs => each!(f32::abs),
    }
}

/// IEEE maximum that propagates NaN (f32::max would drop it).
#[inline]
pub fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a >= b {
        a
    } else {
        b
    }
}

/// IEEE minimum that propagates NaN.
#[inline]
pub fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a <= b {
        a
    } else {
        b
    }
}

/// out[i] = op(a[i], b[i]); broadcasting is a stride of 0 in `a` or `b`.
pub fn binary(op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
    for v in [a, b, out] {
        want_float(v, "binary")?;
    }
    dense_out(out)?;
    macro_rules! each {
        ($f:expr) => {
            map([a, b], out, |[a, b], o| {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = $f(a, b);
                }
            })
        };
    }
    match op {
        BinaryOp::Add => each!(|a: f32, b: f32| a + b),
        BinaryOp::Sub => each!(|a: f32, b: f32| a - b),
        BinaryOp::Mul => each!(|a: f32, b: f32| a * b),
        BinaryOp::Div => each!(|a: f32, b: f32| a / b),
        BinaryOp::Max => each!(max_nan),
        BinaryOp::Min => each!(min_nan),
    }
}

/// out[i] = op(a[i], b[i]) ? 1 : 0; NaN compares false.
pub fn compare(op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
    for v in [a, b, out] {
        want_float(v, "compare")?;
    }
    dense_out(out)?;
    map([a, b], out, |[a, b], o| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            let t = match op {
                CompareOp::Eq => a == b,
                CompareOp::Lt => a < b,
            };
            *o = t as u8 as f32;
        }
    })
}

/// out[i] = cond[i] != 0 ? a[i] : b[i] (a NaN condition counts as non-zero).
pub fn select(cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
    for v in [cond, a, b, out] {
        want_float(v, "select")?;
    }
    dense_out(out)?;
    map([cond, a, b], out, |[c, a, b], o| {
        for (i, o) in o.iter_mut().enumerate() {
            *o = if c[i] != 0.0 { a[i] } else { b[i] };
        }
    })
}
