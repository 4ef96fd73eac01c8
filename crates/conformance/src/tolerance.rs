//! The tolerance policy: one named bound per (op family, dtype), so a port author can see
//! exactly what "close enough" means and why.

use anychip_port::DType;

/// |got - want| <= abs + rel * |want|, per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

impl Tol {
    /// Bit-exact.
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
    /// Whether `got` is within tolerance of `want` (NaN matches NaN, infinities must match).
    pub fn ok(&self, got: f64, want: f64) -> bool {
        if got == want || (got.is_nan() && want.is_nan()) {
            return true;
        }
        if !got.is_finite() || !want.is_finite() {
            return false;
        }
        (got - want).abs() <= self.abs + self.rel * want.abs()
    }
    /// Short form for the report.
    pub fn describe(&self) -> String {
        if *self == Tol::EXACT {
            "exact".into()
        } else {
            format!("{:.0e}+{:.0e}|x|", self.abs, self.rel)
        }
    }
}

/// Rounding unit of a dtype's storage (the best any port can do on one rounding).
fn unit(dt: DType) -> f64 {
    match dt {
        DType::F32 => f32::EPSILON as f64,
        DType::BF16 => 1.0 / 128.0,
        DType::I32 => 0.0,
    }
}

/// Tolerance for an op family on a dtype. `k` is the length of the longest accumulation
/// (reduce length, matmul inner size), since summation error grows with it.
pub fn for_op(op: &str, dt: DType, k: usize) -> Tol {
    let u = unit(dt);
    match op {
        // Data movement, selection, comparison and index ops have one right answer.
        "fill" | "copy_strided" | "select" | "compare" | "gather_rows" | "random_uniform" => Tol::EXACT,
        // Casts round once (to nearest even).
        "cast" => Tol::EXACT,
        // Exactly rounded in IEEE arithmetic.
        "neg" | "abs" | "add" | "sub" | "mul" | "div" | "max" | "min" | "sqrt" => Tol { abs: 0.0, rel: u },
        // Transcendentals: a few ulps (vectorised exp/tanh/erf differ from libm).
        "exp" | "log" | "tanh" | "erf" | "recip" | "random_normal" => Tol { abs: 4.0 * u, rel: 8.0 * u },
        // Accumulations: f32 accumulation error grows like sqrt(k) ulps on random data.
        "reduce_sum" | "matmul" | "scatter_add_rows" => {
            let g = (k.max(1) as f64).sqrt();
            Tol { abs: 4.0 * g * u.max(f32::EPSILON as f64), rel: 4.0 * g * u.max(f32::EPSILON as f64) }
        }
        // bf16 operands, f32 output: a bf16 x bf16 product is exact in f32, so ports differ only
        // in how they sum the same products (f32 accumulation in any order, or the oracle's
        // f64): the f32 matmul bound, whatever the operand dtype.
        "matmul_bf16_f32" => for_op("matmul", DType::F32, k),
        "reduce_max" => Tol::EXACT,
        // Composites chain several roundings and accumulations.
        _ => match dt {
            DType::BF16 => Tol { abs: 2e-2, rel: 2e-2 },
            _ => Tol { abs: 5e-5, rel: 5e-5 },
        },
    }
}
