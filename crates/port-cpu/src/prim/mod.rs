//! The twelve primitives, one op family per file.

pub mod elementwise;
pub mod matmul;
pub mod movement;
pub mod random;
pub mod reduce;
pub mod rows;

use anychip_port::{invalid, Result, View};

/// Reject outputs that broadcast (a stride of 0 over an extent above 1): two elements would
/// land on one address and the result would depend on thread timing.
pub fn dense_out(out: &View) -> Result<()> {
    let l = &out.layout;
    if l.shape.iter().zip(&l.strides).any(|(&n, &s)| n > 1 && s == 0) {
        return invalid(format!("output view {:?} broadcasts (stride 0); write into a dense tensor", l.shape));
    }
    Ok(())
}
