//! `anychip bench --profile` on real ports: the profiler's per-kind and per-op times are
//! disjoint, sum to no more than the step, and charge decomposed composites to their kind.
//! (Here rather than in `anychip-train`, which names no port, not even for its tests.)

use anychip_model_config::ModelConfig;
use anychip_port::Port;
use anychip_train::bench::bench;
use anychip_train::profile::Profile;
use anychip_train::TrainConfig;
use std::sync::Arc;

fn profiled(port: Arc<dyn Port>) -> Profile {
    let mut cfg = TrainConfig::default_for("gpt2-tiny", ModelConfig::preset("gpt2-tiny").unwrap());
    (cfg.batch, cfg.ctx, cfg.lr, cfg.port, cfg.threads) = (2, 32, 1e-4, port.name().into(), Some(1));
    let r = bench(&cfg, port, 1, 2, true).unwrap();
    assert!(r.step_ms_median > 0.0);
    r.profile.expect("--profile gives a profile")
}

fn ms(p: &Profile, kind: &str) -> f64 {
    p.rows.iter().find(|r| r.kind == kind).map_or(0.0, |r| r.ms_per_step)
}

fn check(p: &Profile) {
    for kind in ["matmul", "optimizer", "attention", "data"] {
        assert!(ms(p, kind) > 0.0, "{kind} took no time:\n{p}");
    }
    let sum: f64 = p.rows.iter().map(|r| r.ms_per_step).sum();
    assert!(sum <= p.step_ms * (1.0 + 1e-9), "kinds sum to {sum} ms, more than the {} ms step:\n{p}", p.step_ms);
    assert!(p.rows.windows(2).all(|w| w[0].ms_per_step >= w[1].ms_per_step), "not sorted:\n{p}");
    // The op table splits the same spans by name: per kind, its ops add up to the kind.
    for r in &p.rows {
        let ops: f64 = p.ops.iter().filter(|o| o.kind == r.kind).map(|o| o.ms_per_step).sum();
        assert!((ops - r.ms_per_step).abs() <= 1e-9 * r.ms_per_step.max(1.0), "{} ops sum to {ops}:\n{p}", r.kind);
    }
    assert!(p.ops.iter().any(|o| o.op == "attention" && o.fwd_ms > 0.0 && o.bwd_ms > 0.0), "{p}");
    assert!(p.ops.windows(2).all(|w| w[0].ms_per_step >= w[1].ms_per_step), "ops not sorted:\n{p}");
    assert!(p.to_string().contains("costliest ops:"), "{p}");
    let m = p.rows.iter().find(|r| r.kind == "matmul").unwrap();
    assert!(m.fwd_ms > 0.0 && m.bwd_ms > 0.0 && m.fwd_ms + m.bwd_ms <= m.ms_per_step * (1.0 + 1e-9), "{p}");
}

#[test]
fn fused_port_profile_is_disjoint_and_sorted() {
    check(&profiled(Arc::new(anychip_port_cpu::new(Some(1)))));
}

#[test]
fn decomposed_composites_are_charged_to_their_kind() {
    // ref fuses nothing: every composite runs its decomposition inside the profiler, and
    // attention must not leak into elementwise/matmul.
    let p = profiled(Arc::new(anychip_port_ref::new()));
    check(&p);
    let att = p.rows.iter().find(|r| r.kind == "attention").unwrap();
    assert_eq!(att.calls_per_step, (4 * 2) as f64, "one forward and one backward per layer:\n{p}");
}
