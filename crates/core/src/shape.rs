//! View ops: reshape, permute, narrow, expand, contiguous and cat. All but `contiguous` and
//! `cat` only change the layout; their backward passes undo the layout change.

use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;
use anychip_port::Layout;

impl Tensor {
    /// Same data in row-major order (copies only when the layout is not already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout().is_contiguous() {
            return Ok(self.clone());
        }
        let out = self.empty_like()?;
        self.port().copy_strided(&self.view(), &out.view())?;
        Ok(out.record("contiguous", &[self], |g, _| Ok(vec![Some(g.clone())])))
    }

    /// Reinterpret as `shape` (one entry may be -1); copies first if not contiguous.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let shape = resolve_shape(self.numel(), shape)?;
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let src = self.contiguous()?;
        let mut layout = Layout::contiguous(&shape);
        layout.offset = src.layout().offset;
        let in_shape: Vec<isize> = self.shape().iter().map(|&d| d as isize).collect();
        Ok(src.with_layout(layout).record("reshape", &[&src], move |g, _| Ok(vec![Some(g.reshape(&in_shape)?)])))
    }

    /// Reorder axes: output axis i is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..r).collect::<Vec<_>>() {
            return shape_err("permute", format!("{perm:?} is not a permutation of 0..{r}"));
        }
        let l = self.layout();
        let layout = Layout {
            shape: perm.iter().map(|&p| l.shape[p]).collect(),
            strides: perm.iter().map(|&p| l.strides[p]).collect(),
            offset: l.offset,
        };
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(self.with_layout(layout).record("permute", &[self], move |g, _| Ok(vec![Some(g.permute(&inv)?)])))
    }

    /// Swap two axes (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(self.axis(a), self.axis(b));
        self.permute(&perm)
    }

    /// Elements `start..start+len` along `axis`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let ax = self.axis(axis);
        if ax >= self.rank() || start + len > self.shape()[ax] {
            return shape_err("narrow", format!("{start}..{} on axis {ax} of {:?}", start + len, self.shape()));
        }
        let mut layout = self.layout().clone();
        layout.offset += start * layout.strides[ax];
        layout.shape[ax] = len;
        let full = self.shape().to_vec();
        Ok(self.with_layout(layout).record("narrow", &[self], move |g, _| {
            // d/dx of a slice: the gradient lands in the slice, zeros elsewhere.
            let dx = Tensor::zeros(g.port(), &full, g.dtype())?;
            let dst = dx.narrow_view(ax, start, len);
            g.port().copy_strided(&g.view(), &dst.view())?;
            Ok(vec![Some(dx)])
        }))
    }

    fn narrow_view(&self, ax: usize, start: usize, len: usize) -> Tensor {
        let mut layout = self.layout().clone();
        layout.offset += start * layout.strides[ax];
        layout.shape[ax] = len;
        self.with_layout(layout)
    }

    /// Broadcast to `shape` (NumPy rules) without copying: new and size-1 axes get stride 0.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let l = self.layout();
        if shape.len() < l.rank() {
            return shape_err("expand", format!("{:?} to {:?}", l.shape, shape));
        }
        let pad = shape.len() - l.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..l.rank() {
            let (from, to) = (l.shape[i], shape[pad + i]);
            if from == to {
                strides[pad + i] = l.strides[i];
            } else if from != 1 {
                return shape_err("expand", format!("{:?} cannot broadcast to {:?}", l.shape, shape));
            }
        }
        let layout = Layout { shape: shape.to_vec(), strides, offset: l.offset };
        let in_shape = l.shape.clone();
        Ok(self.with_layout(layout).record("expand", &[self], move |g, _| Ok(vec![Some(g.sum_to(&in_shape)?)])))
    }

    /// Sum a broadcast gradient back down to `shape` (the inverse of `expand`).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let pad = self.rank() - shape.len();
        let mut keep = vec![1usize; self.rank()];
        keep[pad..].copy_from_slice(shape);
        let axes: Vec<usize> = (0..self.rank()).filter(|&i| keep[i] == 1 && self.shape()[i] != 1).collect();
        let s = self.sum_axes(&axes, true)?;
        let target: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
        s.reshape(&target)
    }

    /// Concatenate along `axis`.
    pub fn cat(parts: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = parts.first().ok_or(Error::Shape { op: "cat", detail: "no tensors".into() })?;
        let ax = first.axis(axis);
        let mut template = first.shape().to_vec();
        template[ax] = 0;
        let mut shape = template.clone();
        for p in parts {
            let mut s = p.shape().to_vec();
            if s.len() != template.len() {
                return shape_err("cat", format!("{:?} vs {:?} along axis {ax}", p.shape(), first.shape()));
            }
            s[ax] = 0;
            if s != template {
                return shape_err("cat", format!("{:?} vs {:?} along axis {ax}", p.shape(), first.shape()));
            }
            shape[ax] += p.shape()[ax];
        }
        let out = first.empty_on(&shape, first.dtype())?;
        let mut at = 0;
        let mut sizes = Vec::new();
        for p in parts {
            let n = p.shape()[ax];
            first.port().copy_strided(&p.view(), &out.narrow_view(ax, at, n).view())?;
            sizes.push((at, n));
            at += n;
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        Ok(out.record("cat", &refs, move |g, _| {
            sizes.iter().map(|&(s, n)| Ok(Some(g.narrow(ax as isize, s, n)?.contiguous()?))).collect()
        }))
    }
}

fn resolve_shape(numel: usize, shape: &[isize]) -> Result<Vec<usize>> {
    let known: usize = shape.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    let holes = shape.iter().filter(|&&d| d < 0).count();
    let out: Vec<usize> = match holes {
        0 => shape.iter().map(|&d| d as usize).collect(),
        1 if known > 0 && numel % known == 0 => {
            shape.iter().map(|&d| if d < 0 { numel / known } else { d as usize }).collect()
        }
        _ => return shape_err("reshape", format!("cannot infer {shape:?} from {numel} elements")),
    };
    if out.iter().product::<usize>() != numel {
        return shape_err("reshape", format!("{numel} elements cannot be viewed as {shape:?}"));
    }
    Ok(out)
}

/// Broadcast two shapes (NumPy rules).
pub(crate) fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return shape_err(op, format!("{a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}
