//! The performance model on published training runs (`data/published_runs.toml`): per-row errors,
//! the fit of the constants, cross-validation (each source, each publisher or each chip family
//! held out in turn), and the calibration file with the accuracy classes `plan` quotes.

use crate::calib::{self, Accuracy, Constants, CvRow, FitReport};
use crate::chips::{ChipDb, GIB};
use crate::model::{self, Arch};
use crate::perf::{estimate, Estimate, Job, Layout, Modules, Precision, Rates, Recompute, Schedule};
use crate::stack;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

const RUNS_TOML: &str = include_str!("../data/published_runs.toml");
const HELD_OUT_TOML: &str = include_str!("../data/held_out_runs.toml");

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    row: Vec<Row>,
    #[serde(default)]
    memory: Vec<MemRow>,
}

/// One published throughput measurement and its layout.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// Short id.
    pub id: String,
    /// The source as cross-validation holds it out (a user's runs file may leave it out).
    #[serde(default)]
    pub group: String,
    /// Who published it, where several groups share one publisher's table lineage (the
    /// Megatron-Bridge containers); leave-publisher-out holds them out together. Default: `group`.
    #[serde(default)]
    pub publisher: Option<String>,
    /// Paper, README or log, and table (a user's runs file may leave it out).
    #[serde(default)]
    pub source: String,
    /// Chip name in the database.
    pub chip: String,
    /// Figures of the source's own parts where they differ from the database's chip
    /// (`FIELD=VALUE`, e.g. torchtitan's 96 GB H100 at a 500 W limit: `tdp_w=500`; usable memory
    /// scaled from the database chip's), the same for every row of that hardware; the source states them.
    #[serde(default)]
    pub chip_overrides: Vec<String>,
    /// Model preset.
    pub model: String,
    /// Software stack profile.
    pub stack: String,
    /// `bf16` or `fp8`.
    pub precision: String,
    /// Sequence length.
    pub seq: usize,
    /// Tensor parallel.
    pub tp: usize,
    /// Pipeline parallel.
    pub pp: usize,
    /// Data parallel (0 where a runs file gives `gpus` instead: [`Row::resolve_dp`]).
    #[serde(default)]
    pub dp: usize,
    /// Chips the run used, where a runs file gives them instead of `dp` (or beside it, then
    /// they must agree): dp = gpus / (tp x pp x cp).
    #[serde(default)]
    pub gpus: Option<usize>,
    /// Context parallel; absent: 1.
    #[serde(default = "one")]
    pub cp: usize,
    /// Expert parallel; absent: 1.
    #[serde(default = "one")]
    pub ep: usize,
    /// Expert tensor parallel ([`Layout::etp`]); absent: 1, experts whole.
    #[serde(default = "one")]
    pub etp: usize,
    /// Global batch, sequences.
    pub global_batch: usize,
    /// Micro-batch.
    pub mb: usize,
    /// Interleaved chunks; absent: 1.
    #[serde(default = "one")]
    pub v: usize,
    /// Pipeline schedule (`1f1b`, `zb-h1`, `zb-h2`, `dualpipe`); absent: the stack's
    /// `pipeline_schedule` where it applies ([`crate::search::stack_schedule`]).
    #[serde(default)]
    pub schedule: Option<String>,
    /// `none`, `selective` or `full`.
    pub recompute: String,
    /// Megatron-Core `recompute_modules` of the recipe beyond `recompute` (layernorm, moe_act,
    /// mla_up_proj), when the source states them.
    #[serde(default)]
    pub recompute_modules: Vec<String>,
    /// ZeRO stage.
    pub zero: u8,
    /// Data-parallel replicas the ZeRO stage shards over (hybrid sharding); 0 or absent: all.
    #[serde(default)]
    pub shard: usize,
    /// Layers of each stage whose activations the run offloads to host memory; 0 or absent: none.
    #[serde(default)]
    pub offload: usize,
    /// Under `recompute = "full"`, the layers of each model chunk that recompute (Megatron-Core's
    /// `recompute_method` block, `recompute_num_layers`); 0 or absent: every layer.
    #[serde(default)]
    pub recompute_layers: usize,
    /// Layers the quantized recipe keeps in BF16 ([`Layout::bf16_layers`]); 0 or absent: none.
    #[serde(default)]
    pub bf16_layers: usize,
    /// Layers on the first pipeline stage where the source's split is uneven
    /// ([`Layout::first_layers`]); absent: an even split.
    #[serde(default)]
    pub first_layers: Option<usize>,
    /// Layers on the last pipeline stage where the source's split is uneven
    /// ([`Layout::last_layers`]); absent: an even split.
    #[serde(default)]
    pub last_layers: Option<usize>,
    /// Sequence parallel.
    pub sp: bool,
    /// FLOP-count convention of a published TFLOP/s or step time.
    #[serde(default)]
    pub flops: Option<String>,
    /// Published TFLOP/s per GPU.
    #[serde(default)]
    pub published_tflops: Option<f64>,
    /// Published iteration time, seconds.
    #[serde(default)]
    pub published_step_s: Option<f64>,
    /// Published tokens per second per GPU.
    #[serde(default)]
    pub tokens_per_gpu_s: Option<f64>,
    /// Which layout fields the source gives (a user's runs file may leave it out).
    #[serde(default)]
    pub published: String,
    /// Which it does not, and what was assumed (a user's runs file may leave it out).
    #[serde(default)]
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
    with_dp(file().row, "data/published_runs.toml")
}

/// The held-out rows (`data/held_out_runs.toml`): published runs no fit reads, predicted with the
/// shipped constants only.
pub fn held_out_rows() -> Vec<Row> {
    with_dp(
        toml::from_str::<File>(HELD_OUT_TOML).expect("data/held_out_runs.toml is valid").row,
        "data/held_out_runs.toml",
    )
}

/// A shipped file's rows with each one's dp resolved ([`Row::resolve_dp`]): a row of a shipped
/// file may give `gpus` as a user's may.
fn with_dp(mut rows: Vec<Row>, file: &str) -> Vec<Row> {
    for r in &mut rows {
        r.resolve_dp().unwrap_or_else(|e| panic!("{file}: row {}: {e}", r.id));
    }
    rows
}

/// The memory rows.
pub fn memory_rows() -> Vec<MemRow> {
    file().memory
}

/// Serde's default for a degree a row leaves out.
fn one() -> usize {
    1
}

impl Row {
    /// The publisher the row is held out with (its `publisher`, else its `group`).
    pub fn publisher(&self) -> &str {
        self.publisher.as_deref().unwrap_or(&self.group)
    }

    /// The data-parallel degree from `gpus` where the row gives the chips it used instead of
    /// `dp`, as published tables do (dp = gpus / (tp x pp x cp), which must divide); where it
    /// gives both, they must agree.
    pub fn resolve_dp(&mut self) -> Result<()> {
        let model_parallel = self.tp.saturating_mul(self.pp).saturating_mul(self.cp);
        match (self.dp, self.gpus) {
            (0, None) => bail!("it gives neither dp (data-parallel replicas) nor gpus (chips the run used)"),
            (0, Some(g)) if model_parallel > 0 && g > 0 && g % model_parallel == 0 => self.dp = g / model_parallel,
            (0, Some(g)) => bail!("gpus {g} is not a positive multiple of tp x pp x cp = {model_parallel}"),
            (dp, Some(g)) if dp.saturating_mul(model_parallel) != g => {
                bail!("dp {dp} x tp x pp x cp ({model_parallel}) is not its gpus {g}")
            }
            _ => {}
        }
        Ok(())
    }

    /// The row's layout, its schedule defaulting to what `stack` runs.
    pub fn layout(&self, stack: &stack::Stack) -> Result<Layout> {
        let schedule = match &self.schedule {
            Some(s) => Schedule::parse(s).map_err(|e| anyhow!("row {}: {e}", self.id))?,
            None => crate::search::stack_schedule(stack, self.pp, self.v),
        };
        Ok(Layout {
            schedule,
            tp: self.tp,
            pp: self.pp,
            dp: self.dp,
            cp: self.cp,
            ep: self.ep,
            etp: self.etp,
            mb: self.mb,
            v: self.v,
            recompute: Recompute::parse(&self.recompute)?,
            modules: Modules::parse(self.recompute_modules.iter().map(String::as_str))
                .map_err(|e| anyhow!("row {}: {e}", self.id))?,
            zero: self.zero,
            shard: self.shard,
            sp: self.sp,
            offload: self.offload,
            recompute_layers: self.recompute_layers,
            bf16_layers: self.bf16_layers,
            first_layers: self.first_layers,
            last_layers: self.last_layers,
        })
    }

    /// Published step time, seconds.
    fn published_step(&self, a: &Arch) -> Result<f64> {
        let gpus = (self.tp * self.pp * self.dp * self.cp) as f64;
        let tokens = (self.global_batch * self.seq) as f64;
        if let Some(t) = self.tokens_per_gpu_s {
            return Ok(tokens / (t * gpus));
        }
        if let Some(s) = self.published_step_s {
            return Ok(s);
        }
        let tf = self.published_tflops.ok_or_else(|| {
            anyhow!(
                "row {}: no published throughput; give tokens_per_gpu_s (or published_step_s, or published_tflops with its flops convention)",
                self.id
            )
        })?;
        let conv = self.flops.as_deref().ok_or_else(|| anyhow!("row {}: a TFLOP/s row needs `flops`", self.id))?;
        Ok(step_flops(conv, a, self.seq, self.global_batch)? / (tf * 1e12 * gpus))
    }
}

/// The MLP width Megatron-LM's FLOP count gives a layer, averaged over the layers: a gated MLP's
/// width x 3/2, an MoE layer's routed experts' width x top-k plus its shared experts'.
fn megatron_mlp_width(a: &Arch) -> f64 {
    let gate = |up: usize| if up == 2 { 1.5 } else { 1.0 };
    let dense = a.d_ff as f64 * gate(a.mlp_up);
    match a.moe {
        Some(m) => {
            let moe_share = a.moe_layers() as f64 / a.layers as f64;
            let routed = ((m.expert_d_ff * m.top_k + m.shared_d_ff * m.shared) as f64) * gate(m.expert_up);
            moe_share * routed + (1.0 - moe_share) * dense
        }
        None => dense,
    }
}

/// Megatron-LM's and NeMo's count of a step's FLOPs for `b` sequences of `s` tokens:
/// 12 b s l h^2 [(1 + g/a + s/h) q + f/h + V/(2 l h)], `q` the query projection's width over h,
/// `mlp` (f) the width its MLP counts as, the projections with grouped-query K/V, the whole s x s
/// score matrix (no causal halving) and the output layer.
fn megatron_style_flops(a: &Arch, b: f64, s: f64, q: f64, mlp: f64) -> f64 {
    let (l, h, v) = (a.layers as f64, a.d_model as f64, a.vocab as f64);
    let kv = a.kv_heads as f64 / a.heads as f64;
    b * s * l * h * h * 12.0 * ((1.0 + kv + s / h) * q + mlp / h + v / (2.0 * l * h))
}

/// FLOPs per step in a source's convention.
fn step_flops(conv: &str, a: &Arch, seq: usize, batch: usize) -> Result<f64> {
    let (b, s, l, h, v) = (batch as f64, seq as f64, a.layers as f64, a.d_model as f64, a.vocab as f64);
    Ok(match conv {
        "narayanan" => 96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h)),
        "korthikanti" => 72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h)),
        "model-causal" => b * s * a.model_flops_per_token(seq),
        // NeMo's FLOPs callback (nemo/utils/flops_formulas.py, llama2 and llama3): Megatron's
        // count below with the query projection as wide as the model and a SwiGLU MLP of d_ff.
        "nemo" => megatron_style_flops(a, b, s, 1.0, 1.5 * a.d_ff as f64),
        // Megatron-LM's own count (`num_floating_point_operations`, megatron/training/training.py
        // at core_r0.8-0.9), with q the query projection's width and the MLP width of
        // `megatron_mlp_width`.
        "megatron" => megatron_style_flops(a, b, s, a.qk_dim as f64 / a.d_model as f64, megatron_mlp_width(a)),
        other => {
            bail!("unknown FLOP convention '{other}' (flops = megatron, nemo, narayanan, korthikanti or model-causal)")
        }
    })
}

/// A row ready to predict: everything but the constants resolved once.
pub struct Prepared {
    /// The row.
    pub row: Row,
    /// What was assumed reading the row's model ([`model::Model::note`]): set for a Hugging Face
    /// config of a family the planner does not know by name.
    pub model_note: Option<String>,
    arch: Arch,
    layout: Layout,
    chip: crate::chips::Chip,
    stack: stack::Stack,
    precision: Precision,
    published_step: f64,
}

/// Resolve every row (chip, model, stack, layout).
pub fn prepare() -> Result<Vec<Prepared>> {
    prepare_rows(rows())
}

/// [`prepare`] for the held-out rows.
pub fn prepare_held_out() -> Result<Vec<Prepared>> {
    prepare_rows(held_out_rows())
}

fn prepare_rows(rows: Vec<Row>) -> Result<Vec<Prepared>> {
    let db = ChipDb::builtin();
    let found = Found { model: &model::resolve, stack: &stack::find };
    rows.into_iter().map(|r| prepare_row(r, &db, &found)).collect()
}

/// A runs file of the shipped rows' format (`[[row]]` tables: id, chip, model, stack, precision,
/// seq, the layout and one published figure), read for `anychip plan check`: each row's chip from
/// `db` (a user's chip files and overrides included), its model a preset or a model file, its
/// stack a profile or a stack file. Every problem is one line naming the row.
pub fn prepare_runs_file(path: &std::path::Path, db: &ChipDb) -> Result<Vec<Prepared>> {
    let hint = "each [[row]] needs id, chip, model, stack, precision, seq, tp, pp, dp (or gpus), global_batch, mb, recompute, zero, sp and tokens_per_gpu_s (or published_step_s); format: crates/plan/data/held_out_runs.toml";
    let file: File = crate::fleet::read_toml(path, "runs").map_err(|e| anyhow!("{e:#}; {hint}"))?;
    if file.row.is_empty() {
        bail!("runs file {} has no [[row]] tables; {hint}", path.display());
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(r) = file.row.iter().find(|r| !seen.insert(r.id.as_str())) {
        bail!("runs file {}: row id '{}' appears twice; give each row its own id", path.display(), r.id);
    }
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let found = Found { model: &|m| model::resolve(&beside(dir, m)), stack: &|s| stack::resolve(&beside(dir, s)) };
    file.row
        .into_iter()
        .map(|mut r| {
            let id = r.id.clone();
            r.resolve_dp().and_then(|()| prepare_row(r, db, &found)).map_err(|e| {
                let prefix = format!("row {id}: ");
                if e.to_string().starts_with(&prefix) {
                    e
                } else {
                    anyhow!("{prefix}{e}")
                }
            })
        })
        .collect()
}

/// A model or stack file named relative to the runs file's folder `dir`, as a path from here;
/// anything else (a preset, a profile, a path that is not there) as given.
fn beside(dir: &std::path::Path, spec: &str) -> String {
    let there = dir.join(spec);
    if std::path::Path::new(spec).is_relative() && there.exists() && !dir.as_os_str().is_empty() {
        there.display().to_string()
    } else {
        spec.to_string()
    }
}

/// How a row's model and stack names are looked up: the shipped rows name presets and profiles,
/// a user's runs file may name files beside it.
struct Found<'a> {
    model: &'a dyn Fn(&str) -> Result<model::Model>,
    stack: &'a dyn Fn(&str) -> Result<stack::Stack>,
}

/// One row resolved against `db`, its model and stack looked up by `found`.
fn prepare_row(r: Row, db: &ChipDb, found: &Found) -> Result<Prepared> {
    let m = (found.model)(&r.model)?;
    let published_step = r.published_step(&m.arch)?;
    if !(published_step.is_finite() && published_step > 0.0) {
        bail!("its published throughput must be a positive number");
    }
    let stack = (found.stack)(&r.stack)?;
    Ok(Prepared {
        layout: r.layout(&stack)?,
        chip: row_chip(db, &r)?,
        stack,
        precision: Precision::parse(&r.precision)?,
        arch: m.arch,
        model_note: m.note,
        published_step,
        row: r,
    })
}

/// The row's chip with its `chip_overrides` applied.
fn row_chip(db: &ChipDb, r: &Row) -> Result<crate::chips::Chip> {
    let mut chip = db.find(&r.chip)?.clone();
    for spec in &r.chip_overrides {
        let (field, value) =
            spec.split_once('=').ok_or_else(|| anyhow!("row {}: chip override '{spec}' is not FIELD=VALUE", r.id))?;
        let value: f64 = value.trim().parse().map_err(|_| anyhow!("row {}: chip override '{spec}'", r.id))?;
        chip.set(field.trim(), value, &r.source)?;
    }
    Ok(chip)
}

impl Prepared {
    /// The row's layout as resolved against its stack (the stack's schedule where the row names
    /// none).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The same run priced as if on `stack`: its layout resolved against that stack (the stack's
    /// pipeline schedule where the row names none). For asking how much a prediction depends on
    /// naming the recipe's exact profile rather than its framework's.
    pub fn on_stack(&self, stack: &stack::Stack) -> Result<Prepared> {
        Ok(Prepared {
            row: self.row.clone(),
            model_note: self.model_note.clone(),
            arch: self.arch.clone(),
            layout: self.row.layout(stack)?,
            chip: self.chip.clone(),
            stack: stack.clone(),
            precision: self.precision,
            published_step: self.published_step,
        })
    }

    /// The family of the row's chip (`nvidia`, `amd`, `tpu`, `gaudi`, ...).
    pub fn chip_family(&self) -> &str {
        &self.chip.family
    }

    /// Whether the row's model is a transformer with experts (a hybrid is its own kind).
    pub fn is_moe(&self) -> bool {
        self.kind() == "moe"
    }

    /// The row's model kind: `dense`, `moe` or `hybrid` ([`crate::model::Arch::kind`]).
    pub fn kind(&self) -> &'static str {
        self.arch.kind()
    }

    /// The row's accuracy class ([`calib::accuracy_class`]): its kind, `moe-all-to-all` for a MoE
    /// row on a stack without a flex dispatcher, `-long` added at 16,384 tokens or more.
    pub fn accuracy_class(&self) -> String {
        calib::accuracy_class(self.kind(), &self.stack, self.row.seq)
    }

    /// The accuracy class the row's error counts in: its [`Self::accuracy_class`], with
    /// [`calib::UNPROFILED`] added for a row priced on the default stack (a framework without a
    /// profile), whose errors are not those of a named stack.
    pub fn accuracy_key(&self) -> String {
        let class = self.accuracy_class();
        if self.stack.is_default() {
            class + calib::UNPROFILED
        } else {
            class
        }
    }

    /// The model's estimate of the row's step under constants `k` (memory against the chip's
    /// usable memory).
    pub fn estimate(&self, k: &Constants) -> Result<Estimate> {
        let job =
            Job { arch: &self.arch, seq: self.row.seq, global_batch: self.row.global_batch, precision: self.precision };
        let rates = Rates::of(&self.chip, k, self.layout.chips(), self.precision)?;
        let capacity = self.chip.usable_memory_bytes()?;
        estimate(&job, &self.layout, &rates, k, &self.stack, capacity).map_err(|e| anyhow!("row {}: {e}", self.row.id))
    }

    /// Whether the row's layout can run its job on its stack, as a pinned `--layout` must:
    /// degrees that divide, splits that exist, what the framework has.
    pub fn check_runs(&self) -> Result<()> {
        let job =
            Job { arch: &self.arch, seq: self.row.seq, global_batch: self.row.global_batch, precision: self.precision };
        crate::perf::check_layout(&job, &self.layout)?;
        self.stack.check_runs(&self.layout)
    }

    /// Published step time, seconds.
    pub fn published_step(&self) -> f64 {
        self.published_step
    }

    /// Predicted / published throughput - 1 under constants `k`.
    pub fn error(&self, k: &Constants) -> Result<f64> {
        Ok(self.published_step / self.estimate(k)?.time.total() - 1.0)
    }

    /// The planner's own answer for the row's job, as a user without the published layout would
    /// ask it: the best of every layout searched on the row's chip count at its sequence, batch,
    /// precision and stack, with its predicted / published throughput - 1.
    pub fn searched(&self, k: &Constants) -> Result<(Layout, f64)> {
        let tokens = (self.row.global_batch * self.row.seq) as f64;
        let req = crate::search::Request {
            model: model::resolve(&self.row.model)?,
            count: self.layout.chips(),
            tokens: tokens.max(1e12),
            seq: self.row.seq,
            global_batch: Some(self.row.global_batch),
            precision: self.precision,
            stack: self.stack.clone(),
            pinned: None,
        };
        let plan = crate::search::search_with(&req, &self.chip, k)?;
        let best = &plan.ranked[0];
        Ok((best.estimate.layout, self.published_step / best.step_s - 1.0))
    }
}

/// Errors of the given rows under `k`.
pub fn errors(rows: &[Prepared], k: &Constants, which: &[usize]) -> Result<Vec<f64>> {
    which.iter().map(|&i| rows[i].error(k)).collect()
}

/// The fit on all rows and the leave-one-source-out outcome of every row.
pub fn cross_validate(rows: &[Prepared]) -> Result<(Constants, Vec<CvRow>)> {
    hold_out_by(rows, |p| &p.row.group)
}

/// The fit on all rows and the outcome of every row with its whole publisher held out (every
/// Megatron-Bridge container at once): how the model carries to software it was never fitted on.
pub fn cross_validate_by_publisher(rows: &[Prepared]) -> Result<(Constants, Vec<CvRow>)> {
    hold_out_by(rows, |p| p.row.publisher())
}

/// The fit on all rows and the outcome of every row with its whole chip family held out (every
/// NVIDIA part at once, every TPU, ...): how the model carries to a kind of chip it was never
/// fitted on, the question a new accelerator asks.
pub fn cross_validate_by_chip_family(rows: &[Prepared]) -> Result<(Constants, Vec<CvRow>)> {
    hold_out_by(rows, |p| p.chip_family())
}

/// Cross-validation holding out, in turn, every set of rows that share `key`.
fn hold_out_by(rows: &[Prepared], key: impl Fn(&Prepared) -> &str) -> Result<(Constants, Vec<CvRow>)> {
    let sources: Vec<String> = rows.iter().map(|r| key(r).to_string()).collect();
    let f = |k: &Constants, which: &[usize]| errors(rows, k, which);
    calib::cross_validate(&f, &sources, &chip_names(rows))
}

/// Each row's chip, as the fit's second stage groups them (`calib::chip_residuals`).
pub fn chip_names(rows: &[Prepared]) -> Vec<String> {
    rows.iter().map(|r| r.chip.name.clone()).collect()
}

/// Mean and worst absolute error of a set.
pub fn summary(errs: &[f64]) -> (f64, f64) {
    let mean = errs.iter().map(|e| e.abs()).sum::<f64>() / errs.len().max(1) as f64;
    let worst = errs.iter().fold(0.0f64, |w, e| w.max(e.abs()));
    (mean, worst)
}

/// Per-source table: (source, rows, CV mean, CV worst, in-sample mean), then overall.
pub fn table(rows: &[Prepared], cv: &[CvRow]) -> Vec<(String, usize, f64, f64, f64)> {
    let mut by: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for c in cv {
        let e = by.entry(rows[c.index].row.group.clone()).or_default();
        e.0.push(c.cv_error);
        e.1.push(c.in_sample_error);
    }
    let mut out: Vec<_> = by
        .into_iter()
        .map(|(g, (cvs, ins))| {
            let (m, w) = summary(&cvs);
            (g, cvs.len(), m, w, summary(&ins).0)
        })
        .collect();
    let all_cv: Vec<f64> = cv.iter().map(|c| c.cv_error).collect();
    let all_in: Vec<f64> = cv.iter().map(|c| c.in_sample_error).collect();
    let (m, w) = summary(&all_cv);
    out.push(("overall".into(), cv.len(), m, w, summary(&all_in).0));
    out
}

/// `anychip plan calibrate`: fit on every row, cross-validate, and render the calibration file.
pub fn calibration_file() -> Result<String> {
    let rows = prepare()?;
    let (k, cv) = cross_validate(&rows)?;
    let all_cv: Vec<f64> = cv.iter().map(|c| c.cv_error).collect();
    let all_in: Vec<f64> = cv.iter().map(|c| c.in_sample_error).collect();
    let (cv_mean, cv_worst) = summary(&all_cv);
    let groups: std::collections::BTreeSet<_> = rows.iter().map(|r| r.row.group.as_str()).collect();
    let round = |x: f64| (x * 1e4).round() / 1e4;
    let report = FitReport {
        rows: rows.len(),
        sources: groups.len(),
        in_sample_mean_abs_error: round(summary(&all_in).0),
        cross_validated_mean_abs_error: round(cv_mean),
        cross_validated_worst_abs_error: round(cv_worst),
    };
    let (_, family_out) = cross_validate_by_chip_family(&rows)?;
    let mut accuracy = accuracy_classes(&rows, &cv, "source");
    accuracy.extend(accuracy_classes(&rows, &family_out, "family"));
    // The held-out file's runs, predicted with these constants and never fitted.
    let held = prepare_held_out()?;
    let blind: Vec<CvRow> = (0..held.len())
        .map(|i| Ok(CvRow { index: i, cv_error: held[i].error(&k)?, in_sample_error: f64::NAN }))
        .collect::<Result<_>>()?;
    accuracy.extend(accuracy_classes(&held, &blind, "blind"));
    accuracy.extend(on_default_classes(&held, &k)?);
    let mut per_model = model_classes(&rows, &cv, "source");
    per_model.extend(model_classes(&held, &blind, "blind"));
    calib::render(&k, &report, &accuracy, &per_model)
}

/// The held-out file's runs priced again on the default stack, each in the accuracy class a job
/// on that stack falls in, over every chip family (family `all`): what naming no stack costs.
/// A run whose layout the default stack cannot run (activation offload) is left out; so are runs
/// that already name it (their error is their [`calib::UNPROFILED`] class's).
fn on_default_classes(held: &[Prepared], k: &Constants) -> Result<Vec<Accuracy>> {
    let default = stack::find(stack::DEFAULT_STACK)?;
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in held.iter().filter(|r| !r.stack.is_default()) {
        let Ok(p) = r.on_stack(&default) else { continue };
        if let Ok(e) = p.error(k) {
            by.entry(p.accuracy_class() + calib::ON_DEFAULT).or_default().push(e);
        }
    }
    Ok(by
        .into_iter()
        .filter(|(_, errs)| errs.len() >= calib::MIN_CLASS_ROWS)
        .map(|(kind, errs)| Accuracy::of(&kind, "all", "blind", &errs))
        .collect())
}

/// Fewest runs of one model before `plan` quotes its error on that model (fewer than a class
/// needs: the line names its count, and two runs of a badly priced architecture are worth a
/// warning).
const MIN_MODEL_ROWS: usize = 2;

/// The accuracy on each model's runs of `rows` (over every chip) under `cv`, `held_out` as in
/// [`accuracy_classes`]; sorted by model so the file is stable. Runs priced on the default stack
/// count in their own class ([`calib::UNPROFILED`]), not here.
fn model_classes(rows: &[Prepared], cv: &[CvRow], held_out: &str) -> Vec<Accuracy> {
    let by = errors_by(rows, cv, |p| (p.row.model.as_str(), p.kind(), p.stack.is_default()));
    by.into_iter()
        .filter(|((_, _, unprofiled), errs)| !unprofiled && errs.len() >= MIN_MODEL_ROWS)
        .map(|((model, kind, _), errs)| Accuracy {
            model: Some(model.into()),
            ..Accuracy::of(kind, "all", held_out, &errs)
        })
        .collect()
}

/// The accuracy of each (dense or MoE, chip family) class of `rows` under the cross-validated
/// outcome `cv`, whose fits left out `held_out` (`source` or `family`; `blind` for the held-out
/// file's runs, which no fit saw).
fn accuracy_classes(rows: &[Prepared], cv: &[CvRow], held_out: &str) -> Vec<Accuracy> {
    let by = errors_by(rows, cv, |p| (p.accuracy_key(), p.chip_family()));
    by.into_iter()
        .filter(|(_, errs)| errs.len() >= calib::MIN_CLASS_ROWS)
        .map(|((kind, family), errs)| Accuracy::of(&kind, family, held_out, &errs))
        .collect()
}

/// The errors of `cv` grouped by `key` of each row.
fn errors_by<'a, K: Ord>(rows: &'a [Prepared], cv: &[CvRow], key: impl Fn(&'a Prepared) -> K) -> BTreeMap<K, Vec<f64>> {
    let mut by: BTreeMap<K, Vec<f64>> = BTreeMap::new();
    for c in cv {
        let p = &rows[c.index];
        by.entry(key(p)).or_default().push(c.cv_error);
    }
    by
}

/// Predicted memory components for a Figure 1 row, GiB: (states, act TP-only, act SP+selective).
pub fn predict_memory(r: &MemRow) -> Result<(f64, f64, f64)> {
    let db = ChipDb::builtin();
    let chip = db.find("a100")?;
    let k = calib::shipped();
    let m = model::resolve(&r.model)?;
    let job = Job { arch: &m.arch, seq: 2048, global_batch: r.global_batch, precision: Precision::Bf16 };
    let mk = |rc, sp| Layout { tp: r.tp, pp: r.pp, mb: r.mb, v: r.v, recompute: rc, sp, ..Layout::data_parallel(1) };
    let st = stack::find("megatron-2021")?;
    let l0 = mk(Recompute::None, false);
    let rates = Rates::of(chip, &k, l0.chips(), Precision::Bf16)?;
    let full = estimate(&job, &l0, &rates, &k, &st, f64::INFINITY)?;
    let sel = estimate(&job, &mk(Recompute::Selective, true), &rates, &k, &st, f64::INFINITY)?;
    // Figure 1 counts the layers' states; the embedding of the first stage is reported apart.
    let emb = (m.arch.vocab * m.arch.d_model) as f64 / r.tp as f64 * 18.0;
    Ok(((full.memory.states() - emb) / GIB, full.memory.activations / GIB, sel.memory.activations / GIB))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemo_flops_count_six_per_weight_and_the_whole_score_matrix() {
        let m = model::resolve("llama2-7b").unwrap();
        let (l, h, f, v) = (32.0, 4096.0, 11008.0, 32000.0);
        let s = 131072.0;
        // 6 FLOPs per weight and token (attention's four h x h projections, SwiGLU's three h x f,
        // the output layer), and the forward's QK^T and PV over all s keys (4 s h), three times.
        let per_token = 6.0 * l * (4.0 * h * h + 3.0 * h * f) + 6.0 * h * v + 3.0 * 4.0 * l * h * s;
        let got = step_flops("nemo", &m.arch, 131072, 2).unwrap();
        assert!((got / (2.0 * s * per_token) - 1.0).abs() < 1e-12, "{got}");
    }

    #[test]
    fn megatron_flops_count_the_routed_experts_and_match_nemos_on_a_dense_model() {
        let dense = model::resolve("llama2-7b").unwrap().arch;
        let (nemo, megatron) =
            (step_flops("nemo", &dense, 4096, 8).unwrap(), step_flops("megatron", &dense, 4096, 8).unwrap());
        assert!((megatron / nemo - 1.0).abs() < 1e-12, "{megatron} vs {nemo}");
        // Mixtral 8x7B: 32 layers of GQA attention (8 of 32 key/value heads) and two of eight
        // 14,336-wide SwiGLU experts a token: 6 FLOPs per active weight and the whole score matrix.
        let moe = model::resolve("mixtral-8x7b").unwrap().arch;
        let (l, h, f, v, s) = (32.0, 4096.0, 14336.0, 32000.0, 4096.0);
        let weights = l * (2.0 * h * h + 2.0 * h * h / 4.0 + 2.0 * 3.0 * h * f) + h * v;
        let per_token = 6.0 * weights + 3.0 * 4.0 * l * h * s;
        let got = step_flops("megatron", &moe, 4096, 2).unwrap();
        assert!((got / (2.0 * s * per_token) - 1.0).abs() < 1e-12, "{got}");
    }
}
