//! Command-line front ends (`anychip plan`, `anychip chips`, `anychip fleet`): clap argument types
//! and run functions that print to stdout and return one-line errors.

use crate::chart::{self, Bar};
use crate::chips::{ChipDb, FIELDS, GIB};
use crate::export;
use crate::fleet::{self, FleetFile, JobsFile, Objective, Schedule};
use crate::model;
use crate::perf::Software;
use crate::search::{search, Plan, Request};
use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;

/// Chip database options shared by every command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChipOpts {
    /// Set one chip figure, CHIP.FIELD=VALUE (e.g. ppu.bf16_tflops=150); repeatable.
    #[arg(long = "override", value_name = "CHIP.FIELD=VALUE", global = true)]
    pub overrides: Vec<String>,
    /// A chip file (TOML, format of crates/plan/chips/*.toml) adding or overriding chips; repeatable.
    #[arg(long = "chip-file", value_name = "FILE", global = true)]
    pub chip_files: Vec<PathBuf>,
}

impl ChipOpts {
    fn db(&self) -> Result<ChipDb> {
        ChipDb::with_user(&self.chip_files, &self.overrides)
    }
}

/// `anychip plan`: the best parallel layouts of one training job on one chip kind.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// Model preset (e.g. llama3-70b, qwen3-8b) or TOML model file.
    #[arg(long, value_name = "PRESET|FILE")]
    pub model: String,
    /// Chip kind and count, e.g. h20:1024.
    #[arg(long, value_name = "NAME:COUNT")]
    pub chips: String,
    /// Training tokens (e.g. 2e12).
    #[arg(long, value_name = "N")]
    pub tokens: f64,
    /// Sequence length (default: the model's context, at most 4096).
    #[arg(long, value_name = "S")]
    pub seq: Option<usize>,
    /// Sequences per optimizer step (default: about 4M tokens).
    #[arg(long = "global-batch", value_name = "B")]
    pub global_batch: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many layouts to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[command(flatten)]
    pub chip_opts: ChipOpts,
}

/// Parse NAME:COUNT.
fn parse_chips(spec: &str) -> Result<(String, usize)> {
    let (name, count) =
        spec.split_once(':').ok_or_else(|| anyhow!("--chips '{spec}' must look like NAME:COUNT, e.g. h20:1024"))?;
    let count: usize =
        count.trim().parse().map_err(|_| anyhow!("--chips '{spec}': count '{count}' is not a whole number"))?;
    if count == 0 {
        bail!("--chips '{spec}': count must be positive");
    }
    Ok((name.trim().to_string(), count))
}

fn default_seq(m: &model::Model) -> usize {
    m.config.max_ctx.min(4096)
}

/// Run `anychip plan`.
pub fn run_plan(args: &PlanArgs) -> Result<()> {
    let db = args.chip_opts.db()?;
    let (name, count) = parse_chips(&args.chips)?;
    let chip = db.find(&name)?;
    let model = model::resolve(&args.model)?;
    let seq = args.seq.unwrap_or_else(|| default_seq(&model));
    let req = Request { model, count, tokens: args.tokens, seq, global_batch: args.global_batch };
    let plan = search(&req, chip, &Software::modern())?;
    if args.json {
        let mut p = plan.clone();
        p.ranked.truncate(args.top.max(1));
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print_plan(&plan, chip, args.top.max(1));
    Ok(())
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "n/a".into())
}

fn print_plan(plan: &Plan, chip: &crate::chips::Chip, top: usize) {
    println!(
        "{} on {} x {} ({}), {:.3e} tokens, seq {}, global batch {} sequences",
        plan.model,
        plan.count,
        chip.name,
        chip.display,
        plan.tokens,
        plan.seq,
        plan.best().estimate.global_batch
    );
    println!(
        "calibration: {}{}; {} layouts evaluated, {} fit",
        plan.calibration,
        if plan.validated {
            " (validated on published runs)"
        } else {
            " (NOT validated on this chip: treat as an estimate)"
        },
        plan.evaluated,
        plan.ranked.len()
    );
    println!(
        "{:<4} {:<44} {:>8} {:>12} {:>6} {:>9} {:>8} {:>11} {:>12}",
        "#", "layout", "step s", "tokens/s", "MFU", "mem GiB", "days", "energy MWh", "cost USD"
    );
    for (i, r) in plan.ranked.iter().take(top).enumerate() {
        let e = &r.estimate;
        println!(
            "{:<4} {:<44} {:>8.2} {:>12.0} {:>5.1}% {:>9.1} {:>8.1} {:>11} {:>12}",
            i + 1,
            e.layout.to_string(),
            r.step_s,
            e.tokens_per_s,
            100.0 * e.mfu,
            e.memory.total() / GIB,
            r.days,
            fmt_opt(r.energy_kwh, |k| format!("{:.0}", k / 1000.0)),
            fmt_opt(r.cost_usd, |c| format!("{c:.0}"))
        );
    }
    let b = &plan.best().estimate;
    let t = &b.time;
    println!(
        "best step: gemm {:.2}s, element-wise {:.2}s, tp/cp comm {:.2}s, pp comm {:.2}s, bubble {:.2}s, dp comm {:.2}s, optimizer {:.2}s",
        t.gemm, t.elementwise, t.tp_comm, t.pp_comm, t.bubble, t.dp_comm, t.optimizer
    );
    let m = &b.memory;
    println!(
        "best memory per chip: states {:.1} GiB, activations {:.1}, logits {:.1}, reserve {:.1}; {:.1} GiB usable",
        (m.layer_states + m.embedding_states) / GIB,
        m.activations / GIB,
        m.logits / GIB,
        m.reserve / GIB,
        b.capacity / GIB
    );
    if !plan.rejected.is_empty() {
        println!("faster layouts that do not fit:");
        for r in &plan.rejected {
            if r.tokens_per_s > b.tokens_per_s {
                println!("  {}: {}", r.layout, r.reason);
            }
        }
    }
    if chip.get("price_per_hour").is_none() {
        println!("cost: no price for {}; add --override {}.price_per_hour=USD", chip.name, chip.name);
    }
}

/// `anychip chips`: list, show or compare chips.
#[derive(clap::Args, Debug, Clone)]
pub struct ChipsArgs {
    /// What to do (default: list every chip).
    #[command(subcommand)]
    pub command: Option<ChipsCommand>,
    #[command(flatten)]
    pub chip_opts: ChipOpts,
}

/// Subcommands of `anychip chips`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ChipsCommand {
    /// Every figure of one chip with its source and confidence.
    Show {
        /// Chip name or alias.
        name: String,
    },
    /// The same job on each chip, side by side, with a chart (SVG and PNG).
    Compare {
        /// Chip names.
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        /// Model preset or file.
        #[arg(long)]
        model: String,
        /// Chips of each kind.
        #[arg(long)]
        count: usize,
        /// Training tokens.
        #[arg(long, default_value_t = 1e12)]
        tokens: f64,
        /// Sequence length (default: the model's context, at most 4096).
        #[arg(long)]
        seq: Option<usize>,
        /// Sequences per optimizer step (default: about 4M tokens).
        #[arg(long = "global-batch")]
        global_batch: Option<usize>,
        /// Directory for compare.svg and compare.png.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// Run `anychip chips`.
pub fn run_chips(args: &ChipsArgs) -> Result<()> {
    let db = args.chip_opts.db()?;
    match &args.command {
        None => list(&db),
        Some(ChipsCommand::Show { name }) => show(&db, name),
        Some(ChipsCommand::Compare { names, model, count, tokens, seq, global_batch, out }) => {
            compare(&db, names, model, *count, *tokens, *seq, *global_batch, out)
        }
    }
}

fn val(db_chip: &crate::chips::Chip, key: &str) -> String {
    match db_chip.specs.get(key) {
        Some(f) => match f.value {
            Some(v) => format!("{v}[{}]", f.conf),
            None => "?".into(),
        },
        None => "-".into(),
    }
}

fn list(db: &ChipDb) -> Result<()> {
    println!(
        "{:<8} {:<42} {:>10} {:>9} {:>8} {:>9} {:>8} {:>7}  export class (computed)",
        "name", "chip", "bf16 TF", "mem GB", "TB/s", "link GB/s", "domain", "TDP W"
    );
    for c in &db.chips {
        let e = export::classify(c);
        println!(
            "{:<8} {:<42} {:>10} {:>9} {:>8} {:>9} {:>8} {:>7}  {}",
            c.name,
            c.display,
            val(c, "bf16_tflops"),
            val(c, "memory_gb"),
            val(c, "mem_bw_tbs"),
            val(c, "scaleup_gbs"),
            val(c, "scaleup_domain"),
            val(c, "tdp_w"),
            e.class
        );
    }
    println!("[H] datasheet or public log, [M] several reports agree, [L] one source or estimate, ? not public");
    println!("details and sources: chips show NAME");
    Ok(())
}

fn show(db: &ChipDb, name: &str) -> Result<()> {
    let c = db.find(name)?;
    println!("{} ({}), vendor {}, family {}, calibration {}", c.display, c.name, c.vendor, c.family, c.calibration);
    if !c.aliases.is_empty() {
        println!("aliases: {}", c.aliases.join(", "));
    }
    for f in FIELDS {
        let Some(fig) = c.specs.get(f.key) else {
            continue;
        };
        let v = fig.value.map(|v| format!("{v} {}", f.unit)).unwrap_or_else(|| "unknown".into());
        println!("  {:<22} {:<18} [{}] {}", f.key, v, fig.conf, fig.source);
    }
    if let (Some(m), Some(n)) = (c.get("measured_bf16_tflops"), c.get("bf16_tflops")) {
        println!("  measured/nominal GEMM efficiency: {:.1}%", 100.0 * m / n);
    }
    let e = export::classify(c);
    println!(
        "export control (computed, not an official classification): {}; TPP {}, PD {}; {}",
        e.class,
        fmt_opt(e.tpp, |t| format!("{t:.0}")),
        fmt_opt(e.pd, |p| format!("{p:.2}")),
        e.rule
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn compare(
    db: &ChipDb,
    names: &[String],
    model_spec: &str,
    count: usize,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    out: &std::path::Path,
) -> Result<()> {
    if count == 0 {
        bail!("--count must be positive");
    }
    let model = model::resolve(model_spec)?;
    let seq = seq.unwrap_or_else(|| default_seq(&model));
    // Resolve every name first so a typo fails before any work.
    let chips: Vec<_> = names.iter().map(|n| db.find(n)).collect::<Result<_>>()?;
    println!("{} on {} chips of each kind, {:.3e} tokens, seq {}", model.name, count, tokens, seq);
    println!(
        "{:<8} {:<40} {:>12} {:>6} {:>8} {:>11} {:>12} {:>9}",
        "chip", "best layout", "tokens/s", "MFU", "days", "energy MWh", "cost USD", "headroom"
    );
    let mut tput = Vec::new();
    let mut days = Vec::new();
    for chip in &chips {
        let req = Request { model: model.clone(), count, tokens, seq, global_batch };
        match search(&req, chip, &Software::modern()) {
            Ok(plan) => {
                let b = plan.best();
                let e = &b.estimate;
                println!(
                    "{:<8} {:<40} {:>12.0} {:>5.1}% {:>8.1} {:>11} {:>12} {:>8.1}G{}",
                    chip.name,
                    e.layout.to_string(),
                    e.tokens_per_s,
                    100.0 * e.mfu,
                    b.days,
                    fmt_opt(b.energy_kwh, |k| format!("{:.0}", k / 1000.0)),
                    fmt_opt(b.cost_usd, |c| format!("{c:.0}")),
                    (e.capacity - e.memory.total()) / GIB,
                    if plan.validated { "" } else { " *" }
                );
                tput.push(Bar { label: chip.name.clone(), value: e.tokens_per_s / 1e3 });
                days.push(Bar { label: chip.name.clone(), value: b.days });
            }
            Err(e) => println!("{:<8} refused: {e}", chip.name),
        }
    }
    println!("* calibration not validated on this chip; headroom = usable memory left per chip (GiB)");
    if tput.is_empty() {
        bail!("no chip could run {}: see the reasons above", model.name);
    }
    let title = format!("{} on {} chips: throughput", model.name, count);
    let mut files = chart::bars(out, "compare", &title, "thousand tokens/s", &tput)?;
    let title = format!("{} on {} chips: days for {:.2e} tokens", model.name, count, tokens);
    files.extend(chart::bars(out, "compare-days", &title, "days", &days)?);
    let shown: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("charts: {}", shown.join(", "));
    Ok(())
}

/// `anychip fleet`: place training jobs on a fleet of chip pools.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Fleet file: [[pool]] tables with name, chip, count, optional price_per_hour and overrides.
    #[arg(long, value_name = "FLEET.toml")]
    pub fleet: PathBuf,
    /// Jobs file: [[job]] tables with name, model, tokens, optional seq, global_batch, require, forbid, heterogeneous.
    #[arg(long, value_name = "JOBS.toml")]
    pub jobs: PathBuf,
    /// What to minimise.
    #[arg(long, value_enum, default_value_t = Objective::Makespan)]
    pub objective: Objective,
    /// Directory for fleet.svg and fleet.png.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub chip_opts: ChipOpts,
}

/// Compute a schedule from the two files (no printing).
pub fn fleet_schedule(args: &FleetArgs) -> Result<Schedule> {
    let db = args.chip_opts.db()?;
    let fleet: FleetFile = fleet::read_toml(&args.fleet, "fleet")?;
    let jobs: JobsFile = fleet::read_toml(&args.jobs, "jobs")?;
    fleet::schedule(&fleet, &jobs, &db, args.objective, &Software::modern())
}

/// Run `anychip fleet`.
pub fn run_fleet(args: &FleetArgs) -> Result<()> {
    let sched = fleet_schedule(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sched)?);
        return Ok(());
    }
    println!("objective: {:?}", sched.objective);
    println!(
        "{:<18} {:<16} {:<22} {:>7} {:>7} {:>7} {:>6} {:>12}  layout",
        "job", "model", "chips", "start d", "end d", "days", "MFU", "cost USD"
    );
    for a in &sched.assignments {
        let chips: Vec<String> = a.shares.iter().map(|s| format!("{} x {}", s.count, s.chip)).collect();
        let layouts: Vec<String> = a.shares.iter().map(|s| s.layout.clone()).collect();
        let mfu = a.shares.iter().map(|s| s.mfu).sum::<f64>() / a.shares.len() as f64;
        println!(
            "{:<18} {:<16} {:<22} {:>7.1} {:>7.1} {:>7.1} {:>5.1}% {:>12}  {}",
            a.job,
            a.model,
            chips.join(" + "),
            a.start_days,
            a.end_days(),
            a.days,
            100.0 * mfu,
            fmt_opt(a.cost_usd, |c| format!("{c:.0}")),
            layouts.join(" + ")
        );
    }
    println!(
        "makespan {:.1} days; total cost {}",
        sched.makespan_days,
        fmt_opt(sched.cost_usd, |c| format!("{c:.0} USD"))
    );
    let files = chart::gantt(&args.out, "fleet", &sched)?;
    let shown: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("gantt chart: {}", shown.join(", "));
    Ok(())
}
