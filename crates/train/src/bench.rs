//! `anychip bench`: training-step throughput on synthetic tokens, medians over repeats.

use crate::config::TrainConfig;
use crate::ports;
use crate::trainer::{forward_backward, optimizer};
use anychip_data::Loader;
use anychip_nn::Transformer;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// Benchmark result of one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub preset: String,
    pub port: String,
    pub device: String,
    pub threads: Option<usize>,
    pub batch: usize,
    pub ctx: usize,
    pub n_params: usize,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub tokens_per_s: f64,
    pub model_gflops: f64,
    pub peak_gflops: Option<f64>,
    pub mfu: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Peak resident memory of this process (Linux VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Median of a non-empty slice.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Time `steps` full training steps (forward, backward, AdamW) after `warmup` untimed ones.
pub fn bench(cfg: &TrainConfig, warmup: usize, steps: usize) -> Result<BenchResult> {
    let port = ports::open(&cfg.port, cfg.threads)?;
    let model = Transformer::new(&cfg.model, &port, cfg.seed)?;
    let mut opt = optimizer(cfg, &model)?;
    // Random tokens: throughput does not depend on the text, and no corpus is needed.
    let n = (cfg.batch * (cfg.ctx + 1) * 64).max(4096);
    let tokens: Vec<u32> = (0..n)
        .map(|i| (anychip_port::philox::uniform(cfg.seed, i as u64) * cfg.model.vocab_size as f32) as u32)
        .collect();
    let mut loader = Loader::new(tokens, cfg.batch, cfg.ctx, cfg.seed, 0, 1)?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let (loss, grads) = forward_backward(&model, &mut loader, cfg)?;
        opt.step(&grads, cfg.lr)?;
        port.synchronize()?;
        if !loss.is_finite() {
            anyhow::bail!("benchmark loss became {loss}; the model diverged on random tokens, lower --lr");
        }
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(&times);
    let tps = cfg.tokens_per_step() as f64 / med;
    let flops = cfg.model.train_flops_per_token(cfg.ctx) * tps;
    let caps = port.capabilities();
    Ok(BenchResult {
        preset: cfg.preset.clone(),
        port: cfg.port.clone(),
        device: caps.device.clone(),
        threads: cfg.threads,
        batch: cfg.batch,
        ctx: cfg.ctx,
        n_params: model.n_params(),
        step_ms_median: med * 1e3,
        step_ms_min: times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
        tokens_per_s: tps,
        model_gflops: flops / 1e9,
        peak_gflops: caps.peak_flops_f32.map(|p| p / 1e9),
        mfu: caps.peak_flops_f32.map(|p| flops / p),
        peak_rss_mib: peak_rss_mib(),
    })
}
