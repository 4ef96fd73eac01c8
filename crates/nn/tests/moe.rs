//! The mixture-of-experts block inside a model: gradients against finite differences (router,
//! renormalised top-k, dispatch, experts, combine, shared experts, load-balancing loss), a tiny
//! MoE model overfitting one batch on `cpu` and `ref` alike, and the config errors.

use anychip_core::{no_grad, DType, Tensor};
use anychip_nn::{ModelConfig, MoeConfig, Transformer};
use anychip_optim::{AdamW, AdamWConfig, CosineSchedule, ParamGroup};
use anychip_port::{Port, PortOptions, Registry};
use std::sync::Arc;

fn open(name: &str) -> Arc<dyn Port> {
    let mut r = Registry::new();
    anychip_port_ref::register(&mut r);
    anychip_port_cpu::register(&mut r);
    r.create(name, &PortOptions { threads: Some(2) }).unwrap()
}

/// Three layers: dense first, then two MoE layers with 4 experts (top-2), one shared expert
/// and the ERNIE selection bias, so every part of the block is on the path.
fn moe_cfg() -> ModelConfig {
    let mut c = ModelConfig::llama(64, 16, 3, 4, 2, 32, 64);
    c.moe = Some(MoeConfig {
        n_experts: 4,
        top_k: 2,
        norm_topk_prob: true,
        d_expert: 16,
        n_shared: 1,
        layer_start: 1,
        layer_interval: 1,
        layer_end: None,
        aux_loss_coef: 0.1,
        aux_loss_per_layer: true, // the pooled form is what the HF parity tests cover
        aux_loss_router_only: false,
        selection_bias: true,
        bias_balance_rate: 0.0,
        capacity_factor: None,
    });
    c
}

fn batch(p: &Arc<dyn Port>, b: usize, t: usize) -> (Tensor, Tensor) {
    let toks: Vec<i32> = (0..b * (t + 1)).map(|i| ((i * 7 + 3) % 61) as i32).collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..b {
        x.extend_from_slice(&toks[r * (t + 1)..r * (t + 1) + t]);
        y.extend_from_slice(&toks[r * (t + 1) + 1..(r + 1) * (t + 1)]);
    }
    (Tensor::from_i32(p, &x, &[b, t]).unwrap(), Tensor::from_i32(p, &y, &[b, t]).unwrap())
}

fn uniform(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| anychip_port::philox::uniform(seed, i as u64) * 2.0 - 1.0).collect()
}

/// Directional finite differences of the whole model's loss along a random direction per
/// parameter: a coarse check that every parameter's gradient arrives through the model (f32
/// losses near 4 resolve differences of about 2e-4 at this step). Picking experts is discrete,
/// so with `top_k` equal to the expert count the loss is smooth everywhere. The precise check of
/// the block, with top-2 routing, is `moe::tests::block_gradients_match_finite_differences`.
fn check_gradients(top_k: usize, step: f32) {
    let p = open("ref");
    let mut cfg = moe_cfg();
    cfg.moe.as_mut().unwrap().top_k = top_k;
    let model = Transformer::new(&cfg, &p, 3).unwrap();
    // Larger router weights and a non-zero selection bias: routing margins well above the
    // finite-difference step, and a bias that changes which experts are picked.
    for q in model.params() {
        let v = q.tensor.to_vec_f32().unwrap();
        let scaled: Option<Vec<f32>> = if q.name.ends_with("router.weight") {
            Some(v.iter().map(|x| x * 40.0).collect())
        } else if q.name.ends_with("selection_bias") {
            Some(uniform(v.len(), 5).iter().map(|x| x * 0.05).collect())
        } else {
            None
        };
        if let Some(s) = scaled {
            q.tensor.assign(&Tensor::from_f32(&p, &s, q.tensor.shape(), DType::F32).unwrap()).unwrap();
        }
    }
    let (x, y) = batch(&p, 2, 6);
    let mut grads = model.loss(&x, &y).unwrap().backward().unwrap();
    let stats = model.router_stats().expect("a MoE forward with gradients records router stats");
    assert_eq!(stats.tokens_per_expert.iter().sum::<usize>(), 2 * 12 * top_k, "2 layers x 12 tokens x top-k");
    let _g = no_grad();
    let mut checked = 0;
    for (i, q) in model.params().iter().enumerate() {
        let Some(g) = grads.remove(&q.tensor) else {
            assert!(q.name.ends_with("selection_bias"), "{} got no gradient", q.name);
            continue;
        };
        let (w0, g) = (q.tensor.to_vec_f32().unwrap(), g.to_vec_f32().unwrap());
        let dir = uniform(w0.len(), 100 + i as u64);
        let analytic: f64 = g.iter().zip(&dir).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let h = step;
        let at = |s: f32| {
            let w: Vec<f32> = w0.iter().zip(&dir).map(|(w, d)| w + s * d).collect();
            q.tensor.assign(&Tensor::from_f32(&p, &w, q.tensor.shape(), DType::F32).unwrap()).unwrap();
            model.loss(&x, &y).unwrap().item().unwrap() as f64
        };
        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
        at(0.0);
        assert!((fd - analytic).abs() < 3e-3 + 2e-2 * analytic.abs(), "{}: fd {fd} vs analytic {analytic}", q.name);
        checked += 1;
    }
    assert!(checked > 20, "checked {checked} parameters");
}

#[test]
fn moe_model_gradients_match_finite_differences_with_every_expert_picked() {
    check_gradients(4, 1e-3);
}

/// Train on one fixed batch; the loss before each step.
fn overfit(port: &str, steps: usize) -> Vec<f32> {
    let p = open(port);
    let mut cfg = moe_cfg();
    cfg.moe.as_mut().unwrap().aux_loss_coef = 0.01;
    let model = Transformer::new(&cfg, &p, 7).unwrap();
    let groups = model
        .params()
        .iter()
        .map(|q| ParamGroup { name: q.name.clone(), param: q.tensor.clone(), decay: q.kind.decays() })
        .collect();
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, groups).unwrap();
    let (x, y) = batch(&p, 2, 12);
    let sched = CosineSchedule::constant(1e-2);
    let mut losses = Vec::new();
    for s in 0..steps {
        let loss = model.loss(&x, &y).unwrap();
        losses.push(loss.item().unwrap());
        let mut g = loss.backward().unwrap();
        let grads: Vec<Tensor> = model
            .params()
            .iter()
            .map(|q| g.remove(&q.tensor).unwrap_or_else(|| q.tensor.zeros_like().unwrap()))
            .collect();
        opt.step(&grads, sched.lr(s as u64)).unwrap();
    }
    losses
}

#[test]
fn tiny_moe_overfits_one_batch_on_cpu_and_ref_alike() {
    let (cpu, rf) = (overfit("cpu", 120), overfit("ref", 120));
    for (port, l) in [("cpu", &cpu), ("ref", &rf)] {
        // The aux loss adds 0.01 x (at least top_k = 2, its value when perfectly balanced).
        assert!(*l.last().unwrap() < 0.07, "{port}: final loss {} (start {})", l.last().unwrap(), l[0]);
    }
    for (s, (a, b)) in cpu.iter().zip(&rf).enumerate().take(20) {
        assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "step {s}: cpu {a} vs ref {b}");
    }
}

#[test]
fn moe_layers_follow_start_interval_and_end() {
    let mut c = moe_cfg();
    c.n_layer = 8;
    let m = c.moe.as_mut().unwrap();
    (m.layer_start, m.layer_interval, m.layer_end) = (1, 2, Some(6));
    let moe: Vec<usize> = (0..8).filter(|&i| c.is_moe_layer(i)).collect();
    assert_eq!(moe, vec![1, 3, 5]);
    let model = Transformer::new(&c, &open("ref"), 0).unwrap();
    assert_eq!(model.n_params(), c.n_params(), "the config's count is the built model's");
    assert!(model.param("blocks.3.moe.experts.3.down.weight").is_some());
    assert!(model.param("blocks.2.mlp.up.weight").is_some() && model.param("blocks.2.moe.router.weight").is_none());
}

#[test]
fn top_k_above_the_expert_count_is_one_clear_error() {
    let mut c = moe_cfg();
    c.moe.as_mut().unwrap().top_k = 5;
    let e = c.validate().unwrap_err();
    assert!(e.contains("top_k (5)") && e.contains("expert count (4)"), "{e}");
    assert!(Transformer::new(&c, &open("ref"), 0).is_err());
}
