//! One AdamW step in place, with PyTorch's exact formula (`torch.optim.AdamW`, step t >= 1):
//!
//! g = grad * grad_scale
//! m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//! p = p (1 - lr wd) ;  p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//!
//! The bias corrections are computed in f64 on the host, as PyTorch does in Python floats.

use crate::prims::Prims;
use anychip_port::{BinaryOp, Result, UnaryOp, View};

#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    k: &Prims,
    param: &View,
    grad: &View,
    m: &View,
    v: &View,
    grad_scale: Option<&View>,
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    wd: f32,
    t: u64,
) -> Result<()> {
    let (lr, b1, b2) = (lr as f64, b1 as f64, b2 as f64);
    let mut g = k.f32(grad)?;
    if let Some(s) = grad_scale {
        g = k.mul(&g, s)?;
    }
    let m_new = k.add(&k.mulc(m, b1)?, &k.mulc(&g, 1.0 - b1)?)?;
    let v_new = k.add(&k.mulc(v, b2)?, &k.mulc(&k.mul(&g, &g)?, 1.0 - b2)?)?;
    k.store(&m_new, m)?;
    k.store(&v_new, v)?;
    let bc1 = 1.0 - b1.powi(t as i32);
    let bc2_sqrt = (1.0 - b2.powi(t as i32)).sqrt();
    let p = k.mulc(&k.f32(param)?, 1.0 - lr * wd as f64)?;
    let denom = k.addc(&k.mulc(&k.un(UnaryOp::Sqrt, &v_new)?, 1.0 / bc2_sqrt)?, eps as f64)?;
    let upd = k.mulc(&k.bin(BinaryOp::Div, &m_new, &denom)?, lr / bc1)?;
    k.store(&k.sub(&p, &upd)?, param)
}
