//! The optional collectives contract: how ranks of a data-parallel job combine device data.
//!
//! Collectives are not one of the twelve primitives: a port needs none of this to train on one
//! device. For many ranks the engine uses a host-staged implementation (crate `anychip-dist`,
//! over MPI) that works with any port through [`Port::read`](crate::Port::read) and
//! [`Port::write`](crate::Port::write). A port whose chip has its own collective library (NCCL,
//! HCCL, BKCL, ...) supplies it through [`Port::collectives`](crate::Port::collectives) and keeps
//! the data on the device.
//!
//! The shapes match those libraries: sums, block reduce-scatter, block all-gather, broadcast,
//! barrier, and the variable-count all-to-all of expert parallelism. Let `n` be the element
//! count of the per-rank block and `world` the number of ranks.

use crate::{PortError, Result, View};

/// A fixed group of ranks (one per process or device) running the same program.
///
/// Contract common to every method:
/// - Every rank calls the same collectives in the same order with views of the same dtype and
///   shape; a collective returns on a rank only once that rank's part is complete.
/// - Views are contiguous (an implementation may accept more). Sums are taken in f32 (or wider)
///   for F32 and BF16, rounded once to the view's dtype; I32 sums may be `Unsupported`.
/// - Results are bit-identical on every rank, so replicas that apply the same update stay equal
///   (an all-reduce must not let each rank add in its own order).
/// - Calls are ordered with the port's other work: inputs written by earlier calls are seen,
///   outputs are visible to later ones.
/// - A collective never waits forever: when a peer dies or hangs it fails within a bounded time
///   with an error (or ends the job) naming the rank it waited for, when that can be known.
pub trait Collectives: Send + Sync {
    /// This rank's index, in `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks in the group.
    fn world(&self) -> usize;
    /// `buf[i] = sum over ranks r of buf_r[i]`, in place, on every rank.
    fn all_reduce(&self, buf: &View) -> Result<()>;
    /// `out[i] = sum over ranks r of input_r[rank * n + i]`, for `out` of `n` elements and `input`
    /// of `world * n`: each rank receives the sum of its own block.
    fn reduce_scatter(&self, input: &View, out: &View) -> Result<()>;
    /// `out[r * n + i] = input_r[i]`, for `input` of `n` elements and `out` of `world * n`.
    fn all_gather(&self, input: &View, out: &View) -> Result<()>;
    /// `buf = buf_root` on every rank.
    fn broadcast(&self, buf: &View, root: usize) -> Result<()>;
    /// Returns once every rank has entered the barrier.
    fn barrier(&self) -> Result<()>;
    /// All-to-all with a count per pair of ranks (`MPI_Alltoallv`, NCCL's grouped send/recv):
    /// `send` holds `send_counts[r]` elements for each rank `r`, back to back in rank order;
    /// `recv` receives `recv_counts[r]` elements from each rank `r`, back to back in rank order.
    /// `recv_counts[r]` on this rank equals `send_counts[this rank]` on rank `r` (the caller
    /// exchanges the counts first, e.g. through this same call). Any dtype: nothing is summed.
    ///
    /// Optional: the default answers `Unsupported`, and the engine (`anychip-dist`) then moves
    /// the data through its host-staged implementation, so a port's own collectives need not
    /// provide it.
    fn all_to_all_v(&self, send: &View, send_counts: &[usize], recv: &View, recv_counts: &[usize]) -> Result<()> {
        let _ = (send, send_counts, recv, recv_counts);
        Err(PortError::Unsupported("all_to_all_v: not provided by these collectives".into()))
    }
    /// Whether calls may come from another thread than the one running the port's compute,
    /// one call at a time, while that thread keeps computing. The engine then exchanges each
    /// gradient bucket on a communication thread as soon as backward has produced it, hiding
    /// the exchange behind the rest of the pass. `false` (the default) keeps every call on
    /// the compute thread, after backward.
    fn any_thread(&self) -> bool {
        false
    }
}
