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
        Some(ChipsCommand::Compare { names, model, count, tokens, seq, global_batch, out, stack, precision }) => {
            let stack = stack::resolve(stack)?;
            let precision = Precision::parse(precision)?;
            let k = args.chip_opts.constants(&db)?;
            compare(&db, &k, names, model, *count, *tokens, *seq, *global_batch, out, &stack, precision)
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

#[allow(clippy::too_many_arguments)]
fn compare(
    db: &ChipDb,
    k: &anychip_plan::calib::Constants,
    names: &[String],
    model_spec: &str,
    count: usize,
    tokens: f64,
    seq: Option<usize>,
    global_batch: Option<usize>,
    out: &std::path::Path,
    stack: &stack::Stack,
    precision: Precision,
) -> Result<()> {
    if count == 0 {
        bail!("--count must be positive");
    }
    let model = model::resolve(model_spec)?;
    let seq = seq.unwrap_or_else(|| model::default_seq(&model));
    // Resolve every name first so a typo fails before any work.
    let chips: Vec<_> = names.iter().map(|n| db.find(n)).collect::<Result<_>>()?;
    println!(
        "{} on {} chips of each kind, {:.3e} tokens, seq {}, stack {}, precision {}",
        model.name, count, tokens, seq, stack.name, precision
    );
    println!(
        "{:<8} {:<40} {:>12} {:>6} {:>8} {:>11} {:>12} {:>9} {:>12}",
        "chip", "best layout", "tokens/s", "MFU", "days", "energy MWh", "cost USD", "headroom", "error"
    );
    let mut tput = Vec::new();
    let mut days = Vec::new();
    for chip in &chips {
        let req = Request {
            model: model.clone(),
            count,
            tokens,
            seq,
            global_batch,
            precision,
            stack: stack.clone(),
            pinned: None,
        };
        match search_with(&req, chip, k) {
            Ok(plan) => {
                let b = plan.best();
                let e = &b.estimate;
                println!(
                    "{:<8} {:<40} {:>12.0} {:>5.1}% {:>8.1} {:>11} {:>12} {:>8.1}G {:>12}{}",
                    chip.name,
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
                tput.push(Bar { label: chip.name.clone(), value: e.tokens_per_s / 1e3 });
                days.push(Bar { label: chip.name.clone(), value: b.days });
            }
            Err(e) => println!("{:<8} refused: {e}", chip.name),
        }
    }
    println!(
        "* no published run on this chip in the calibration (the others carry their chip residual, as `plan` prints it; m: the residual of your measured runs, --measured); headroom = usable memory left per chip (GiB); error = the planner's mean error on published runs like this job held out of its fit (its chip family's, held out by source or never fitted, or with a whole family held out where the family has fewer than 5 such runs; ? where fewer than 5 published runs of this kind of model exist, e.g. Gated DeltaNet hybrids)"
    );
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
