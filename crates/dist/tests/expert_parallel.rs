//! Expert parallelism with ranks as threads (no MPI needed): the all-to-all's semantics, and a
//! MoE model spread over `replicas x ep` ranks reproducing one rank's loss and gradients.

use anychip_core::Tensor;
use anychip_dist::{Collectives, ExpertLayout, ExpertParallel, HostStaged};
use anychip_model_config::{Mlp, ModelConfig, MoeConfig};
use anychip_nn::{ExpertGroup, Placement, Transformer};
use anychip_optim::{AdamW, AdamWConfig, ParamGroup};
use anychip_port::DType;
use std::collections::HashMap;
use std::sync::Arc;

mod common;
use common::{cpu, on_ranks};

#[test]
fn all_to_all_v_sends_each_rank_its_block() {
    // Rank s sends (s + d) % 3 values to rank d, each value 100 s + 10 d + i: every pair's
    // count differs from its reverse, and the values say where they came from.
    let world = 3;
    let count = |s: usize, d: usize| (s + d) % 3;
    let out = on_ranks(world, |rank, comm| {
        let port = cpu();
        let c = HostStaged::new(port.clone(), comm);
        let send: Vec<f32> =
            (0..world).flat_map(|d| (0..count(rank, d)).map(move |i| (100 * rank + 10 * d + i) as f32)).collect();
        let sc: Vec<usize> = (0..world).map(|d| count(rank, d)).collect();
        let rc: Vec<usize> = (0..world).map(|s| count(s, rank)).collect();
        let send = Tensor::from_f32(&port, &send, &[send.len()], DType::F32).unwrap();
        let recv = Tensor::zeros(&port, &[rc.iter().sum()], DType::F32).unwrap();
        c.all_to_all_v(&send.view(), &sc, &recv.view(), &rc).unwrap();
        // Counts that disagree with what the peers send are an error on every rank, not a hang.
        let bad = c.all_to_all_v(&send.view(), &[1, 1, 1], &recv.view(), &rc);
        assert!(bad.unwrap_err().to_string().contains("which expects"), "rank {rank}");
        recv.to_vec_f32().unwrap()
    });
    for (d, got) in out.iter().enumerate() {
        let want: Vec<f32> =
            (0..world).flat_map(|s| (0..count(s, d)).map(move |i| (100 * s + 10 * d + i) as f32)).collect();
        assert_eq!(got, &want, "rank {d}");
    }
}

/// A small MoE model: 2 layers, 4 experts of width 24, top-2, the load-balancing loss on.
fn moe_config() -> ModelConfig {
    let mut c = ModelConfig::gpt2(64, 16, 2, 2, 32);
    c.mlp = Mlp::SwiGlu;
    c.moe = Some(MoeConfig { n_experts: 4, top_k: 2, d_expert: 24, aux_loss_coef: 0.1, ..MoeConfig::default() });
    c
}

/// Row r of the global batch: `[T]` inputs and targets.
fn row(r: usize, t: usize) -> (Vec<i32>, Vec<i32>) {
    let tok = |i: usize| ((r * 37 + i * 11 + (i * i) % 7) % 64) as i32;
    ((0..t).map(tok).collect(), (1..=t).map(tok).collect())
}

/// Loss and named gradients of `model` on rows `rows` (a `[rows, T]` batch).
fn loss_and_grads(model: &Transformer, rows: &[usize]) -> (f32, HashMap<String, Vec<f32>>) {
    let t = 8;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for &r in rows {
        let (a, b) = row(r, t);
        x.extend(a);
        y.extend(b);
    }
    let port = model.port();
    let (x, y) =
        (Tensor::from_i32(port, &x, &[rows.len(), t]).unwrap(), Tensor::from_i32(port, &y, &[rows.len(), t]).unwrap());
    let loss = model.loss(&x, &y).unwrap();
    let grads = loss.backward().unwrap();
    let named = model
        .params()
        .iter()
        .filter_map(|p| grads.get(&p.tensor).map(|g| (p.name.clone(), g.to_vec_f32().unwrap())))
        .collect();
    (loss.item().unwrap(), named)
}

fn close(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1e-3 + y.abs())).fold(0.0, f32::max)
}

/// `replicas x ep` ranks, one row each, against one rank with every row: the mean loss, the
/// averaged gradients of the replicated weights and the reduced expert gradients all match.
fn spread_matches_one_rank(ep: usize, replicas: usize) {
    let world = ep * replicas;
    let cfg = moe_config();
    let all: Vec<usize> = (0..world).collect();
    let (want_loss, want) = loss_and_grads(&Transformer::new(&cfg, &cpu(), 5).unwrap(), &all);
    let got = on_ranks(world, |rank, comm| {
        let port = cpu();
        let coll: Arc<dyn Collectives> = Arc::new(HostStaged::new(port.clone(), comm));
        let layout = ExpertLayout::new(rank, world, ep).unwrap();
        let group = ExpertGroup { coll: coll.clone(), members: layout.members(), index: layout.member() };
        let placement = Placement { world: Some(coll.clone()), experts: Some(group) };
        let model = Transformer::new_placed(&cfg, &port, 5, placement).unwrap();
        let (loss, grads) = loss_and_grads(&model, &[rank]);
        let sum = Tensor::from_f32(&port, &[loss], &[1], DType::F32).unwrap();
        coll.all_reduce(&sum.view()).unwrap();
        let (mut experts, mut out) = (Vec::new(), HashMap::new());
        for (p, &is_expert) in model.params().iter().zip(model.expert_shard()) {
            // An expert no token reached has no gradient: zeros.
            let g = grads.get(&p.name).cloned().unwrap_or_else(|| vec![0.0; p.tensor.numel()]);
            let g = Tensor::from_f32(&port, &g, p.tensor.shape(), DType::F32).unwrap();
            if is_expert {
                experts.push((ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: true }, g));
                continue;
            }
            coll.all_reduce(&g.view()).unwrap();
            out.insert(p.name.clone(), g.to_vec_f32().unwrap().iter().map(|x| x / world as f32).collect::<Vec<_>>());
        }
        let (groups, grads): (Vec<ParamGroup>, Vec<Tensor>) = experts.into_iter().unzip();
        let names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
        assert_eq!(names.len(), 2 * 2 * 4 / ep, "rank {rank} holds its experts only");
        let e = ExpertParallel::new(coll, layout, AdamW::new(AdamWConfig::default(), groups).unwrap()).unwrap();
        for (n, g) in names.into_iter().zip(e.reduce_grads(&grads).unwrap()) {
            out.insert(n, g.to_vec_f32().unwrap());
        }
        (sum.item().unwrap() / world as f32, out)
    });
    for (rank, (loss, grads)) in got.iter().enumerate() {
        assert!((loss - want_loss).abs() < 1e-5, "rank {rank}: loss {loss} vs one rank {want_loss}");
        for (name, g) in grads {
            let zeros = vec![0.0; g.len()];
            let d = close(g, want.get(name).unwrap_or(&zeros));
            assert!(d < 2e-3, "rank {rank} ({ep} x {replicas}): gradient of {name} off by {d:e} (relative)");
        }
    }
}

#[test]
fn two_ranks_of_experts_match_one_rank() {
    spread_matches_one_rank(2, 1);
}

#[test]
fn two_replicas_of_two_expert_ranks_match_one_rank() {
    spread_matches_one_rank(2, 2);
}

#[test]
fn four_ranks_of_one_expert_each_match_one_rank() {
    spread_matches_one_rank(4, 1);
}
