//! The tolerance policy: one named bound per (op family, dtype), each derived below, so a port
//! author can see exactly what "close enough" means and why.
//!
//! # Notation
//! `u_d` is the unit roundoff of round-to-nearest-even in dtype `d` (half an ulp at 1):
//! `u_f32 = 2^-24`, `u_bf16 = 2^-8`. `gamma_n(u) = n u / (1 - n u)` bounds the error of any
//! sum of `n + 1` terms in arithmetic of unit roundoff `u`, whatever the order (Higham,
//! *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 and eq. 4.4):
//! `|fl(s) - s| <= gamma_{n-1}(u) * sum |x_i|`.
//!
//! # L1 (primitives against `ref`)
//! The oracle computes in f64 and rounds once to the output dtype. A port must, by the
//! contract, compute elementwise ops in f32 or better and accumulate sums and products in f32
//! or wider, then round once to the output dtype. For a bf16 output both results are correctly
//! rounded from values that differ by at most the port's f32 error `E`, so
//! `|got - want| <= u_b |s_port| + E + u_b |s| <= 2 u_b / (1 - u_b) |want| + (1 + u_b) E`,
//! i.e. one bf16 step (2^-7 |want| is one ulp) plus the f32 error. For accumulations `E` is
//! `gamma_k(u_f32) * sum |terms|`, computed per element by running the same op on `ref` over
//! the absolute values of the inputs ([`Bound::Accumulation`]); it does not depend on what
//! the port returned, so a wrong sign or a 1% error fails wherever the sum is not smaller than
//! what f32 accumulation may legally lose. f32 outputs keep the measured bounds of [`for_op`]
//! (tighter than the worst case `gamma_k`, which no port comes near on these data).
//!
//! # L2 (composites against the default decomposition on `ref`)
//! See [`composite`]: every composite computes in f32 (bf16 inputs widened, outputs rounded
//! once on store) from identical inputs on both sides, so a bf16 output's bound is the f32
//! bound of the same case plus one bf16 step.

use anychip_port::DType;

pub use anychip_test_support::Tol;

/// Unit roundoff of round-to-nearest-even in the dtype.
pub fn unit_roundoff(dt: DType) -> f64 {
    match dt {
        DType::F32 => (2.0f64).powi(-24),
        DType::BF16 => (2.0f64).powi(-8),
        DType::I32 => 0.0,
    }
}

/// `gamma_n(u) = n u / (1 - n u)` (infinite once `n u >= 1`).
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    if nu < 1.0 {
        nu / (1.0 - nu)
    } else {
        f64::INFINITY
    }
}

/// Relative distance two values correctly rounded to `dt` from (nearly) the same real may
/// lie apart: one step of `dt`, `2 u / (1 - u)`.
pub fn one_step(dt: DType) -> f64 {
    let u = unit_roundoff(dt);
    2.0 * u / (1.0 - u)
}

/// How close a port's result must be to the oracle's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// The same `abs + rel |want|` for every element.
    Fixed(Tol),
    /// `rel |want| + per_magnitude * m` per element, where `m` is the op applied to the
    /// absolute values of its inputs (sum |x_i|, sum |a_ik| |b_kj|, ...).
    Accumulation { rel: f64, per_magnitude: f64, terms: usize },
    /// `tol` plus `per_magnitude * m` per element, where `m` sums the magnitudes of the terms
    /// whose operands the contract rounds to a narrower dtype ([`rounded_operands`]).
    Rounded { tol: Tol, per_magnitude: f64 },
}

impl From<Tol> for Bound {
    fn from(t: Tol) -> Bound {
        Bound::Fixed(t)
    }
}

impl Bound {
    /// Short form for the report.
    pub fn describe(&self) -> String {
        match self {
            Bound::Fixed(t) => t.describe(),
            // "g783*S|t|": gamma_783(u_f32) times the sum of the terms' magnitudes.
            Bound::Accumulation { rel, terms, .. } => format!("{rel:.1e}|x|+g{terms}*S|t|"),
            // "...+7.8e-3*S|t|": one step per rounded term.
            Bound::Rounded { tol, per_magnitude } => format!("{}+{per_magnitude:.1e}*S|t|", tol.describe()),
        }
    }
}

/// The bound of an accumulation of `terms` f32 terms per output element, rounded to `out`:
/// one step of `out` plus `gamma_terms(u_f32)` (and the oracle's own f64 error) times the sum
/// of the terms' magnitudes. Stores into f32 outputs count one more rounding in `terms`.
pub fn accumulation(out: DType, terms: usize) -> Bound {
    let f64_error = gamma(terms, (2.0f64).powi(-53));
    let f32_error = gamma(terms, unit_roundoff(DType::F32));
    let u = unit_roundoff(out);
    Bound::Accumulation { rel: one_step(out), per_magnitude: (1.0 + u) * (f32_error + f64_error), terms }
}

/// Tolerance for an op family on a dtype. `k` is the length of the longest accumulation
/// (reduce length, matmul inner size), since summation error grows with it.
pub fn for_op(op: &str, dt: DType, k: usize) -> Bound {
    let u = if dt == DType::BF16 { one_step(dt) } else { f32::EPSILON as f64 };
    let eps = f32::EPSILON as f64;
    match op {
        // Data movement, selection, comparison and index ops have one right answer.
        "fill" | "copy_strided" | "select" | "compare" | "gather_rows" | "random_uniform" | "reduce_max" => {
            Tol::EXACT.into()
        }
        // Casts round once (to nearest even).
        "cast" => Tol::EXACT.into(),
        // Exactly rounded in IEEE arithmetic: f32 results one ulp apart at most (the oracle's
        // double rounding through f64), bf16 results one bf16 step.
        "neg" | "abs" | "add" | "sub" | "mul" | "div" | "max" | "min" | "sqrt" => Tol { abs: 0.0, rel: u }.into(),
        // Transcendentals in f32: a few ulps (vectorised exp/tanh/erf differ from libm); a bf16
        // result is that f32 result rounded once more: one bf16 step on top.
        "exp" | "log" | "tanh" | "erf" | "recip" | "random_normal" => {
            let f32_tol = Tol { abs: 4.0 * eps, rel: 8.0 * eps };
            match dt {
                DType::BF16 => Tol { abs: f32_tol.abs, rel: f32_tol.rel + one_step(dt) }.into(),
                _ => f32_tol.into(),
            }
        }
        // Accumulations. bf16: derived from the contract (module header). f32: measured,
        // 4 sqrt(k) ulps on these random data.
        "reduce_sum" | "matmul" | "scatter_add_rows" => match dt {
            DType::BF16 => accumulation(dt, k),
            _ => {
                let g = 4.0 * (k.max(1) as f64).sqrt() * eps;
                Tol { abs: g, rel: g }.into()
            }
        },
        // bf16 operands, f32 output: a bf16 x bf16 product is exact in f32, so ports differ only
        // in how they sum the same products: the f32 matmul bound, whatever the operand dtype.
        "matmul_bf16_f32" => for_op("matmul", DType::F32, k),
        // An op without a named bound must match exactly, so that it fails visibly.
        _ => Tol::EXACT.into(),
    }
}

/// The per-magnitude part of the L2 bound of a composite whose products take operands rounded
/// to `operands` ([`Bound::Rounded`]): attention with bf16 q, k, v (autocast), whose contract
/// rounds the f32 probabilities P (before P V and dv = P^T dout) and dS (before dq and dk) to
/// bf16, and lets a port round P unnormalised against the row max or an online softmax's
/// running max (FlashAttention), or normalised. Rounding to nearest moves each term by at most
/// `u_b` of its size, so two conforming ports, rounding the same or different f32 values,
/// disagree on a term by at most `2 u_b / (1 - u_b)` (one bf16 step) of |term| and on an output
/// by one step of the sum of its terms' magnitudes: `m = sum_j p_ij |v_j|` for out,
/// `sum_i p_ij |dout_i|` for dv, `scale sum_j |dS_ij| |k_j|` for dq and `scale sum_i |dS_ij|
/// |q_i|` for dk (computed on the host in f64 from the stored inputs). The operands q, k, v
/// and dout are bf16 already and their products exact in f32, so the rest is the f32 bound of
/// [`composite`] (plus one bf16 step of |want| for a bf16 output). Rounding S (which the
/// contract keeps in f32) moves P by |S| u_b relative, up to several steps at these scores,
/// and fails.
pub fn rounded_operands(operands: DType) -> f64 {
    one_step(operands)
}

/// The L2 bound for an output of dtype `dt` of composite `family` (either direction).
///
/// Both sides compute in f32 from identical inputs (bf16 inputs widened exactly; saved
/// statistics given, not recomputed), so the f32 bound below is the distance between two f32
/// evaluations of the same formula in different orders, and a bf16 output adds one bf16 step
/// (module header). `u` is `u_f32 = 6e-8`; each bound is a few times the error estimate.
pub fn composite(family: &str, dt: DType) -> Tol {
    let f32_tol = match family {
        // Elementwise formulas of a few operations, at most one transcendental (exp, tanh,
        // erf within 8 ulps): ~20 u; GELU's derivative subtracts terms of similar size at
        // |x| ~ 1, so the bound is absolute as well as relative.
        "gelu" | "silu" | "swiglu" | "rope" | "dropout" => Tol { abs: 2e-5, rel: 2e-5 },
        // Row statistics over up to 783 terms: max, exp (8 ulps), a blocked f32 sum
        // (~4 sqrt(783) u = 7e-6 on random rows) and one division or log.
        "softmax" | "log_softmax" | "cross_entropy" => Tol { abs: 2e-5, rel: 2e-5 },
        // Table lookups are exact; the backward sums at most 2 rows per id.
        "embedding" => Tol { abs: 2e-5, rel: 2e-5 },
        // MoE combine: forward sums at most 3 weighted rows a token; backward dw is one dot
        // over 33 terms in any blocking (~2 sqrt(33) u |g||y|), dy a single product.
        "moe_combine" => Tol { abs: 2e-5, rel: 2e-5 },
        // MoE router: each z = <x, w_e> sums 67 terms in any blocking (~2 sqrt(67) u
        // sum |x||w| ~ 1e-5 at these magnitudes), and an error of delta in z moves p by at most
        // 2 delta relative; backward dw sums 150 rows (~2 sqrt(150) u sum |dz||x| ~ 6e-6), dx 7
        // terms. The fused cpu kernel lands within 5e-7 of ref; a dw 1% off is 1.9e-2 off where
        // |dw| = 1.9, 0.1% off 1.9e-3, against the 6e-5 allowed there: both fail.
        "moe_router" => Tol { abs: 2e-5, rel: 2e-5 },
        // The update divides by sqrt(v) + eps with v ~ 1e-3: a few ulps of m / sqrt(v).
        "adamw" => Tol { abs: 2e-5, rel: 2e-5 },
        // One f32 sum of squares over 800 terms, then a sqrt: ~4 sqrt(800) u.
        "grad_norm" => Tol { abs: 2e-5, rel: 2e-5 },
        // Normalisation divides by the row's standard deviation: rows of x in [-4, 4) have
        // std ~2.3 and the backward forms dx = rstd (dy w - mean(dy w) - xhat mean(dy w xhat))
        // from three row sums of 783 terms that cancel: 10x the row-statistic bound.
        "layer_norm" | "rms_norm" => Tol { abs: 2e-4, rel: 2e-4 },
        // Products with K = 33..67 summed in f32 in any blocking: gamma_67(u) sum |a||b| ~
        // 4e-6 * 20 at these magnitudes.
        "linear" => Tol { abs: 1e-4, rel: 1e-4 },
        // The same products per group, so linear's bound; a weight gradient sums one group's
        // rows (up to 400 here), a rounding error of about sqrt(400) u sqrt(sum (dy x)^2) ~ 1e-5
        // on |dw| up to 20: the cpu kernel lands within 1.6e-5 of ref, and a group skipped is
        // off by |dw| itself.
        "grouped_linear" => Tol { abs: 1e-4, rel: 1e-4 },
        // Two chained products (S = Q K^T, O = P V) with an exp between, and in the backward
        // dS = P (dP - D) where D cancels against dP: the linear bound doubled.
        "attention" => Tol { abs: 2e-4, rel: 2e-4 },
        // A family without a named bound must match exactly, so that it fails visibly.
        _ => Tol::EXACT,
    };
    // Dropout's mask is itself stored in the dtype of x (1/(1-p) rounded), and the contract
    // lets y be x times either the stored or the exact mask: one more rounding of the mask.
    let mask_rounding = if family == "dropout" { unit_roundoff(dt) } else { 0.0 };
    match dt {
        DType::BF16 => Tol { abs: f32_tol.abs, rel: f32_tol.rel + one_step(dt) + mask_rounding },
        _ => f32_tol,
    }
}
