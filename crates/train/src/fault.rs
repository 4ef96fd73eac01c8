//! Fault injection for the crash-safety tests (crates/anychip/tests/faults.rs).
//!
//! `ANYCHIP_FAULT=<site>[@<n>]` in the environment makes the `n`-th time (default: the first)
//! the process reaches `<site>` fail there. Sites are named where they are placed:
//!
//! - `ckpt:<step>` sites ([`crash_point`]) abort the process on the spot, as `kill -9` or a power
//!   cut would, between two steps of the checkpoint protocol;
//! - `ckpt:write:<file>` ([`partial_write`]) aborts halfway through writing that file;
//! - `enospc:<file>` ([`write_error`]) makes writing that file fail with "No space left on device";
//! - `nan-grad` ([`nan_grad`]) turns one step's gradients into NaN, as a diverging run would.
//!
//! Without the variable every hook is one branch on a cached `None`. The hooks are process-level
//! (abort, errno) on purpose: the tests then need no strace or LD_PRELOAD and run anywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

struct Fault {
    site: String,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let spec = std::env::var("ANYCHIP_FAULT").ok().filter(|s| !s.is_empty())?;
            let (site, nth) = match spec.rsplit_once('@') {
                Some((s, n)) => (s.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Fault { site, nth, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Whether this is the armed visit of `site`.
fn fires(site: &str) -> bool {
    armed().is_some_and(|f| f.site == site && f.hits.fetch_add(1, Ordering::SeqCst) + 1 == f.nth)
}

/// Abort the process here when `ckpt:<step>` is armed.
pub fn crash_point(step: &str) {
    if armed().is_some() && fires(&format!("ckpt:{step}")) {
        eprintln!("anychip: ANYCHIP_FAULT: aborting at ckpt:{step}");
        std::process::abort();
    }
}

/// Whether to abort halfway through writing `file` (`ckpt:write:<file>`).
pub fn partial_write(file: &str) -> bool {
    armed().is_some() && fires(&format!("ckpt:write:{file}"))
}

/// A simulated disk-full error for writing `file` (`enospc:<file>`).
pub fn write_error(file: &str) -> std::io::Result<()> {
    if armed().is_some() && fires(&format!("enospc:{file}")) {
        return Err(std::io::Error::from_raw_os_error(28));
    }
    Ok(())
}

/// Whether this step's gradients are to be made NaN (`nan-grad@<n>`: the n-th step of this run).
pub fn nan_grad() -> bool {
    armed().is_some() && fires("nan-grad")
}
