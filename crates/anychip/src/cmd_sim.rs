//! `anychip bench --port sim:CHIP`: the engine's real training step priced on a chip profile,
//! and with `--fused none` the porting report (which composites a new port should fuse first).

use crate::cmd_plan::ChipOpts;
use anychip_model_config::ModelConfig;
use anychip_port::{DType, Port};
use anychip_port_sim::{Fused, SimOptions, SimPort};
use anychip_train::bench::{bench as run_bench, BenchResult};
use anychip_train::{Precision, TrainConfig};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `anychip bench` that only the sim port reads.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SimArgs {
    /// With --port sim:CHIP: which composites are priced as fused kernels (profile: as the
    /// chip's sim profile lists them; none: all decomposed, and a porting report; all).
    #[arg(long, default_value = "profile")]
    fused: Fused,
    #[command(flatten)]
    chips: ChipOpts,
}

/// The rest of `anychip bench`'s arguments, as the sim bench reads them.
pub struct BenchJob {
    pub preset: String,
    pub port: String,
    pub threads: Option<usize>,
    pub precision: Precision,
    pub batch: Option<usize>,
    pub ctx: Option<usize>,
    pub profile: bool,
    pub json: Option<PathBuf>,
}

/// The sim bench's result: the engine's bench result (times are modelled) plus the chip's view.
#[derive(Serialize)]
pub struct SimResult {
    #[serde(flatten)]
    pub bench: BenchResult,
    pub chip: String,
    pub fused: Vec<&'static str>,
    /// Peak bytes allocated at once during the step (every tensor, no data held).
    pub peak_memory_bytes: usize,
    pub usable_memory_bytes: Option<f64>,
    /// Peak FLOP/s the MFU is relative to (matrix units, in the step's matmul precision).
    pub matrix_peak_flops: f64,
    /// Model FLOPs / (step time x matrix peak).
    pub mfu_of_matrix_peak: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub porting_report: Option<Vec<PortingRow>>,
}

/// One composite family: its cost per step decomposed vs fused.
#[derive(Serialize)]
pub struct PortingRow {
    pub composite: String,
    pub decomposed_ms: f64,
    pub fused_ms: f64,
    pub saved_ms: f64,
    pub saved_pct_of_step: f64,
}

/// Engine preset, else a planner preset (published architectures such as qwen3-8b).
fn model(preset: &str) -> Result<ModelConfig> {
    anychip_plan::model::engine_config(preset)
}

fn open(job: &BenchJob, args: &SimArgs, fused: Fused) -> Result<Arc<SimPort>> {
    let opts = SimOptions {
        chip_files: args.chips.chip_files.clone(),
        overrides: args.chips.overrides.clone(),
        fused,
        values: None,
    };
    crate::ports::open_sim(&job.port, job.threads, opts)
}

/// Price one training step (after one untimed step: lazily allocated optimizer state).
fn price(cfg: &TrainConfig, sim: &Arc<SimPort>, profile: bool) -> Result<BenchResult> {
    let port: Arc<dyn Port> = sim.clone();
    run_bench(cfg, port, 1, 1, profile)
}

/// `anychip bench --port sim:...`.
pub fn bench(job: BenchJob, args: &SimArgs) -> Result<()> {
    let mut cfg = TrainConfig::default_for(&job.preset, model(&job.preset)?);
    cfg.batch = job.batch.unwrap_or_else(|| crate::cmd_bench::default_batch(&cfg.model));
    cfg.ctx = job.ctx.unwrap_or(cfg.model.max_ctx.min(256));
    if cfg.ctx > cfg.model.max_ctx {
        return Err(anyhow!("--ctx {} is larger than the model's maximum context {}", cfg.ctx, cfg.model.max_ctx));
    }
    cfg.port = job.port.clone();
    cfg.precision = job.precision;
    cfg.lr = 1e-4;
    let matmul_dtype = if job.precision == Precision::Bf16 { DType::BF16 } else { DType::F32 };
    let sim = open(&job, args, args.fused)?;
    sim.check_figures(matmul_dtype)?;
    let report = args.fused == Fused::None;
    let bench = price(&cfg, &sim, job.profile || report)?;
    let peak = sim.matrix_peak(matmul_dtype)?;
    let flops = cfg.model.train_flops_per_token(cfg.ctx) * bench.tokens_per_s;
    let porting_report = if report { Some(porting_report(&job, args, &cfg, &bench)?) } else { None };
    let r = SimResult {
        chip: sim.chip().name.clone(),
        fused: sim.fused().to_vec(),
        peak_memory_bytes: sim.peak_bytes(),
        usable_memory_bytes: sim.usable_memory(),
        matrix_peak_flops: peak,
        mfu_of_matrix_peak: flops / peak,
        porting_report,
        bench,
    };
    print(&r, job.profile);
    if let Some(p) = &job.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Per composite family, the step's cost decomposed (this run) vs fused (a second run).
fn porting_report(job: &BenchJob, args: &SimArgs, cfg: &TrainConfig, none: &BenchResult) -> Result<Vec<PortingRow>> {
    let fused = price(cfg, &open(job, args, Fused::All)?, true)?;
    let per_family = |b: &BenchResult| -> Vec<(String, f64)> {
        let prof = b.profile.as_ref().expect("profiled run");
        anychip_port::Composite::NAMES
            .iter()
            .map(|&f| {
                let ms = prof
                    .ops
                    .iter()
                    // An op inside a profiler region (the MoE router's, dispatch's, combine's)
                    // belongs to its op's family, not the region's.
                    .filter(|o| o.op_name() == f || o.op_name().starts_with(&format!("{f} ")))
                    .map(|o| o.ms_per_step)
                    .sum();
                (f.to_string(), ms)
            })
            .collect()
    };
    let (a, b) = (per_family(none), per_family(&fused));
    let mut rows: Vec<PortingRow> = a
        .into_iter()
        .zip(b)
        .filter(|((_, d), _)| *d > 0.0)
        .map(|((name, d), (_, f))| PortingRow {
            composite: name,
            decomposed_ms: d,
            fused_ms: f,
            saved_ms: d - f,
            saved_pct_of_step: 100.0 * (d - f) / none.step_ms_median,
        })
        .collect();
    rows.sort_by(|x, y| y.saved_ms.total_cmp(&x.saved_ms));
    Ok(rows)
}

/// A FLOP/s figure in the unit that keeps it readable (TFLOP/s for accelerators, GFLOP/s for CPUs).
fn rate(flops: f64) -> String {
    if flops >= 1e12 {
        format!("{:.0} TFLOP/s", flops / 1e12)
    } else {
        format!("{:.0} GFLOP/s", flops / 1e9)
    }
}

fn gib(b: f64) -> f64 {
    b / (1u64 << 30) as f64
}

fn print(r: &SimResult, profile: bool) {
    let b = &r.bench;
    let fits = match r.usable_memory_bytes {
        Some(u) if (r.peak_memory_bytes as f64) > u => format!(" of {:.1} GiB usable: DOES NOT FIT", gib(u)),
        Some(u) => format!(" of {:.1} GiB usable", gib(u)),
        None => String::new(),
    };
    println!(
        "sim {} on {} [{}]: batch {}x{}, {:.2}M params, {} matmuls, {} of {} composites fused | predicted step {:.1} ms | {:.0} tok/s | MFU {:.1}% of {} | peak memory {:.2} GiB{}",
        b.preset,
        r.chip,
        b.device,
        b.batch,
        b.ctx,
        b.n_params as f64 / 1e6,
        b.precision,
        r.fused.len(),
        anychip_port::Composite::NAMES.len(),
        b.step_ms_median,
        b.tokens_per_s,
        100.0 * r.mfu_of_matrix_peak,
        rate(r.matrix_peak_flops),
        gib(r.peak_memory_bytes as f64),
        fits
    );
    if let Some(p) = b.profile.as_ref().filter(|_| profile) {
        println!("{p}");
    }
    if let Some(rows) = &r.porting_report {
        println!("porting report: each composite decomposed into primitives (--fused none) vs one fused kernel; write the top ones first");
        println!("{:<14} {:>14} {:>10} {:>10} {:>8}", "composite", "decomposed ms", "fused ms", "saved ms", "% step");
        for row in rows {
            println!(
                "{:<14} {:>14.2} {:>10.2} {:>10.2} {:>7.1}%",
                row.composite, row.decomposed_ms, row.fused_ms, row.saved_ms, row.saved_pct_of_step
            );
        }
    }
}
