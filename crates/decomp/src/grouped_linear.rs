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

use crate::prims::Prims;
use anychip_port::{check, Composite, Result, View};

pub(crate) fn fwd(k: &Prims, x: &View, ws: &[View], offsets: &[usize], y: &View) -> Result<()> {
    check::grouped_linear(x, ws, offsets, y, None, None)?;
    for (e, start, n) in check::groups(offsets) {
        let call =
            Composite::LinearFwd { x: x.narrow(0, start, n), w: ws[e].clone(), b: None, y: y.narrow(0, start, n) };
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
    for dw in check::empty_group_grads(offsets, dws) {
        k.0.fill(dw, 0.0)?;
    }
    for (e, start, n) in check::groups(offsets) {
        if dx.is_none() && dws[e].is_none() {
            continue;
        }
        let call = Composite::LinearBwd {
            x: x.narrow(0, start, n),
            w: ws[e].clone(),
            dy: dy.narrow(0, start, n),
            dx: dx.map(|d| d.narrow(0, start, n)),
            dw: dws[e].clone(),
            db: None,
        };
        crate::dispatch(k.0, &call)?;
    }
    Ok(())
}
