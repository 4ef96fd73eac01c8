//! AVX2+FMA exp, and on it softmax's shifted exp, GELU (tanh form) and SiLU with their
//! gradients; and an 8 x 8 transpose of 32-bit words. The same kernels as
//! [`crate::math_avx512`], eight lanes wide, for the CPUs without AVX-512 (Zen 2/3, most Intel
//! client chips, common CI runners).
//!
//! Why by hand: Rust never contracts `a * b + c` into an FMA, so the portable kernels in
//! [`crate::math`] compiled for AVX2 spend twice the instructions on exp's polynomial, and their
//! exp handles infinities and NaN in every lane. Here the polynomial is FMAs, 2^n is built in the
//! exponent bits, and special inputs (infinite or NaN) are redone one by one in the portable
//! code, so the common path carries no special-case blends. Ragged tails (under 8 elements) run
//! the portable code too.
//!
//! GELU tanh as in [`crate::math_avx512`]: with e = exp(2u), s = e / (e + 1) = (1 + tanh u) / 2,
//! y = x s and y' = s + 2 K x s (1 - s) (1 + 3 C x^2), 1 - s = 1 / (e + 1); 2u is clamped to
//! [-80, 80] and s taken as 0 below -80.
//! SiLU: with e = exp(-x) (-x clamped the same way), s = 1 / (1 + e) and 1 - s = e s:
//! y = x s and y' = s (1 + x (1 - s)); s is taken as 0 below x = -80 and 1 - s above 80.

use std::arch::x86_64::*;

const K: f32 = 0.797_884_6;
const C: f32 = 0.044_715;

/// exp(x) for 8 lanes with x in [-87.3, 88.3]: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by
/// Cephes' degree-7 polynomial (as [`crate::math::exp`]), then scaled by 2^n built in the
/// exponent field (n in [-126, 127] there). At 88.3 < x <= 88.7 n is 128 and the scale is
/// +inf, as in the portable exp.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp8(x: __m256) -> __m256 {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // ln 2 in two parts, so n * C1 is exact and r keeps full precision.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    _mm256_mul_ps(e, _mm256_castsi256_ps(bits))
}

/// exp(d) for 8 lanes with [`crate::math::exp`]'s edges: 0 below -87.3 (and for -inf), +inf
/// above 88.72, NaN kept.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp8_full(d: __m256) -> __m256 {
    let live = _mm256_cmp_ps::<_CMP_GE_OQ>(d, _mm256_set1_ps(-87.3));
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(d, _mm256_set1_ps(88.72));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(d, d);
    let dc = _mm256_min_ps(_mm256_max_ps(d, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.7));
    let e = _mm256_and_ps(live, exp8(dc));
    let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), over);
    _mm256_blendv_ps(e, d, nan)
}

/// Sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// x[i] = exp(x[i] - shift) in place; returns the sum of the new values.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`crate::isa::Isa::Avx2`] supported).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_shift_sum_inplace(x: &mut [f32], shift: f32) -> f32 {
    let (n, sh) = (x.len(), _mm256_set1_ps(shift));
    let mut acc = _mm256_setzero_ps();
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let e = exp8_full(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), sh));
        _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
        acc = _mm256_add_ps(acc, e);
    }
    let mut tail = 0.0;
    for v in &mut x[full..] {
        *v = crate::math::exp(*v - shift);
        tail += *v;
    }
    hsum(acc) + tail
}

/// out[i] = scale exp(x[i] - shift) (`out` given) and the sum of exp(x[i] - shift) (returned):
/// softmax's and cross-entropy's passes over a row, in one loop.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_shift(x: &[f32], shift: f32, scale: f32, mut out: Option<&mut [f32]>) -> f32 {
    let n = out.as_ref().map_or(x.len(), |o| o.len().min(x.len()));
    let (sh, sc) = (_mm256_set1_ps(shift), _mm256_set1_ps(scale));
    let mut acc = _mm256_setzero_ps();
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let e = exp8_full(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), sh));
        if let Some(o) = out.as_deref_mut() {
            _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(sc, e));
        }
        acc = _mm256_add_ps(acc, e);
    }
    let mut tail = 0.0;
    for i in full..n {
        let e = crate::math::exp(x[i] - shift);
        if let Some(o) = out.as_deref_mut() {
            o[i] = scale * e;
        }
        tail += e;
    }
    hsum(acc) + tail
}

/// out[i] = exp(x[i] - shift); returns the sum of out.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_shift_sum(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shift(x, shift, 1.0, Some(out))
}

/// sum_i exp(x[i] - shift), without writing anything.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum_exp_shift(x: &[f32], shift: f32) -> f32 {
    exp_shift(x, shift, 1.0, None)
}

/// out[i] = scale exp(x[i] - shift).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scaled_exp_shift(x: &[f32], shift: f32, scale: f32, out: &mut [f32]) {
    exp_shift(x, shift, scale, Some(out));
}

/// The lanes of x that are infinite or NaN, as bits of an 8-bit mask.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn special(x: __m256) -> u32 {
    let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(abs, _mm256_set1_ps(f32::INFINITY))) as u32
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
/// where t < -80 and q = 0 where t > 80 (GELU's and SiLU's logistic: under 2e-35 there, and
/// taken as 0 so that a huge |x| times it stays 0).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn logistic_parts(t: __m256) -> (__m256, __m256) {
    let s_live = _mm256_cmp_ps::<_CMP_GE_OQ>(t, _mm256_set1_ps(-80.0));
    let q_live = _mm256_cmp_ps::<_CMP_LE_OQ>(t, _mm256_set1_ps(80.0));
    let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-80.0)), _mm256_set1_ps(80.0));
    let e = exp8(t);
    let q = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_add_ps(e, _mm256_set1_ps(1.0)));
    (_mm256_and_ps(s_live, _mm256_mul_ps(e, q)), _mm256_and_ps(q_live, q))
}

/// (xc, xc^2, s, q) of GELU for 8 lanes: xc is x clamped to +-1e4 (so x^3 cannot overflow),
/// (s, q) the logistic parts of 2u.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn gelu_parts(x: __m256) -> (__m256, __m256, __m256, __m256) {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-1e4)), _mm256_set1_ps(1e4));
    let x2 = _mm256_mul_ps(x, x);
    let inner = _mm256_fmadd_ps(x2, _mm256_set1_ps(C), _mm256_set1_ps(1.0));
    let u2 = _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(2.0 * K)), inner);
    let (s, q) = logistic_parts(u2);
    (x, x2, s, q)
}

/// y = gelu_tanh(x) over equal-length slices.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        let (_, _, s, _) = gelu_parts(xv);
        _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_mul_ps(xv, s));
        patch(special(xv), i, |k| crate::math::gelu_tanh_portable(&x[k..k + 1], &mut y[k..k + 1]));
    }
    crate::math::gelu_tanh_portable(&x[full..n], &mut y[full..n]);
}

/// dx = dy gelu_tanh'(x) over equal-length slices.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_tanh_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        let (xc, x2, s, q) = gelu_parts(xv);
        let b = _mm256_fmadd_ps(x2, _mm256_set1_ps(3.0 * C), _mm256_set1_ps(1.0));
        // s + 2 K x s q b
        let slope = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(xc, _mm256_set1_ps(2.0 * K)), _mm256_mul_ps(s, q)), b);
        let g = _mm256_add_ps(s, slope);
        let dyv = _mm256_loadu_ps(dy.as_ptr().add(i));
        _mm256_storeu_ps(dx.as_mut_ptr().add(i), _mm256_mul_ps(dyv, g));
        patch(special(xv), i, |k| crate::math::gelu_tanh_grad_portable(&x[k..k + 1], &dy[k..k + 1], &mut dx[k..k + 1]));
    }
    crate::math::gelu_tanh_grad_portable(&x[full..n], &dy[full..n], &mut dx[full..n]);
}

/// y = silu(x) = x sigmoid(x) over equal-length slices.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        // sigmoid(x) = 1 / (1 + exp(-x)) is the q of -x's logistic parts; its s is 1 - q.
        let (_, q) = logistic_parts(_mm256_sub_ps(_mm256_setzero_ps(), xv));
        _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_mul_ps(xv, q));
        patch(special(xv), i, |k| crate::math::silu_portable(&x[k..k + 1], &mut y[k..k + 1]));
    }
    crate::math::silu_portable(&x[full..n], &mut y[full..n]);
}

/// dx = dy silu'(x) = dy s (1 + x (1 - s)), s = sigmoid(x).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn silu_grad(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n = x.len().min(dy.len()).min(dx.len());
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        let (one_minus_s, s) = logistic_parts(_mm256_sub_ps(_mm256_setzero_ps(), xv));
        let g = _mm256_mul_ps(s, _mm256_fmadd_ps(xv, one_minus_s, _mm256_set1_ps(1.0)));
        let dyv = _mm256_loadu_ps(dy.as_ptr().add(i));
        _mm256_storeu_ps(dx.as_mut_ptr().add(i), _mm256_mul_ps(dyv, g));
        patch(special(xv), i, |k| crate::math::silu_grad_portable(&x[k..k + 1], &dy[k..k + 1], &mut dx[k..k + 1]));
    }
    crate::math::silu_grad_portable(&x[full..n], &dy[full..n], &mut dx[full..n]);
}

/// Transpose 8 rows of 8 32-bit words: `out[c]` lane `r` is `rows[r]` lane `c`. Interleave
/// 32-bit pairs of rows, then 64-bit pairs, then swap 128-bit halves across four vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn transpose8_words(rows: &[__m256; 8]) -> [__m256; 8] {
    let mut a = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        a[2 * i] = _mm256_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    let mut b = [_mm256_setzero_ps(); 8];
    for j in 0..2 {
        // b[4j + c]: column c (low half) and column 4 + c (high half) of rows 4j..4j+4.
        let (lo, hi) = (a[4 * j], a[4 * j + 1]);
        let (lo2, hi2) = (a[4 * j + 2], a[4 * j + 3]);
        b[4 * j] = _mm256_shuffle_ps::<0x44>(lo, lo2);
        b[4 * j + 1] = _mm256_shuffle_ps::<0xEE>(lo, lo2);
        b[4 * j + 2] = _mm256_shuffle_ps::<0x44>(hi, hi2);
        b[4 * j + 3] = _mm256_shuffle_ps::<0xEE>(hi, hi2);
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(b[c], b[4 + c]);
        out[4 + c] = _mm256_permute2f128_ps::<0x31>(b[c], b[4 + c]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::checks;

    fn cpu_has_it() -> bool {
        let ok = crate::isa::Isa::Avx2.supported();
        if !ok {
            eprintln!("skipped: no AVX2+FMA");
        }
        ok
    }

    /// This module's kernels, for the checks shared with the NEON ones.
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
        if !cpu_has_it() {
            return;
        }
        // SAFETY: `cpu_has_it` found AVX2 and FMA above, all these kernels require.
        unsafe { checks::exp_shift_matches_the_portable_exp(&kernels()) }
    }

    #[test]
    fn exp_shift_row_passes_match_the_portable_ones() {
        if !cpu_has_it() {
            return;
        }
        // SAFETY: as above.
        unsafe { checks::exp_shift_row_passes_match_the_portable_ones(&kernels()) }
    }

    #[test]
    fn activations_match_f64_and_keep_specials() {
        if !cpu_has_it() {
            return;
        }
        // SAFETY: as above.
        unsafe { checks::activations_match_f64_and_keep_specials(&kernels()) }
    }

    #[test]
    fn transpose8_moves_every_word_to_its_mirror() {
        if !cpu_has_it() {
            return;
        }
        let words: Vec<f32> = (0..64).map(|i| i as f32).collect();
        // SAFETY: AVX2 checked above; loads and stores stay in the two 64-word arrays.
        unsafe {
            let rows: [__m256; 8] = std::array::from_fn(|r| _mm256_loadu_ps(words[r * 8..].as_ptr()));
            let mut out = [0f32; 64];
            for (c, v) in transpose8_words(&rows).iter().enumerate() {
                _mm256_storeu_ps(out[c * 8..].as_mut_ptr(), *v);
            }
            for r in 0..8 {
                for c in 0..8 {
                    assert_eq!(out[c * 8 + r], words[r * 8 + c], "row {r} column {c}");
                }
            }
        }
    }
}
