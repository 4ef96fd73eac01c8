//! reduce: sum or max over the axes where `out` has extent 1 and `x` does not.
//!
//! out[j] = sum_{i maps to j} x[i] accumulated in f64 (exact for any realistic length of f32
//! inputs up to the final rounding), or the IEEE maximum with NaN propagation, -inf when empty.

use crate::elementwise::maximum;
use crate::memory::{check_view, load, store};
use anychip_port::{ReduceOp, Result, View};

/// Reduce `x` into `out` (equal rank; each out extent equals x's or is 1).
pub fn reduce(op: ReduceOp, x: &View, out: &View) -> Result<()> {
    check_view("reduce x", x)?;
    check_view("reduce out", out)?;
    anychip_port::check::reduce(x, out)?;
    let (xs, os) = (x.shape(), out.shape());
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Max => f64::NEG_INFINITY,
    };
    let mut acc = vec![init; out.numel()];
    let vals = load("reduce x", x)?;
    let mut coord = vec![0usize; xs.len()];
    for v in vals {
        // Row-major index into out of x's current coordinate, with reduced axes pinned at 0.
        let j = (0..xs.len()).fold(0, |j, d| j * os[d] + if os[d] == 1 { 0 } else { coord[d] });
        acc[j] = match op {
            ReduceOp::Sum => acc[j] + v,
            ReduceOp::Max => maximum(acc[j], v),
        };
        for d in (0..xs.len()).rev() {
            coord[d] += 1;
            if coord[d] < xs[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    store("reduce out", out, &acc)
}
