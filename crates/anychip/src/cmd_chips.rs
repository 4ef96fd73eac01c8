//! `anychip chips`: list the chip database, show one chip with the source of every figure, or
//! compare chips on one job.

use crate::cmd_plan::{fmt_opt, ChipOpts};
use anychip_plan::chart::{self, Bar};
use anychip_plan::chips::{Chip, ChipDb, FIELDS, GIB};
use anychip_plan::export;
use anychip_plan::model;
use anychip_plan::perf::Precision;
use anychip_plan::search::{search_with, Request};
use anychip_plan::stack::{self, DEFAULT_STACK};
use anyhow::{bail, Result};
use std::path::PathBuf;

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
        #[arg(long, required_unless_present = "days", conflicts_with = "days")]
        count: Option<usize>,
        /// Instead of --count: the deadline, days; each kind gets the fewest chips (in whole
        /// nodes) that train the tokens within it.
        #[arg(long)]
        days: Option<f64>,
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
        /// Software stack profile.
        #[arg(long, value_name = "NAME", default_value = DEFAULT_STACK)]
        stack: String,
        /// Number format of the transformer GEMMs on every chip: bf16, fp8, int8 or fp4 (as
        /// `plan --precision`); a chip without that format's rate is refused on its row.
        #[arg(long, value_name = "bf16|fp8|int8|fp4", default_value = "bf16")]
        precision: String,
    },
}

/// Run `anychip chips`.
pub fn run_chips(args: &ChipsArgs) -> Result<()> {
    let db = args.chip_opts.db()?;
    match &args.command {
        None => list(&db),
        Some(ChipsCommand::Show { name }) => show(&db, name),
        Some(ChipsCommand::Compare { names, model, count, days, tokens, seq, global_batch, out, stack, precision }) => {
            let stack = stack::resolve(stack)?;
            let precision = Precision::parse(precision)?;
            let k = args.chip_opts.constants(&db)?;
            let size = match (count, days) {
                (Some(n), _) => Size::Count(*n),
                (None, Some(d)) => Size::Deadline(*d),
                (None, None) => bail!("chips compare needs --count N (chips of each kind) or --days D (a deadline)"),
            };
            compare(&db, &k, names, model, size, *tokens, *seq, *global_batch, out, &stack, precision)
        }
    }
}

fn val(db_chip: &Chip, key: &str) -> String {
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
    println!("{} ({}), vendor {}, family {}", c.display, c.name, c.vendor, c.family);
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

/// How `chips compare` sizes each kind: the same count, or the fewest chips that meet a deadline.
#[derive(Clone, Copy, Debug)]
enum Size {
    Count(usize),
    Deadline(f64),
}

#[allow(clippy::too_many_arguments)]
fn compare(
    db: &ChipDb,
    k: &anychip_plan::calib::Constants,
    names: &[String],
    model_spec: &str,
    size: Size,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    out: &std::path::Path,
    stack: &stack::Stack,
    precision: Precision,
) -> Result<()> {
    match size {
        Size::Count(0) => bail!("--count must be positive"),
        Size::Deadline(d) => anychip_plan::sizing::check_days(d, "--days")?,
        Size::Count(_) => {}
    }
    let model = model::resolve(model_spec)?;
    let seq = seq.unwrap_or_else(|| model::default_seq(&model));
    // Resolve every name first so a typo fails before any work.
    let chips: Vec<_> = names.iter().map(|n| db.find(n)).collect::<Result<_>>()?;
    let on = match size {
        Size::Count(n) => format!("on {n} chips of each kind"),
        Size::Deadline(d) => format!("within {d} days on the fewest chips of each kind (whole nodes)"),
    };
    println!("{} {on}, {:.3e} tokens, seq {}, stack {}, precision {}", model.name, tokens, seq, stack.name, precision);
    // The count column only under a deadline: at a fixed count the table keeps its columns.
    let counted = matches!(size, Size::Deadline(_));
    println!(
        "{:<8}{} {:<40} {:>12} {:>6} {:>8} {:>11} {:>12} {:>9} {:>12}",
        "chip",
        if counted { format!(" {:>7}", "chips") } else { String::new() },
        "best layout",
        "tokens/s",
        "MFU",
        "days",
        "energy MWh",
        "cost USD",
        "headroom",
        "error"
    );
    let (mut first_chart, mut second_chart) = (Vec::new(), Vec::new());
    for chip in &chips {
        let req = Request {
            model: model.clone(),
            count: match size {
                Size::Count(n) => n,
                Size::Deadline(_) => 1,
            },
            tokens,
            seq,
            global_batch,
            precision,
            stack: stack.clone(),
            pinned: None,
        };
        let plan = match size {
            Size::Count(_) => search_with(&req, chip, k),
            Size::Deadline(d) => anychip_plan::sizing::fewest_chips(&req, chip, k, d),
        };
        match plan {
            Ok(plan) => {
                print_compare_row(chip, &plan, counted);
                let b = plan.best();
                let (one, two) = match size {
                    Size::Count(_) => (b.estimate.tokens_per_s / 1e3, b.days),
                    Size::Deadline(_) => (plan.count as f64, b.cost_usd.unwrap_or(f64::NAN)),
                };
                first_chart.push(Bar { label: chip.name.clone(), value: one });
                second_chart.push(Bar { label: chip.name.clone(), value: two });
            }
            Err(e) => println!("{:<8} refused: {e}", chip.name),
        }
    }
    println!(
        "* no published run on this chip in the calibration (the others carry their chip residual, as `plan` prints it; m: the residual of your measured runs, --measured); headroom = usable memory left per chip (GiB); error = the planner's mean error on published runs like this job held out of its fit (its chip family's, held out by source or never fitted, or with a whole family held out where the family has fewer than 5 such runs; ? where fewer than 5 published runs of this kind of model exist, e.g. Gated DeltaNet hybrids)"
    );
    if let Size::Deadline(_) = size {
        println!("chips = the fewest in whole nodes (the scale-up domain, at most 8 chips) found by doubling then bisection: one node fewer misses the deadline");
    }
    if first_chart.is_empty() {
        bail!("no chip could run {}: see the reasons above", model.name);
    }
    let files = compare_charts(out, &model.name, size, tokens, &first_chart, &second_chart)?;
    let shown: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("charts: {}", shown.join(", "));
    Ok(())
}

/// One chip's row of `chips compare`: its count, best layout and what it costs.
fn print_compare_row(chip: &Chip, plan: &anychip_plan::search::Plan, counted: bool) {
    let b = plan.best();
    let e = &b.estimate;
    println!(
        "{:<8}{} {:<40} {:>12.0} {:>5.1}% {:>8.1} {:>11} {:>12} {:>8.1}G {:>12}{}",
        chip.name,
        if counted { format!(" {:>7}", plan.count) } else { String::new() },
        e.layout.to_string(),
        e.tokens_per_s,
        100.0 * e.mfu,
        b.days,
        fmt_opt(b.energy_kwh, |k| format!("{:.0}", k / 1000.0)),
        fmt_opt(b.cost_usd, |c| format!("{c:.0}")),
        (e.capacity - e.memory.total()) / GIB,
        anychip_plan::calib::expected_error(&plan.accuracy),
        match (plan.validated, plan.chip_residual.as_ref().is_some_and(|r| r.measured.is_some())) {
            (_, true) => " m",
            (true, false) => "",
            (false, false) => " *",
        }
    );
}

/// The two charts: throughput and days at a fixed count; chips needed and cost under a
/// deadline (the cost chart only where every priced chip has a price).
fn compare_charts(
    out: &std::path::Path,
    model: &str,
    size: Size,
    tokens: f64,
    first: &[Bar],
    second: &[Bar],
) -> Result<Vec<PathBuf>> {
    match size {
        Size::Count(n) => {
            let mut files =
                chart::bars(out, "compare", &format!("{model} on {n} chips: throughput"), "thousand tokens/s", first)?;
            let title = format!("{model} on {n} chips: days for {tokens:.2e} tokens");
            files.extend(chart::bars(out, "compare-days", &title, "days", second)?);
            Ok(files)
        }
        Size::Deadline(d) => {
            let title = format!("{model}, {tokens:.2e} tokens within {d} days: chips needed");
            let mut files = chart::bars(out, "compare", &title, "chips", first)?;
            if second.iter().all(|b| b.value.is_finite()) {
                let title = format!("{model}, {tokens:.2e} tokens within {d} days: cost");
                files.extend(chart::bars(out, "compare-cost", &title, "USD", second)?);
            }
            Ok(files)
        }
    }
}
