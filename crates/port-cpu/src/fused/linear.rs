//! linear: y = x w^T + b, and its gradients, as strided gemm calls (no transposed copies).
//!
//! Forward: y is first set to the broadcast bias, then y = 1 x w^T + 1 y (one gemm pass).
//! Backward: dx = dy w; dw = dy^T x; db = sum_rows dy (the leading-axis reduce fast path).

use crate::prim::{
    matmul::{matmul, matmul_serial},
    movement::cast,
    reduce::reduce,
};
use anychip_port::{invalid, Handled, Layout, ReduceOp, Result, View};

/// `v` as a rank-3 [1, rows, cols] matrix (rows: leading axes flattened), or its transpose.
fn mat(v: &View, transpose: bool) -> Result<View> {
    let cols = v.shape().last().copied().unwrap_or(1);
    let rows = v.numel().checked_div(cols).unwrap_or(0);
    let (rs, cs) = match v.shape().len() {
        0 => (1, 1),
        1 => (cols, 1),
        _ if v.layout.is_contiguous() => (cols, 1),
        2 => (v.layout.strides[0], v.layout.strides[1]),
        _ => {
            return invalid(format!("linear operand {:?} must be contiguous when it has more than two axes", v.shape()))
        }
    };
    let layout = if transpose {
        Layout { shape: vec![1, cols, rows], strides: vec![0, cs, rs], offset: v.layout.offset }
    } else {
        Layout { shape: vec![1, rows, cols], strides: vec![0, rs, cs], offset: v.layout.offset }
    };
    Ok(View { layout, ..v.clone() })
}

/// y = x w^T + b.
pub fn fwd(x: &View, w: &View, b: Option<&View>, y: &View) -> Result<Handled> {
    let (xm, wt, ym) = (mat(x, false)?, mat(w, true)?, mat(y, false)?);
    let beta = match b {
        Some(b) => {
            let (rows, out) = (ym.shape()[1], ym.shape()[2]);
            if b.numel() != out {
                return invalid(format!("linear bias has {} elements, expected {out}", b.numel()));
            }
            let bias = View {
                layout: Layout { shape: vec![1, rows, out], strides: vec![0, 0, 1], offset: b.layout.offset },
                ..b.clone()
            };
            cast(&bias, &ym)?;
            1.0
        }
        None => 0.0,
    };
    matmul(&xm, &wt, &ym, 1.0, beta)?;
    Ok(Handled::Yes)
}

/// The product on the pool (`parallel`, a lone linear's) or on this thread alone (one of a
/// grouped linear's products that run at once); either gives the same bits.
fn product(a: &View, b: &View, out: &View, parallel: bool) -> Result<()> {
    if parallel {
        matmul(a, b, out, 1.0, 0.0)
    } else {
        matmul_serial(a, b, out, 1.0, 0.0)
    }
}

/// y = x w^T, no bias.
pub fn y_product(x: &View, w: &View, y: &View, parallel: bool) -> Result<()> {
    product(&mat(x, false)?, &mat(w, true)?, &mat(y, false)?, parallel)
}

/// dx = dy w.
pub fn dx_product(dy: &View, w: &View, dx: &View, parallel: bool) -> Result<()> {
    product(&mat(dy, false)?, &mat(w, false)?, &mat(dx, false)?, parallel)
}

/// dw = dy^T x.
pub fn dw_product(dy: &View, x: &View, dw: &View, parallel: bool) -> Result<()> {
    product(&mat(dy, true)?, &mat(x, false)?, &mat(dw, false)?, parallel)
}

/// dx = dy w, dw = dy^T x, db = sum_rows dy; each only when asked for.
pub fn bwd(x: &View, w: &View, dy: &View, dx: Option<&View>, dw: Option<&View>, db: Option<&View>) -> Result<Handled> {
    let dym = mat(dy, false)?;
    if let Some(dx) = dx {
        dx_product(dy, w, dx, true)?;
    }
    if let Some(dw) = dw {
        dw_product(dy, x, dw, true)?;
    }
    if let Some(db) = db {
        let out = dym.shape()[2];
        let db2 = View {
            layout: Layout { shape: vec![1, 1, out], strides: vec![0, out, 1], offset: db.layout.offset },
            ..db.clone()
        };
        if db.numel() != out || !db.layout.is_contiguous() {
            return invalid(format!("linear bias gradient must be a contiguous [{out}] tensor"));
        }
        reduce(ReduceOp::Sum, &dym, &db2)?;
    }
    Ok(Handled::Yes)
}
