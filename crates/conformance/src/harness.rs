//! Host-side plumbing shared by the levels: deterministic data, uploads to any port with any
//! layout, read-back through a layout, and element-wise comparison into a report row.

use crate::report::{Level, Row, Status};
use crate::tolerance::Tol;
use anychip_port::{bf16_to_f32, f32_to_bf16, philox, DType, Layout, Port, PortError, View};

/// NaN, infinities and signed zeros, placed at the front of special-value inputs.
pub const SPECIALS: [f32; 6] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0];

/// `n` values in [-scale, scale) from the Philox stream `seed`.
pub fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (philox::uniform(seed, i as u64) * 2.0 - 1.0) * scale).collect()
}

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
        let mut storage = data(layout.numel(), seed, 3.0);
        if specials {
            for (x, s) in storage.iter_mut().zip(SPECIALS) {
                *x = s;
            }
        }
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
        let bytes = encode(&self.storage, self.dtype);
        let buf = p.alloc(bytes.len().max(self.dtype.size()))?;
        p.write(&buf, 0, &bytes)?;
        Ok(View { buf, dtype: self.dtype, layout: self.layout.clone() })
    }
}

fn encode(v: &[f32], dt: DType) -> Vec<u8> {
    match dt {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => v.iter().flat_map(|&x| f32_to_bf16(x).to_le_bytes()).collect(),
        DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
    }
}

/// The elements of `v` in row-major order, as f64.
pub fn read(p: &dyn Port, v: &View) -> Result<Vec<f64>, PortError> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    p.read(&v.buf, 0, &mut bytes)?;
    let s = v.dtype.size();
    Ok(v.layout
        .indices()
        .map(|i| {
            let c = &bytes[i * s..i * s + s];
            match v.dtype {
                DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::BF16 => bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
                DType::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            }
        })
        .collect())
}

/// Compare `got` with `want` under `tol` into a report row.
pub fn compare(level: Level, op: &str, dt: DType, case: &str, got: &[f64], want: &[f64], tol: Tol) -> Row {
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
        if bad.is_none() && !tol.ok(*g, *w) {
            bad = Some(format!("element {i}: got {g}, want {w}"));
        }
    }
    Row {
        level,
        op: op.into(),
        dtype: dt.name().into(),
        case: case.into(),
        max_abs_err: max_abs,
        max_rel_err: if max_rel.is_finite() { max_rel } else { f64::MAX },
        tolerance: tol.describe(),
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
