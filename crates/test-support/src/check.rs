//! Element-wise checks with named tolerances. NaN matches NaN; infinities must match exactly.

use anychip_port::DType;

/// |got - want| <= abs + rel * |want|, per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    /// Equal values only (NaN equals NaN; the sign of zero is not checked).
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
    /// Elementwise f32 math: a few ulp between two libm implementations.
    pub const F32_ELEM: Tol = Tol { abs: 1e-6, rel: 4e-6 };
    /// f32 sums of up to ~1000 terms against f64 accumulation.
    pub const F32_SUM: Tol = Tol { abs: 1e-4, rel: 1e-5 };
    /// f32 matmul (gemm blocks the K sum differently from the oracle's f64 dot product).
    pub const F32_MATMUL: Tol = Tol { abs: 1e-4, rel: 1e-4 };
    /// Composite kernels (exp polynomial, f32 row statistics) against f64 math.
    pub const F32_FUSED: Tol = Tol { abs: 2e-5, rel: 1e-4 };
    /// bf16 outputs computed in f32: the two sides' roundings may land one bf16 step apart.
    pub const BF16: Tol = Tol { abs: 1e-5, rel: 8e-3 };
    /// bf16 results of sums over bf16-rounded inputs, against f64 math on the unrounded
    /// inputs: the inputs' own rounding (2^-9 relative each) reaches the result through the
    /// sum, so this is a bound on the op's sensitivity, not on the port.
    pub const BF16_SUM: Tol = Tol { abs: 2e-2, rel: 2e-2 };

    /// Whether `got` is within tolerance of `want`.
    pub fn ok(&self, got: f64, want: f64) -> bool {
        Tol::within(got, want, self.abs + self.rel * want.abs())
    }

    /// Whether `got` is within `bound` of `want` (NaN matches NaN, infinities must match).
    pub fn within(got: f64, want: f64, bound: f64) -> bool {
        if got == want || (got.is_nan() && want.is_nan()) {
            return true;
        }
        got.is_finite() && want.is_finite() && (got - want).abs() <= bound
    }

    /// Short form for reports: `exact` or `abs+rel|x|`.
    pub fn describe(&self) -> String {
        if *self == Tol::EXACT {
            "exact".into()
        } else {
            format!("{:.0e}+{:.0e}|x|", self.abs, self.rel)
        }
    }
}

/// Tolerance for an output of `dtype`: `f32_tol` when it is F32, else [`Tol::BF16`].
pub fn tol_for(dtype: DType, f32_tol: Tol) -> Tol {
    if dtype == DType::BF16 {
        Tol::BF16
    } else {
        f32_tol
    }
}

/// Panic with the first element of `got` that is not within `tol` of `want`.
pub fn assert_close<G: Copy + Into<f64>, W: Copy + Into<f64>>(what: &str, got: &[G], want: &[W], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w): (f64, f64) = (g.into(), w.into());
        assert!(tol.ok(g, w), "{what}: element {i}: got {g:e}, want {w:e} (tolerance {})", tol.describe());
    }
}

/// Bit-exact comparison that also tells -0 from +0 (any NaN matches any NaN).
pub fn assert_same(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length: got {got:?} want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(same, "element {i}: got {g:?} want {w:?} (all: got {got:?} want {want:?})");
    }
}

/// Assert an `Invalid` error whose message mentions `needle`.
pub fn assert_invalid<T: std::fmt::Debug>(r: anychip_port::Result<T>, needle: &str) {
    match r {
        Err(anychip_port::PortError::Invalid(m)) => assert!(m.contains(needle), "message {m:?} lacks {needle:?}"),
        other => panic!("expected Invalid mentioning {needle:?}, got {other:?}"),
    }
}
