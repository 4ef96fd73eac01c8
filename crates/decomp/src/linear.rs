//! Linear layer y = x w^T + b, as one matmul with a transposed (strided) weight view.
//!
//! bwd: dx = dy w, dw = dy^T x, db = sum_rows(dy)

use crate::prims::{reshaped, swap, Prims};
use anychip_port::{invalid, Result, View};

fn as3(v: &View) -> View {
    let s = v.shape();
    reshaped(v, &[1, s[0], s[1]])
}

pub(crate) fn fwd(k: &Prims, x: &View, w: &View, b: Option<&View>, y: &View) -> Result<()> {
    if x.shape().len() != 2 || w.shape().len() != 2 || x.shape()[1] != w.shape()[1] {
        return invalid(format!("linear: x {:?} with w {:?} (want [N,In] and [Out,In])", x.shape(), w.shape()));
    }
    let (x, w) = (k.f32(x)?, k.f32(w)?);
    let mut out = k.matmul(&as3(&x), &swap(&as3(&w), 1, 2), 1.0)?;
    if let Some(b) = b {
        out = k.add(&out, &k.f32(b)?)?;
    }
    k.store(&out, y)
}

pub(crate) fn bwd(
    k: &Prims,
    x: &View,
    w: &View,
    dy: &View,
    dx: Option<&View>,
    dw: Option<&View>,
    db: Option<&View>,
) -> Result<()> {
    let (x, w, dy) = (k.f32(x)?, k.f32(w)?, k.f32(dy)?);
    if let Some(dx) = dx {
        k.store(&k.matmul(&as3(&dy), &as3(&w), 1.0)?, dx)?;
    }
    if let Some(dw) = dw {
        k.store(&k.matmul(&swap(&as3(&dy), 1, 2), &as3(&x), 1.0)?, dw)?;
    }
    if let Some(db) = db {
        k.store(&k.sum_rows(&dy)?, db)?;
    }
    Ok(())
}
