//! Data parallelism with ranks as threads (no MPI needed): the collectives' semantics, and N
//! ranks with batch B/N reproducing one rank with batch B, replicated and under ZeRO-1.

use anychip_core::Tensor;
use anychip_data::Loader;
use anychip_dist::{collectives_for, Collectives, DataParallel, DpOptions, HostStaged};
use anychip_model_config::ModelConfig;
use anychip_nn::Transformer;
use anychip_optim::{AdamW, AdamWConfig, ParamGroup};
use anychip_port::DType;
use std::sync::Arc;

mod common;
use common::{cpu, on_ranks};

/// Rank r's test data: element i = r * 1000 + i + 0.25 (exact in f32).
fn data(rank: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (rank * 1000 + i) as f32 + 0.25).collect()
}

#[test]
fn host_staged_collectives_follow_the_contract() {
    let world = 3;
    let out = on_ranks(world, |rank, comm| {
        let port = cpu();
        let c = HostStaged::new(port.clone(), comm);
        assert_eq!((c.rank(), c.world()), (rank, world));
        let t = |v: &[f32]| Tensor::from_f32(&port, v, &[v.len()], DType::F32).unwrap();
        // all_reduce of 7 elements (not a multiple of the world: exercises the padding).
        let ar = t(&data(rank, 7));
        c.all_reduce(&ar.view()).unwrap();
        // reduce_scatter: 3 blocks of 2.
        let rs_in = t(&data(rank, 6));
        let rs_out = t(&[0.0; 2]);
        c.reduce_scatter(&rs_in.view(), &rs_out.view()).unwrap();
        // all_gather of bf16 (byte-level: any dtype).
        let ag_in = Tensor::from_f32(&port, &[rank as f32, -(rank as f32)], &[2], DType::BF16).unwrap();
        let ag_out = Tensor::zeros(&port, &[6], DType::BF16).unwrap();
        c.all_gather(&ag_in.view(), &ag_out.view()).unwrap();
        // broadcast from rank 2.
        let bc = t(&data(rank, 4));
        c.broadcast(&bc.view(), 2).unwrap();
        c.barrier().unwrap();
        // A bad shape is an error, not a hang or a panic (checked before any communication).
        let bad = c.reduce_scatter(&rs_in.view(), &t(&[0.0; 4]).view());
        assert!(bad.unwrap_err().to_string().contains("3 ranks x 4"));
        [ar, rs_out, ag_out, bc].map(|x| x.to_vec_f32().unwrap())
    });
    let sum = |i: usize| (0..world).map(|r| data(r, 8)[i]).sum::<f32>();
    for (rank, [ar, rs, ag, bc]) in out.iter().enumerate() {
        assert_eq!(ar, &(0..7).map(sum).collect::<Vec<_>>(), "all_reduce on rank {rank}");
        assert_eq!(rs, &[sum(2 * rank), sum(2 * rank + 1)], "reduce_scatter on rank {rank}");
        assert_eq!(ag, &[0.0, -0.0, 1.0, -1.0, 2.0, -2.0], "all_gather on rank {rank}");
        assert_eq!(bc, &data(2, 4), "broadcast on rank {rank}");
    }
}

#[test]
fn gradient_average_is_the_sum_over_ranks_divided_by_the_world() {
    // The end-to-end equivalence tests below cannot see a wrong divisor: AdamW is nearly
    // invariant to a constant scale of the gradient and they clip every step. So check the
    // averaged gradient itself, on 3 ranks (no power of two: /2 or /4 would show), for two
    // parameters that straddle buckets (5 + 7 floats, 8-float buckets, padding included),
    // exchanged after backward and during it.
    let world = 3;
    let sizes = [5usize, 7];
    let grad = |rank: usize, p: usize| data(rank, 20)[p * 8..p * 8 + sizes[p]].to_vec();
    let out = on_ranks(world, |rank, comm| {
        let port = cpu();
        let t = |v: &[f32]| Tensor::from_f32(&port, v, &[v.len()], DType::F32).unwrap();
        let params: Vec<(Tensor, bool)> = sizes.iter().map(|&n| (t(&vec![0.0; n]), true)).collect();
        let opts = DpOptions { zero: false, bucket_bytes: 32, overlap: true };
        let dp =
            DataParallel::new(collectives_for(&port, comm).unwrap(), &params, AdamWConfig::default(), opts).unwrap();
        let grads: Vec<Tensor> = (0..sizes.len()).map(|p| t(&grad(rank, p))).collect();
        let after: Vec<Vec<f32>> = dp.average_grads(&grads).unwrap().iter().map(|g| g.to_vec_f32().unwrap()).collect();
        let work = |ready: &mut dyn FnMut(usize, Tensor) -> anychip_core::Result<()>| {
            // Hand them over in reverse, as backward does.
            (0..sizes.len()).rev().try_for_each(|p| ready(p, grads[p].clone()))?;
            Ok::<_, anychip_core::Error>(())
        };
        let ((), avg) = dp.average_grads_during(work).unwrap();
        let during: Vec<Vec<f32>> = avg.iter().map(|g| g.to_vec_f32().unwrap()).collect();
        (after, during)
    });
    for (rank, (after, during)) in out.iter().enumerate() {
        for p in 0..sizes.len() {
            let want: Vec<f32> =
                (0..sizes[p]).map(|i| (0..world).map(|r| grad(r, p)[i]).sum::<f32>() / world as f32).collect();
            for (how, got) in [("after backward", &after[p]), ("during backward", &during[p])] {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // One rounding of the sum times 1/3 apart from the exact mean, at most.
                    assert!(
                        (g - w).abs() <= 2.0 * f32::EPSILON * w.abs(),
                        "rank {rank}, param {p}[{i}] {how}: got {g}, want the mean {w}"
                    );
                }
            }
        }
    }
}

fn tiny() -> ModelConfig {
    ModelConfig::gpt2(64, 16, 2, 2, 32)
}

fn corpus() -> Vec<u32> {
    // A pseudo-random phrase of 23 tokens (LCG) repeated: learnable within 20 steps.
    let mut x = 12345u64;
    let phrase: Vec<u32> = (0..23)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 64) as u32
        })
        .collect();
    (0..4096).map(|i| phrase[i % 23]).collect()
}

const GLOBAL_BATCH: usize = 4;
const CTX: usize = 16;
const STEPS: usize = 20;

fn adamw() -> AdamWConfig {
    // A small clip so clipping is active and its global norm must be right on every rank.
    AdamWConfig { grad_clip: 0.5, ..AdamWConfig::default() }
}

/// How a test step hands gradients to the exchange.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Exchange {
    /// `average_grads` / `zero_step` after backward.
    After,
    /// `*_during` with each gradient handed over by `backward_hooked`, exchanged on the
    /// communication thread while backward runs.
    Overlapped,
    /// `*_during` on collectives that refuse other threads: the same API, exchanged after.
    Deferred,
}

/// Collectives that pass through but do not allow calls from another thread.
struct OneThread(Arc<dyn Collectives>);

impl Collectives for OneThread {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world(&self) -> usize {
        self.0.world()
    }
    fn all_reduce(&self, buf: &anychip_port::View) -> anychip_port::Result<()> {
        self.0.all_reduce(buf)
    }
    fn reduce_scatter(&self, input: &anychip_port::View, out: &anychip_port::View) -> anychip_port::Result<()> {
        self.0.reduce_scatter(input, out)
    }
    fn all_gather(&self, input: &anychip_port::View, out: &anychip_port::View) -> anychip_port::Result<()> {
        self.0.all_gather(input, out)
    }
    fn broadcast(&self, buf: &anychip_port::View, root: usize) -> anychip_port::Result<()> {
        self.0.broadcast(buf, root)
    }
    fn barrier(&self) -> anychip_port::Result<()> {
        self.0.barrier()
    }
}

/// Train the tiny model on `world` ranks; returns each rank's global losses and final weights.
fn train(world: usize, zero: bool) -> Vec<(Vec<f32>, Vec<f32>, usize)> {
    train_with(world, zero, Exchange::After)
}

fn train_with(world: usize, zero: bool, how: Exchange) -> Vec<(Vec<f32>, Vec<f32>, usize)> {
    let tokens: Arc<[u32]> = corpus().into();
    on_ranks(world, |rank, comm| {
        let port = cpu();
        let model = Transformer::new(&tiny(), &port, 7).unwrap();
        let groups: Vec<ParamGroup> = model
            .params()
            .iter()
            .map(|p| ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: p.kind.decays() })
            .collect();
        let pairs: Vec<(Tensor, bool)> = groups.iter().map(|g| (g.param.clone(), g.decay)).collect();
        // A small bucket so a parameter straddles buckets and rank blocks.
        let opts = DpOptions { zero, bucket_bytes: 4096, overlap: true };
        let mut coll = collectives_for(&port, comm).unwrap();
        if how == Exchange::Deferred {
            coll = Arc::new(OneThread(coll));
        }
        let mut dp = DataParallel::new(coll, &pairs, adamw(), opts).unwrap();
        assert_eq!(dp.overlaps(), how != Exchange::Deferred);
        let index: std::collections::HashMap<u64, usize> =
            model.params().iter().enumerate().map(|(i, p)| (p.tensor.id(), i)).collect();
        let mut opt = if zero { None } else { Some(AdamW::new(adamw(), groups).unwrap()) };
        dp.broadcast_params().unwrap();
        let mut loader = Loader::new(tokens.clone(), GLOBAL_BATCH / world, CTX, 3, rank, world).unwrap();
        let mut losses = Vec::new();
        for _ in 0..STEPS {
            let b = loader.next_batch();
            let x = Tensor::from_i32(&port, &b.inputs, &[b.batch, b.ctx]).unwrap();
            let y = Tensor::from_i32(&port, &b.targets, &[b.batch, b.ctx]).unwrap();
            let loss = model.loss(&x, &y).unwrap();
            if how == Exchange::After {
                let mut g = loss.backward().unwrap();
                let grads: Vec<Tensor> = model.params().iter().map(|p| g.remove(&p.tensor).unwrap()).collect();
                match &mut opt {
                    Some(opt) => {
                        let avg = dp.average_grads(&grads).unwrap();
                        opt.step(&avg, 1e-2).unwrap();
                    }
                    None => {
                        dp.zero_step(&grads, 1e-2).unwrap();
                    }
                }
            } else {
                let mut handed = 0;
                let work = |ready: &mut dyn FnMut(usize, Tensor) -> anychip_core::Result<()>| {
                    loss.backward_hooked(&mut |leaf, g| {
                        handed += 1;
                        ready(index[&leaf.id()], g.clone())
                    })?;
                    Ok::<_, anychip_core::Error>(())
                };
                match &mut opt {
                    Some(opt) => {
                        let ((), avg) = dp.average_grads_during(work).unwrap();
                        opt.step(&avg, 1e-2).unwrap();
                    }
                    None => {
                        dp.zero_step_during(1e-2, work).unwrap();
                    }
                }
                assert_eq!(handed, index.len(), "every parameter's gradient is handed over once");
            }
            losses.push(dp.sum(&[loss.item().unwrap()]).unwrap()[0] / world as f32);
        }
        let weights: Vec<f32> = model.params().iter().flat_map(|p| p.tensor.to_vec_f32().unwrap()).collect();
        (losses, weights, dp.optimizer_state_bytes())
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn n_ranks_with_batch_b_over_n_reproduce_one_rank_with_batch_b() {
    let one = train(1, false).remove(0);
    assert!(one.0[STEPS - 1] < one.0[0], "the baseline must learn: {:?}", one.0);
    for world in [2, 4] {
        for zero in [false, true] {
            let ranks = train(world, zero);
            for (rank, (losses, weights, _)) in ranks.iter().enumerate() {
                // Every replica holds the same bits: each element is summed once, by its owner.
                assert_eq!(
                    weights, &ranks[0].1,
                    "world {world} zero {zero}: rank {rank}'s weights differ from rank 0's"
                );
                let d = max_diff(losses, &one.0);
                if rank == 0 {
                    eprintln!("world {world} zero {zero}: max |loss - loss_1rank| over {STEPS} steps = {d:.3e}");
                }
                assert!(d < 1e-4, "world {world} zero {zero}: losses {losses:?} vs one rank {:?}", one.0);
                let w = max_diff(weights, &one.1);
                if rank == 0 {
                    // Adam divides by sqrt(v): a rounding-level change of a near-zero gradient can
                    // move a weight by a fraction of lr (1e-2) per step, so weights agree less
                    // tightly than losses.
                    eprintln!("world {world} zero {zero}: max |w - w_1rank| = {w:.3e}");
                }
                assert!(w < 1e-3, "world {world} zero {zero}: weights drifted from one rank's by {w}");
            }
            // The reduction order differs from one rank's, so the runs must not be bit-identical
            // by accident of nothing having been communicated.
            assert_ne!(ranks[0].0, vec![0.0; STEPS]);
        }
    }
}

#[test]
fn exchanging_during_backward_gives_the_same_bits_as_after() {
    // Overlap changes when buckets are exchanged (and in which order), never what is summed.
    for zero in [false, true] {
        let after = train_with(2, zero, Exchange::After);
        for how in [Exchange::Overlapped, Exchange::Deferred] {
            let other = train_with(2, zero, how);
            for rank in 0..2 {
                assert_eq!(other[rank].0, after[rank].0, "zero {zero} {how:?}: rank {rank}'s losses");
                assert_eq!(other[rank].1, after[rank].1, "zero {zero} {how:?}: rank {rank}'s weights");
            }
        }
    }
}

#[test]
fn zero1_shards_the_optimizer_state() {
    let full = train(1, false).remove(0).2;
    let n_params: usize = Transformer::new(&tiny(), &cpu(), 7).unwrap().n_params();
    assert_eq!(full, 8 * n_params);
    for world in [2, 4] {
        let per_rank: Vec<usize> = train(world, true).iter().map(|r| r.2).collect();
        assert_eq!(per_rank.iter().sum::<usize>(), full, "the shards of {world} ranks must cover every element once");
        let most = *per_rank.iter().max().unwrap();
        assert!(most <= full / world + 8 * world, "world {world}: {per_rank:?} is not ~1/{world} of {full}");
    }
}

#[test]
fn gathered_moments_round_trip_across_world_sizes() {
    // Moments written by 2 ranks under ZeRO-1 load back into 4 ranks' shards (resume with another N).
    let gathered = on_ranks(2, |_, comm| {
        let port = cpu();
        let model = Transformer::new(&tiny(), &port, 7).unwrap();
        let pairs: Vec<(Tensor, bool)> = model.params().iter().map(|p| (p.tensor.clone(), true)).collect();
        let coll = collectives_for(&port, comm).unwrap();
        let no_clip = AdamWConfig { grad_clip: 0.0, ..adamw() };
        let mut dp =
            DataParallel::new(coll, &pairs, no_clip, DpOptions { zero: true, bucket_bytes: 4096, overlap: true })
                .unwrap();
        let grads: Vec<Tensor> =
            model.params().iter().map(|p| Tensor::full(&port, p.tensor.shape(), 0.5, DType::F32).unwrap()).collect();
        dp.zero_step(&grads, 1e-3).unwrap();
        let (m, v) = dp.gather_moments().unwrap().unwrap();
        (
            m.iter().flat_map(|t| t.to_vec_f32().unwrap()).collect::<Vec<_>>(),
            v.iter().flat_map(|t| t.to_vec_f32().unwrap()).collect::<Vec<_>>(),
        )
    });
    assert_eq!(gathered[0], gathered[1]);
    // One step with g = 0.5 everywhere: m = (1 - beta1) * 0.5 and v = (1 - beta2) * 0.25 in every element.
    let (m, v) = &gathered[0];
    assert!(m.iter().all(|&x| (x - 0.05).abs() < 1e-7), "m: {:?}", &m[..4]);
    assert!(v.iter().all(|&x| (x - 0.0125).abs() < 1e-7), "v: {:?}", &v[..4]);
    let reloaded = on_ranks(4, |_, comm| {
        let port = cpu();
        let model = Transformer::new(&tiny(), &port, 7).unwrap();
        let pairs: Vec<(Tensor, bool)> = model.params().iter().map(|p| (p.tensor.clone(), true)).collect();
        let coll = collectives_for(&port, comm).unwrap();
        let mut dp =
            DataParallel::new(coll, &pairs, adamw(), DpOptions { zero: true, bucket_bytes: 4096, overlap: true })
                .unwrap();
        let mut at = 0;
        let mut split = |all: &[f32]| -> Vec<Tensor> {
            let ts = model
                .params()
                .iter()
                .map(|p| {
                    let n = p.tensor.numel();
                    let t = Tensor::from_f32(&port, &all[at..at + n], p.tensor.shape(), DType::F32).unwrap();
                    at += n;
                    t
                })
                .collect();
            at = 0;
            ts
        };
        let (m, v) = (split(&gathered[0].0), split(&gathered[0].1));
        dp.load_moments(&m, &v, 1).unwrap();
        let (m2, _) = dp.gather_moments().unwrap().unwrap();
        m2.iter().flat_map(|t| t.to_vec_f32().unwrap()).collect::<Vec<_>>()
    });
    for r in &reloaded {
        assert_eq!(r, &gathered[0].0);
    }
}
