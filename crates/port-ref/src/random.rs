//! random: sample `offset + i` of a Philox stream, exactly as `anychip_port::philox` defines.

use crate::memory::{check_float, check_view, store};
use anychip_port::{invalid, philox, Distribution, Result, View};

/// out[i] = sample (seed, offset + i) of `dist`, rounded to out's float dtype.
pub fn random(dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
    check_view("random out", out)?;
    check_float("random out", out)?;
    let n = out.numel() as u64;
    if offset.checked_add(n).is_none() {
        return invalid(format!("random: offset {offset} + {n} samples overflows the 64-bit stream counter"));
    }
    let vals: Vec<f64> = (0..n)
        .map(|i| match dist {
            Distribution::Uniform => philox::uniform(seed, offset + i),
            Distribution::Normal => philox::normal(seed, offset + i),
        } as f64)
        .collect();
    store("random out", out, &vals)
}
