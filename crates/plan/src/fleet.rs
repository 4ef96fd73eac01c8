//! Mixed-fleet placement: which training job runs on which chip pool, and when.
//!
//! Greedy list scheduling (longest job first): for each job, every eligible chip kind and every
//! chip count from the kind's whole capacity down by halves is planned with [`crate::search`]; the job takes
//! the placement that finishes earliest (objective `makespan`) or costs least (`cost`), starting
//! when enough chips of that kind are free. Pools of the same chip kind are pooled; a job spans
//! different kinds only when it asks for heterogeneous placement. This is a heuristic: good
//! placements, not proven optimal ones.

use crate::chips::{Chip, ChipDb};
use crate::model;
use crate::perf::Precision;
use crate::search::{check_job_size, search_with, Plan, Request};
use crate::stack::{self, Stack};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One pool of identical chips.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// Chip name in the database.
    pub chip: String,
    /// Chips in the pool.
    pub count: usize,
    /// Price per chip-hour, USD (overrides the database).
    #[serde(default)]
    pub price_per_hour: Option<f64>,
    /// Chip figures assumed for this fleet (`field = value`), for figures the database lacks.
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
}

/// The fleet file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// The pools.
    pub pool: Vec<Pool>,
}

/// One training job.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Model preset or model file.
    pub model: String,
    /// Training tokens.
    pub tokens: f64,
    /// Sequence length (default 4096).
    #[serde(default)]
    pub seq: Option<usize>,
    /// Sequences per step (default about 4M tokens).
    #[serde(default)]
    pub global_batch: Option<usize>,
    /// Chip families or chip names this job must run on.
    #[serde(default)]
    pub require: Vec<String>,
    /// Chip families or chip names this job must not run on.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// Allow one job to use several chip kinds at once.
    #[serde(default)]
    pub heterogeneous: bool,
    /// Software stack profile, a name or a TOML stack file (default: the fleet command's `--stack`).
    #[serde(default)]
    pub stack: Option<String>,
    /// `bf16` (default), `fp8`, `int8` or `fp4` (as `plan --precision`).
    #[serde(default)]
    pub precision: Option<String>,
    /// Days from the schedule's start by which the job must end (optional): jobs with one are
    /// placed first, earliest deadline first, each on the placement the objective prefers among
    /// those that end in time, or, where none does, the one that ends soonest.
    #[serde(default)]
    pub deadline_days: Option<f64>,
}

/// The jobs file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsFile {
    /// The jobs.
    pub job: Vec<JobSpec>,
}

/// What the scheduler minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Objective {
    /// Time until the last job finishes.
    Makespan,
    /// Total chip rental cost.
    Cost,
}

/// Chips of one kind taken by a job.
#[derive(Clone, Debug, Serialize)]
pub struct Share {
    /// Chip kind.
    pub chip: String,
    /// Chips used.
    pub count: usize,
    /// Best layout on them.
    pub layout: String,
    /// Tokens/s of this share.
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation.
    pub mfu: f64,
    /// The planner's mean error on published runs like this share's, held out of its fit
    /// ([`crate::calib::expected_error`]: `±7.7%`, or a range for a chip family without runs).
    pub error: String,
}

/// Where and when a job runs.
#[derive(Clone, Debug, Serialize)]
pub struct Assignment {
    /// Job name.
    pub job: String,
    /// Model name.
    pub model: String,
    /// What the planner assumed reading the model ([`crate::search::Plan::model_note`]): set for
    /// a Hugging Face config of a family it does not know by name.
    pub model_note: Option<String>,
    /// One share, or several for a heterogeneous job.
    pub shares: Vec<Share>,
    /// Start, days from now.
    pub start_days: f64,
    /// Duration, days.
    pub days: f64,
    /// Rental cost, USD, if every price is known.
    pub cost_usd: Option<f64>,
    /// The job's deadline, days from the start, if it has one.
    pub deadline_days: Option<f64>,
    /// Whether it ends by its deadline (None without one).
    pub meets_deadline: Option<bool>,
    /// For a missed deadline: per eligible chip kind, the fewest chips that would end the job by
    /// it starting on day 0 ([`crate::sizing::fewest_chips`]), what the fleet would need.
    pub chips_for_deadline: Vec<(String, usize)>,
}

impl Assignment {
    /// Finish, days from now.
    pub fn end_days(&self) -> f64 {
        self.start_days + self.days
    }
}

/// The schedule.
#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    /// Objective used.
    pub objective: Objective,
    /// Assignments, by start time.
    pub assignments: Vec<Assignment>,
    /// When the last job ends, days.
    pub makespan_days: f64,
    /// Total cost if every price is known.
    pub cost_usd: Option<f64>,
}

/// Read a fleet file and a jobs file and schedule the jobs (what `anychip fleet` computes) with
/// the model's constants `k` ([`crate::calib::shipped`], or with a team's measured residuals).
pub fn schedule_files(
    fleet: &Path,
    jobs: &Path,
    db: &ChipDb,
    objective: Objective,
    stack: &Stack,
    k: &crate::calib::Constants,
) -> Result<Schedule> {
    let fleet: FleetFile = read_toml(fleet, "fleet")?;
    let jobs: JobsFile = read_toml(jobs, "jobs")?;
    schedule(&fleet, &jobs, db, objective, stack, k)
}

/// Read a TOML file of type `T`; the error names the file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {what} file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow!("{what} file {}: {}", path.display(), crate::chips::one_line(&e.to_string())))
}

/// A chip kind in the fleet: its record (with the fleet's assumptions) and total chips.
#[derive(Clone, Debug)]
struct Kind {
    chip: Chip,
    capacity: usize,
}

fn kinds(fleet: &FleetFile, db: &ChipDb) -> Result<BTreeMap<String, Kind>> {
    if fleet.pool.is_empty() {
        bail!("fleet file has no [[pool]]");
    }
    // Each pool's chip record, looked up once; its database name lets two spellings of one kind meet.
    let chips: Vec<&Chip> = fleet
        .pool
        .iter()
        .map(|p| db.find(&p.chip).map_err(|e| anyhow!("pool {}: {e}", p.name)))
        .collect::<Result<_>>()?;
    let mut out: BTreeMap<String, Kind> = BTreeMap::new();
    for (i, p) in fleet.pool.iter().enumerate() {
        if p.count == 0 {
            bail!("pool {}: count must be positive", p.name);
        }
        if fleet.pool[..i].iter().any(|q| q.name == p.name) {
            bail!("fleet file: two pools are named '{}'; give each pool its own name", p.name);
        }
        // Pools of one kind are scheduled as one; a second pool that assumed other figures
        // would be priced with the first's, so say so instead of dropping them.
        let differs = |q: &&Pool| q.overrides != p.overrides || q.price_per_hour != p.price_per_hour;
        let same_kind = |(_, c): &(&Pool, &&Chip)| c.name == chips[i].name;
        if let Some(q) = fleet.pool[..i].iter().zip(&chips).filter(same_kind).map(|(q, _)| q).find(differs) {
            bail!(
                "fleet file: pools '{}' and '{}' are both {} but assume different figures or prices; pools of one chip kind are planned as one, so give them the same overrides and price_per_hour (or one pool of both counts)",
                q.name, p.name, chips[i].name
            );
        }
        let mut chip = chips[i].clone();
        for (k, v) in &p.overrides {
            chip.set(k, *v, &format!("fleet assumption (pool {})", p.name))
                .map_err(|e| anyhow!("pool {}: {e}", p.name))?;
        }
        if let Some(price) = p.price_per_hour {
            chip.set("price_per_hour", price, &format!("fleet price (pool {})", p.name))?;
        }
        match out.get_mut(&chip.name) {
            // Pools of one kind (with the same assumptions, checked above) are interchangeable.
            Some(k) => k.capacity += p.count,
            None => {
                out.insert(chip.name.clone(), Kind { chip, capacity: p.count });
            }
        }
    }
    Ok(out)
}

fn eligible(job: &JobSpec, chip: &Chip) -> bool {
    let hit = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(&chip.family) || chip.answers_to(n));
    (job.require.is_empty() || hit(&job.require)) && !hit(&job.forbid)
}

/// Occupancy of one chip kind over time.
#[derive(Default)]
struct Timeline {
    busy: Vec<(f64, f64, usize)>,
}

impl Timeline {
    fn used_during(&self, t0: f64, t1: f64) -> usize {
        // Peak use in [t0, t1): check at t0 and at every start inside the window.
        let mut points = vec![t0];
        points.extend(self.busy.iter().map(|b| b.0).filter(|&s| s > t0 && s < t1));
        points.iter().map(|&t| self.busy.iter().filter(|b| b.0 <= t && t < b.1).map(|b| b.2).sum()).max().unwrap_or(0)
    }

    fn earliest(&self, n: usize, dur: f64, cap: usize) -> f64 {
        let mut starts = vec![0.0];
        starts.extend(self.busy.iter().map(|b| b.1));
        starts.sort_by(f64::total_cmp);
        starts.into_iter().find(|&t| self.used_during(t, t + dur) + n <= cap).unwrap_or(f64::INFINITY)
    }
}

struct Option_ {
    shares: Vec<(String, usize, Plan)>,
    days: f64,
    cost: Option<f64>,
}

/// The job's request template (model, sequence, stack, precision) from its `[[job]]` entry.
fn job_request(job: &JobSpec, default_stack: &Stack) -> Result<Request> {
    let model = model::resolve(&job.model)?;
    if job.seq == Some(0) {
        bail!("seq must be at least 1 token; give a positive value or leave it out for 4096");
    }
    let seq = job.seq.unwrap_or(4096);
    check_job_size(job.tokens, job.global_batch, seq, "tokens", "global_batch")?;
    if let Some(d) = job.deadline_days {
        crate::sizing::check_days(d, "deadline_days")?;
    }
    let stack = match &job.stack {
        Some(n) => stack::resolve(n)?,
        None => default_stack.clone(),
    };
    let precision = match &job.precision {
        Some(p) => Precision::parse(p)?,
        None => Precision::Bf16,
    };
    Ok(Request {
        model,
        count: 0,
        tokens: job.tokens,
        seq,
        global_batch: job.global_batch,
        precision,
        stack,
        pinned: None,
    })
}

/// Every feasible placement of one job: each eligible pool at its size and at halvings of it,
/// and (for a heterogeneous job) all kinds at once.
fn job_options(
    job: &JobSpec,
    kinds: &BTreeMap<String, Kind>,
    template: &Request,
    k: &crate::calib::Constants,
) -> Result<Vec<Option_>> {
    let (mut opts, mut why, mut best_per_kind) = (Vec::new(), Vec::new(), Vec::new());
    for (name, kind) in kinds.iter().filter(|(_, k)| eligible(job, &k.chip)) {
        let mut n = kind.capacity;
        let mut first = true;
        while n >= 1 {
            match search_with(&Request { count: n, ..template.clone() }, &kind.chip, k) {
                Ok(plan) => {
                    if first {
                        best_per_kind.push((name.clone(), plan.clone()));
                    }
                    let b = plan.best();
                    opts.push(Option_ { days: b.days, cost: b.cost_usd, shares: vec![(name.clone(), n, plan)] });
                }
                Err(e) => {
                    if first {
                        why.push(format!("{name}: {e}"));
                    }
                    break;
                }
            }
            first = false;
            if n % 2 != 0 {
                break;
            }
            n /= 2;
        }
    }
    if job.heterogeneous && best_per_kind.len() > 1 {
        opts.push(heterogeneous(job, kinds, &best_per_kind));
    }
    if opts.is_empty() {
        if why.is_empty() {
            bail!("no pool satisfies require {:?} / forbid {:?}", job.require, job.forbid);
        }
        bail!("fits on no eligible pool ({})", why.join("; "));
    }
    Ok(opts)
}

/// Data parallel across kinds with the batch split in proportion to speed, so every kind
/// finishes a step together: throughput is the sum. Cross-kind gradient traffic is not
/// modelled, so this is optimistic.
fn heterogeneous(job: &JobSpec, kinds: &BTreeMap<String, Kind>, best_per_kind: &[(String, Plan)]) -> Option_ {
    let tps: f64 = best_per_kind.iter().map(|(_, p)| p.best().estimate.tokens_per_s).sum();
    let days = job.tokens / tps / 86400.0;
    let cost = best_per_kind
        .iter()
        .map(|(k, p)| kinds[k].chip.get("price_per_hour").map(|pr| pr * p.count as f64 * days * 24.0))
        .sum::<Option<f64>>();
    let shares = best_per_kind.iter().map(|(k, p)| (k.clone(), p.count, p.clone())).collect();
    Option_ { shares, days, cost }
}

/// The option of `opts` the objective prefers among those the timelines can start, and its
/// start day (a heterogeneous option needs every kind free at once). Under a `deadline`, only
/// the options that end by it compete; where none does, the one that ends soonest is taken.
fn place<'o>(
    opts: &'o [Option_],
    timelines: &BTreeMap<String, Timeline>,
    kinds: &BTreeMap<String, Kind>,
    objective: Objective,
    deadline: Option<f64>,
) -> Option<(f64, &'o Option_)> {
    // (start, finish, option) of every option that can start.
    let startable: Vec<(f64, f64, &Option_)> = opts
        .iter()
        .filter_map(|o| {
            let start = o
                .shares
                .iter()
                .map(|(k, n, _)| timelines[k].earliest(*n, o.days, kinds[k].capacity))
                .fold(0.0, f64::max);
            start.is_finite().then_some((start, start + o.days, o))
        })
        .collect();
    let in_time: Vec<_> = startable.iter().filter(|(_, f, _)| deadline.is_none_or(|d| *f <= d)).collect();
    if in_time.is_empty() {
        let soonest = startable.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
        return Some((soonest.0, soonest.2));
    }
    let key = |finish: f64, o: &Option_| match objective {
        Objective::Makespan => (finish, o.cost.unwrap_or(0.0)),
        Objective::Cost => (o.cost.unwrap_or(f64::INFINITY), finish),
    };
    // The first of equal keys, as the options come (each pool largest first).
    let mut best = in_time[0];
    for &c in &in_time[1..] {
        if key(c.1, c.2) < key(best.1, best.2) {
            best = c;
        }
    }
    Some((best.0, best.2))
}

/// Per eligible kind of the fleet, the fewest chips that train `job` (its request `template`)
/// within `days` (kinds where no count does are left out).
fn chips_for_deadline(
    job: &JobSpec,
    template: &Request,
    kinds: &BTreeMap<String, Kind>,
    k: &crate::calib::Constants,
    days: f64,
) -> Vec<(String, usize)> {
    kinds
        .iter()
        .filter(|(_, kind)| eligible(job, &kind.chip))
        .filter_map(|(name, kind)| {
            let plan = crate::sizing::fewest_chips(template, &kind.chip, k, days).ok()?;
            Some((name.clone(), plan.count))
        })
        .collect()
}

/// Place every job of `jobs` on `fleet`, priced with the model's constants `k`.
pub fn schedule(
    fleet: &FleetFile,
    jobs: &JobsFile,
    db: &ChipDb,
    objective: Objective,
    default_stack: &Stack,
    k: &crate::calib::Constants,
) -> Result<Schedule> {
    let kinds = kinds(fleet, db)?;
    if jobs.job.is_empty() {
        bail!("jobs file has no [[job]]");
    }
    if let Some((i, j)) = jobs.job.iter().enumerate().find(|(i, j)| jobs.job[..*i].iter().any(|k| k.name == j.name)) {
        bail!("jobs file: job {} and an earlier job are both named '{}'; give each job its own name", i + 1, j.name);
    }
    // Every feasible placement of every job, computed once, with the job's request template.
    let mut options: Vec<(usize, Request, Vec<Option_>)> = Vec::new();
    for (ji, job) in jobs.job.iter().enumerate() {
        let built = job_request(job, default_stack).and_then(|template| {
            let opts = job_options(job, &kinds, &template, k)?;
            Ok((template, opts))
        });
        let (template, opts) = built.map_err(|e| anyhow!("job {}: {e}", job.name))?;
        if objective == Objective::Cost && opts.iter().all(|o| o.cost.is_none()) {
            bail!("job {}: objective cost needs price_per_hour on its pools (set it in the fleet file)", job.name);
        }
        options.push((ji, template, opts));
    }
    // Longest job first (by its fastest placement); then, stably, the jobs with a deadline
    // before the others, earliest deadline first.
    options.sort_by(|a, b| {
        let fa = a.2.iter().map(|o| o.days).fold(f64::INFINITY, f64::min);
        let fb = b.2.iter().map(|o| o.days).fold(f64::INFINITY, f64::min);
        fb.total_cmp(&fa)
    });
    let deadline = |ji: usize| jobs.job[ji].deadline_days.unwrap_or(f64::INFINITY);
    options.sort_by(|a, b| deadline(a.0).total_cmp(&deadline(b.0)));
    let mut timelines: BTreeMap<String, Timeline> = kinds.keys().map(|k| (k.clone(), Timeline::default())).collect();
    let mut out = Vec::new();
    for (ji, template, opts) in options {
        let job = &jobs.job[ji];
        let (start, o) = place(&opts, &timelines, &kinds, objective, job.deadline_days)
            .ok_or_else(|| anyhow!("job {}: no placement could be scheduled", job.name))?;
        for (k, n, _) in &o.shares {
            timelines.get_mut(k).expect("kind").busy.push((start, start + o.days, *n));
        }
        let shares = o
            .shares
            .iter()
            .map(|(k, n, p)| Share {
                chip: k.clone(),
                count: *n,
                layout: p.best().estimate.layout.to_string(),
                tokens_per_s: p.best().estimate.tokens_per_s,
                mfu: p.best().estimate.mfu,
                error: crate::calib::expected_error(&p.accuracy),
            })
            .collect();
        out.push(Assignment {
            job: job.name.clone(),
            model: job.model.clone(),
            model_note: o.shares.first().and_then(|(_, _, p)| p.model_note.clone()),
            shares,
            start_days: start,
            days: o.days,
            cost_usd: o.cost,
            deadline_days: job.deadline_days,
            meets_deadline: job.deadline_days.map(|d| start + o.days <= d),
            chips_for_deadline: match job.deadline_days {
                Some(d) if start + o.days > d => chips_for_deadline(job, &template, &kinds, k, d),
                _ => Vec::new(),
            },
        });
    }
    out.sort_by(|a, b| a.start_days.total_cmp(&b.start_days).then(a.job.cmp(&b.job)));
    let makespan_days = out.iter().map(Assignment::end_days).fold(0.0, f64::max);
    let cost_usd = out.iter().map(|a| a.cost_usd).sum::<Option<f64>>();
    Ok(Schedule { objective, assignments: out, makespan_days, cost_usd })
}
