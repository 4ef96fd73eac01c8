//! NEON exp, and on it softmax's shifted exp, GELU (tanh form) and SiLU with their gradients;
//! and a 4 x 4 transpose of 32-bit words. The same kernels as `math_avx2.rs`, four lanes
//! wide, for aarch64 (NEON with FMA is the baseline of aarch64-unknown-linux-gnu, so
//! [`crate::isa::Isa::Neon`] is always supported there).
//!
//! Why by hand: Rust never contracts `a * b + c` into an FMA, so the portable kernels in
//! [`crate::math`] (which the compiler does vectorise to NEON) spend twice the instructions on
//! exp's polynomial, and their exp handles infinities and NaN in every lane. Here the
//! polynomial is `vfmaq_f32`, n = round(x log2 e) is one `vrndnq_f32` (round to nearest even, as
//! the portable 1.5 * 2^23 trick), 2^n is built in the exponent bits, and special inputs (infinite
//! or NaN) of GELU and SiLU are redone one by one in the portable code, so the common path
//! carries no special-case selects. Ragged tails (under 4 elements) run the portable code too.
//!
//! exp(x) = 2^n exp(r), x = n ln2 + r, |r| <= ln2 / 2, ln 2 in two parts (C1 exact in n C1):
//!   exp(r) = 1 + r + r^2 p(r), p Cephes' degree-5 polynomial (as [`crate::math::exp`]).
//! GELU tanh as in `math_avx2.rs`: with e = exp(2u), u = K (x + C x^3),
//! s = e / (e + 1) = (1 + tanh u) / 2, y = x s and y' = s + 2 K x s (1 - s) (1 + 3 C x^2),
//! 1 - s = 1 / (e + 1); 2u is clamped to [-80, 80] and s taken as 0 below -80.
//! SiLU: with e = exp(-x) (-x clamped the same way), s = 1 / (1 + e) and 1 - s = e s:
//! y = x s and y' = s (1 + x (1 - s)); s is taken as 0 below x = -80 and 1 - s above 80.
//!
//! Accuracy contract (the same as AVX2's, held by the same checks, `crate::math::checks`):
//! exp within 3e-7 relative of the portable exp and bit-equal on its edges; GELU, SiLU and
//! their gradients within 2e-6 + 1.2e-7 |t| relative of f64 (t the exp argument), and
//! bit-equal to the portable kernels on infinite and NaN inputs.

use std::arch::aarch64::*;

const K: f32 = 0.797_884_6;
const C: f32 = 0.044_715;
/// Lanes per vector.
const W: usize = 4;

/// exp(x) for 4 lanes with x in [-87.3, 88.3]: see the module docs. At 88.3 < x <= 88.7 n is
/// 128 and the scale is +inf, as in the portable exp.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
    // r = x - n C1 - n C2 (vfmsq_f32(a, b, c) = a - b c, fused).
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
        // p = p r + c (vfmaq_f32(a, b, c) = a + b c, fused).
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let e = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), p, vmulq_f32(r, r));
    // 2^n: n + 127 in the exponent field (n is integral, so the truncating convert is exact).
    let bits = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(e, vreinterpretq_f32_s32(bits))
}

/// exp(d) for 4 lanes with [`crate::math::exp`]'s edges: 0 below -87.3 (and for -inf), +inf
/// above 88.72, NaN kept.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn exp4_full(d: float32x4_t) -> float32x4_t {
    let live = vcgeq_f32(d, vdupq_n_f32(-87.3));
    let over = vcgtq_f32(d, vdupq_n_f32(88.72));
    let nan = vmvnq_u32(vceqq_f32(d, d));
    let dc = vminq_f32(vmaxq_f32(d, vdupq_n_f32(-87.3)), vdupq_n_f32(88.7));
    let e = vreinterpretq_f32_u32(vandq_u32(live, vreinterpretq_u32_f32(exp4(dc))));
    let e = vbslq_f32(over, vdupq_n_f32(f32::INFINITY), e);
    vbslq_f32(nan, d, e)
}

/// x[i] = exp(x[i] - shift) in place; returns the sum of the new values.
///
/// # Safety
/// The CPU must have NEON ([`crate::isa::Isa::Neon`] supported: every aarch64 Linux CPU).
#[target_feature(enable = "neon")]
pub unsafe fn exp_shift_sum_inplace(x: &mut [f32], shift: f32) -> f32 {
    let (n, sh) = (x.len(), vdupq_n_f32(shift));
    let mut acc = vdupq_n_f32(0.0);
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let e = exp4_full(vsubq_f32(vld1q_f32(x.as_ptr().add(i)), sh));
        vst1q_f32(x.as_mut_ptr().add(i), e);
        acc = vaddq_f32(acc, e);
    }
    let mut tail = 0.0;
    for v in &mut x[full..] {
        *v = crate::math::exp(*v - shift);
        tail += *v;
    }
    vaddvq_f32(acc) + tail
}

/// out[i] = scale exp(x[i] - shift) (`out` given) and the sum of exp(x[i] - shift) (returned):
/// softmax's and cross-entropy's passes over a row, in one loop.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn exp_shift(x: &[f32], shift: f32, scale: f32, mut out: Option<&mut [f32]>) -> f32 {
    let n = out.as_ref().map_or(x.len(), |o| o.len().min(x.len()));
    let sh = vdupq_n_f32(shift);
    let mut acc = vdupq_n_f32(0.0);
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let e = exp4_full(vsubq_f32(vld1q_f32(x.as_ptr().add(i)), sh));
        if let Some(o) = out.as_deref_mut() {
            vst1q_f32(o.as_mut_ptr().add(i), vmulq_n_f32(e, scale));
        }
        acc = vaddq_f32(acc, e);
    }
    let mut tail = 0.0;
    for i in full..n {
        let e = crate::math::exp(x[i] - shift);
        if let Some(o) = out.as_deref_mut() {
            o[i] = scale * e;
        }
        tail += e;
    }
    vaddvq_f32(acc) + tail
}

/// out[i] = exp(x[i] - shift); returns the sum of out.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn exp_shift_sum(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shift(x, shift, 1.0, Some(out))
}

/// sum_i exp(x[i] - shift), without writing anything.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn sum_exp_shift(x: &[f32], shift: f32) -> f32 {
    exp_shift(x, shift, 1.0, None)
}

/// out[i] = scale exp(x[i] - shift).
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn scaled_exp_shift(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    exp_shift(x, shift, scale, Some(out));
}

/// The lanes of x that are infinite or NaN, as bits of a 4-bit mask.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn special(x: float32x4_t) -> u32 {
    // |x| < inf is false exactly for the infinite and NaN lanes.
    let bad = vmvnq_u32(vcltq_f32(vabsq_f32(x), vdupq_n_f32(f32::INFINITY)));
    let bit = [1u32, 2, 4, 8];
    vaddvq_u32(vandq_u32(bad, vld1q_u32(bit.as_ptr())))
}

/// Redo the `special` lanes of block `i` with the portable kernel `f`, one element at a time.
#[inline(always)]
fn patch(special: u32, i: usize, mut f: impl FnMut(usize)) {
    let mut bits = special;
    while bits != 0 {
        f(i + bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}

/// (s, q) = (e / (e + 1), 1 / (e + 1)) for e = exp(t), t clamped to [-80, 80], with s = 0
/// where t < -80 and q = 0 where t > 80 (as `math_avx2.rs`'s).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn logistic_parts(t: float32x4_t) -> (float32x4_t, float32x4_t) {
    let s_live = vcgeq_f32(t, vdupq_n_f32(-80.0));
    let q_live = vcleq_f32(t, vdupq_n_f32(80.0));
    let t = vminq_f32(vmaxq_f32(t, vdupq_n_f32(-80.0)), vdupq_n_f32(80.0));
    let e = exp4(t);
    let q = vdivq_f32(vdupq_n_f32(1.0), vaddq_f32(e, vdupq_n_f32(1.0)));
    let s = vandq_u32(s_live, vreinterpretq_u32_f32(vmulq_f32(e, q)));
    (vreinterpretq_f32_u32(s), vreinterpretq_f32_u32(vandq_u32(q_live, vreinterpretq_u32_f32(q))))
}

/// (xc, xc^2, s, q) of GELU for 4 lanes: xc is x clamped to +-1e4 (so x^3 cannot overflow),
/// (s, q) the logistic parts of 2u.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn gelu_parts(x: float32x4_t) -> (float32x4_t, float32x4_t, float32x4_t, float32x4_t) {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-1e4)), vdupq_n_f32(1e4));
    let x2 = vmulq_f32(x, x);
    // 2u = 2 K x (1 + C x^2).
    let inner = vfmaq_f32(vdupq_n_f32(1.0), x2, vdupq_n_f32(C));
    let u2 = vmulq_f32(vmulq_n_f32(x, 2.0 * K), inner);
    let (s, q) = logistic_parts(u2);
    (x, x2, s, q)
}

/// y = gelu_tanh(x) over equal-length slices.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let xv = vld1q_f32(x.as_ptr().add(i));
        let (_, _, s, _) = gelu_parts(xv);
        vst1q_f32(y.as_mut_ptr().add(i), vmulq_f32(xv, s));
        patch(special(xv), i, |k| crate::math::gelu_tanh_portable(&x[k..k + 1], &mut y[k..k + 1]));
    }
    crate::math::gelu_tanh_portable(&x[full..n], &mut y[full..n]);
}

/// dx = dy gelu_tanh'(x) over equal-length slices.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn gelu_tanh_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let xv = vld1q_f32(x.as_ptr().add(i));
        let (xc, x2, s, q) = gelu_parts(xv);
        let b = vfmaq_f32(vdupq_n_f32(1.0), x2, vdupq_n_f32(3.0 * C));
        // s + 2 K x s q b
        let slope = vmulq_f32(vmulq_f32(vmulq_n_f32(xc, 2.0 * K), vmulq_f32(s, q)), b);
        let g = vaddq_f32(s, slope);
        let dyv = vld1q_f32(dy.as_ptr().add(i));
        vst1q_f32(dx.as_mut_ptr().add(i), vmulq_f32(dyv, g));
        patch(special(xv), i, |k| crate::math::gelu_tanh_grad_portable(&x[k..k + 1], &dy[k..k + 1], &mut dx[k..k + 1]));
    }
    crate::math::gelu_tanh_grad_portable(&x[full..n], &dy[full..n], &mut dx[full..n]);
}

/// y = silu(x) = x sigmoid(x) over equal-length slices.
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn silu(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let xv = vld1q_f32(x.as_ptr().add(i));
        // sigmoid(x) = 1 / (1 + exp(-x)) is the q of -x's logistic parts; its s is 1 - q.
        let (_, q) = logistic_parts(vnegq_f32(xv));
        vst1q_f32(y.as_mut_ptr().add(i), vmulq_f32(xv, q));
        patch(special(xv), i, |k| crate::math::silu_portable(&x[k..k + 1], &mut y[k..k + 1]));
    }
    crate::math::silu_portable(&x[full..n], &mut y[full..n]);
}

/// dx = dy silu'(x) = dy s (1 + x (1 - s)), s = sigmoid(x).
///
/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn silu_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    let full = n / W * W;
    for i in (0..full).step_by(W) {
        let xv = vld1q_f32(x.as_ptr().add(i));
        let (one_minus_s, s) = logistic_parts(vnegq_f32(xv));
        let g = vmulq_f32(s, vfmaq_f32(vdupq_n_f32(1.0), xv, one_minus_s));
        let dyv = vld1q_f32(dy.as_ptr().add(i));
        vst1q_f32(dx.as_mut_ptr().add(i), vmulq_f32(dyv, g));
        patch(special(xv), i, |k| crate::math::silu_grad_portable(&x[k..k + 1], &dy[k..k + 1], &mut dx[k..k + 1]));
    }
    crate::math::silu_grad_portable(&x[full..n], &dy[full..n], &mut dx[full..n]);
}

/// Transpose 4 rows of 4 32-bit words: `out[c]` lane `r` is `rows[r]` lane `c`. Interleave
/// 32-bit pairs of rows (trn1/trn2), then 64-bit pairs of those.
#[target_feature(enable = "neon")]
#[inline]
pub unsafe fn transpose4_words(rows: &[float32x4_t; 4]) -> [float32x4_t; 4] {
    // t0 = (r0[0], r1[0], r0[2], r1[2]), t1 = (r0[1], r1[1], r0[3], r1[3]); t2, t3 of r2, r3.
    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(rows[0], rows[1]));
    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(rows[0], rows[1]));
    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(rows[2], rows[3]));
    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(rows[2], rows[3]));
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::checks;

    /// This module's kernels, for the checks shared with the AVX2 ones.
    fn kernels() -> checks::Kernels {
        checks::Kernels {
            exp_shift_sum_inplace,
            exp_shift_sum,
            sum_exp_shift,
            scaled_exp_shift,
            gelu_tanh,
            gelu_tanh_grad,
            silu,
            silu_grad,
        }
    }

    #[test]
    fn exp_shift_matches_the_portable_exp() {
        assert!(crate::isa::Isa::Neon.supported());
        // SAFETY: NEON is supported (asserted above; aarch64's baseline).
        unsafe { checks::exp_shift_matches_the_portable_exp(&kernels()) }
    }

    #[test]
    fn exp_shift_row_passes_match_the_portable_ones() {
        // SAFETY: as above.
        unsafe { checks::exp_shift_row_passes_match_the_portable_ones(&kernels()) }
    }

    #[test]
    fn activations_match_f64_and_keep_specials() {
        // SAFETY: as above.
        unsafe { checks::activations_match_f64_and_keep_specials(&kernels()) }
    }

    #[test]
    fn transpose4_moves_every_word_to_its_mirror() {
        let words: Vec<f32> = (0..16).map(|i| i as f32).collect();
        // SAFETY: NEON is aarch64's baseline; loads and stores stay in the two 16-word arrays.
        unsafe {
            let rows: [float32x4_t; 4] = std::array::from_fn(|r| vld1q_f32(words[r * 4..].as_ptr()));
            let mut out = [0f32; 16];
            for (c, v) in transpose4_words(&rows).iter().enumerate() {
                vst1q_f32(out[c * 4..].as_mut_ptr(), *v);
            }
            for r in 0..4 {
                for c in 0..4 {
                    assert_eq!(out[c * 4 + r], words[r * 4 + c], "row {r} column {c}");
                }
            }
        }
    }
}
