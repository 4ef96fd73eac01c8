//! `anychip bench`: training-step throughput on synthetic tokens, medians over repeats.

use crate::config::TrainConfig;
use crate::precision::matmul_precision;
use crate::profile::{Kind, Phase, Profile, Profiler};
use crate::trainer::{batch_tensors, forward_backward, on_port, optimizer, param_grads};
use anychip_data::Loader;
use anychip_nn::Transformer;
use anychip_optim::AdamW;
use anychip_port::Port;
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
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
    /// What the linear layers and the LM head multiplied in.
    pub precision: String,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub tokens_per_s: f64,
    pub model_gflops: f64,
    pub peak_gflops: Option<f64>,
    pub mfu: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Time per op kind, with `--profile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
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

/// Time `steps` full training steps (forward, backward, AdamW) after `warmup` untimed ones;
/// with `profile`, also time every port call by kind (the port is wrapped in a [`Profiler`]).
pub fn bench(
    cfg: &TrainConfig,
    inner: Arc<dyn Port>,
    warmup: usize,
    steps: usize,
    profile: bool,
) -> Result<BenchResult> {
    let prof = profile.then(|| Arc::new(Profiler::new(inner.clone())));
    let port: Arc<dyn Port> = match &prof {
        Some(p) => p.clone(),
        None => inner,
    };
    if cfg.batch == 0 || cfg.ctx == 0 || steps == 0 {
        anyhow::bail!("--batch, --ctx and --steps must be at least 1");
    }
    // Random tokens: throughput does not depend on the text, and no corpus is needed.
    let n = cfg.batch.saturating_mul(cfg.ctx + 1).saturating_mul(64).max(4096);
    let mut need = crate::validate::memory_estimate(cfg, cfg.batch);
    need.extra = n as u64 * 4;
    // A modelled chip (`sim`) holds shapes only: host memory is not what it needs.
    if port.modelled_seconds().is_none() {
        crate::validate::check_memory(need, crate::validate::available_memory(), cfg.batch)?;
    }
    let (precision, note) = matmul_precision(port.as_ref(), cfg.precision);
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let model = Transformer::new(&cfg.model, &port, cfg.seed)?.with_precision(precision);
    let mut opt = optimizer(cfg, &model)?;
    let tokens: Vec<u32> = (0..n)
        .map(|i| (anychip_port::philox::uniform(cfg.seed, i as u64) * cfg.model.vocab_size as f32) as u32)
        .collect();
    let mut loader = Loader::new(tokens, cfg.batch, cfg.ctx, cfg.seed, 0, 1)?;
    let mut times = Vec::with_capacity(steps);
    // A simulated chip (`sim`) reports the device time its cost model charged; it holds no
    // values in shapes-only mode, so the loss is read only from ports that run for real.
    let simulated = port.modelled_seconds().is_some();
    let epoch = Instant::now();
    let now = || port.modelled_seconds().unwrap_or_else(|| epoch.elapsed().as_secs_f64());
    for i in 0..warmup + steps {
        if i == warmup {
            if let Some(p) = &prof {
                p.reset();
            }
        }
        let t = now();
        let loss = on_port(&*port, || -> Result<f32> {
            Ok(match &prof {
                Some(p) => profiled_step(p, &model, &mut loader, &mut opt, cfg, !simulated)?,
                None if simulated => {
                    let (x, y) = batch_tensors(model.port(), &loader.next_batch())?;
                    let loss = model.loss(&x, &y)?;
                    opt.step(&param_grads(&model, &loss)?, cfg.lr)?;
                    0.0
                }
                None => {
                    let (loss, grads) = forward_backward(&model, &mut loader, cfg)?;
                    opt.step(&grads, cfg.lr)?;
                    loss
                }
            })
        })?;
        port.synchronize()?;
        if !loss.is_finite() {
            anyhow::bail!("benchmark loss became {loss}; the model diverged on random tokens, lower --lr");
        }
        if i >= warmup {
            times.push(now() - t);
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
        precision: precision.name().into(),
        step_ms_median: med * 1e3,
        step_ms_min: times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
        tokens_per_s: tps,
        model_gflops: flops / 1e9,
        peak_gflops: caps.peak_flops_f32.map(|p| p / 1e9),
        mfu: caps.peak_flops_f32.map(|p| flops / p),
        peak_rss_mib: peak_rss_mib(),
        profile: prof.map(|p| p.report(times.len(), times.iter().sum())),
    })
}

/// One step of [`forward_backward`] + AdamW (accum 1), with each phase marked for `prof`.
fn profiled_step(
    prof: &Profiler,
    model: &Transformer,
    loader: &mut Loader,
    opt: &mut AdamW,
    cfg: &TrainConfig,
    read_loss: bool,
) -> Result<f32> {
    prof.set_phase(Phase::Rest);
    let (x, y) = prof.scope(Kind::Data, || batch_tensors(model.port(), &loader.next_batch()))?;
    prof.set_phase(Phase::Forward);
    let loss = model.loss(&x, &y)?;
    prof.set_phase(Phase::Backward);
    let grads = param_grads(model, &loss)?;
    prof.set_phase(Phase::Rest);
    prof.scope(Kind::Optimizer, || opt.step(&grads, cfg.lr))?;
    Ok(if read_loss { loss.item()? } else { 0.0 })
}
