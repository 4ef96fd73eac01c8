//! Inverted dropout driven by the Philox uniform stream, so masks are identical on every port.
//!
//! element i is dropped when uniform(seed, offset + i) < p; mask = kept / (1 - p); y = x * mask

use crate::prims::Prims;
use anychip_port::{CompareOp, Distribution, Result, View};

pub(crate) fn fwd(k: &Prims, x: &View, p: f32, seed: u64, offset: u64, y: &View, mask: &View) -> Result<()> {
    let u = k.alloc(x.shape())?;
    k.0.random(Distribution::Uniform, seed, offset, &u)?;
    let dropped = k.cmp(CompareOp::Lt, &u, &k.scalar(p as f64)?)?;
    let keep = k.mulc(&k.addc(&k.mulc(&dropped, -1.0)?, 1.0)?, 1.0 / (1.0 - p as f64))?;
    k.store(&keep, mask)?;
    k.store(&k.mul(&k.f32(x)?, &keep)?, y)
}

pub(crate) fn bwd(k: &Prims, dy: &View, mask: &View, dx: &View) -> Result<()> {
    k.store(&k.mul(&k.f32(dy)?, &k.f32(mask)?)?, dx)
}
