//! matmul: out[b] = alpha * a[b] @ b[b] + beta * out[b], accumulated in f64.
//!
//! out[b,m,n] = alpha * sum_k a[b,m,k] * b[b,k,n] + beta * out[b,m,n]. Every operand is loaded
//! in row-major order of its shape, so transposes and batch broadcast (stride 0) are handled
//! by the view walk and need no special case here.

use crate::memory::{check_view, load, store};
use anychip_port::{Result, View};

/// Batched matrix multiply; a:[B,M,K], b:[B,K,N], out:[B,M,N].
pub fn matmul(a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
    for (name, v) in [("a", a), ("b", b), ("out", out)] {
        check_view(&format!("matmul {name}"), v)?;
    }
    let (bt, m, k, n) = anychip_port::check::matmul(a, b, out)?;
    let (av, bv) = (load("matmul a", a)?, load("matmul b", b)?);
    // With beta = 0 out is never read, so garbage (even NaN) in it cannot leak into the result.
    let ov = if beta != 0.0 { load("matmul out", out)? } else { vec![0.0; out.numel()] };
    let (alpha, beta) = (alpha as f64, beta as f64);
    let mut y = vec![0.0f64; out.numel()];
    for p in 0..bt {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for q in 0..k {
                    acc += av[(p * m + i) * k + q] * bv[(p * k + q) * n + j];
                }
                let o = (p * m + i) * n + j;
                y[o] = if beta != 0.0 { alpha * acc + beta * ov[o] } else { alpha * acc };
            }
        }
    }
    store("matmul out", out, &y)
}
