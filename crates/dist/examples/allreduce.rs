//! Gradient-exchange bandwidth under MPI, the numbers the planner's data-parallel model is
//! checked against (docs/planner-validation.md, "Data-parallel communication against measured
//! exchanges"):
//!
//!     cargo build --release -p anychip-dist --features mpi --example allreduce
//!     mpirun -np 2 target/release/examples/allreduce [BUCKET_MIB]
//!
//! For each size it averages a gradient of that many bytes across the ranks exactly as training
//! does (1 MiB buckets unless BUCKET_MIB says otherwise, reduce-scatter + all-gather through host memory on the cpu port) and
//! prints the median time and the bus bandwidth, 2 (N-1)/N x bytes / time (nccl-tests' busbw).

use anychip_core::Tensor;
use anychip_dist::{collectives_for, Comm, DataParallel, DpOptions, MpiComm};
use anychip_optim::AdamWConfig;
use anychip_port::{DType, Port};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let comm = Arc::new(MpiComm::init(Duration::from_secs(120)).expect("MPI init"));
    let (rank, world) = (comm.rank(), comm.world());
    let port: Arc<dyn Port> = Arc::new(anychip_port_cpu::new(Some(1)));
    let coll = collectives_for(&port, comm.clone() as Arc<dyn Comm>).expect("collectives");
    let bucket_mib: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(25.0);
    let opts = DpOptions { bucket_bytes: (bucket_mib * (1 << 20) as f64) as usize, ..DpOptions::default() };
    if rank == 0 {
        println!("ranks {world}, buckets of {bucket_mib} MiB | bytes | median ms | bus GB/s");
    }
    for mib in [0.0625f64, 1.0, 4.0, 25.0, 100.0, 475.0] {
        let n = (mib * (1 << 20) as f64 / 4.0) as usize;
        let p = Tensor::zeros(&port, &[n], DType::F32).expect("param");
        let g = Tensor::full(&port, &[n], rank as f64, DType::F32).expect("grad");
        let dp = DataParallel::new(coll.clone(), &[(p, true)], AdamWConfig::default(), opts).expect("data parallel");
        let reps = if mib > 50.0 { 5 } else { 20 };
        let mut times = Vec::new();
        for i in 0..reps + 2 {
            comm.barrier().expect("barrier");
            let t = Instant::now();
            let avg = dp.average_grads(std::slice::from_ref(&g)).expect("average");
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64());
            }
            // Every element is the mean of the ranks 0..world.
            let want = (world - 1) as f32 / 2.0;
            assert_eq!(avg[0].to_vec_f32().expect("read")[n / 2], want);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let bus = 2.0 * (world - 1) as f64 / world as f64 * (n * 4) as f64 / med / 1e9;
        if rank == 0 {
            println!("{world} | {:.0} | {:.2} | {:.2}", (n * 4) as f64, med * 1e3, bus);
        }
    }
}
