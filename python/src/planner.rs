//! `anychip.plan`, `chips`, `compare`, `fleet`: crates/plan's library API, results as JSON for
//! the Python side to turn into lists of dicts (and DataFrames).

use crate::errors::{detached, input, Failure, Result};
use anychip_plan::chips::{Chip, ChipDb, GIB};
use anychip_plan::fleet::{read_toml, schedule, FleetFile, JobsFile, Objective};
use anychip_plan::perf::Precision;
use anychip_plan::search::{parse_layout_on, search_with, PinnedOver, Plan, Ranked, Request};
use anychip_plan::stack::{self, DEFAULT_STACK};
use anychip_plan::{export, model};
use pyo3::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn db(overrides: &[String], chip_files: &[PathBuf]) -> Result<ChipDb> {
    Ok(ChipDb::with_user(chip_files, overrides)?)
}

fn to_json(v: &impl serde::Serialize) -> Result<String> {
    Ok(serde_json::to_string(v).map_err(anyhow::Error::from)?)
}

/// One chip as a flat record: identity, every known figure, and the computed export class.
fn chip_row(c: &Chip) -> Value {
    let mut row = json!({
        "name": c.name, "display": c.display, "vendor": c.vendor, "family": c.family,
        "calibration": c.calibration, "aliases": c.aliases,
    });
    for (k, f) in &c.specs {
        row[k] = json!(f.value);
    }
    let e = export::classify(c);
    row["export_class"] = json!(e.class);
    row["tpp"] = json!(e.tpp);
    row
}

/// One ranked layout as a flat record (the columns of `anychip plan`'s table).
fn ranked_row(r: &Ranked) -> Value {
    let e = &r.estimate;
    json!({
        "layout": e.layout.to_string(), "step_s": r.step_s, "tokens_per_s": e.tokens_per_s, "mfu": e.mfu,
        "memory_gib": e.memory.total() / GIB, "headroom_gib": (e.capacity - e.memory.total()) / GIB,
        "days": r.days, "energy_mwh": r.energy_kwh.map(|k| k / 1000.0), "cost_usd": r.cost_usd,
        "global_batch": e.global_batch,
    })
}

/// A plan as its full JSON plus `rows`: the ranked layouts as flat records, best first.
fn plan_json(p: &Plan) -> Value {
    let mut v = json!(p);
    v["rows"] = p.ranked.iter().map(ranked_row).collect();
    v
}

/// Every chip of the database (builtin plus `chip_files` and `overrides`), one record each.
#[pyfunction]
#[pyo3(signature = (overrides=vec![], chip_files=vec![]))]
pub fn chips(py: Python<'_>, overrides: Vec<String>, chip_files: Vec<PathBuf>) -> PyResult<String> {
    detached(py, || {
        let db = db(&overrides, &chip_files)?;
        to_json(&db.chips.iter().map(chip_row).collect::<Vec<_>>())
    })
}

/// Parse NAME:COUNT as `anychip plan --chips` does.
fn parse_chips(spec: &str) -> Result<(String, usize)> {
    let bad = || input(format!("chips '{spec}' must look like NAME:COUNT with a positive count, e.g. h20:1024"));
    let (name, count) = spec.split_once(':').ok_or_else(bad)?;
    let count: usize = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    Ok((name.trim().to_string(), count))
}

/// What a job is beyond its model and size: `anychip plan`'s --stack, --precision and --layout.
pub struct JobOpts<'a> {
    pub stack: &'a str,
    pub precision: &'a str,
    pub layout: Option<&'a str>,
}

fn request(
    model_spec: &str,
    count: usize,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    opts: &JobOpts,
) -> Result<Request> {
    if !(tokens.is_finite() && tokens > 0.0) {
        return Err(input(format!("tokens must be a positive number, got {tokens}")));
    }
    let model = model::resolve(model_spec)?;
    let seq = seq.unwrap_or_else(|| model::default_seq(&model));
    let stack = stack::find(opts.stack)?;
    let precision = Precision::parse(opts.precision)?;
    // A malformed --layout is bad input, as in the CLI (one that parses but cannot run this
    // model is refused by the search, naming why).
    let pinned =
        opts.layout.map(|l| parse_layout_on(l, count, &stack)).transpose().map_err(|e| input(format!("{e:#}")))?;
    Ok(Request { model, count, tokens, seq, global_batch, precision, stack, pinned })
}

/// The best layouts of one job on one chip kind (`anychip plan`), as the plan's JSON.
#[pyfunction]
#[pyo3(signature = (model, chips, tokens, seq=None, global_batch=None, overrides=vec![], chip_files=vec![],
    stack=DEFAULT_STACK, precision="bf16", layout=None, measured=None))]
#[allow(clippy::too_many_arguments)]
pub fn plan(
    py: Python<'_>,
    model: &str,
    chips: &str,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    overrides: Vec<String>,
    chip_files: Vec<PathBuf>,
    stack: &str,
    precision: &str,
    layout: Option<&str>,
    measured: Option<PathBuf>,
) -> PyResult<String> {
    detached(py, || {
        let db = db(&overrides, &chip_files)?;
        let (name, count) = parse_chips(chips)?;
        let chip = db.find(&name)?;
        let opts = JobOpts { stack, precision, layout };
        let k = anychip_plan::check::constants(measured.as_deref(), &db)?;
        match search_with(&request(model, count, tokens, seq, global_batch, &opts)?, chip, &k) {
            Ok(plan) => to_json(&plan_json(&plan)),
            Err(e) => Err(pinned_over(e)),
        }
    })
}

/// The failure of a search: a pinned layout priced over usable memory ([`PinnedOver`]) carries
/// its plan, as the CLI prints it before the error line; any other error is as it comes.
fn pinned_over(e: anyhow::Error) -> Failure {
    match e.downcast::<PinnedOver>() {
        Ok(over) => {
            let plan = serde_json::to_string(&plan_json(&over.plan)).ok();
            Failure { plan, ..anyhow::Error::msg(over.message).into() }
        }
        Err(e) => e.into(),
    }
}

/// The same job on each chip kind (`anychip chips compare`): per chip its plan, or why none fits.
#[pyfunction]
#[pyo3(signature = (chips, model, count=None, tokens=1e12, seq=None, global_batch=None, overrides=vec![], chip_files=vec![],
    stack=DEFAULT_STACK, precision="bf16", measured=None, days=None))]
#[allow(clippy::too_many_arguments)]
pub fn compare(
    py: Python<'_>,
    chips: Vec<String>,
    model: &str,
    count: Option<usize>,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    overrides: Vec<String>,
    chip_files: Vec<PathBuf>,
    stack: &str,
    precision: &str,
    measured: Option<PathBuf>,
    days: Option<f64>,
) -> PyResult<String> {
    detached(py, || {
        match (count, days) {
            (Some(0), _) => return Err(input("count must be positive")),
            (Some(_), Some(_)) => return Err(input("give count (chips of each kind) or days (a deadline), not both")),
            (None, None) => return Err(input("compare needs count (chips of each kind) or days (a deadline)")),
            (None, Some(d)) => anychip_plan::sizing::check_days(d, "days").map_err(|e| input(e.to_string()))?,
            _ => {}
        }
        let db = db(&overrides, &chip_files)?;
        let k = anychip_plan::check::constants(measured.as_deref(), &db)?;
        let opts = JobOpts { stack, precision, layout: None };
        let req = request(model, count.unwrap_or(1), tokens, seq, global_batch, &opts)?;
        let price = |chip: &Chip| match days {
            Some(d) => anychip_plan::sizing::fewest_chips(&req, chip, &k, d),
            None => search_with(&req, chip, &k),
        };
        // Resolve every name first so a typo fails before any work, as the CLI does.
        let found: Vec<&Chip> = chips.iter().map(|n| db.find(n)).collect::<anyhow::Result<_>>()?;
        let rows: Vec<Value> = found
            .iter()
            .map(|chip| match price(chip) {
                Ok(p) => {
                    let mut row = ranked_row(p.best());
                    row["chip"] = json!(chip.name);
                    row["count"] = json!(p.count);
                    row["validated"] = json!(p.validated);
                    row["accuracy"] = json!(anychip_plan::calib::accuracy_line(&p.kind, &chip.family, &p.accuracy));
                    row["refused"] = Value::Null;
                    row
                }
                Err(e) => json!({"chip": chip.name, "refused": format!("{e:#}")}),
            })
            .collect();
        to_json(&rows)
    })
}

/// Place jobs on a fleet of chip pools (`anychip fleet`). `fleet` and `jobs` are TOML files, or
/// JSON texts of the same tables when `inline` is set.
#[pyfunction]
#[pyo3(signature = (fleet, jobs, objective="makespan", inline=false, overrides=vec![], chip_files=vec![],
    stack=DEFAULT_STACK, measured=None))]
#[allow(clippy::too_many_arguments)]
pub fn fleet(
    py: Python<'_>,
    fleet: String,
    jobs: String,
    objective: &str,
    inline: bool,
    overrides: Vec<String>,
    chip_files: Vec<PathBuf>,
    stack: &str,
    measured: Option<PathBuf>,
) -> PyResult<String> {
    detached(py, || {
        let objective = match objective {
            "makespan" => Objective::Makespan,
            "cost" => Objective::Cost,
            other => return Err(input(format!("objective '{other}' is not one of makespan, cost"))),
        };
        let db = db(&overrides, &chip_files)?;
        let (f, j): (FleetFile, JobsFile) = if inline {
            let f = serde_json::from_str(&fleet).map_err(|e| input(format!("fleet: {e}")))?;
            (f, serde_json::from_str(&jobs).map_err(|e| input(format!("jobs: {e}")))?)
        } else {
            (read_toml(Path::new(&fleet), "fleet")?, read_toml(Path::new(&jobs), "jobs")?)
        };
        let stack = stack::find(stack)?;
        let k = anychip_plan::check::constants(measured.as_deref(), &db)?;
        to_json(&schedule(&f, &j, &db, objective, &stack, &k)?)
    })
}

/// Price a team's own measured runs on their layouts (`anychip plan check --runs FILE`): the
/// report's JSON, every run with its error and the summaries.
#[pyfunction]
#[pyo3(signature = (runs, overrides=vec![], chip_files=vec![], measured=None))]
pub fn check(
    py: Python<'_>,
    runs: PathBuf,
    overrides: Vec<String>,
    chip_files: Vec<PathBuf>,
    measured: Option<PathBuf>,
) -> PyResult<String> {
    detached(py, || {
        let db = db(&overrides, &chip_files)?;
        let k = anychip_plan::check::constants(measured.as_deref(), &db)?;
        to_json(&anychip_plan::check::check_runs_file(&runs, &db, &k)?)
    })
}
