//! [`Comm`] over MPI (rsmpi), with a deadline on every collective.
//!
//! A blocking MPI collective waits forever for a rank that hangs (a dead one is normally
//! reported by `mpirun`, which then ends the job). So every collective here is started
//! non-blocking and polled against a deadline. To name the rank at fault, each rank tells
//! every peer the sequence number of each collective it enters (an 8-byte message); when the
//! deadline passes, the peers whose latest number is behind this rank's are the ones that never
//! arrived. When every peer did arrive, one of them stalled inside the transfer (a stopped
//! process, a wedged link): the waiting rank then pings every peer, and the peers still polling
//! their own collective answer; those that stay silent for [`PING_GRACE`] are named. Then the
//! job is ended with `MPI_Abort`: MPI cannot cancel a collective in flight,
//! so no rank could continue anyway, and the hung rank must be killed too.

use crate::Comm;
use anychip_port::{PortError, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Tag of the progress messages ("AC").
const PROGRESS_TAG: i32 = 0x4143;

/// Tags of the liveness probe sent when a collective's deadline passes ("AP", "AQ").
const PING_TAG: i32 = 0x4150;
const PONG_TAG: i32 = 0x4151;

/// How long a timed-out rank waits for its peers to answer the liveness probe. Peers waiting
/// in the same collective answer within a poll (under a millisecond).
const PING_GRACE: Duration = Duration::from_secs(3);

/// Exit status of a job ended because a collective missed its deadline.
pub const TIMEOUT_EXIT: i32 = 3;

struct Progress {
    /// Collectives this rank has entered.
    seq: u64,
    /// Latest collective number each peer has announced.
    seen: Vec<u64>,
}

/// This process's rank of the MPI job it was launched in (`mpirun -np N ...`).
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    progress: Mutex<Progress>,
    /// Held for the whole of each collective: MPI_THREAD_SERIALIZED lets any thread call, but
    /// never two at once (the communication thread and the training thread take turns).
    call: Mutex<()>,
    /// Whether MPI granted MPI_THREAD_SERIALIZED; if not, only `owner` may call.
    serialized: bool,
    /// The thread that initialised MPI.
    owner: ThreadId,
    // Last field: dropping it finalises MPI, after the communicator above is gone.
    _universe: Universe,
}

// SAFETY: the communicator is a handle that MPI allows any thread to pass around; every method
// that calls into MPI holds `call` throughout (the serialisation MPI_THREAD_SERIALIZED asks
// for) and, when MPI granted less, first checks it runs on `owner`.
unsafe impl Send for MpiComm {}
// SAFETY: as for Send: every call into MPI is serialised by `call`.
unsafe impl Sync for MpiComm {}

impl MpiComm {
    /// Initialise MPI on this thread; every collective that waits longer than `timeout` for
    /// its peers ends the whole job with a message naming the late ranks.
    pub fn init(timeout: Duration) -> std::result::Result<MpiComm, String> {
        let (universe, granted) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or("MPI is already initialised in this process; create one MpiComm per process")?;
        let serialized = matches!(granted, Threading::Serialized | Threading::Multiple);
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm {
            world,
            rank,
            size,
            timeout,
            progress: Mutex::new(Progress { seq: 0, seen: vec![0; size] }),
            call: Mutex::new(()),
            serialized,
            owner: std::thread::current().id(),
            _universe: universe,
        })
    }

    /// Host name of this rank (for reports).
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }

    /// Take the call lock for one collective (checking the thread when MPI is not serialized).
    fn begin(&self, what: &str) -> Result<std::sync::MutexGuard<'_, ()>> {
        if !self.serialized && std::thread::current().id() != self.owner {
            return Err(PortError::Invalid(format!(
                "{what}: this MPI grants no MPI_THREAD_SERIALIZED, so collectives must be called from the thread that initialised MPI"
            )));
        }
        self.call.lock().map_err(|_| PortError::Device("MPI call lock poisoned".into()))
    }

    /// Announce entering the next collective to every peer; returns its number.
    fn enter(&self) -> Result<u64> {
        let mut p = self.progress.lock().map_err(|_| PortError::Device("MPI progress state poisoned".into()))?;
        p.seq += 1;
        for peer in (0..self.size).filter(|&r| r != self.rank) {
            // 8 bytes go out eagerly: this does not wait for the peer.
            self.world.process_at_rank(peer as i32).send_with_tag(&p.seq, PROGRESS_TAG);
        }
        self.drain(&mut p);
        Ok(p.seq)
    }

    /// Read every progress message that has arrived (keeps MPI's unexpected-message queue short).
    fn drain(&self, p: &mut Progress) {
        while let Some((msg, status)) = self.world.any_process().immediate_matched_probe_with_tag(PROGRESS_TAG) {
            let (seq, _) = msg.matched_receive::<u64>();
            let from = status.source_rank() as usize;
            p.seen[from] = p.seen[from].max(seq);
        }
    }

    /// Poll `req` until it completes; past the deadline, name the late ranks and end the job.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, what: &str, seq: u64, mut req: Request<'a, D, S>) {
        let start = Instant::now();
        let mut polls = 0u32;
        let mut all_here = false;
        loop {
            match req.test() {
                Ok(_) => return,
                Err(r) => req = r,
            }
            if start.elapsed() > self.timeout {
                self.fail(what, seq);
            }
            polls += 1;
            if polls % 64 == 0 {
                self.answer_pings();
            }
            // A non-blocking collective only advances inside MPI calls (each test moves a few
            // fragments), so once every peer has entered it, poll in bursts: a 200 us nap
            // between single tests held a 25 MiB exchange to 0.05 GB/s. The short naps between
            // bursts let a peer sharing the core run (ranks may outnumber cores). Until every
            // peer has arrived, back off so a waiting rank does not slow a late one.
            if !all_here && polls % 16 == 0 {
                all_here = self.peers_entered(seq);
            }
            if all_here {
                if polls % 256 == 0 {
                    std::thread::sleep(Duration::from_micros(20));
                }
            } else if polls < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Whether every peer has announced entering collective `seq` (reads new announcements).
    fn peers_entered(&self, seq: u64) -> bool {
        match self.progress.lock() {
            Ok(mut p) => {
                self.drain(&mut p);
                (0..self.size).all(|r| r == self.rank || p.seen[r] >= seq)
            }
            Err(_) => false,
        }
    }

    /// Answer every liveness probe that has arrived: this rank is alive and polling.
    fn answer_pings(&self) {
        while let Some((msg, status)) = self.world.any_process().immediate_matched_probe_with_tag(PING_TAG) {
            let (seq, _) = msg.matched_receive::<u64>();
            self.world.process_at_rank(status.source_rank()).send_with_tag(&seq, PONG_TAG);
        }
    }

    /// Ranks that do not answer a liveness probe within [`PING_GRACE`] (while this rank keeps
    /// answering theirs, since they may be probing too).
    fn silent_peers(&self, seq: u64) -> Vec<usize> {
        let mut answered = vec![false; self.size];
        answered[self.rank] = true;
        for peer in (0..self.size).filter(|&r| r != self.rank) {
            self.world.process_at_rank(peer as i32).send_with_tag(&seq, PING_TAG);
        }
        let start = Instant::now();
        while start.elapsed() < PING_GRACE && answered.iter().any(|a| !a) {
            self.answer_pings();
            while let Some((msg, status)) = self.world.any_process().immediate_matched_probe_with_tag(PONG_TAG) {
                let _ = msg.matched_receive::<u64>();
                answered[status.source_rank() as usize] = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (0..self.size).filter(|&r| !answered[r]).collect()
    }

    fn fail(&self, what: &str, seq: u64) -> ! {
        let late: Vec<usize> = match self.progress.lock() {
            Ok(mut p) => {
                self.drain(&mut p);
                (0..self.size).filter(|&r| r != self.rank && p.seen[r] < seq).collect()
            }
            Err(_) => Vec::new(),
        };
        let silent = if late.is_empty() { self.silent_peers(seq) } else { Vec::new() };
        let who = match (late.as_slice(), silent.as_slice()) {
            ([], []) => {
                "every rank reached it and answers, so the transfer itself stalled (see mpirun's report)".to_string()
            }
            ([], [r]) => {
                format!("every rank reached it, but rank {r} stopped answering during the transfer (hung or stopped)")
            }
            ([], rs) => format!(
                "every rank reached it, but ranks {} stopped answering during the transfer (hung or stopped)",
                rs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
            ([r], _) => format!("rank {r} never reached it (dead or hung)"),
            (rs, _) => format!(
                "ranks {} never reached it (dead or hung)",
                rs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
        };
        eprintln!(
            "error: rank {} ({}): {what} (collective #{seq}) did not complete within {} s: {who}; ending the job. \
             The last complete checkpoint is intact: --resume from it (with any number of ranks).",
            self.rank,
            self.processor_name(),
            self.timeout.as_secs_f64()
        );
        self.world.abort(TIMEOUT_EXIT)
    }
}

/// MPI's counts and displacements (C ints) for byte counts laid back to back.
fn mpi_partition(counts: &[usize]) -> Result<(Vec<i32>, Vec<i32>)> {
    let (mut c, mut d, mut at) = (Vec::with_capacity(counts.len()), Vec::with_capacity(counts.len()), 0usize);
    for &n in counts {
        let (ni, ai) = (i32::try_from(n), i32::try_from(at));
        match (ni, ai) {
            (Ok(ni), Ok(ai)) => (c.push(ni), d.push(ai)),
            _ => {
                return Err(PortError::Invalid(format!(
                    "all-to-all: {} bytes in one exchange exceed MPI's 2 GiB count limit; use more ranks or smaller batches",
                    at + n
                )))
            }
        };
        at += n;
    }
    Ok((c, d))
}

fn len_err(what: &str, got: usize, world: usize, block: usize) -> PortError {
    PortError::Invalid(format!("{what}: {got} elements is not {world} ranks x {block}"))
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.size
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        if send.len() != recv.len() * self.size {
            return Err(len_err("reduce_scatter", send.len(), self.size, recv.len()));
        }
        let _call = self.begin("reduce-scatter")?;
        let seq = self.enter()?;
        mpi::request::scope(|sc| {
            let req = self.world.immediate_reduce_scatter_block_into(sc, send, recv, SystemOperation::sum());
            self.wait("reduce-scatter", seq, req);
        });
        Ok(())
    }

    fn all_gather_bytes(&self, send: &[u8], recv: &mut [u8]) -> Result<()> {
        if recv.len() != send.len() * self.size {
            return Err(len_err("all_gather", recv.len(), self.size, send.len()));
        }
        let _call = self.begin("all-gather")?;
        let seq = self.enter()?;
        mpi::request::scope(|sc| {
            let req = self.world.immediate_all_gather_into(sc, send, recv);
            self.wait("all-gather", seq, req);
        });
        Ok(())
    }

    fn all_to_all_v_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv: &mut [u8],
        recv_counts: &[usize],
    ) -> Result<()> {
        crate::local::check_counts("all_to_all_v send", send.len(), send_counts, self.size)?;
        crate::local::check_counts("all_to_all_v recv", recv.len(), recv_counts, self.size)?;
        let (sc, sd) = mpi_partition(send_counts)?;
        let (rc, rd) = mpi_partition(recv_counts)?;
        // An empty slice's pointer is dangling at address 1, which is Open MPI's MPI_IN_PLACE:
        // MPI would refuse it (MPI_ERR_ARG), so empty buffers become a 1-byte one (counts 0).
        let (mut spare_send, mut spare_recv) = ([0u8; 1], [0u8; 1]);
        let send: &[u8] = if send.is_empty() { &mut spare_send[..] } else { send };
        let recv: &mut [u8] = if recv.is_empty() { &mut spare_recv[..] } else { recv };
        let send = Partition::new(send, &sc[..], &sd[..]);
        let mut recv = PartitionMut::new(recv, &rc[..], &rd[..]);
        let _call = self.begin("all-to-all")?;
        let seq = self.enter()?;
        mpi::request::scope(|scope| {
            let req = self.world.immediate_all_to_all_varcount_into(scope, &send, &mut recv);
            self.wait("all-to-all", seq, req);
        });
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(PortError::Invalid(format!("broadcast: root {root} is not a rank of {}", self.size)));
        }
        let _call = self.begin("broadcast")?;
        let seq = self.enter()?;
        mpi::request::scope(|sc| {
            let req = self.world.process_at_rank(root as i32).immediate_broadcast_into(sc, buf);
            self.wait("broadcast", seq, req);
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let _call = self.begin("barrier")?;
        let seq = self.enter()?;
        self.wait("barrier", seq, self.world.immediate_barrier());
        Ok(())
    }

    fn any_thread(&self) -> bool {
        self.serialized
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
