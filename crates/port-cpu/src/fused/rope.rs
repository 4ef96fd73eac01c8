//! Rotary position embedding, rotate-half convention, forward and backward in one kernel.
//!
//! Forward with x1 = x[..., :h], x2 = x[..., h:], h = Dh / 2 and angle tables for position t:
//!   y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin.
//! The backward is the inverse rotation (sin -> -sin), so `sign` = -1 selects it. x and y may be
//! strided `[B,H,T,Dh]` views (heads of a fused QKV tensor) as long as each row is unit-stride.

use super::{floats, par_rows};
use crate::elem::{finish_row, raw, row, row_mut};
use anychip_port::{invalid, Handled, Result, View};

/// y = rotate(x) with sin scaled by `sign` (+1 forward, -1 backward).
pub fn rope(x: &View, cos: &View, sin: &View, y: &View, sign: f32) -> Result<Handled> {
    if !floats(&[x, cos, sin, y]) {
        return Ok(Handled::No);
    }
    let s = x.shape();
    if s.len() != 4 || !s[3].is_multiple_of(2) || y.shape() != s {
        return invalid(format!("rope wants x and y of shape [B,H,T,Dh] with even Dh, got {s:?} and {:?}", y.shape()));
    }
    let (t, dh) = (s[2], s[3]);
    let h = dh / 2;
    if cos.shape() != [t, h] || sin.shape() != [t, h] {
        return invalid(format!(
            "rope tables must be [T, Dh/2] = [{t}, {h}], got {:?} and {:?}",
            cos.shape(),
            sin.shape()
        ));
    }
    // Rows of Dh must be unit-stride (heads of a fused QKV tensor are); the tables contiguous.
    let unit = |v: &View| dh <= 1 || v.layout.strides[3] == 1;
    if !unit(x) || !unit(y) || !cos.layout.is_contiguous() || !sin.layout.is_contiguous() {
        return Ok(Handled::No);
    }
    let (xr, yr, cr, sr) = (raw(x)?, raw(y)?, raw(cos)?, raw(sin)?);
    let alias = xr.id == yr.id;
    let (c0, s0) = (cos.layout.offset, sin.layout.offset);
    // Element index of row r = (b, head, t) of a [B,H,T,Dh] view.
    let at = |v: &View, r: usize| {
        let (l, n) = (&v.layout, v.shape());
        let (t_, rest) = (r % n[2], r / n[2]);
        l.offset + (rest / n[1]) * l.strides[0] + (rest % n[1]) * l.strides[1] + t_ * l.strides[2]
    };
    par_rows(x.numel() / dh.max(1), dh, |sc, r| {
        let pos = r % t;
        let [a, b, c, d] = &mut sc.0;
        let (xa, ya) = (at(x, r), at(y, r));
        // SAFETY: in bounds; row r of y belongs to this task; aliased x is copied.
        unsafe {
            let xs = if alias { super::softmax::copy_row(xr, xa, dh, a) } else { row(xr, xa, dh, a) };
            let co = row(cr, c0 + pos * h, h, c);
            let si = row(sr, s0 + pos * h, h, d);
            let ys = row_mut(yr, ya, dh, b);
            for i in 0..h {
                let (x1, x2, cv, sv) = (xs[i], xs[i + h], co[i], sign * si[i]);
                ys[i] = x1 * cv - x2 * sv;
                ys[i + h] = x2 * cv + x1 * sv;
            }
            finish_row(yr, ya, ys);
        }
    });
    Ok(Handled::Yes)
}
