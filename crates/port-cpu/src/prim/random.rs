//! random: counter-based samples, bit-identical to every other port (see `anychip_port::philox`).

use super::dense_out;
use crate::elem::{raw, store, want_float, Walk, BLOCK};
use anychip_port::philox::{normal, philox4x32_10};
use anychip_port::{Distribution, Result, View};

/// 2^-24: uniform samples are the top 24 bits of a Philox word.
const INV_2_24: f32 = 1.0 / 16_777_216.0;

/// Uniform samples `first .. first + dst.len()` of stream `seed`, one Philox block per 4 samples.
pub fn uniform_into(seed: u64, first: u64, dst: &mut [f32]) {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut cached = u64::MAX;
    let mut words = [0u32; 4];
    for (j, d) in dst.iter_mut().enumerate() {
        let i = first + j as u64;
        if i / 4 != cached {
            cached = i / 4;
            words = philox4x32_10([cached as u32, (cached >> 32) as u32, 0, 0], key);
        }
        *d = (words[(i % 4) as usize] >> 8) as f32 * INV_2_24;
    }
}

/// out[i] = sample `offset + i` (row-major i) of the stream `seed`.
pub fn random(dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
    want_float(out, "random")?;
    dense_out(out)?;
    let o = raw(out)?;
    let walk = Walk::new(&[&out.layout])?;
    walk.for_each_init(
        || [0f32; BLOCK],
        |t, b| {
            let t = &mut t[..b.len];
            let first = offset + b.linear as u64;
            match dist {
                Distribution::Uniform => uniform_into(seed, first, t),
                Distribution::Normal => t.iter_mut().enumerate().for_each(|(j, v)| *v = normal(seed, first + j as u64)),
            }
            // SAFETY: blocks are disjoint and in bounds.
            unsafe { store(o, b.at[0], b.stride[0], t) };
        },
    );
    Ok(())
}
