//! Calibration of the performance model: one set of constants for every chip and stack.
//!
//! Thirteen constants are fitted ([`FITTED`]); the rest are measured properties taken from public
//! microbenchmarks and held fixed. A second stage gives each chip with published runs its
//! residual ([`chip_residuals`]), the one thing the fit keeps per chip. `data/calibration.toml`
//! is the output of [`fit`] over every published row (`anychip plan calibrate` writes it; a test
//! checks the committed file is that output). [`cross_validate`] refits with each source left out
//! and predicts its rows.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const CALIBRATION_TOML: &str = include_str!("../data/calibration.toml");

/// Every constant of the performance model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Constants {
    /// Fraction of the nominal peak that large GEMMs reach.
    pub gemm_eff: f64,
    /// Arithmetic intensity, in multiples of the chip's ridge point (peak / memory bandwidth), at
    /// which a GEMM reaches half of `gemm_eff`.
    pub gemm_knee: f64,
    /// FP8 GEMM efficiency relative to BF16 (scaling, casting and amax bookkeeping); INT8's too.
    pub fp8_gemm_eff: f64,
    /// FP4 GEMM efficiency relative to BF16 (NVFP4 and MXFP4: 16- or 32-element block scales,
    /// the NVFP4 recipe's Hadamard transforms and stochastic rounding), fitted apart from FP8's.
    pub fp4_gemm_eff: f64,
    /// Fraction of the BF16 peak fused attention reaches.
    pub attn_eff: f64,
    /// How much faster the cuDNN fused attention of 2025 runs than `attn_eff` (stacks with
    /// `cudnn_attention_2025`): its rate is `attn_eff` x (1 + this).
    pub attn_gain_2025: f64,
    /// Memory passes over the stored-activation bytes per forward (backward twice that).
    pub elementwise_passes: f64,
    /// Fixed time per layer per micro-batch, microseconds (launches, synchronisation).
    pub layer_overhead_us: f64,
    /// Memory passes over the bytes routed tokens store in a MoE layer (top-k, permutation,
    /// un-permutation, weighted combine), per forward.
    pub moe_passes: f64,
    /// Fixed time per local expert per MoE layer per micro-batch, microseconds (forward and
    /// backward): each expert's slice of the grouped GEMMs launches and drains on its own.
    pub expert_overhead_us: f64,
    /// Fraction of an overlapped collective that is hidden (the rest costs as contention).
    pub overlap_hidden: f64,
    /// Fixed time per distributed step, milliseconds: the host-side work at a step's end that
    /// every rank waits at and no micro-batch hides (the gradient norm's all-reduce and host sync
    /// for clipping, the optimizer's launches over every parameter tensor, the loss reduction and
    /// logging). A one-chip step does not pay it.
    pub step_overhead_ms: f64,
    /// Board watts per dense BF16 TFLOP/s at which a chip holds its rated clock under full
    /// tensor load (chips rated at fewer run slower: `perf::power_clock`).
    pub power_w_per_tflop: f64,
    /// Fixed: fraction of the scale-up link (one direction) collectives reach.
    pub scaleup_eff: f64,
    /// Fixed: fraction of the scale-out NIC bandwidth collectives reach.
    pub scaleout_eff: f64,
    /// Fixed: latency of one collective step inside a domain, microseconds (twice across domains).
    pub hop_latency_us: f64,
    /// Fixed: memory a framework keeps beside the model, GiB.
    pub reserve_gib: f64,
    /// Per chip, what its published runs say the physics above misses (`fit`'s second stage):
    /// every time of an estimate on the chip is scaled by the factor. Empty for a chip without
    /// runs, which is priced from its datasheet alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chip_residual: BTreeMap<String, ChipResidual>,
}

/// How a chip's published runs differ from the model: the geometric mean of published over
/// predicted step time over its `runs`, shrunk toward 1 by a prior worth [`RESIDUAL_PRIOR_RUNS`]
/// runs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChipResidual {
    /// Multiplier on every predicted time of the chip (above 1: its runs are slower).
    pub factor: f64,
    /// Published runs it rests on.
    pub runs: usize,
    /// The runs file of a team's measured runs it comes from (`--measured FILE`), where it does
    /// not come from the published runs; absent in the calibration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
}

/// Weight of the prior "the physics is right" in a chip's residual, in runs: a chip with a few
/// runs keeps most of its datasheet prediction (4 runs move it 4/14 of their mean), one with a
/// hundred almost all of it. Chosen before it was measured and not tuned: 5, 10 and 20 give
/// cross-validated means of 8.9%, 9.1% and 9.1% (docs/planner.md, "Chip residuals").
pub const RESIDUAL_PRIOR_RUNS: f64 = 10.0;

/// The fitted constants, with the range the fit may search, in the order the descent searches
/// them; a new constant goes last, so that adding it leaves the others' order as it was (the
/// one-sweep descent in [`fit`] depends on the order).
pub const FITTED: &[(&str, f64, f64)] = &[
    ("gemm_eff", 0.4, 0.95),
    ("gemm_knee", 0.02, 2.0),
    ("fp8_gemm_eff", 0.3, 1.0),
    ("attn_eff", 0.15, 0.8),
    ("attn_gain_2025", 0.0, 1.0),
    ("elementwise_passes", 0.5, 8.0),
    ("layer_overhead_us", 0.0, 600.0),
    ("moe_passes", 0.5, 30.0),
    ("expert_overhead_us", 0.0, 2000.0),
    ("overlap_hidden", 0.0, 1.0),
    ("step_overhead_ms", 0.0, 100.0),
    ("power_w_per_tflop", 0.3, 1.0),
    ("fp4_gemm_eff", 0.3, 1.0),
];

impl Constants {
    /// The time multiplier of chip `chip`'s residual (1 for a chip without runs).
    pub fn chip_factor(&self, chip: &str) -> f64 {
        self.chip_residual.get(chip).map_or(1.0, |r| r.factor)
    }

    fn get(&self, name: &str) -> f64 {
        match name {
            "gemm_eff" => self.gemm_eff,
            "gemm_knee" => self.gemm_knee,
            "fp8_gemm_eff" => self.fp8_gemm_eff,
            "fp4_gemm_eff" => self.fp4_gemm_eff,
            "attn_eff" => self.attn_eff,
            "attn_gain_2025" => self.attn_gain_2025,
            "elementwise_passes" => self.elementwise_passes,
            "layer_overhead_us" => self.layer_overhead_us,
            "expert_overhead_us" => self.expert_overhead_us,
            "moe_passes" => self.moe_passes,
            "overlap_hidden" => self.overlap_hidden,
            "step_overhead_ms" => self.step_overhead_ms,
            "power_w_per_tflop" => self.power_w_per_tflop,
            _ => unreachable!("not a fitted constant: {name}"),
        }
    }

    fn set(&mut self, name: &str, v: f64) {
        match name {
            "gemm_eff" => self.gemm_eff = v,
            "gemm_knee" => self.gemm_knee = v,
            "fp8_gemm_eff" => self.fp8_gemm_eff = v,
            "fp4_gemm_eff" => self.fp4_gemm_eff = v,
            "attn_eff" => self.attn_eff = v,
            "attn_gain_2025" => self.attn_gain_2025 = v,
            "elementwise_passes" => self.elementwise_passes = v,
            "layer_overhead_us" => self.layer_overhead_us = v,
            "expert_overhead_us" => self.expert_overhead_us = v,
            "moe_passes" => self.moe_passes = v,
            "overlap_hidden" => self.overlap_hidden = v,
            "step_overhead_ms" => self.step_overhead_ms = v,
            "power_w_per_tflop" => self.power_w_per_tflop = v,
            _ => unreachable!("not a fitted constant: {name}"),
        }
    }

    /// The starting point of every fit and the fixed constants, with their sources.
    pub fn prior() -> Constants {
        Constants {
            gemm_eff: 0.75,
            gemm_knee: 0.3,
            fp8_gemm_eff: 0.7,
            // As FP8 until the rows show otherwise.
            fp4_gemm_eff: 0.7,
            attn_eff: 0.45,
            // No gain until the rows show one.
            attn_gain_2025: 0.0,
            elementwise_passes: 2.5,
            layer_overhead_us: 100.0,
            expert_overhead_us: 100.0,
            moe_passes: 5.0,
            overlap_hidden: 0.8,
            step_overhead_ms: 10.0,
            power_w_per_tflop: 0.3,
            // FlagPerf A100: 515 of 600 GB/s P2P (85.8%); nccl-tests all-reduce busbw on NVLink
            // reaches ~80% of the one-direction link.
            scaleup_eff: 0.80,
            // nccl-tests across InfiniBand/RoCE NICs: ~85% of line rate.
            scaleout_eff: 0.85,
            // NCCL's per-step latency on NVLink is a few microseconds (nccl-tests small sizes).
            hop_latency_us: 8.0,
            // CUDA context + NCCL buffers + allocator slack.
            reserve_gib: 3.0,
            chip_residual: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    constants: Constants,
    fit: FitReport,
    #[serde(default)]
    accuracy: Vec<Accuracy>,
    /// The same measure per model, over every chip: how far off the planner was on published
    /// runs of the very architecture being planned (`plan` prints it under the class line).
    #[serde(default)]
    model_accuracy: Vec<Accuracy>,
}

/// How far off the planner was on one class of published runs, each predicted with constants
/// fitted without it: the error bar `plan` prints next to a prediction of that class.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// The model (preset name) whose runs these are, for a per-model class; none for a
    /// (kind, chip family) class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `dense` or `moe`.
    pub kind: String,
    /// Chip family of the runs (`nvidia`, `amd`, `tpu`, ...).
    pub family: String,
    /// What was left out of the fit for each prediction: `source` (the run's own table or
    /// paper), `family` (every run on a chip of that family: a kind of chip never seen), or
    /// `blind` (a run of the held-out file, which no fit sees).
    pub held_out: String,
    /// Runs in the class.
    pub rows: usize,
    /// Mean absolute throughput error.
    pub mean_abs_error: f64,
    /// Mean signed error: above 0, the planner predicted faster than published.
    pub bias: f64,
    /// Absolute error that 9 in 10 of the runs stayed within.
    pub p90_abs_error: f64,
}

impl Accuracy {
    /// The class of `errors` (predicted over published throughput, less 1), rounded to 0.1%.
    pub fn of(kind: &str, family: &str, held_out: &str, errors: &[f64]) -> Accuracy {
        let round = |x: f64| (x * 1e3).round() / 1e3;
        let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let n = errors.len().max(1) as f64;
        // The smallest error that at least 90% of the runs stay within.
        let p90 = abs.get(((0.9 * abs.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        Accuracy {
            model: None,
            kind: kind.into(),
            family: family.into(),
            held_out: held_out.into(),
            rows: errors.len(),
            mean_abs_error: round(abs.iter().sum::<f64>() / n),
            bias: round(errors.iter().sum::<f64>() / n),
            p90_abs_error: round(p90),
        }
    }

    /// How each run of a source- or blind-held-out class was predicted, for `plan`'s lines.
    fn how_held_out(&self) -> &'static str {
        match self.held_out.as_str() {
            "blind" => "never fitted (the held-out file)",
            _ => "each predicted with its source held out",
        }
    }

    /// The mean signed error in words, e.g. "10.0% fast on average".
    fn bias_phrase(&self) -> String {
        let side = if self.bias >= 0.0 { "fast" } else { "slow" };
        format!("{:.1}% {side} on average", pct(self.bias.abs()))
    }
}

/// A fraction as a percentage, for the accuracy lines.
fn pct(x: f64) -> f64 {
    100.0 * x
}

/// The accuracy classes stored next to the shipped constants.
pub fn shipped_accuracy() -> Vec<Accuracy> {
    shipped_file().accuracy.clone()
}

/// `data/calibration.toml`, parsed once: every plan reads its constants and accuracy classes,
/// and `fleet` and `chips compare` plan many jobs.
fn shipped_file() -> &'static File {
    static FILE: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    FILE.get_or_init(|| toml::from_str(CALIBRATION_TOML).expect("data/calibration.toml is valid"))
}

/// The per-model classes of `model` (a preset name): its published runs each predicted with
/// their source held out, and its runs in the held-out file; empty for a model without runs.
pub fn model_accuracy(model: &str) -> Vec<Accuracy> {
    shipped_file().model_accuracy.iter().filter(|a| a.model.as_deref() == Some(model)).cloned().collect()
}

/// `plan`'s line about the planner's error on published runs of the planned model itself, or
/// none when it has none: an architecture the model prices badly shows here even where its
/// kind and chip family are accurate on the whole (docs/planner.md, "Where it is wrong").
pub fn model_accuracy_line(model: &str, classes: &[Accuracy]) -> Option<String> {
    if classes.is_empty() {
        return None;
    }
    let each: Vec<String> = classes
        .iter()
        .map(|a| {
            format!(
                "{} published runs, {}: mean error {:.1}%, {}",
                a.rows,
                a.how_held_out(),
                pct(a.mean_abs_error),
                a.bias_phrase()
            )
        })
        .collect();
    Some(format!("on {model} itself, on any chip: {}", each.join("; ")))
}

/// Sequence length from which a job is a long-context one for its error bar.
pub const LONG_CONTEXT: usize = 16384;

/// The accuracy class of a job of model `kind` (`dense`, `moe`, `hybrid`, `gdn-hybrid`) on
/// `stack` at `seq` tokens: a MoE job whose stack routes tokens with a plain all-to-all
/// (Megatron-Core's `alltoall` token dispatcher, permuting before it and un-permuting after)
/// rather than a flex dispatcher (DeepEP, HybridEP) is its own class, `moe-all-to-all`, and a job
/// of [`LONG_CONTEXT`] tokens or more adds `-long`: published runs of each are predicted with
/// different bias (docs/planner.md, "MoE by token dispatcher"; docs/planner-validation.md,
/// "long-context MoE"), so each gets its own error bar.
pub fn accuracy_class(kind: &str, stack: &crate::stack::Stack, seq: usize) -> String {
    let base = if kind == "moe" && !stack.moe_flex_dispatcher { "moe-all-to-all" } else { kind };
    if seq >= LONG_CONTEXT {
        format!("{base}-long")
    } else {
        base.to_string()
    }
}

/// Suffix of the accuracy classes of runs priced on the default stack
/// ([`crate::stack::DEFAULT_STACK`]): runs of a framework the planner has no profile of, kept
/// apart from the classes `plan` quotes for a named stack, and quoted beside them when a job names
/// none ([`unprofiled_accuracy`]).
pub const UNPROFILED: &str = "-unprofiled";

/// Suffix of an accuracy class of the held-out file's runs priced again on the default stack
/// instead of their own framework's profile: what naming no stack costs a job of that class.
pub const ON_DEFAULT: &str = "-on-default";

/// The classes of runs priced on the default stack, on any chip family, of a job's accuracy
/// class `class` ([`accuracy_class`]): what a job that names no stack should expect on top of its
/// class's error.
pub fn unprofiled_accuracy(class: &str) -> Vec<Accuracy> {
    let kinds = [format!("{class}{UNPROFILED}"), format!("{class}{ON_DEFAULT}")];
    shipped_accuracy().into_iter().filter(|a| a.held_out != "family" && kinds.contains(&a.kind)).collect()
}

/// `plan`'s line on the default stack's own runs ([`unprofiled_accuracy`]), or none when there are none.
pub fn unprofiled_line(classes: &[Accuracy]) -> Option<String> {
    let each: Vec<String> = classes
        .iter()
        .map(|a| match a.kind.strip_suffix(ON_DEFAULT) {
            Some(class) => format!(
                "{} {} of the held-out file priced on it instead of their framework's profile: mean error {:.1}%, {}",
                a.rows,
                class_runs(class),
                pct(a.mean_abs_error),
                a.bias_phrase()
            ),
            None => format!(
                "{} published {} of frameworks without a profile, priced on it, on {} chips, {}: mean error {:.1}%, {}",
                a.rows,
                class_runs(a.kind.trim_end_matches(UNPROFILED)),
                a.family,
                a.how_held_out(),
                pct(a.mean_abs_error),
                a.bias_phrase()
            ),
        })
        .collect();
    (!each.is_empty()).then(|| {
        format!(
            "on the default stack `{}`: {}; name your framework's stack (--stack) where it has a profile",
            crate::stack::DEFAULT_STACK,
            each.join("; ")
        )
    })
}

/// What the runs of accuracy class `class` are, for `plan`'s accuracy line.
fn class_runs(class: &str) -> String {
    let (base, long) = match class.strip_suffix("-long") {
        Some(base) => (base, format!(" at {}k tokens or more", LONG_CONTEXT / 1024)),
        None => (class, String::new()),
    };
    let runs = match base {
        "moe" => "MoE runs",
        "moe-all-to-all" => "MoE runs with an all-to-all token dispatcher",
        "hybrid" => "hybrid (Mamba-2) runs",
        "gdn-hybrid" => "Gated DeltaNet hybrid runs",
        _ => "dense runs",
    };
    format!("{runs}{long}")
}

/// The classes that answer for a prediction of a `kind` (`dense` or `moe`) job on a chip of
/// `family`: that family's own runs (each held out by source, and the held-out file's, never
/// fitted) where there are any; otherwise every family's runs of that kind with the whole
/// family held out, the nearest measure of a kind of chip the planner has never seen.
pub fn accuracy_for(kind: &str, family: &str) -> Vec<Accuracy> {
    let all = shipped_accuracy();
    let own: Vec<Accuracy> =
        all.iter().filter(|a| a.held_out != "family" && a.kind == kind && a.family == family).cloned().collect();
    if !own.is_empty() {
        return own;
    }
    all.into_iter().filter(|a| a.held_out == "family" && a.kind == kind).collect()
}

/// Fewest runs a class needs before `plan` quotes its error (fewer is no accuracy figure).
pub const MIN_CLASS_ROWS: usize = 5;

/// The mean error to expect, short, for a table column: the first class's (its family's runs
/// held out by source) as `±7.7%`, or over family-held-out classes their range, `±12.6-16.8%`.
pub fn expected_error(classes: &[Accuracy]) -> String {
    match classes {
        [] => "?".into(),
        [a, ..] if a.held_out != "family" => format!("±{:.1}%", pct(a.mean_abs_error)),
        _ => {
            let m = classes.iter().map(|a| a.mean_abs_error);
            let (lo, hi) = m.fold((f64::MAX, 0f64), |(lo, hi), e| (lo.min(e), hi.max(e)));
            format!("±{:.1}-{:.1}%", pct(lo), pct(hi))
        }
    }
}

/// `plan`'s line about the accuracy of a `kind` prediction on a chip of `family`, from the
/// classes [`accuracy_for`] gave.
pub fn accuracy_line(kind: &str, family: &str, classes: &[Accuracy]) -> String {
    let runs = class_runs(kind);
    if classes.is_empty() {
        return format!(
            "accuracy: fewer than {MIN_CLASS_ROWS} published {runs} to measure it by; treat as an estimate"
        );
    }
    if classes.iter().all(|a| a.held_out == "family") {
        let each: Vec<String> = classes
            .iter()
            .map(|a| format!("{} {:.1}% ({} runs, bias {:+.1}%)", a.family, pct(a.mean_abs_error), a.rows, pct(a.bias)))
            .collect();
        return format!(
            "accuracy: fewer than {MIN_CLASS_ROWS} published {runs} on a chip of the {family} family; with a whole chip family held out from the fit the mean error was {}",
            each.join(", ")
        );
    }
    let each: Vec<String> = classes
        .iter()
        .map(|a| {
            format!(
                "{} published {runs} on {family} chips, {}: mean error {:.1}%, 9 in 10 within {:.0}%, {}",
                a.rows,
                a.how_held_out(),
                pct(a.mean_abs_error),
                pct(a.p90_abs_error),
                a.bias_phrase()
            )
        })
        .collect();
    format!("accuracy: {}", each.join("; "))
}

/// How the shipped constants were obtained.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FitReport {
    /// Rows fitted.
    pub rows: usize,
    /// Sources they come from.
    pub sources: usize,
    /// In-sample mean absolute throughput error.
    pub in_sample_mean_abs_error: f64,
    /// Leave-one-source-out mean absolute error.
    pub cross_validated_mean_abs_error: f64,
    /// Leave-one-source-out worst row.
    pub cross_validated_worst_abs_error: f64,
}

/// The shipped constants (`data/calibration.toml`).
pub fn shipped() -> Constants {
    shipped_file().constants.clone()
}

/// The report stored next to the shipped constants.
pub fn shipped_report() -> FitReport {
    shipped_file().fit.clone()
}

/// Relative error of each row under constants `k`: predicted / published - 1.
pub type ErrorFn<'a> = dyn Fn(&Constants, &[usize]) -> Result<Vec<f64>> + 'a;

fn loss(errs: &[f64]) -> f64 {
    // Mean absolute log error: symmetric in over- and under-prediction, robust to one bad row.
    errs.iter().map(|e| (1.0 + e).ln().abs()).sum::<f64>() / errs.len().max(1) as f64
}

/// Round to 3 significant digits, so the file is stable across platforms.
fn round3(x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let mag = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// Fit the [`FITTED`] constants to `rows` (indices into the caller's rows): coordinate descent on
/// the mean absolute log error, each constant searched on a grid inside its range, then refined.
/// Then each chip's residual ([`chip_residuals`]) from the same rows, `chips[i]` naming row i's
/// chip.
pub fn fit(errors: &ErrorFn, rows: &[usize], chips: &[String]) -> Result<Constants> {
    let mut k = fit_constants(errors, rows)?;
    k.chip_residual = chip_residuals(&errors(&k, rows)?, rows, chips);
    Ok(k)
}

/// Each chip's residual from the errors (`errs[j]` of row `rows[j]`) of constants without any:
/// exp(sum of ln(published / predicted step) / (runs + [`RESIDUAL_PRIOR_RUNS`])).
pub fn chip_residuals(errs: &[f64], rows: &[usize], chips: &[String]) -> BTreeMap<String, ChipResidual> {
    let mut logs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (j, &i) in rows.iter().enumerate() {
        // error = published / predicted step - 1
        logs.entry(chips[i].as_str()).or_default().push((1.0 + errs[j]).ln());
    }
    logs.into_iter()
        .map(|(chip, l)| {
            let factor = round3((l.iter().sum::<f64>() / (l.len() as f64 + RESIDUAL_PRIOR_RUNS)).exp());
            (chip.to_string(), ChipResidual { factor, runs: l.len(), measured: None })
        })
        .collect()
}

fn fit_constants(errors: &ErrorFn, rows: &[usize]) -> Result<Constants> {
    let mut k = Constants::prior();
    let mut best = loss(&errors(&k, rows)?);
    for round in 0..4 {
        let width = 0.5f64.powi(round);
        for &(name, lo, hi) in FITTED {
            let cur = k.get(name);
            let span = (hi - lo) * width;
            let (a, b) = ((cur - span / 2.0).max(lo), (cur + span / 2.0).min(hi));
            for i in 0..=16 {
                let v = a + (b - a) * i as f64 / 16.0;
                let mut trial = k.clone();
                trial.set(name, v);
                let l = loss(&errors(&trial, rows)?);
                if l < best - 1e-12 {
                    best = l;
                    k = trial;
                }
            }
        }
    }
    for &(name, _, _) in FITTED {
        let v = round3(k.get(name));
        k.set(name, v);
    }
    Ok(k)
}

/// One row's cross-validated outcome.
#[derive(Clone, Debug)]
pub struct CvRow {
    /// Index into the rows.
    pub index: usize,
    /// Error when fitted on every other source.
    pub cv_error: f64,
    /// Error with the constants fitted on all rows.
    pub in_sample_error: f64,
}

/// Leave-one-source-out: for each source, fit on the others and predict its rows.
pub fn cross_validate(errors: &ErrorFn, sources: &[String], chips: &[String]) -> Result<(Constants, Vec<CvRow>)> {
    let all: Vec<usize> = (0..sources.len()).collect();
    let full = fit(errors, &all, chips)?;
    let in_sample = errors(&full, &all)?;
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        groups.entry(s.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for held in groups.values() {
        let train: Vec<usize> = all.iter().copied().filter(|i| !held.contains(i)).collect();
        let k = fit(errors, &train, chips)?;
        let e = errors(&k, held)?;
        for (j, &i) in held.iter().enumerate() {
            out.push(CvRow { index: i, cv_error: e[j], in_sample_error: in_sample[i] });
        }
    }
    out.sort_by_key(|r| r.index);
    Ok((full, out))
}

/// The calibration file for `k`, its report and the accuracy classes.
pub fn render(k: &Constants, report: &FitReport, accuracy: &[Accuracy], per_model: &[Accuracy]) -> Result<String> {
    let file = File {
        constants: k.clone(),
        fit: report.clone(),
        accuracy: accuracy.to_vec(),
        model_accuracy: per_model.to_vec(),
    };
    let body = toml::to_string(&file).map_err(|e| anyhow!("cannot write the calibration: {e}"))?;
    Ok(format!(
        "# Constants of the performance model, written by `anychip plan calibrate` from\n\
         # data/published_runs.toml. Do not edit: change the rows or the model and rerun it;\n\
         # tests/validation.rs checks this file is the command's output. docs/planner.md explains\n\
         # each constant; the fixed ones (scaleup_eff, scaleout_eff, hop_latency_us, reserve_gib)\n\
         # come from microbenchmarks and are not fitted.\n\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_nine_in_ten_and_the_sign() {
        let errs: Vec<f64> = (1..=10).map(|i| if i % 2 == 0 { 0.01 * i as f64 } else { -0.01 * i as f64 }).collect();
        let a = Accuracy::of("dense", "x", "source", &errs);
        assert_eq!((a.rows, a.mean_abs_error, a.p90_abs_error, a.bias), (10, 0.055, 0.09, 0.005));
    }

    #[test]
    fn moe_jobs_are_classed_by_their_stacks_dispatcher() {
        let (flex, plain) = (crate::stack::find("nemo-2025-flex").unwrap(), crate::stack::find("nemo-2025").unwrap());
        assert_eq!(accuracy_class("moe", &flex, 4096), "moe");
        assert_eq!(accuracy_class("moe", &plain, 4096), "moe-all-to-all");
        assert_eq!(accuracy_class("dense", &plain, 8192), "dense");
        assert_eq!(accuracy_class("gdn-hybrid", &plain, 4096), "gdn-hybrid");
        assert_eq!(accuracy_class("moe", &flex, 131072), "moe-long");
        assert_eq!(
            class_runs("moe-all-to-all-long"),
            "MoE runs with an all-to-all token dispatcher at 16k tokens or more"
        );
        // The shipped calibration has both MoE classes on NVIDIA chips, the all-to-all one wider.
        let err = |class: &str| accuracy_for(class, "nvidia").first().map(|a| a.mean_abs_error).unwrap();
        assert!(err("moe-all-to-all") > err("moe"), "{} vs {}", err("moe-all-to-all"), err("moe"));
    }

    #[test]
    fn a_chip_family_without_runs_gets_the_family_held_out_classes() {
        let own = accuracy_for("dense", "nvidia");
        assert!(!own.is_empty() && own.iter().all(|a| a.family == "nvidia" && a.held_out != "family"), "{own:?}");
        let unseen = accuracy_for("dense", "no-such-family");
        assert!(unseen.len() >= 2 && unseen.iter().all(|a| a.held_out == "family" && a.kind == "dense"), "{unseen:?}");
        let line = accuracy_line("dense", "no-such-family", &unseen);
        assert!(line.contains("fewer than 5 published dense runs on a chip of the no-such-family family"), "{line}");
        assert!(accuracy_line("moe", "x", &[]).contains("treat as an estimate"));
        let own_mean = 100.0 * own[0].mean_abs_error;
        assert_eq!(expected_error(&own), format!("±{own_mean:.1}%"));
        let range = expected_error(&unseen);
        assert!(range.starts_with('±') && range.contains('-'), "{range}");
    }

    #[test]
    fn a_model_with_runs_gets_its_own_line_and_the_class_lists_leave_it_out() {
        let per_model = &shipped_file().model_accuracy;
        assert!(!per_model.is_empty() && per_model.iter().all(|a| a.model.is_some()));
        assert!(shipped_accuracy().iter().all(|a| a.model.is_none()));
        let name = per_model[0].model.clone().unwrap();
        let own = model_accuracy(&name);
        assert!(!own.is_empty() && own.iter().all(|a| a.model.as_deref() == Some(name.as_str())));
        let line = model_accuracy_line(&name, &own).unwrap();
        assert!(line.starts_with(&format!("on {name} itself")), "{line}");
        assert!(model_accuracy("no-such-model").is_empty());
        assert_eq!(model_accuracy_line("no-such-model", &[]), None);
        let slow = Accuracy::of("moe", "all", "source", &[-0.2, -0.4]);
        let line = model_accuracy_line("m", &[slow]).unwrap();
        assert!(line.contains("2 published runs") && line.contains("30.0% slow on average"), "{line}");
    }

    #[test]
    fn fit_recovers_a_known_constant() {
        // Rows whose error depends only on gemm_eff, zero at 0.6.
        let errors = |k: &Constants, rows: &[usize]| -> Result<Vec<f64>> {
            Ok(rows.iter().map(|&i| (0.6 / k.gemm_eff - 1.0) * (1.0 + i as f64 * 0.01)).collect())
        };
        let chips = vec!["x".to_string(); 3];
        let k = fit(&errors, &[0, 1, 2], &chips).unwrap();
        assert!((k.gemm_eff - 0.6).abs() < 0.01, "{}", k.gemm_eff);
    }

    #[test]
    fn a_chips_residual_is_its_runs_geometric_mean_shrunk_by_the_prior() {
        // Ten runs of "slow" 21% slower than predicted, two of "odd" 10% faster, one "ok" exact.
        let chips: Vec<String> = ["slow"; 10].iter().chain(&["odd"; 2]).chain(&["ok"]).map(|c| c.to_string()).collect();
        let errs: Vec<f64> = [0.21; 10].iter().chain(&[-0.1; 2]).chain(&[0.0]).copied().collect();
        let rows: Vec<usize> = (0..13).collect();
        let r = chip_residuals(&errs, &rows, &chips);
        // 10 runs against a prior of 10: half the log mean, sqrt(1.21) = 1.1.
        assert_eq!(r["slow"], ChipResidual { factor: 1.1, runs: 10, measured: None });
        assert_eq!(r["odd"].runs, 2);
        assert!((r["odd"].factor - (2.0 * 0.9f64.ln() / 12.0).exp()).abs() < 1e-3, "{:?}", r["odd"]);
        assert_eq!(r["ok"].factor, 1.0);
        let k = Constants { chip_residual: r, ..Constants::prior() };
        assert_eq!((k.chip_factor("slow"), k.chip_factor("unseen")), (1.1, 1.0));
    }

    #[test]
    fn rounding_keeps_three_digits() {
        assert_eq!(round3(0.123456), 0.123);
        assert_eq!(round3(123.456), 123.0);
    }
}
