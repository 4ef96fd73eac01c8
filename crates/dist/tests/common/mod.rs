//! What the distributed tests share: a one-thread cpu port per rank, and ranks as threads.

use anychip_dist::{Comm, LocalComm};
use anychip_port::Port;
use std::sync::Arc;

pub fn cpu() -> Arc<dyn Port> {
    Arc::new(anychip_port_cpu::new(Some(1)))
}

/// Run `f(rank, comm)` on `world` threads and collect the results in rank order.
pub fn on_ranks<T: Send>(world: usize, f: impl Fn(usize, Arc<dyn Comm>) -> T + Sync) -> Vec<T> {
    let comms = LocalComm::group(world);
    std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(r, c)| {
                let f = &f;
                s.spawn(move || f(r, Arc::new(c) as Arc<dyn Comm>))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank thread panicked")).collect()
    })
}
