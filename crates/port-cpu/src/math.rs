//! Vectorisable f32 exp, and the activations built on it.
//!
//! std's `f32::exp` is a call into libm per element, which the compiler cannot vectorise; the
//! softmax over a 50257-word vocabulary does two of them per logit. This version (Cephes'
//! expf polynomial, about 1 ulp on the reduced range) is straight-line code, so loops over
//! slices of it compile to SIMD on any x86-64 baseline.

/// exp(x) to about 2 ulp; +inf -> inf, -inf and x < -87.3 -> 0 (subnormals flush), NaN -> NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts so n * C1 is exact and r keeps full precision.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer with SSE2 alone.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * C1 - n * C2;
    // exp(r) on |r| <= ln2/2.
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let y = e * scale;
    if x > 88.72 {
        f32::INFINITY
    } else if x < -87.3 {
        0.0
    } else {
        y
    }
}

/// tanh(x) = 1 - 2 / (exp(2x) + 1): saturates cleanly to +-1 and keeps NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// The logistic sigmoid 1 / (1 + exp(-x)).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }
    #[test]
    fn tanh_saturates() {
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!((tanh(0.5) - 0.5f32.tanh()).abs() < 1e-6);
    }
}
