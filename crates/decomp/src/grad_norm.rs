//! Global L2 norm over many tensors: sqrt(sum over tensors of sum(g^2)).

use crate::prims::Prims;
use anychip_port::{Result, UnaryOp, View};

pub(crate) fn global(k: &Prims, grads: &[View], out: &View) -> Result<()> {
    let mut total = k.scalar(0.0)?;
    for g in grads {
        let g = k.f32(g)?;
        total = k.add(&total, &k.sum_all(&k.mul(&g, &g)?)?)?;
    }
    k.store(&k.un(UnaryOp::Sqrt, &total)?, out)
}
