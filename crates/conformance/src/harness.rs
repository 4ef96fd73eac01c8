//! Host-side plumbing shared by the levels: deterministic data, uploads to any port with any
//! layout, read-back through a layout, and element-wise comparison into a report row.

use crate::report::{Level, Row, Status};
use crate::tolerance::{Bound, Tol};
use anychip_port::{DType, Layout, Port, PortError, View};
use anychip_test_support::{transfer, with_specials};

pub use anychip_test_support::data::philox_values as data;

/// A host description of a view: storage values plus how the view walks them.
#[derive(Clone, Debug)]
pub struct HostView {
    pub storage: Vec<f32>,
    pub dtype: DType,
    pub layout: Layout,
}

impl HostView {
    /// Contiguous `shape` filled from `seed`, with the special values first when asked.
    pub fn random(shape: &[usize], dtype: DType, seed: u64, specials: bool) -> HostView {
        let layout = Layout::contiguous(shape);
        let storage = data(layout.numel(), seed, 3.0);
        let storage = if specials { with_specials(storage) } else { storage };
        HostView { storage, dtype, layout }
    }
    /// Integer data (I32 storage) from a slice.
    pub fn ints(v: &[i32]) -> HostView {
        HostView {
            storage: v.iter().map(|&x| x as f32).collect(),
            dtype: DType::I32,
            layout: Layout::contiguous(&[v.len()]),
        }
    }
    /// Same storage, another layout (a transposed, sliced or broadcast view).
    pub fn with_layout(&self, layout: Layout) -> HostView {
        HostView { layout, ..self.clone() }
    }
    /// Upload the storage and return the view on `p`.
    pub fn upload(&self, p: &dyn Port) -> Result<View, PortError> {
        transfer::upload(p, &self.storage, self.dtype, self.layout.clone())
    }
}

/// The elements of `v` in row-major order, as f64.
pub use transfer::download as read;

/// Compare `got` with `want` under `tol` into a report row.
pub fn compare(level: Level, op: &str, dt: DType, case: &str, got: &[f64], want: &[f64], tol: Tol) -> Row {
    compare_bounded(level, op, dt, case, got, want, Bound::Fixed(tol), &[])
}

/// Compare `got` with `want` under `bound` into a report row; `magnitudes` holds, for a
/// [`Bound::Accumulation`] or [`Bound::Rounded`], each element's sum of absolute terms (a
/// missing one fails).
#[allow(clippy::too_many_arguments)]
pub fn compare_bounded(
    level: Level,
    op: &str,
    dt: DType,
    case: &str,
    got: &[f64],
    want: &[f64],
    bound: Bound,
    magnitudes: &[f64],
) -> Row {
    let (mut max_abs, mut max_rel, mut bad) = (0.0f64, 0.0f64, None);
    if got.len() != want.len() {
        bad = Some(format!("{} elements, want {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.is_finite() && w.is_finite() {
            let a = (g - w).abs();
            max_abs = max_abs.max(a);
            max_rel = max_rel.max(a / w.abs().max(1e-30));
        }
        let (ok, allowed) = match bound {
            Bound::Fixed(t) => (t.ok(*g, *w), t.abs + t.rel * w.abs()),
            Bound::Accumulation { rel, per_magnitude, .. } => {
                let m = magnitudes.get(i).copied().unwrap_or(f64::NAN);
                let allowed = rel * w.abs() + per_magnitude * m;
                (Tol::within(*g, *w, allowed), allowed)
            }
            Bound::Rounded { tol, per_magnitude } => {
                let m = magnitudes.get(i).copied().unwrap_or(f64::NAN);
                let allowed = tol.abs + tol.rel * w.abs() + per_magnitude * m;
                (Tol::within(*g, *w, allowed), allowed)
            }
        };
        if bad.is_none() && !ok {
            bad = Some(format!("element {i}: got {g}, want {w} (allowed +-{allowed:.3e})"));
        }
    }
    Row {
        level,
        op: op.into(),
        dtype: dt.name().into(),
        case: case.into(),
        max_abs_err: max_abs,
        max_rel_err: if max_rel.is_finite() { max_rel } else { f64::MAX },
        tolerance: bound.describe(),
        status: if bad.is_some() { Status::Fail } else { Status::Pass },
        note: bad.unwrap_or_default(),
    }
}

/// A row for a call that returned an error: `unsupported` for PortError::Unsupported, else a failure.
pub fn error_row(level: Level, op: &str, dt: DType, case: &str, e: &PortError) -> Row {
    let status = if matches!(e, PortError::Unsupported(_)) { Status::Unsupported } else { Status::Fail };
    Row {
        level,
        op: op.into(),
        dtype: dt.name().into(),
        case: case.into(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tolerance: "-".into(),
        status,
        note: e.to_string(),
    }
}

/// A plain pass/fail row without numeric errors.
pub fn check_row(level: Level, op: &str, case: &str, ok: bool, note: String) -> Row {
    Row {
        level,
        op: op.into(),
        dtype: "-".into(),
        case: case.into(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tolerance: "exact".into(),
        status: if ok { Status::Pass } else { Status::Fail },
        note,
    }
}

/// Whether the port can store and compute in `dt` (else the check is reported unsupported).
pub fn supports(p: &dyn Port, dt: DType) -> bool {
    let c = p.capabilities();
    c.storage.contains(&dt) && (dt == DType::I32 || c.arithmetic.contains(&dt))
}
