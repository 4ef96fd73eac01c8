//! Elementwise arithmetic with broadcasting, and casts.

use crate::error::{Error, Result};
use crate::shape::broadcast_shape;
use crate::tensor::{dtype_err, Tensor};
use anychip_port::{BinaryOp, CompareOp, DType, UnaryOp};

impl Tensor {
    fn same_port(&self, other: &Tensor, op: &'static str) -> Result<()> {
        if !std::sync::Arc::ptr_eq(self.port(), other.port()) {
            return Err(Error::Port2 { op, a: self.port().name().into(), b: other.port().name().into() });
        }
        if self.dtype() != other.dtype() {
            return Err(dtype_err(op, format!("{} and {}; cast one with .cast()", self.dtype(), other.dtype())));
        }
        Ok(())
    }

    fn binary_raw(&self, op: BinaryOp, other: &Tensor, name: &'static str) -> Result<Tensor> {
        self.same_port(other, name)?;
        let shape = broadcast_shape(name, self.shape(), other.shape())?;
        let (a, b) = (self.detach().expand(&shape)?, other.detach().expand(&shape)?);
        let out = self.empty_on(&shape, self.dtype())?;
        self.port().binary(op, &a.view(), &b.view(), &out.view())?;
        Ok(out)
    }

    /// self + other (broadcasting).
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.binary_raw(BinaryOp::Add, other, "add")?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(out.record("add", &[self, other], move |g, _| Ok(vec![Some(g.sum_to(&sa)?), Some(g.sum_to(&sb)?)])))
    }

    /// self - other (broadcasting).
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.binary_raw(BinaryOp::Sub, other, "sub")?;
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(out.record("sub", &[self, other], move |g, _| Ok(vec![Some(g.sum_to(&sa)?), Some(g.neg()?.sum_to(&sb)?)])))
    }

    /// self * other (broadcasting).
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.binary_raw(BinaryOp::Mul, other, "mul")?;
        let (a, b) = (self.detach(), other.detach());
        Ok(out.record("mul", &[self, other], move |g, needs| {
            let da = if needs[0] { Some(g.mul(&b)?.sum_to(a.shape())?) } else { None };
            let db = if needs[1] { Some(g.mul(&a)?.sum_to(b.shape())?) } else { None };
            Ok(vec![da, db])
        }))
    }

    /// self / other (broadcasting).
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.binary_raw(BinaryOp::Div, other, "div")?;
        let (a, b, y) = (self.detach(), other.detach(), out.detach());
        Ok(out.record("div", &[self, other], move |g, needs| {
            let ga = g.div(&b)?;
            let da = if needs[0] { Some(ga.sum_to(a.shape())?) } else { None };
            // d(a/b)/db = -(a/b)/b
            let db = if needs[1] { Some(ga.mul(&y)?.neg()?.sum_to(b.shape())?) } else { None };
            Ok(vec![da, db])
        }))
    }

    /// Elementwise maximum; the gradient goes to `self` where self >= other.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.binary_raw(BinaryOp::Max, other, "maximum")?;
        let (a, b) = (self.detach(), other.detach());
        Ok(out.record("maximum", &[self, other], move |g, _| {
            let b_wins = a.compare(CompareOp::Lt, &b)?; // 1 where a < b
            let a_wins = b_wins.neg()?.add_scalar(1.0)?;
            Ok(vec![Some(g.mul(&a_wins)?.sum_to(a.shape())?), Some(g.mul(&b_wins)?.sum_to(b.shape())?)])
        }))
    }

    /// 1.0 where the comparison holds, 0.0 elsewhere (no gradient).
    pub fn compare(&self, op: CompareOp, other: &Tensor) -> Result<Tensor> {
        self.same_port(other, "compare")?;
        let shape = broadcast_shape("compare", self.shape(), other.shape())?;
        let out = self.empty_on(&shape, self.dtype())?;
        self.port().compare(
            op,
            &self.detach().expand(&shape)?.view(),
            &other.detach().expand(&shape)?.view(),
            &out.view(),
        )?;
        Ok(out)
    }

    /// A one-element tensor of this tensor's dtype and port.
    pub fn scalar_like(&self, v: f64) -> Result<Tensor> {
        Tensor::full(self.port(), &[1], v, self.dtype())
    }

    /// self * c.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.mul(&self.scalar_like(c)?)
    }

    /// self + c.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.add(&self.scalar_like(c)?)
    }

    fn unary_raw(&self, op: UnaryOp) -> Result<Tensor> {
        let out = self.empty_on(self.shape(), self.dtype())?;
        self.port().unary(op, &self.view(), &out.view())?;
        Ok(out)
    }

    /// -self.
    pub fn neg(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Neg)?;
        Ok(out.record("neg", &[self], |g, _| Ok(vec![Some(g.neg()?)])))
    }

    /// exp(self).
    pub fn exp(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Exp)?;
        let y = out.detach();
        Ok(out.record("exp", &[self], move |g, _| Ok(vec![Some(g.mul(&y)?)])))
    }

    /// ln(self).
    pub fn log(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Log)?;
        let x = self.detach();
        Ok(out.record("log", &[self], move |g, _| Ok(vec![Some(g.div(&x)?)])))
    }

    /// sqrt(self).
    pub fn sqrt(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Sqrt)?;
        let y = out.detach();
        Ok(out.record("sqrt", &[self], move |g, _| Ok(vec![Some(g.div(&y.mul_scalar(2.0)?)?)])))
    }

    /// tanh(self).
    pub fn tanh(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Tanh)?;
        let y = out.detach();
        Ok(out.record("tanh", &[self], move |g, _| {
            let one_minus_y2 = y.mul(&y)?.neg()?.add_scalar(1.0)?;
            Ok(vec![Some(g.mul(&one_minus_y2)?)])
        }))
    }

    /// 1/self.
    pub fn recip(&self) -> Result<Tensor> {
        let out = self.unary_raw(UnaryOp::Recip)?;
        let y = out.detach();
        Ok(out.record("recip", &[self], move |g, _| Ok(vec![Some(g.mul(&y.mul(&y)?)?.neg()?)])))
    }

    /// Convert to `dtype` (F32 <-> BF16 gradients convert back).
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = self.empty_on(self.shape(), dtype)?;
        self.port().cast(&self.view(), &out.view())?;
        let from = self.dtype();
        Ok(out.record("cast", &[self], move |g, _| Ok(vec![Some(g.cast(from)?)])))
    }
}
