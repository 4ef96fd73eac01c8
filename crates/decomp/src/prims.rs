//! [`Prims`]: the port's primitives as functions that allocate and return their outputs, so
//! the decompositions read like the math; plus the view helpers they share.
//!
//! Every value is an F32 [`View`] in its own freshly allocated buffer (freed on drop), but the
//! operands a decomposition rounds for a product ([`Prims::dense_in`]); broadcasting is a
//! stride-0 layout, never a copy.

use anychip_port::{BinaryOp, CompareOp, DType, Layout, Port, ReduceOp, Result, UnaryOp, View};

/// The port's primitives, each returning a freshly allocated F32 output (`k.exp(x)`).
pub(crate) struct Prims<'a>(pub &'a dyn Port);

/// Row-major contiguous shape of `v` reinterpreted as `shape` (views here are contiguous).
pub(crate) fn reshaped(v: &View, shape: &[usize]) -> View {
    debug_assert_eq!(v.numel(), shape.iter().product::<usize>());
    let mut l = Layout::contiguous(shape);
    l.offset = v.layout.offset;
    View { buf: v.buf.clone(), dtype: v.dtype, layout: l }
}

/// `v` broadcast to `shape` (NumPy rules, by stride 0).
pub(crate) fn bcast(v: &View, shape: &[usize]) -> View {
    let r = shape.len();
    let pad = r - v.layout.rank();
    let mut strides = vec![0; r];
    for i in 0..v.layout.rank() {
        if v.layout.shape[i] == shape[pad + i] {
            strides[pad + i] = v.layout.strides[i];
        }
    }
    View {
        buf: v.buf.clone(),
        dtype: v.dtype,
        layout: Layout { shape: shape.to_vec(), strides, offset: v.layout.offset },
    }
}

/// Axes `a` and `b` swapped (a layout change only).
pub(crate) fn swap(v: &View, a: usize, b: usize) -> View {
    let mut l = v.layout.clone();
    l.shape.swap(a, b);
    l.strides.swap(a, b);
    View { buf: v.buf.clone(), dtype: v.dtype, layout: l }
}

fn out_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            da.max(db)
        })
        .collect()
}

impl Prims<'_> {
    /// A new F32 buffer of `shape`.
    pub fn alloc(&self, shape: &[usize]) -> Result<View> {
        self.alloc_in(shape, DType::F32)
    }
    /// A new buffer of `shape` in `dt`.
    fn alloc_in(&self, shape: &[usize], dt: DType) -> Result<View> {
        let n: usize = shape.iter().product();
        Ok(View::contiguous(self.0.alloc(n * dt.size())?, dt, shape))
    }
    /// A new F32 tensor filled with `value`.
    pub fn full(&self, shape: &[usize], value: f64) -> Result<View> {
        let v = self.alloc(shape)?;
        self.0.fill(&v, value)?;
        Ok(v)
    }
    /// A one-element F32 constant.
    pub fn scalar(&self, value: f64) -> Result<View> {
        self.full(&[1], value)
    }
    /// Upload host f32 data.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<View> {
        let v = self.alloc(shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0.write(&v.buf, 0, &bytes)?;
        Ok(v)
    }
    /// `x` as F32 (a copy only when it is stored in another dtype).
    pub fn f32(&self, x: &View) -> Result<View> {
        if x.dtype == DType::F32 {
            return Ok(x.clone());
        }
        let v = self.alloc(x.shape())?;
        self.0.cast(x, &v)?;
        Ok(v)
    }
    /// `x` as contiguous F32 (a copy only when it is strided or stored in another dtype).
    pub fn dense(&self, x: &View) -> Result<View> {
        self.dense_in(x, DType::F32)
    }
    /// `x` as contiguous `dt`, rounded once when narrower (a copy only when it is strided or
    /// stored in another dtype): a product's operand in the dtype the contract multiplies in.
    pub fn dense_in(&self, x: &View, dt: DType) -> Result<View> {
        if x.dtype == dt && x.layout.is_contiguous() {
            return Ok(x.clone());
        }
        let v = self.alloc_in(x.shape(), dt)?;
        if x.dtype == dt {
            self.0.copy_strided(x, &v)?;
        } else {
            self.0.cast(x, &v)?;
        }
        Ok(v)
    }
    /// Write `x` into `out`, converting to out's dtype.
    pub fn store(&self, x: &View, out: &View) -> Result<()> {
        let x = if x.shape() == out.shape() { x.clone() } else { reshaped(x, out.shape()) };
        if x.dtype == out.dtype {
            self.0.copy_strided(&x, out)
        } else {
            self.0.cast(&x, out)
        }
    }
    pub fn un(&self, op: UnaryOp, x: &View) -> Result<View> {
        let v = self.alloc(x.shape())?;
        self.0.unary(op, x, &v)?;
        Ok(v)
    }
    /// `a op b` with broadcasting into a new tensor.
    pub fn bin(&self, op: BinaryOp, a: &View, b: &View) -> Result<View> {
        let s = out_shape(a.shape(), b.shape());
        let v = self.alloc(&s)?;
        self.0.binary(op, &bcast(a, &s), &bcast(b, &s), &v)?;
        Ok(v)
    }
    pub fn add(&self, a: &View, b: &View) -> Result<View> {
        self.bin(BinaryOp::Add, a, b)
    }
    pub fn sub(&self, a: &View, b: &View) -> Result<View> {
        self.bin(BinaryOp::Sub, a, b)
    }
    pub fn mul(&self, a: &View, b: &View) -> Result<View> {
        self.bin(BinaryOp::Mul, a, b)
    }
    pub fn div(&self, a: &View, b: &View) -> Result<View> {
        self.bin(BinaryOp::Div, a, b)
    }
    /// a * c for a host constant c.
    pub fn mulc(&self, a: &View, c: f64) -> Result<View> {
        self.mul(a, &self.scalar(c)?)
    }
    /// a + c for a host constant c.
    pub fn addc(&self, a: &View, c: f64) -> Result<View> {
        self.add(a, &self.scalar(c)?)
    }
    /// 1.0 where `a op b`, else 0.0 (broadcasting).
    pub fn cmp(&self, op: CompareOp, a: &View, b: &View) -> Result<View> {
        let s = out_shape(a.shape(), b.shape());
        let v = self.alloc(&s)?;
        self.0.compare(op, &bcast(a, &s), &bcast(b, &s), &v)?;
        Ok(v)
    }
    /// cond ? a : b (broadcasting to cond's shape).
    pub fn select(&self, cond: &View, a: &View, b: &View) -> Result<View> {
        let s = cond.shape().to_vec();
        let v = self.alloc(&s)?;
        self.0.select(cond, &bcast(a, &s), &bcast(b, &s), &v)?;
        Ok(v)
    }
    /// Reduce the last axis, keeping it as size 1.
    pub fn reduce_last(&self, op: ReduceOp, x: &View) -> Result<View> {
        let mut s = x.shape().to_vec();
        if let Some(l) = s.last_mut() {
            *l = 1;
        }
        let v = self.alloc(&s)?;
        self.0.reduce(op, x, &v)?;
        Ok(v)
    }
    /// Sum over every axis but the last (a `[D]` result), e.g. bias gradients.
    pub fn sum_rows(&self, x: &View) -> Result<View> {
        let d = *x.shape().last().unwrap_or(&1);
        let mut s = vec![1; x.layout.rank()];
        if let Some(l) = s.last_mut() {
            *l = d;
        }
        let v = self.alloc(&s)?;
        self.0.reduce(ReduceOp::Sum, x, &v)?;
        Ok(reshaped(&v, &[d]))
    }
    /// Sum of every element, as `[1]`.
    pub fn sum_all(&self, x: &View) -> Result<View> {
        let v = self.alloc(&vec![1; x.layout.rank()])?;
        self.0.reduce(ReduceOp::Sum, x, &v)?;
        Ok(reshaped(&v, &[1]))
    }
    /// Batched matmul `a @ b` into a new `[B, M, N]`, scaled by alpha.
    pub fn matmul(&self, a: &View, b: &View, alpha: f32) -> Result<View> {
        let (bs, m, n) = (a.shape()[0].max(b.shape()[0]), a.shape()[1], b.shape()[2]);
        let v = self.alloc(&[bs, m, n])?;
        self.0.matmul(a, b, &v, alpha, 0.0)?;
        Ok(v)
    }
}

/// `[rows, D]` view of a contiguous tensor whose last axis is D.
pub(crate) fn rows(v: &View) -> View {
    let d = *v.shape().last().unwrap_or(&1);
    let n = v.numel() / d.max(1);
    reshaped(v, &[n, d])
}
