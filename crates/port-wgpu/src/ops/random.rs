//! random: sample `offset + i` of a Philox stream, bit-exact with `anychip_port::philox`.

use crate::gpu::Gpu;
use crate::launch::{check_float, check_view, grid, merge, run, Params};
use crate::shader::{Slot, RANDOM};
use anychip_port::{invalid, Distribution, Result, View};

/// out[i] = sample (seed, offset + i) of `dist`, rounded to out's float dtype.
pub fn random(g: &Gpu, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
    let om = check_view("random out", out)?;
    check_float("random out", out)?;
    let n = out.numel();
    if offset.checked_add(n as u64).is_none() {
        return invalid(format!("random: offset {offset} + {n} samples overflows the 64-bit stream counter"));
    }
    if n == 0 {
        return Ok(());
    }
    let (shape, st) = merge(out.shape(), &[&out.layout.strides])?;
    let mut p = Params::new(n);
    p.walk(&shape, &[(out.layout.offset, &st[0])]);
    p.set(2, seed as u32).set(3, (seed >> 32) as u32);
    p.set(4, offset as u32).set(5, (offset >> 32) as u32);
    p.set(6, matches!(dist, Distribution::Normal) as u32);
    run(g, "random", RANDOM, "main", &[Slot::write("out", out.dtype)], &[], &[om], false, &p, grid(n)?)
}
