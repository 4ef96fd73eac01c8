//! The host-memory communicator that [`crate::HostStaged`] builds device collectives on.

use anychip_port::Result;

/// A group of processes (or threads) exchanging host buffers: what MPI provides.
///
/// Every rank calls the same methods in the same order with equal lengths. An implementation
/// fails within a bounded time when a peer dies or hangs, naming it when it can.
pub trait Comm: Send + Sync {
    /// This rank's index, in `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// `recv[i] = sum over ranks r of send_r[rank * n + i]` with `n = recv.len()` and
    /// `send.len() = world * n`; the sum is taken in the same order on every rank.
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// `recv[r * n .. (r + 1) * n] = send_r` with `n = send.len()`.
    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<()>;
    /// `recv` = the `recv_counts[r]` bytes each rank `r` sent this rank, in rank order, where
    /// `send` holds `send_counts[r]` bytes for each rank `r` in rank order (`MPI_Alltoallv`).
    /// `recv_counts[r]` here equals `send_counts[this rank]` on rank `r`.
    fn all_to_all_v_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv: &mut [u8],
        recv_counts: &[usize],
    ) -> Result<()>;
    /// `buf = buf_root` on every rank.
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Returns once every rank has entered.
    fn barrier(&self) -> Result<()>;
    /// Whether any thread may call (one at a time): MPI needs `MPI_THREAD_SERIALIZED` for it.
    fn any_thread(&self) -> bool {
        false
    }
    /// End the whole job now (every rank) with exit status `code`, after a rank hit an error the
    /// others cannot learn about: they would otherwise wait in their next collective.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
