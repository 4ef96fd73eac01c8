//! Runs the performance model on published training runs (`data/published_runs.toml`) and
//! reports the error of each row; tests/validation.rs turns the error bounds into a gate.

use crate::calib;
use crate::chips::{ChipDb, GIB};
use crate::model;
use crate::perf::{estimate, Job, Layout, Rates, Recompute, Software};
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

const RUNS_TOML: &str = include_str!("../data/published_runs.toml");

#[derive(Deserialize)]
struct File {
    row: Vec<Row>,
    memory: Vec<MemRow>,
}

/// One published throughput measurement and its layout.
#[derive(Clone, Debug, Deserialize)]
pub struct Row {
    /// Short id.
    pub id: String,
    /// Paper or README and table.
    pub source: String,
    /// Chip name in the database.
    pub chip: String,
    /// Model preset.
    pub model: String,
    /// Sequence length.
    pub seq: usize,
    /// Tensor parallel.
    pub tp: usize,
    /// Pipeline parallel.
    pub pp: usize,
    /// Data parallel.
    pub dp: usize,
    /// Context parallel.
    pub cp: usize,
    /// Global batch, sequences.
    pub global_batch: usize,
    /// Micro-batch.
    pub mb: usize,
    /// Interleaved chunks.
    pub v: usize,
    /// `none`, `selective` or `full`.
    pub recompute: String,
    /// ZeRO stage.
    pub zero: u8,
    /// Sequence parallel.
    pub sp: bool,
    /// `megatron-2021`, `megatron-core` or `llama3`.
    pub software: String,
    /// FLOP-count convention of the published TFLOP/s: `narayanan`, `korthikanti` or `model`.
    pub flops: String,
    /// Published TFLOP/s per GPU.
    #[serde(default)]
    pub published_tflops: Option<f64>,
    /// Published iteration time, seconds (converted with the `flops` convention).
    #[serde(default)]
    pub published_step_s: Option<f64>,
    /// Which layout fields the source gives.
    pub published: String,
    /// Which it does not, and what was assumed.
    pub assumed: String,
}

/// One memory measurement (Korthikanti Figure 1).
#[derive(Clone, Debug, Deserialize)]
pub struct MemRow {
    /// Short id.
    pub id: String,
    /// Model preset.
    pub model: String,
    /// Tensor parallel.
    pub tp: usize,
    /// Pipeline parallel.
    pub pp: usize,
    /// Global batch (micro-batches in flight depend on it).
    pub global_batch: usize,
    /// Micro-batch.
    pub mb: usize,
    /// Interleaved chunks.
    pub v: usize,
    /// Weights + gradients + optimizer of the layers, GiB.
    pub states_gib: f64,
    /// Activations with TP only, GiB.
    pub act_full_gib: f64,
    /// Activations with SP and selective recompute, GiB.
    pub act_sp_selective_gib: f64,
}

fn file() -> File {
    toml::from_str(RUNS_TOML).expect("data/published_runs.toml is valid")
}

/// The throughput rows.
pub fn rows() -> Vec<Row> {
    file().row
}

/// The memory rows.
pub fn memory_rows() -> Vec<MemRow> {
    file().memory
}

/// The software a row's framework used.
pub fn software(name: &str) -> Result<Software> {
    Ok(match name {
        "megatron-2021" => Software {
            flash_attention: false,
            overlap_dp: false,
            overlap_tp: false,
            grad_comm_bytes: 2.0,
            main_grad_bytes: 4.0,
        },
        "megatron-core" | "llama3" => Software::modern(),
        other => bail!("unknown software '{other}'"),
    })
}

fn recompute(name: &str) -> Result<Recompute> {
    Ok(match name {
        "none" => Recompute::None,
        "selective" => Recompute::Selective,
        "full" => Recompute::Full,
        other => bail!("unknown recompute '{other}'"),
    })
}

/// FLOPs per step in a source's convention.
fn step_flops(conv: &str, m: &anychip_model_config::ModelConfig, seq: usize, batch: usize) -> Result<f64> {
    let (b, s, l, h, v) = (batch as f64, seq as f64, m.n_layer as f64, m.d_model as f64, m.vocab_size as f64);
    Ok(match conv {
        "narayanan" => 96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h)),
        "korthikanti" => 72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h)),
        "model" => b * s * m.train_flops_per_token(seq),
        // As `model`, with the attention scores counted over the causal half only.
        "model-causal" => b * s * (m.train_flops_per_token(seq) - 6.0 * l * s * (m.n_head * m.head_dim) as f64),
        other => bail!("unknown FLOP convention '{other}'"),
    })
}

/// A row's prediction next to its measurement.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Row id.
    pub id: String,
    /// Published TFLOP/s per GPU (in the row's convention).
    pub published: f64,
    /// Predicted TFLOP/s per GPU (same convention).
    pub predicted: f64,
}

impl Outcome {
    /// Signed relative error of the prediction.
    pub fn error(&self) -> f64 {
        self.predicted / self.published - 1.0
    }
}

/// Predict every throughput row with the shipped calibration.
pub fn run_rows() -> Result<Vec<Outcome>> {
    run_rows_with(&|c: &crate::chips::Chip| calib::for_chip(c), &calib::shared())
}

/// Predict every throughput row with the given calibration (for fitting the constants).
pub fn run_rows_with(
    cal_for: &dyn Fn(&crate::chips::Chip) -> Result<calib::Calibration>,
    sh: &calib::Shared,
) -> Result<Vec<Outcome>> {
    let db = ChipDb::builtin();
    rows()
        .iter()
        .map(|r| {
            let chip = db.find(&r.chip)?;
            let cal = cal_for(chip)?;
            let m = model::resolve(&r.model)?;
            let layout = Layout {
                tp: r.tp,
                pp: r.pp,
                dp: r.dp,
                cp: r.cp,
                mb: r.mb,
                v: r.v,
                recompute: recompute(&r.recompute)?,
                zero: r.zero,
                sp: r.sp,
            };
            let job = Job { model: &m.config, seq: r.seq, global_batch: r.global_batch };
            let rates = Rates::of(chip, &cal, layout.chips())?;
            let est = estimate(&job, &layout, &rates, &cal, sh, &software(&r.software)?, f64::INFINITY)?;
            let flops = step_flops(&r.flops, &m.config, r.seq, r.global_batch)?;
            let gpus = layout.chips() as f64;
            let predicted = flops / est.time.total() / gpus / 1e12;
            let published = match (r.published_tflops, r.published_step_s) {
                (Some(t), _) => t,
                (None, Some(step)) => flops / step / gpus / 1e12,
                _ => return Err(anyhow!("row {}: needs published_tflops or published_step_s", r.id)),
            };
            Ok(Outcome { id: r.id.clone(), published, predicted })
        })
        .collect()
}

/// Predicted memory components for a Figure 1 row, GiB: (states, act TP-only, act SP+selective).
pub fn predict_memory(r: &MemRow) -> Result<(f64, f64, f64)> {
    let db = ChipDb::builtin();
    let chip = db.find("a100")?;
    let cal = calib::for_chip(chip)?;
    let sh = calib::shared();
    let m = model::resolve(&r.model)?;
    let job = Job { model: &m.config, seq: 2048, global_batch: r.global_batch };
    let dp = 1;
    let mk = |rc, sp| Layout { tp: r.tp, pp: r.pp, dp, cp: 1, mb: r.mb, v: r.v, recompute: rc, zero: 0, sp };
    let sw = software("megatron-2021")?;
    let l0 = mk(Recompute::None, false);
    let rates = Rates::of(chip, &cal, l0.chips())?;
    let full = estimate(&job, &l0, &rates, &cal, &sh, &sw, f64::INFINITY)?;
    let sel = estimate(&job, &mk(Recompute::Selective, true), &rates, &cal, &sh, &sw, f64::INFINITY)?;
    Ok((full.memory.layer_states / GIB, full.memory.activations / GIB, sel.memory.activations / GIB))
}
