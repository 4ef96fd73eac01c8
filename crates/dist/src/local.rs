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

/// `counts` has one entry per rank and they add up to the buffer's `len`.
pub(crate) fn check_counts(what: &str, len: usize, counts: &[usize], world: usize) -> Result<()> {
    let total: usize = counts.iter().sum();
    if counts.len() != world || total != len {
        return Err(PortError::Invalid(format!(
            "{what}: {} counts adding up to {total} for {world} ranks and a buffer of {len}",
            counts.len()
        )));
    }
    Ok(())
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

    fn all_to_all_v_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv: &mut [u8],
        recv_counts: &[usize],
    ) -> Result<()> {
        check_counts("all_to_all_v send", send.len(), send_counts, self.world)?;
        check_counts("all_to_all_v recv", recv.len(), recv_counts, self.world)?;
        // Each slot: the sender's byte offsets (one u64 per rank, then the end), then its bytes.
        let mut mine = Vec::with_capacity((self.world + 1) * 8 + send.len());
        let mut at = 0u64;
        for c in send_counts.iter().chain([&0]) {
            mine.extend_from_slice(&at.to_le_bytes());
            at += *c as u64;
        }
        mine.extend_from_slice(send);
        let (me, world) = (self.rank, self.world);
        self.exchange(&mine, |all| {
            let mut out = 0;
            for (r, slot) in all.iter().enumerate() {
                let word = |i: usize| u64::from_le_bytes(slot[i * 8..i * 8 + 8].try_into().expect("8 bytes")) as usize;
                let (start, end) = (word(me), word(me + 1));
                if end - start != recv_counts[r] {
                    return Err(PortError::Invalid(format!(
                        "all_to_all_v: rank {r} sends {} bytes to rank {me}, which expects {}",
                        end - start,
                        recv_counts[r]
                    )));
                }
                let data = &slot[(world + 1) * 8..];
                recv[out..out + recv_counts[r]].copy_from_slice(&data[start..end]);
                out += recv_counts[r];
            }
            Ok(())
        })?
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
