//! The planner against a team's own measured runs (`anychip plan check --runs FILE`): each row
//! of a runs file (the shipped rows' TOML format) priced on its own layout with the shipped
//! calibration, which never saw it, and compared with what the run measured; per run, overall,
//! by kind of model, by chip and by stack. A team's runs can also set their chips' residuals
//! (`--measured FILE`, [`constants_measured_on`]), as the published runs set the shipped ones.

use crate::calib::{self, ChipResidual, Constants};
use crate::chips::{ChipDb, GIB};
use crate::perf::Estimate;
use crate::validation::{self, prepare_runs_file, Prepared};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One run: what it measured, what the planner predicts on its layout.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// The row's id.
    pub id: String,
    /// Chip kind.
    pub chip: String,
    /// Chips the layout occupies.
    pub chips: usize,
    /// Model, as the row names it.
    pub model: String,
    /// Stack, as the row names it.
    pub stack: String,
    /// Number format of the GEMMs.
    pub precision: String,
    /// `dense`, `moe`, `hybrid` or `gdn-hybrid`.
    pub kind: &'static str,
    /// The layout as `plan` prints it.
    pub layout: String,
    /// What the run measured, tokens per second per chip.
    pub published_tokens_per_chip_s: f64,
    /// What the planner predicts for it.
    pub predicted_tokens_per_chip_s: f64,
    /// Predicted over published throughput, less one (+: predicted faster than the run).
    pub error: f64,
    /// Whether the model's peak memory per chip is within what the chip can use.
    pub fits: bool,
    /// Whether a published run of this id is among those the shipped calibration was fitted to.
    pub fitted: bool,
    /// The model's peak memory per chip, GiB.
    pub memory_gib: f64,
    /// What the chip can use, GiB.
    pub usable_gib: f64,
    /// The whole estimate: step broken down, memory broken down.
    pub estimate: Estimate,
}

/// Mean, signed mean, worst and 90th percentile of the absolute errors of a set of runs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Runs.
    pub rows: usize,
    /// Mean absolute error.
    pub mean_abs_error: f64,
    /// Mean signed error (+: predicted faster than the runs ran).
    pub signed_mean_error: f64,
    /// The largest absolute error.
    pub worst_abs_error: f64,
    /// The run it belongs to.
    pub worst_id: String,
    /// Nine runs in ten are within this.
    pub p90_abs_error: f64,
    /// Runs the memory model prices over the chip's usable memory, though each ran.
    pub over_memory: usize,
}

impl Summary {
    /// The summary of `runs`.
    pub fn of(runs: &[&Checked]) -> Summary {
        let n = runs.len().max(1) as f64;
        let mut abs: Vec<f64> = runs.iter().map(|r| r.error.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let worst = runs.iter().max_by(|a, b| a.error.abs().total_cmp(&b.error.abs()));
        let p90 =
            ((0.9 * abs.len() as f64).ceil() as usize).checked_sub(1).and_then(|i| abs.get(i)).copied().unwrap_or(0.0);
        Summary {
            rows: runs.len(),
            mean_abs_error: abs.iter().sum::<f64>() / n,
            signed_mean_error: runs.iter().map(|r| r.error).sum::<f64>() / n,
            worst_abs_error: worst.map_or(0.0, |r| r.error.abs()),
            worst_id: worst.map(|r| r.id.clone()).unwrap_or_default(),
            p90_abs_error: p90,
            over_memory: runs.iter().filter(|r| !r.fits).count(),
        }
    }
}

/// The whole report: every run, then the summary overall, by kind of model, by chip and by
/// software stack.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The runs file.
    pub file: String,
    /// Every run, in the file's order.
    pub runs: Vec<Checked>,
    /// All of them.
    pub summary: Summary,
    /// Each kind of model present: (kind, its summary).
    pub by_kind: Vec<(String, Summary)>,
    /// Each chip kind present, as the rows name it: (chip, its summary).
    pub by_chip: Vec<(String, Summary)>,
    /// Each software stack present, as the rows name it: (stack, its summary): how far off the
    /// planner is on each framework the runs used.
    pub by_stack: Vec<(String, Summary)>,
    /// The runs of chips with two or more runs in the file, each priced with its chip's residual
    /// fitted on the file's other runs of that chip (leave one out): what `--measured` with such
    /// a file gains on runs it was not fitted to. None where no chip has two runs.
    pub measured_leave_one_out: Option<Summary>,
    /// What was assumed reading each model the rows name that is a Hugging Face config of a
    /// family the planner does not know by name: (model as the rows name it, the note).
    pub model_notes: Vec<(String, String)>,
}

/// Price one prepared run with the constants `k`; `fitted` holds the ids of the fitted runs.
fn check(p: &Prepared, k: &Constants, fitted: &BTreeSet<String>) -> Result<Checked> {
    let id = &p.row.id;
    let layout = p.layout();
    p.check_runs().map_err(|e| anyhow!("row {id}: {e}"))?;
    let published = p.published_step();
    let est = p.estimate(k)?;
    let tokens_per_chip = (p.row.global_batch * p.row.seq) as f64 / layout.chips() as f64;
    Ok(Checked {
        id: id.clone(),
        chip: p.row.chip.clone(),
        chips: layout.chips(),
        model: p.row.model.clone(),
        stack: p.row.stack.clone(),
        precision: p.row.precision.clone(),
        kind: p.kind(),
        layout: layout.to_string(),
        published_tokens_per_chip_s: tokens_per_chip / published,
        predicted_tokens_per_chip_s: tokens_per_chip / est.time.total(),
        error: published / est.time.total() - 1.0,
        fits: est.fits(),
        fitted: fitted.contains(id),
        memory_gib: est.memory.total() / GIB,
        usable_gib: est.capacity / GIB,
        estimate: est,
    })
}

/// Price every run of the runs file at `path` (chips from `db`) with the constants `k`
/// ([`calib::shipped`], or with a team's measured residuals: [`constants_measured_on`]).
pub fn check_runs_file(path: &Path, db: &ChipDb, k: &Constants) -> Result<Report> {
    let rows = prepare_runs_file(path, db)?;
    let fitted: BTreeSet<String> = validation::rows().into_iter().map(|r| r.id).collect();
    let runs = rows.iter().map(|p| check(p, k, &fitted)).collect::<Result<Vec<_>>>()?;
    let all: Vec<&Checked> = runs.iter().collect();
    let summary = Summary::of(&all);
    let by_kind = grouped(&runs, |r| r.kind.to_string());
    let by_chip = grouped(&runs, |r| r.chip.clone());
    let by_stack = grouped(&runs, |r| r.stack.clone());
    let measured_leave_one_out = leave_one_out(&rows, &runs)?;
    let model_notes: BTreeMap<String, String> =
        rows.iter().filter_map(|p| Some((p.row.model.clone(), p.model_note.clone()?))).collect();
    Ok(Report {
        file: path.display().to_string(),
        runs,
        summary,
        by_kind,
        by_chip,
        by_stack,
        measured_leave_one_out,
        model_notes: model_notes.into_iter().collect(),
    })
}

/// The summary of each group of `runs` sharing `key`, in key order.
fn grouped(runs: &[Checked], key: impl Fn(&Checked) -> String) -> Vec<(String, Summary)> {
    let mut groups: BTreeMap<String, Vec<&Checked>> = BTreeMap::new();
    for r in runs {
        groups.entry(key(r)).or_default().push(r);
    }
    groups.into_iter().map(|(k, of)| (k, Summary::of(&of))).collect()
}

/// Each chip's residual from a team's measured runs `rows` (read from `file`), in place of the
/// shipped one: as the fit derives a chip's residual from its published runs, from the errors
/// of the constants without it, shrunk toward 1 alike ([`calib::chip_residuals`]).
pub fn measured_residuals(rows: &[Prepared], file: &str) -> Result<BTreeMap<String, ChipResidual>> {
    let (chips, errs) = bare_errors(rows)?;
    let all: Vec<usize> = (0..rows.len()).collect();
    let residuals = calib::chip_residuals(&errs, &all, &chips);
    Ok(residuals.into_iter().map(|(c, r)| (c, ChipResidual { measured: Some(file.to_string()), ..r })).collect())
}

/// Each row's chip, and its error under the shipped constants with those chips' residuals
/// taken out (what a residual is derived from).
fn bare_errors(rows: &[Prepared]) -> Result<(Vec<String>, Vec<f64>)> {
    let chips = validation::chip_names(rows);
    let mut bare = calib::shipped();
    for c in &chips {
        bare.chip_residual.remove(c);
    }
    let errs = rows.iter().map(|r| r.error(&bare)).collect::<Result<Vec<_>>>()?;
    Ok((chips, errs))
}

/// The shipped constants with each chip of the runs file at `path` priced with its residual
/// from those runs instead of the shipped one (`--measured FILE`).
pub fn constants_measured_on(path: &Path, db: &ChipDb) -> Result<Constants> {
    let rows = prepare_runs_file(path, db)?;
    for r in &rows {
        r.check_runs().map_err(|e| anyhow!("row {}: {e}", r.row.id))?;
    }
    let mut k = calib::shipped();
    k.chip_residual.extend(measured_residuals(&rows, &path.display().to_string())?);
    Ok(k)
}

/// The model's constants: the shipped ones, with each chip of the runs file `measured` (if
/// any) priced with its residual from those runs ([`constants_measured_on`], `--measured`).
pub fn constants(measured: Option<&Path>, db: &ChipDb) -> Result<Constants> {
    match measured {
        Some(path) => constants_measured_on(path, db),
        None => Ok(calib::shipped()),
    }
}

/// [`Report::measured_leave_one_out`]: each run of a chip with other runs in the file, priced
/// with the residual those others give it.
fn leave_one_out(rows: &[Prepared], runs: &[Checked]) -> Result<Option<Summary>> {
    let (chips, errs) = bare_errors(rows)?;
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let others: Vec<usize> = (0..rows.len()).filter(|&j| j != i && chips[j] == chips[i]).collect();
        if others.is_empty() {
            continue;
        }
        let others_errs: Vec<f64> = others.iter().map(|&j| errs[j]).collect();
        let factor = calib::chip_residuals(&others_errs, &others, &chips)[&chips[i]].factor;
        out.push(Checked { error: (1.0 + errs[i]) / factor - 1.0, ..run.clone() });
    }
    Ok((!out.is_empty()).then(|| Summary::of(&out.iter().collect::<Vec<_>>())))
}
