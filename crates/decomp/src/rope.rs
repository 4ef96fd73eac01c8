//! Rotary position embedding, rotate-half convention, written straight into the two halves
//! of the output (strided views, no copies).
//!
//! fwd: y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin
//! bwd (the inverse rotation): dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos - dy1 sin

use crate::prims::{bcast, Prims};
use anychip_port::{invalid, Result, View};

/// Rotate `x` by the angle whose cos/sin are given; `sign` = -1 rotates backwards.
fn rotate(k: &Prims, x: &View, cos: &View, sin: &View, y: &View, sign: f64) -> Result<()> {
    let s = x.shape().to_vec();
    if s.len() != 4 || s[3] % 2 != 0 || cos.shape() != [s[2], s[3] / 2] {
        return invalid(format!("rope: x {s:?} with cos {:?} (want [B,H,T,D] and [T,D/2])", cos.shape()));
    }
    let h = s[3] / 2;
    let x = k.f32(x)?;
    let (x1, x2) = (x.narrow(3, 0, h), x.narrow(3, h, h));
    let half = [s[0], s[1], s[2], h];
    let (c, sn) = (bcast(&k.f32(cos)?, &half), bcast(&k.mulc(&k.f32(sin)?, sign)?, &half));
    // y1 = x1 c - x2 s ; y2 = x2 c + x1 s
    let y1 = k.sub(&k.mul(&x1, &c)?, &k.mul(&x2, &sn)?)?;
    let y2 = k.add(&k.mul(&x2, &c)?, &k.mul(&x1, &sn)?)?;
    for (src, start) in [(y1, 0), (y2, h)] {
        let dst = y.narrow(3, start, h);
        if dst.dtype == src.dtype {
            k.0.copy_strided(&src, &dst)?;
        } else {
            k.0.cast(&src, &dst)?;
        }
    }
    Ok(())
}

pub(crate) fn fwd(k: &Prims, x: &View, cos: &View, sin: &View, y: &View) -> Result<()> {
    rotate(k, x, cos, sin, y, 1.0)
}

pub(crate) fn bwd(k: &Prims, dy: &View, cos: &View, sin: &View, dx: &View) -> Result<()> {
    rotate(k, dy, cos, sin, dx, -1.0)
}
