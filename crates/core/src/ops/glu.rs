//! SwiGLU, y = silu(gate) * up on the two halves of one `[..., 2F]` projection, as one node.
//!
//! Written with narrow, silu and mul, the backward zero-fills a `[..., 2F]` gradient for each
//! half, copies each half in and sums the two; the forward copies the gate half to make it
//! contiguous. Here the halves are strided views (SiLU takes any strides), both gradients are
//! written straight into their halves of one tensor, and silu(gate) is recomputed in the
//! backward rather than kept (one exp per element instead of an `[..., F]` activation).
//!
//! y = s(g) g u with s the logistic sigmoid; dy/du = silu(g), dy/dg = u silu'(g).

use super::composite::run;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::{BinaryOp, Composite, Layout, View};

/// Columns `start..start + len` of the last axis of a contiguous view (no copy).
fn half(v: &View, start: usize, len: usize) -> View {
    let mut layout: Layout = v.layout.clone();
    let last = layout.rank() - 1;
    layout.offset += start * layout.strides[last];
    layout.shape[last] = len;
    View { layout, ..v.clone() }
}

/// silu(x[..., :F]) * x[..., F:] for x `[..., 2F]` (gate half first, as in Llama's fused
/// gate/up projection): output `[..., F]`.
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 || x.dim(-1) % 2 != 0 {
        return shape_err("swiglu", format!("{:?}: the last axis must hold gate and up halves", x.shape()));
    }
    let x = x.contiguous()?;
    let f = x.dim(-1) / 2;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank checked") = f;
    let y = x.empty_on(&shape, x.dtype())?;
    let xd = x.detach();
    let xv = xd.view();
    let (g, u) = (half(&xv, 0, f), half(&xv, f, f));
    let port = x.port().clone();
    run(&port, Composite::SiluFwd { x: g.clone(), y: y.view() })?;
    port.binary(BinaryOp::Mul, &y.view(), &u, &y.view())?;
    Ok(y.record("swiglu", &[&x], move |dy, _| {
        let dy = dy.contiguous()?;
        let dx = xd.empty_like()?;
        let dxv = dx.view();
        let (dg, du) = (half(&dxv, 0, f), half(&dxv, f, f));
        let port = xd.port();
        // du = dy silu(g)
        run(port, Composite::SiluFwd { x: g.clone(), y: du.clone() })?;
        port.binary(BinaryOp::Mul, &du, &dy.view(), &du)?;
        // dg = silu'(g) (dy u)
        let t = dy.empty_like()?;
        port.binary(BinaryOp::Mul, &dy.view(), &u, &t.view())?;
        run(port, Composite::SiluBwd { x: g.clone(), dy: t.view(), dx: dg })?;
        Ok(vec![Some(dx)])
    }))
}
