//! SIGINT and SIGTERM as a request to stop: the training loop finishes its step, writes a
//! checkpoint and ends; a second signal ends the process at once (exit 128 + signal number).
//!
//! Built on the signal-hook crate: a handler may only do async-signal-safe work, and
//! signal-hook's `flag` module is the well-kept implementation of exactly this pattern (an
//! atomic set in the handler, plus the conditional exit for the second signal), on Unix and
//! Windows (where it maps Ctrl-C).

use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A stop request set by SIGINT or SIGTERM (or by hand, in tests).
#[derive(Clone, Default)]
pub struct StopRequest {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl StopRequest {
    /// A request no signal sets (library use, tests).
    pub fn never() -> StopRequest {
        StopRequest::default()
    }

    /// Route SIGINT and SIGTERM to this request; a second one exits the process at once.
    pub fn on_signals() -> Result<StopRequest> {
        let stop = StopRequest::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let fail = |e: std::io::Error| anyhow!("cannot install the handler for signal {sig} ({e})");
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.requested.clone()).map_err(fail)?;
            signal_hook::flag::register_usize(sig, stop.signal.clone(), sig as usize).map_err(fail)?;
            signal_hook::flag::register(sig, stop.requested.clone()).map_err(fail)?;
        }
        Ok(stop)
    }

    /// Ask for a stop as a signal would.
    pub fn request(&self, signal: i32) {
        self.signal.store(signal as usize, Ordering::SeqCst);
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The signal that asked for it (0 if none, or if set by [`request`](Self::request) with 0).
    pub fn signal(&self) -> i32 {
        self.signal.load(Ordering::SeqCst) as i32
    }
}

/// SIGINT's or SIGTERM's name, for messages.
pub fn name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}
