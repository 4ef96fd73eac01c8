//! `anychip bench`: training throughput (tokens/s, step time, MFU, peak memory).

use crate::cmd_train::preset;
use anychip_model_config::ModelConfig;
use anychip_train::bench::bench as run_bench;
use anychip_train::{Precision, TrainConfig};
use anyhow::{anyhow, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `anychip bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Model preset.
    #[arg(long, default_value = "gpt2-tiny")]
    preset: String,
    /// Port to measure.
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// What the linear layers and the LM head multiply in: f32 or bf16 (see `anychip train`).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Sequences per step (default: 16 for byte-level presets, 8 for small BPE ones, 4 above 50M params).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: min(256, the preset's maximum)).
    #[arg(long)]
    ctx: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print (and put in the JSON) the time per op kind: matmul, attention, norms, ...
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    sim: crate::cmd_sim::SimArgs,
}

/// `bench`'s default sequences per step: 16 for byte-level presets, 8 for small BPE ones, 4 above 50M params.
pub(crate) fn default_batch(model: &ModelConfig) -> usize {
    if model.n_params() > 50_000_000 {
        4
    } else if model.vocab_size > 256 {
        8
    } else {
        16
    }
}

/// `anychip bench`: time training steps of a preset on a port and print one summary line.
pub fn bench(a: BenchArgs) -> Result<()> {
    if a.port.starts_with("sim:") {
        let job = crate::cmd_sim::BenchJob {
            preset: a.preset,
            port: a.port,
            threads: a.threads,
            precision: a.precision,
            batch: a.batch,
            ctx: a.ctx,
            profile: a.profile,
            json: a.json,
        };
        return crate::cmd_sim::bench(job, &a.sim);
    }
    let model = preset(&a.preset)?;
    let default_batch = default_batch(&model);
    let mut cfg = TrainConfig::default_for(&a.preset, model);
    cfg.batch = a.batch.unwrap_or(default_batch);
    cfg.ctx = a.ctx.unwrap_or(cfg.model.max_ctx.min(256));
    cfg.port = a.port;
    cfg.threads = a.threads;
    cfg.precision = a.precision;
    cfg.lr = 1e-4;
    if cfg.ctx > cfg.model.max_ctx {
        return Err(anyhow!("--ctx {} is larger than the model's maximum context {}", cfg.ctx, cfg.model.max_ctx));
    }
    let port = crate::ports::open(&cfg.port, cfg.threads)?;
    let r = run_bench(&cfg, port, a.warmup, a.steps, a.profile)?;
    println!(
        "bench {} on {} [{}]: batch {}x{}, {:.2}M params, {} matmuls | step {:.1} ms (median of {}, min {:.1}) | {:.0} tok/s | {:.1} GFLOP/s | MFU {} | peak RSS {}",
        r.preset,
        r.port,
        r.device,
        r.batch,
        r.ctx,
        r.n_params as f64 / 1e6,
        r.precision,
        r.step_ms_median,
        a.steps,
        r.step_ms_min,
        r.tokens_per_s,
        r.model_gflops,
        r.mfu.map(|m| format!("{:.1}% of {:.0} GFLOP/s", m * 100.0, r.peak_gflops.unwrap_or(0.0))).unwrap_or_else(|| "n/a".into()),
        r.peak_rss_mib.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into()),
    );
    if let Some(p) = &r.profile {
        println!("{p}");
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}
