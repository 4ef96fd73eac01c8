//! unary, binary, compare and select: one output element from the same element of each input.
//!
//! Math is done in f64 and rounded once to the output dtype. For +, -, *, / and sqrt of f32
//! operands that single rounding equals the correctly rounded f32 result (f64 has more than
//! 2*24+2 significand bits, so the double rounding is innocuous); transcendental functions
//! are within an ulp of the exact value, the best any port can be compared against.

use crate::memory::{check_float, check_shape, check_view, load, store};
use anychip_port::{BinaryOp, CompareOp, Result, UnaryOp, View};

/// IEEE 754-2019 maximum: NaN if either is NaN, and +0 is larger than -0.
pub fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        // Only ±0 compare equal with different bits; prefer the positive one.
        if a.is_sign_negative() {
            b
        } else {
            a
        }
    } else if a > b {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 minimum: NaN if either is NaN, and -0 is smaller than +0.
pub fn minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else if a < b {
        a
    } else {
        b
    }
}

fn apply_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Abs => x.abs(),
    }
}

fn apply_binary(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => maximum(a, b),
        BinaryOp::Min => minimum(a, b),
    }
}

/// Check that every operand is a valid float view of out's shape.
fn check_operands(what: &str, inputs: &[(&str, &View)], out: &View) -> Result<()> {
    check_view(&format!("{what} out"), out)?;
    check_float(&format!("{what} out"), out)?;
    for (name, v) in inputs {
        let name = format!("{what} {name}");
        check_view(&name, v)?;
        check_float(&name, v)?;
        check_shape(&name, v, out.shape())?;
    }
    Ok(())
}

/// out[i] = op(x[i]).
pub fn unary(op: UnaryOp, x: &View, out: &View) -> Result<()> {
    check_operands("unary", &[("x", x)], out)?;
    let y: Vec<f64> = load("unary x", x)?.into_iter().map(|v| apply_unary(op, v)).collect();
    store("unary out", out, &y)
}

/// out[i] = op(a[i], b[i]).
pub fn binary(op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
    check_operands("binary", &[("a", a), ("b", b)], out)?;
    let (a, b) = (load("binary a", a)?, load("binary b", b)?);
    let y: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| apply_binary(op, x, y)).collect();
    store("binary out", out, &y)
}

/// out[i] = op(a[i], b[i]) ? 1 : 0; every comparison with NaN is false.
pub fn compare(op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
    check_operands("compare", &[("a", a), ("b", b)], out)?;
    let (a, b) = (load("compare a", a)?, load("compare b", b)?);
    let y: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| match op {
            CompareOp::Eq => x == y,
            CompareOp::Lt => x < y,
        })
        .map(|t| if t { 1.0 } else { 0.0 })
        .collect();
    store("compare out", out, &y)
}

/// out[i] = cond[i] != 0 ? a[i] : b[i]; a NaN condition is non-zero, so it picks `a`.
pub fn select(cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
    check_operands("select", &[("cond", cond), ("a", a), ("b", b)], out)?;
    let (c, a, b) = (load("select cond", cond)?, load("select a", a)?, load("select b", b)?);
    let y: Vec<f64> = c.iter().zip(a.iter().zip(&b)).map(|(&c, (&x, &y))| if c != 0.0 { x } else { y }).collect();
    store("select out", out, &y)
}
