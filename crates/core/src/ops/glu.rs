//! SwiGLU, y = silu(gate) * up on the two halves of one `[..., 2F]` projection, as one node
//! running the `SwigluFwd` / `SwigluBwd` composite (the port contract's default decomposition
//! works on the halves as strided views; a port may fuse it into one pass each way). The
//! backward recomputes silu(gate) rather than keeping it (one exp per element instead of an
//! `[..., F]` activation), and writes both gradients straight into the halves of one tensor.
//!
//! y = s(g) g u with s the logistic sigmoid; dy/du = silu(g), dy/dg = u silu'(g).

use super::composite::run;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::Composite;

/// silu(x[..., :F]) * x[..., F:] for x `[..., 2F]` (gate half first, as in Llama's fused
/// gate/up projection): output `[..., F]`.
pub fn swiglu(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 || x.dim(-1) % 2 != 0 {
        return shape_err("swiglu", format!("{:?}: the last axis must hold gate and up halves", x.shape()));
    }
    let x = x.contiguous()?;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank checked") = x.dim(-1) / 2;
    let y = x.empty_on(&shape, x.dtype())?;
    let xd = x.detach();
    run(x.port(), Composite::SwigluFwd { x: xd.view(), y: y.view() })?;
    Ok(y.record("swiglu", &[&x], move |dy, _| {
        let dy = dy.contiguous()?;
        let dx = xd.empty_like()?;
        run(xd.port(), Composite::SwigluBwd { x: xd.view(), dy: dy.view(), dx: dx.view() })?;
        Ok(vec![Some(dx)])
    }))
}
