//! Buffers of the sim port: a size and, in debug mode, the values port's buffer behind it.
//! Shapes-only buffers own no memory at all; the tracker counts what a real chip would hold.

use anychip_port::{Buffer, DeviceMemory};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Live and peak bytes of every buffer a sim port has handed out.
#[derive(Default)]
pub struct Tracker {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Tracker {
    fn add(&self, bytes: usize) {
        let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    /// Bytes allocated now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
    /// Most bytes allocated at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

/// One sim allocation; dropping the last handle frees it in the tracker.
pub struct SimMemory {
    bytes: usize,
    tracker: Arc<Tracker>,
    /// The values port's buffer (debug mode), else None.
    pub real: Option<Buffer>,
}

impl SimMemory {
    pub fn new(bytes: usize, tracker: Arc<Tracker>, real: Option<Buffer>) -> SimMemory {
        tracker.add(bytes);
        SimMemory { bytes, tracker, real }
    }
}

impl Drop for SimMemory {
    fn drop(&mut self) {
        self.tracker.live.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl DeviceMemory for SimMemory {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}
