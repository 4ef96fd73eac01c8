//! Batched matrix multiply with NumPy batch broadcasting.

use crate::error::{shape_err, Result};
use crate::shape::broadcast_shape;
use crate::tensor::{dtype_err, Tensor};
use anychip_port::{Layout, View};

/// Collapse a `[batch..., r, c]` tensor into a rank-3 port view `[B, r, c]` when the batch
/// axes can be walked with one stride (contiguous batch, or fully broadcast); else copy.
fn as_batched(t: &Tensor, batch: &[usize]) -> Result<View> {
    let r = t.rank();
    let (rows, cols) = (t.shape()[r - 2], t.shape()[r - 1]);
    let mut full = batch.to_vec();
    full.extend([rows, cols]);
    let e = t.detach().expand(&full)?;
    let l = e.layout();
    let nb = batch.len();
    let b: usize = batch.iter().product();
    // One batch, or every batch the same matrix (stride 0): walked with stride 0.
    let stride = if nb == 0 || b <= 1 || l.strides[..nb].iter().all(|&s| s == 0) {
        Some(0)
    } else {
        // Walkable with one stride when each batch axis steps exactly over the ones after it.
        let s = l.strides[nb - 1];
        let ok = (0..nb - 1).all(|i| l.strides[i] == l.strides[i + 1] * l.shape[i + 1]);
        ok.then_some(s)
    };
    match stride {
        Some(s) => Ok(View {
            buf: e.buffer().clone(),
            dtype: e.dtype(),
            layout: Layout {
                shape: vec![b, rows, cols],
                strides: vec![s, l.strides[nb], l.strides[nb + 1]],
                offset: l.offset,
            },
        }),
        None => {
            let c = e.contiguous()?;
            let mut v = c.view();
            v.layout =
                Layout { shape: vec![b, rows, cols], strides: vec![rows * cols, cols, 1], offset: c.layout().offset };
            Ok(v)
        }
    }
}

impl Tensor {
    /// Matrix product over the last two axes, broadcasting leading axes (f32 accumulation).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        if self.rank() < 2 || other.rank() < 2 {
            return shape_err("matmul", format!("needs rank >= 2, got {:?} and {:?}", self.shape(), other.shape()));
        }
        if self.dtype() != other.dtype() {
            return Err(dtype_err("matmul", format!("{} and {}", self.dtype(), other.dtype())));
        }
        let (m, k) = (self.dim(-2), self.dim(-1));
        let (k2, n) = (other.dim(-2), other.dim(-1));
        if k != k2 {
            return shape_err(
                "matmul",
                format!("{:?} @ {:?}: inner sizes {k} and {k2} differ", self.shape(), other.shape()),
            );
        }
        let batch = broadcast_shape("matmul", &self.shape()[..self.rank() - 2], &other.shape()[..other.rank() - 2])?;
        let mut shape = batch.clone();
        shape.extend([m, n]);
        let out = self.empty_on(&shape, self.dtype())?;
        let b: usize = batch.iter().product();
        let mut ov = out.view();
        ov.layout = Layout::contiguous(&[b, m, n]);
        self.port().matmul(&as_batched(self, &batch)?, &as_batched(other, &batch)?, &ov, 1.0, 0.0)?;
        let (a, bt) = (self.detach(), other.detach());
        Ok(out.record("matmul", &[self, other], move |g, needs| {
            // dA = dC B^T, dB = A^T dC, then sum over broadcast batch axes.
            let da = if needs[0] { Some(g.matmul(&bt.transpose(-1, -2)?)?.sum_to(a.shape())?) } else { None };
            let db = if needs[1] { Some(a.transpose(-1, -2)?.matmul(g)?.sum_to(bt.shape())?) } else { None };
            Ok(vec![da, db])
        }))
    }
}
