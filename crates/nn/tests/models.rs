//! Whole-model behaviour: a tiny GPT and a tiny Llama overfit one batch on every port, and
//! the `cpu` and `ref` ports follow the same loss curve.

use anychip_core::Tensor;
use anychip_nn::{ModelConfig, Precision, Transformer};
use anychip_optim::{AdamW, AdamWConfig, CosineSchedule, ParamGroup};
use anychip_port::{Port, PortOptions, Registry};
use std::sync::Arc;

fn open(name: &str) -> Arc<dyn Port> {
    let mut r = Registry::new();
    anychip_port_ref::register(&mut r);
    anychip_port_cpu::register(&mut r);
    r.create(name, &PortOptions { threads: Some(2) }).unwrap()
}

fn gpt() -> ModelConfig {
    ModelConfig::gpt2(64, 16, 2, 2, 32)
}

fn llama() -> ModelConfig {
    let mut c = ModelConfig::llama(64, 16, 2, 4, 2, 32, 64);
    c.qk_norm = true; // exercise the Qwen3 path too
    c
}

/// Train on one fixed batch; returns the loss before each step.
fn run(cfg: &ModelConfig, port: &str, steps: usize, lr: f32) -> Vec<f32> {
    run_at(cfg, port, steps, lr, Precision::F32)
}

/// [`run`] with the model's matrix products at `precision`.
fn run_at(cfg: &ModelConfig, port: &str, steps: usize, lr: f32, precision: Precision) -> Vec<f32> {
    let p = open(port);
    let model = Transformer::new(cfg, &p, 7).unwrap().with_precision(precision);
    let groups = model
        .params()
        .iter()
        .map(|q| ParamGroup { name: q.name.clone(), param: q.tensor.clone(), decay: q.kind.decays() })
        .collect();
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, groups).unwrap();
    let (b, t) = (2, 12);
    let toks: Vec<i32> = (0..b * (t + 1)).map(|i| ((i * 7 + 3) % 61) as i32).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for r in 0..b {
        x.extend_from_slice(&toks[r * (t + 1)..r * (t + 1) + t]);
        y.extend_from_slice(&toks[r * (t + 1) + 1..(r + 1) * (t + 1)]);
    }
    let xi = Tensor::from_i32(&p, &x, &[b, t]).unwrap();
    let yi = Tensor::from_i32(&p, &y, &[b, t]).unwrap();
    let sched = CosineSchedule::constant(lr);
    let mut losses = Vec::new();
    for s in 0..steps {
        let loss = model.loss(&xi, &yi).unwrap();
        losses.push(loss.item().unwrap());
        let mut g = loss.backward().unwrap();
        let grads: Vec<Tensor> =
            model.params().iter().map(|q| g.remove(&q.tensor).expect("every parameter gets a gradient")).collect();
        opt.step(&grads, sched.lr(s as u64)).unwrap();
    }
    losses
}

#[test]
fn tiny_gpt_overfits_one_batch_on_cpu_and_ref() {
    for port in ["cpu", "ref"] {
        let l = run(&gpt(), port, 150, 1e-2);
        assert!(*l.last().unwrap() < 0.05, "{port}: final loss {} (start {})", l.last().unwrap(), l[0]);
    }
}

#[test]
fn tiny_llama_overfits_one_batch_on_cpu_and_ref() {
    for port in ["cpu", "ref"] {
        let l = run(&llama(), port, 150, 1e-2);
        assert!(*l.last().unwrap() < 0.05, "{port}: final loss {} (start {})", l.last().unwrap(), l[0]);
    }
}

#[test]
fn cpu_and_ref_loss_curves_agree_over_20_steps() {
    for cfg in [gpt(), llama()] {
        let a = run(&cfg, "cpu", 20, 3e-3);
        let b = run(&cfg, "ref", 20, 3e-3);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-3 * (1.0 + y.abs()), "{}: step {i}: cpu {x} vs ref {y}", cfg.family);
        }
    }
}

#[test]
fn bf16_mixed_precision_trains_close_to_f32_and_the_same_on_every_port() {
    for cfg in [gpt(), llama()] {
        let f32_curve = run_at(&cfg, "cpu", 30, 3e-3, Precision::F32);
        let bf16_cpu = run_at(&cfg, "cpu", 30, 3e-3, Precision::Bf16);
        // `ref` has no bf16 matrix unit: it widens, and must give the same numbers up to
        // summation order (cpu uses its AVX512-BF16 kernel where the CPU has one).
        let bf16_ref = run_at(&cfg, "ref", 30, 3e-3, Precision::Bf16);
        assert!(bf16_cpu[29] < 0.8 * bf16_cpu[0], "{}: bf16 does not learn: {bf16_cpu:?}", cfg.family);
        for i in 0..30 {
            let (a, b, r) = (f32_curve[i], bf16_cpu[i], bf16_ref[i]);
            assert!((a - b).abs() < 2e-2 * a.abs(), "{}: step {i}: f32 {a} vs bf16 {b}", cfg.family);
            assert!((b - r).abs() < 1e-3 * (1.0 + r.abs()), "{}: step {i}: bf16 cpu {b} vs ref {r}", cfg.family);
        }
        assert_ne!(f32_curve, bf16_cpu, "{}: bf16 must actually round something", cfg.family);
    }
}

#[test]
fn initial_loss_is_near_uniform() {
    // With N(0, 0.02) weights the logits are near zero: loss ~ ln(vocab).
    let l = run(&gpt(), "ref", 1, 0.0);
    assert!((l[0] - (64f32).ln()).abs() < 0.1, "{}", l[0]);
}

#[test]
fn out_of_vocabulary_ids_are_errors_that_name_the_id() {
    // vocab 64: id 64 (one past the end) and -1 as inputs, 64 as a target (a negative target is
    // the contract's "ignore this row"). Every port must refuse them with an error naming the
    // id, never read past the embedding table, score a class no logit has, or panic.
    let cfg = gpt();
    for port in ["ref", "cpu"] {
        let p = open(port);
        let model = Transformer::new(&cfg, &p, 7).unwrap();
        let good: Vec<i32> = (0..8).collect();
        for bad in [cfg.vocab_size as i32, -1] {
            let mut ids = good.clone();
            ids[5] = bad;
            let x_bad = Tensor::from_i32(&p, &ids, &[2, 4]).unwrap();
            let x_good = Tensor::from_i32(&p, &good, &[2, 4]).unwrap();
            let y_bad = Tensor::from_i32(&p, &ids, &[8]).unwrap();
            let y_good = Tensor::from_i32(&p, &good, &[8]).unwrap();
            let cases: &[(&str, &Tensor, &Tensor)] = if bad < 0 {
                &[("input", &x_bad, &y_good)]
            } else {
                &[("input", &x_bad, &y_good), ("target", &x_good, &y_bad)]
            };
            for &(what, x, y) in cases {
                let r = model.loss(x, y).and_then(|l| l.item().map(|_| l));
                let e = match r {
                    Ok(_) => panic!("{port}: {what} id {bad} outside vocab {} was accepted", cfg.vocab_size),
                    Err(e) => e.to_string(),
                };
                assert!(e.contains(&bad.to_string()), "{port}: {what} id {bad}: error does not name it: {e}");
            }
        }
    }
}
