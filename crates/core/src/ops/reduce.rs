//! Sum, mean and max over axes.

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::ReduceOp;

impl Tensor {
    fn reduce_raw(&self, op: ReduceOp, axes: &[usize]) -> Result<Tensor> {
        let mut shape = self.shape().to_vec();
        for &a in axes {
            if a >= shape.len() {
                return shape_err("reduce", format!("axis {a} of a rank-{} tensor", shape.len()));
            }
            shape[a] = 1;
        }
        let out = self.empty_on(&shape, self.dtype())?;
        self.port().reduce(op, &self.view(), &out.view())?;
        Ok(out)
    }

    fn drop_axes(t: Tensor, axes: &[usize]) -> Result<Tensor> {
        let shape: Vec<isize> =
            t.shape().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d as isize).collect();
        t.reshape(&shape)
    }

    /// Sum over `axes`; with `keepdim` reduced axes stay as size 1.
    pub fn sum_axes(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let out = self.reduce_raw(ReduceOp::Sum, axes)?;
        let in_shape = self.shape().to_vec();
        let out = out.record("sum", &[self], move |g, _| Ok(vec![Some(g.expand(&in_shape)?.contiguous()?)]));
        if keepdim {
            Ok(out)
        } else {
            Tensor::drop_axes(out, axes)
        }
    }

    /// Sum of every element, as a `[1]` tensor.
    pub fn sum(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum_axes(&axes, true)?.reshape(&[1])
    }

    /// Mean of every element, as a `[1]` tensor.
    pub fn mean(&self) -> Result<Tensor> {
        self.sum()?.mul_scalar(1.0 / self.numel().max(1) as f64)
    }

    /// Mean over one axis (kept as size 1).
    pub fn mean_axis(&self, axis: isize) -> Result<Tensor> {
        let ax = self.axis(axis);
        let n = self.shape()[ax];
        self.sum_axes(&[ax], true)?.mul_scalar(1.0 / n.max(1) as f64)
    }

    /// Max over `axes` (kept as size 1); the gradient goes to every position equal to the max.
    pub fn max_axes(&self, axes: &[usize]) -> Result<Tensor> {
        let out = self.reduce_raw(ReduceOp::Max, axes)?;
        let (x, y) = (self.detach(), out.detach());
        Ok(out.record("max", &[self], move |g, _| {
            let hit = x.compare(anychip_port::CompareOp::Eq, &y)?;
            Ok(vec![Some(hit.mul(&g.expand(x.shape())?)?)])
        }))
    }
}
