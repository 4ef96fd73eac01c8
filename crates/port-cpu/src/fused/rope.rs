//! Rotary position embedding, rotate-half convention, forward and backward in one kernel.
//!
//! Forward with x1 = x[..., :h], x2 = x[..., h:], h = Dh / 2 and angle tables for position t:
//!   y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin.
//! The backward is the inverse rotation (sin -> -sin), so `sign` = -1 selects it.

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
    let (xr, yr, cr, sr) = (raw(x)?, raw(y)?, raw(cos)?, raw(sin)?);
    let alias = xr.id == yr.id;
    let (x0, y0, c0, s0) = (x.layout.offset, y.layout.offset, cos.layout.offset, sin.layout.offset);
    par_rows(x.numel() / dh.max(1), dh, |sc, r| {
        let pos = r % t;
        let [a, b, c, d] = &mut sc.0;
        // SAFETY: in bounds; row r of y belongs to this task; aliased x is copied.
        unsafe {
            let xs = if alias { super::softmax::copy_row(xr, x0 + r * dh, dh, a) } else { row(xr, x0 + r * dh, dh, a) };
            let co = row(cr, c0 + pos * h, h, c);
            let si = row(sr, s0 + pos * h, h, d);
            let ys = row_mut(yr, y0 + r * dh, dh, b);
            for i in 0..h {
                let (x1, x2, cv, sv) = (xs[i], xs[i + h], co[i], sign * si[i]);
                ys[i] = x1 * cv - x2 * sv;
                ys[i + h] = x2 * cv + x1 * sv;
            }
            finish_row(yr, y0 + r * dh, ys);
        }
    });
    Ok(Handled::Yes)
}
