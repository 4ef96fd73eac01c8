//! Ranks as threads of one process: the same collectives as MPI without MPI, so the
//! data-parallel logic is tested by `cargo test` on any machine.

use crate::Comm;
use anychip_port::{PortError, Result};
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    /// What each rank contributed to the collective in progress.
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

/// One rank of an in-process group made by [`LocalComm::group`].
///
/// Peers are threads that cannot die alone, so unlike [`crate::MpiComm`] it has no timeout.
pub struct LocalComm {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl LocalComm {
    /// `world` connected ranks; hand one to each thread.
    pub fn group(world: usize) -> Vec<LocalComm> {
        let shared = Arc::new(Shared { slots: Mutex::new(vec![Vec::new(); world]), barrier: Barrier::new(world) });
        (0..world).map(|rank| LocalComm { rank, world, shared: shared.clone() }).collect()
    }

    /// Post `mine`, wait for every rank's, compute this rank's result from all of them (in rank
    /// order), then wait until every rank has read before the slots are reused.
    fn exchange<T>(&self, mine: &[u8], f: impl FnOnce(&[Vec<u8>]) -> T) -> Result<T> {
        self.shared.slots.lock().map_err(poisoned)?[self.rank] = mine.to_vec();
        self.shared.barrier.wait();
        let out = f(&self.shared.slots.lock().map_err(poisoned)?);
        self.shared.barrier.wait();
        Ok(out)
    }
}

fn poisoned<T>(_: T) -> PortError {
    PortError::Device("a peer thread panicked during a collective".into())
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let (n, at) = (recv.len(), self.rank * recv.len());
        if send.len() != n * self.world {
            return Err(PortError::Invalid(format!(
                "reduce_scatter: {} values for {} ranks x {n}",
                send.len(),
                self.world
            )));
        }
        self.exchange(bytemuck::cast_slice(send), |all| {
            recv.fill(0.0);
            for contrib in all {
                let c = contrib[at * 4..(at + n) * 4].chunks_exact(4);
                recv.iter_mut().zip(c).for_each(|(r, x)| *r += f32::from_le_bytes(x.try_into().expect("4 bytes")));
            }
        })
    }

    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        if recv.len() != send.len() * self.world {
            return Err(PortError::Invalid(format!(
                "all_gather: {} bytes for {} ranks x {}",
                recv.len(),
                self.world,
                send.len()
            )));
        }
        self.exchange(send, |all| {
            for (chunk, contrib) in recv.chunks_exact_mut(send.len().max(1)).zip(all) {
                chunk.copy_from_slice(contrib);
            }
        })
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.exchange(buf, |all| all[root].clone()).map(|v| buf.copy_from_slice(&v))
    }

    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }

    fn any_thread(&self) -> bool {
        true
    }
}
