//! Data-parallel training over any port.
//!
//! - [`Comm`]: a group of ranks exchanging host buffers. [`MpiComm`] (feature `mpi`) is the one
//!   for real jobs, launched by `mpirun`; [`LocalComm`] runs ranks as threads, for tests.
//! - [`HostStaged`]: the port contract's [`Collectives`] for any port, through host memory.
//!   A port with its own collective library overrides it via [`Port::collectives`].
//! - [`DataParallel`]: bucketed gradient averaging and ZeRO-1 (sharded AdamW state).
//!
//! See `docs/distributed.md` for running `mpirun -np N anychip train ...`.

mod comm;
mod data_parallel;
mod expert_parallel;
mod host;
mod local;
#[cfg(feature = "mpi")]
mod mpi_comm;

pub use anychip_port::Collectives;
pub use comm::Comm;
pub use data_parallel::{CommStats, DataParallel, DpOptions};
pub use expert_parallel::{ExpertLayout, ExpertParallel};
pub use host::HostStaged;
pub use local::LocalComm;
#[cfg(feature = "mpi")]
pub use mpi_comm::{MpiComm, TIMEOUT_EXIT};

use anychip_port::Port;
use std::sync::Arc;

/// Whether this build can join an MPI job (built with the `mpi` feature).
pub const MPI_ENABLED: bool = cfg!(feature = "mpi");

/// The world size an MPI launcher (`mpirun`, `mpiexec`, `srun`) gave this process through its
/// environment, or `None` when it was started on its own.
pub fn launched_world_size() -> Option<usize> {
    launched_world_size_from(|k| std::env::var(k).ok())
}

fn launched_world_size_from(env: impl Fn(&str) -> Option<String>) -> Option<usize> {
    // Open MPI, MPICH/Intel MPI (Hydra, PMI-1/2), MVAPICH, then Slurm's own launcher.
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS"]
        .iter()
        .find_map(|k| env(k).and_then(|v| v.trim().parse().ok()))
}

/// Ranks of this job on this machine, when the launcher says (to split the cores among them).
pub fn launched_local_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse().ok()))
}

/// The collectives for `port` over `comm`'s ranks: the port's own (see
/// [`Port::collectives`]) when it has them, else [`HostStaged`]. What the port's own leave
/// out (the optional [`Collectives::all_to_all_v`]) goes through host memory.
pub fn collectives_for(port: &Arc<dyn Port>, comm: Arc<dyn Comm>) -> anychip_port::Result<Arc<dyn Collectives>> {
    let host: Arc<dyn Collectives> = Arc::new(HostStaged::new(port.clone(), comm));
    Ok(match port.collectives(&host)? {
        Some(own) => Arc::new(host::WithHostFallback { own, host }),
        None => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_environment_gives_the_world_size() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(launched_world_size_from(env(&[("OMPI_COMM_WORLD_SIZE", "4")])), Some(4));
        assert_eq!(launched_world_size_from(env(&[("PMI_SIZE", "2")])), Some(2));
        assert_eq!(launched_world_size_from(env(&[("PATH", "/bin")])), None);
        assert_eq!(launched_world_size_from(env(&[("OMPI_COMM_WORLD_SIZE", "x")])), None);
    }
}
