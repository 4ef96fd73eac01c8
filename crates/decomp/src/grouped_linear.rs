//! Grouped linear (a mixture-of-experts layer's expert products over expert-sorted rows): one
//! `linear` per group on its rows of the shared buffers.
//!
//! fwd, for group e with rows r_e = offsets[e]..offsets[e+1]: y[r_e] = x[r_e] ws[e]^T.
//! bwd: dx[r_e] = dy[r_e] ws[e], dws[e] = dy[r_e]^T x[r_e] (zero for an empty group).
//!
//! Each group runs as a `LinearFwd`/`LinearBwd` composite on row views of x, y, dy and dx
//! (through [`crate::dispatch`], so a port that fuses `linear` but not `grouped_linear` runs its
//! own linear kernel per group), exactly what `moe_experts` did before this composite existed:
//! no per-group copy, no zero-filled gradient for an expert without rows unless one is asked for.

use crate::prims::{narrow, Prims};
use anychip_port::{check, Composite, Result, View};

pub(crate) fn fwd(k: &Prims, x: &View, ws: &[View], offsets: &[usize], y: &View) -> Result<()> {
    check::grouped_linear(x, ws, offsets, y, None, None)?;
    for (e, start, n) in check::groups(offsets) {
        let call =
            Composite::LinearFwd { x: narrow(x, 0, start, n), w: ws[e].clone(), b: None, y: narrow(y, 0, start, n) };
        crate::dispatch(k.0, &call)?;
    }
    Ok(())
}

pub(crate) fn bwd(
    k: &Prims,
    x: &View,
    ws: &[View],
    dy: &View,
    offsets: &[usize],
    dx: Option<&View>,
    dws: &[Option<View>],
) -> Result<()> {
    check::grouped_linear(x, ws, offsets, dy, dx, Some(dws))?;
    for (e, w) in offsets.windows(2).enumerate() {
        let n = w[1] - w[0];
        if n == 0 {
            if let Some(dw) = &dws[e] {
                k.0.fill(dw, 0.0)?;
            }
            continue;
        }
        if dx.is_none() && dws[e].is_none() {
            continue;
        }
        let call = Composite::LinearBwd {
            x: narrow(x, 0, w[0], n),
            w: ws[e].clone(),
            dy: narrow(dy, 0, w[0], n),
            dx: dx.map(|d| narrow(d, 0, w[0], n)),
            dw: dws[e].clone(),
            db: None,
        };
        crate::dispatch(k.0, &call)?;
    }
    Ok(())
}
