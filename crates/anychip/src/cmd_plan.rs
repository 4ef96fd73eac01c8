//! `anychip plan`: the best parallel layouts of one training job on one chip kind (or one pinned
//! layout), every prediction broken down; `plan calibrate` refits the model's constants; and the
//! chip options every planner command shares. The model itself is the `anychip-plan` crate.

use anychip_plan::chips::{Chip, ChipDb, GIB};
use anychip_plan::model;
use anychip_plan::perf::{Estimate, Precision};
use anychip_plan::search::{memory_reason, parse_layout_on, search_with, PinnedOver, Plan, Request};
use anychip_plan::stack::{self, DEFAULT_STACK};
use anychip_plan::validation;
use anyhow::{anyhow, bail, Context, Result};
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
    /// Your measured runs (a runs file, format of examples/runs/runs.toml): each chip kind in it
    /// is priced with its residual from those runs instead of the shipped one.
    #[arg(long, value_name = "FILE", global = true)]
    pub measured: Option<PathBuf>,
}

impl ChipOpts {
    pub fn db(&self) -> Result<ChipDb> {
        ChipDb::with_user(&self.chip_files, &self.overrides)
    }

    /// The model's constants: the shipped ones, with `--measured`'s chips' residuals from those runs.
    pub fn constants(&self, db: &ChipDb) -> Result<anychip_plan::calib::Constants> {
        anychip_plan::check::constants(self.measured.as_deref(), db)
    }
}

/// `anychip plan`: the best parallel layouts of one training job on one chip kind.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PlanArgs {
    /// `calibrate`: refit the model's constants; `check`: price your own runs (instead of planning a job).
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    /// Model preset (e.g. llama3-70b, qwen3-8b, deepseek-v3), TOML model file, or Hugging Face
    /// config.json (or the checkpoint directory holding it).
    #[arg(long, value_name = "PRESET|FILE", required = true)]
    pub model: Option<String>,
    /// Chip kind and count, e.g. h20:1024.
    #[arg(long, value_name = "NAME:COUNT", required = true)]
    pub chips: Option<String>,
    /// Training tokens (e.g. 2e12).
    #[arg(long, value_name = "N", required = true)]
    pub tokens: Option<f64>,
    /// Sequence length (default: the model's context, at most 4096).
    #[arg(long, value_name = "S")]
    pub seq: Option<usize>,
    /// Sequences per optimizer step (default: about 4M tokens).
    #[arg(long = "global-batch", value_name = "B")]
    pub global_batch: Option<usize>,
    /// Software stack profile (see docs/planner.md): megatron-2021, megatron-core-2024, nemo-2025,
    /// deepspeed-zero3, pytorch-fsdp, ..., or a TOML stack file (`base = "NAME"` plus what differs)
    #[arg(long, value_name = "NAME|FILE", default_value = DEFAULT_STACK)]
    pub stack: String,
    /// Number format of the transformer GEMMs: bf16, fp8, int8 (quantized matmuls at the chip's INT8 rate, as AQT trains on TPUs) or fp4 (NVFP4, Transformer Engine's nvfp4 recipe; AMD's MXFP4 is priced the same).
    #[arg(long, value_name = "bf16|fp8|int8|fp4", default_value = "bf16")]
    pub precision: String,
    /// Evaluate exactly this layout, e.g. tp=8,pp=8,vp=6,mb=1,zero=1,recompute=selective[,cp=2,ep=8,etp=2] (keys in any case; vpp and mbs as Megatron names them); etp=N splits each expert over N ranks (expert tensor parallelism; 1 keeps experts whole); recompute_layers=N with recompute=full recomputes only the first N layers of each chunk (Megatron-Core's recompute_method block, recompute_num_layers); shard=N shards the ZeRO stage over groups of N data-parallel replicas (hybrid sharding); offload=N keeps N layers' activations of each stage in host memory (needs the chip's host_link_gbs); bf16=N keeps N of the model's layers in BF16 under --precision fp8/int8/fp4 (a recipe's first/last layers); schedule=1f1b|zb-h1|zb-h2|dualpipe names the pipeline schedule (default: the stack's, else 1F1B; Zero Bubble's ZB-H1/ZB-H2 defer the weight gradients into the bubble, DualPipe feeds both ends and holds the weights twice); first=N,last=N put N layers on the first and last pipeline stages (Megatron-Core's num_layers_in_first/last_pipeline_stage; account_for_embedding/loss_in_pipeline_split is first=last=(layers+2)/pp-1), the others sharing the rest.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub layout: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many layouts to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[command(flatten)]
    pub chip_opts: ChipOpts,
}

/// Subcommands of `anychip plan`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PlanCommand {
    /// Refit every constant on the published runs, cross-validate leaving each source out, and
    /// write the calibration file (prints it without --out).
    Calibrate {
        /// Where to write it (e.g. crates/plan/data/calibration.toml).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Price your own measured runs, each on its own layout, with the shipped calibration, and
    /// report how far off the planner is on them (per run, overall, by kind of model, by chip
    /// and by stack).
    Check {
        /// A TOML file of [[row]] tables: id, chip, model, stack, precision, seq, tp, pp, dp
        /// (cp, ep, v default 1), global_batch, mb, recompute, zero, sp and tokens_per_gpu_s (or
        /// published_step_s); the format of crates/plan/data/held_out_runs.toml.
        #[arg(long, value_name = "FILE")]
        runs: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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

/// `plan calibrate`: the table per source, then the file.
fn calibrate(out: Option<&PathBuf>) -> Result<()> {
    let rows = validation::prepare()?;
    let (_, cv) = validation::cross_validate(&rows)?;
    eprintln!("{:<24} {:>4} {:>12} {:>12} {:>14}", "source", "rows", "CV mean", "CV worst", "in-sample mean");
    for (g, n, m, w, i) in validation::table(&rows, &cv) {
        eprintln!("{g:<24} {n:>4} {:>11.1}% {:>11.1}% {:>13.1}%", 100.0 * m, 100.0 * w, 100.0 * i);
    }
    let text = validation::calibration_file()?;
    match out {
        Some(p) => {
            let tmp = p.with_extension("toml.tmp");
            std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, p).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Run `anychip plan`.
pub fn run_plan(args: &PlanArgs) -> Result<()> {
    match &args.command {
        Some(PlanCommand::Calibrate { out }) => return calibrate(out.as_ref()),
        Some(PlanCommand::Check { runs, json }) => {
            let db = args.chip_opts.db()?;
            let (k, measured) = (args.chip_opts.constants(&db)?, args.chip_opts.measured.as_deref());
            return crate::cmd_plan_check::run_check(runs, &db, &k, measured, *json);
        }
        None => {}
    }
    let need = |v: Option<&str>, flag: &str| v.map(str::to_string).ok_or_else(|| anyhow!("plan needs {flag}"));
    let db = args.chip_opts.db()?;
    let (name, count) = parse_chips(&need(args.chips.as_deref(), "--chips NAME:COUNT")?)?;
    let chip = db.find(&name)?;
    let model = model::resolve(&need(args.model.as_deref(), "--model")?)?;
    let tokens = args.tokens.ok_or_else(|| anyhow!("plan needs --tokens N"))?;
    let seq = args.seq.unwrap_or_else(|| model::default_seq(&model));
    let stack = stack::resolve(&args.stack)?;
    let precision = Precision::parse(&args.precision)?;
    let pinned = args.layout.as_deref().map(|l| parse_layout_on(l, count, &stack)).transpose()?;
    let req = Request { model, count, tokens, seq, global_batch: args.global_batch, precision, stack, pinned };
    match search_with(&req, chip, &args.chip_opts.constants(&db)?) {
        Ok(plan) => show_plan(&plan, chip, args),
        // A pinned layout priced over memory: its step and memory, then the one-line error.
        Err(e) => match e.downcast::<PinnedOver>() {
            Ok(over) => {
                show_plan(&over.plan, chip, args)?;
                Err(anyhow!(over.message))
            }
            Err(e) => Err(e),
        },
    }
}

/// The plan as JSON (`--json`) or as the table, its `--top` layouts.
fn show_plan(plan: &Plan, chip: &Chip, args: &PlanArgs) -> Result<()> {
    if args.json {
        let mut p = plan.clone();
        p.ranked.truncate(args.top.max(1));
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print_plan(plan, chip, args.top.max(1));
    Ok(())
}

pub fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "n/a".into())
}

/// The step and memory of one estimate, part by part.
pub fn print_breakdown(e: &Estimate) {
    let t = &e.time;
    let pct = |x: f64| 100.0 * x / t.total();
    println!(
        "step {:.2} s = compute {:.2} ({:.0}%) + recompute {:.2} ({:.0}%) + exposed TP {:.2} + CP {:.2} + EP {:.2} + PP {:.2} + bubble {:.2} ({:.0}%) + exposed DP {:.2} ({:.0}%) + optimizer {:.2}{}",
        t.total(),
        t.compute,
        pct(t.compute),
        t.recompute,
        pct(t.recompute),
        t.tp_comm,
        t.cp_comm,
        t.ep_comm,
        t.pp_comm,
        t.bubble,
        pct(t.bubble),
        t.dp_comm,
        pct(t.dp_comm),
        t.optimizer,
        if t.offload > 0.0 { format!(" + exposed offload {:.2}", t.offload) } else { String::new() }
    );
    println!("memory per chip: {}", memory_reason(e));
}

/// The network a plan over more chips than one scale-up domain assumes, and how to name another
/// cluster's: the chip file holds one reference system's links (a DGX A100's 200 Gb/s a GPU, ...),
/// and a cluster with thinner ones (cloud nodes with 400 Gb/s of EFA or RoCE for 8 GPUs) pays more
/// for every exchange that crosses nodes.
fn network_note(plan: &Plan) -> Option<String> {
    let n = &plan.network;
    let domain = n.scaleup_domain?;
    if plan.count as f64 <= domain {
        return None;
    }
    Some(format!(
        "network: {} GB/s a chip between {}-chip domains ({}); for another cluster's: --override {}.scaleout_gbs=GB_PER_S",
        n.scaleout_gbs?, domain, n.scaleout_source, plan.chip
    ))
}

/// The header's note on a chip whose tensor cores run below the rated clock: power-limited, or
/// held there by its measured max-achievable GEMM rate.
fn power_note(plan: &Plan, chip: &Chip) -> String {
    if plan.tensor_clock >= 1.0 {
        return String::new();
    }
    let pct = 100.0 * plan.tensor_clock;
    if anychip_plan::perf::maf_clock(chip, &anychip_plan::calib::shipped()) <= plan.tensor_clock {
        return format!("; tensor clock {pct:.0}% of rated (its measured max-achievable GEMM rate, maf_bf16_tflops)");
    }
    chip.get("tdp_w").map_or(String::new(), |w| format!("; tensor clock {pct:.0}% of rated within its {w:.0} W"))
}

/// What the calibration knows of the chip: its published runs, your measured ones, or neither.
fn calibration_note(plan: &Plan) -> String {
    let measured = plan.chip_residual.as_ref().is_some_and(|r| r.measured.is_some());
    match (plan.validated, measured) {
        (true, false) => format!("published runs on this chip are in the calibration{}", residual_note(plan)),
        (true, true) => format!(
            "published runs on this chip are in the calibration, but your measured runs set its residual{}",
            residual_note(plan)
        ),
        (false, true) => format!(
            "no published run of this chip is in the calibration; your measured runs set its residual{}",
            residual_note(plan)
        ),
        (false, false) => {
            "NO published run of this chip is in the calibration (priced from its datasheet): treat as an estimate"
                .into()
        }
    }
}

/// The header's note on the chip's residual: how its published (or your measured) runs differ
/// from the physics, and that every time printed carries it.
fn residual_note(plan: &Plan) -> String {
    match &plan.chip_residual {
        Some(r) if r.factor != 1.0 || r.measured.is_some() => {
            let (pct, how) = if r.factor > 1.0 { (r.factor - 1.0, "slower") } else { (1.0 - r.factor, "faster") };
            let runs = match &r.measured {
                Some(file) => format!("{} of your measured runs in {file}", r.runs),
                None => format!("{} runs", r.runs),
            };
            format!(
                " ({runs}: the chip runs {:.1}% {how} than the model's physics says, so every time here is x{:.3})",
                100.0 * pct,
                r.factor
            )
        }
        _ => String::new(),
    }
}

/// The header's note on a stack whose attention runs FlashAttention-2-class kernels on a chip
/// whose own fused attention is faster, or the cuDNN of 2025.
fn attention_note(plan: &Plan) -> String {
    if plan.attention_kernel < 1.0 {
        format!(
            "; attention FlashAttention-2 class, {:.0}% of the chip's fused-attention rate",
            100.0 * plan.attention_kernel
        )
    } else if plan.attention_speedup > 1.0 {
        format!("; attention cuDNN of 2025, {:.2}x the 2023-2024 kernels' rate", plan.attention_speedup)
    } else {
        String::new()
    }
}

fn print_plan(plan: &Plan, chip: &Chip, top: usize) {
    print_header(plan, chip);
    print_ranked(plan, top);
    print_best(plan, chip);
}

/// The job, the stack and what the calibration knows of the chip, and the accuracy lines.
fn print_header(plan: &Plan, chip: &Chip) {
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
        "stack: {}; precision: {}; {}; {} layouts evaluated, {} fit{}{}",
        plan.stack,
        plan.precision,
        calibration_note(plan),
        plan.evaluated,
        if plan.over_memory.is_some() { 0 } else { plan.ranked.len() },
        power_note(plan, chip),
        attention_note(plan)
    );
    if let Some(note) = &plan.model_note {
        println!("model: {note}");
    }
    println!("{}", anychip_plan::calib::accuracy_line(&plan.accuracy_class, &chip.family, &plan.accuracy));
    if let Some(line) = anychip_plan::calib::model_accuracy_line(&plan.model, &plan.model_accuracy) {
        println!("{line}");
    }
    if let Some(line) = anychip_plan::calib::unprofiled_line(&plan.default_stack_accuracy) {
        println!("{line}");
    }
}

/// Under FP8, INT8 or FP4 the MFU column stays against the BF16 peak (docs/planner.md), so it
/// can pass 100% on a chip whose low-precision rate is a multiple of its BF16 rate (the H20):
/// say so, and give the best layout's share of the format's own peak.
fn mfu_note(plan: &Plan, chip: &Chip) -> Option<String> {
    if !plan.precision.quantized() {
        return None;
    }
    let bf16 = chip.get("bf16_tflops")?;
    let low = chip.get(plan.precision.peak_field())?;
    let unit = if plan.precision == Precision::Int8 { "TOPS" } else { "TFLOP/s" };
    Some(format!(
        "MFU is against the BF16 peak ({bf16} TFLOP/s), also for {p} runs; against the {p} peak ({low} {unit}) the best layout runs {:.1}%",
        100.0 * plan.best().estimate.mfu * bf16 / low,
        p = plan.precision,
    ))
}

/// Share of the step above which `plan` points at the pipeline bubble.
const LARGE_BUBBLE: f64 = 0.25;

/// Where the best layout idles a large share of its step in the pipeline bubble (too few
/// micro-batches a step for its stages: a small global batch spread over many chips), say so and
/// what cuts it.
fn bubble_note(plan: &Plan) -> Option<String> {
    let e = &plan.best().estimate;
    let share = e.time.bubble / e.time.total();
    if share <= LARGE_BUBBLE {
        return None;
    }
    Some(format!(
        "pipeline bubble: {:.0}% of the step, {} micro-batches a step for {} stages{}; a larger --global-batch (more micro-batches) or fewer stages would cut it",
        100.0 * share,
        e.micro_batches,
        e.layout.pp,
        if e.layout.v > 1 { format!(" of {} chunks each", e.layout.v) } else { String::new() }
    ))
}

/// Share of usable memory a layout may leave free before `plan` says it may not run.
const TIGHT_HEADROOM: f64 = 0.1;

/// The model prices a step's peak, not what an allocator reserves (torchtitan's reserved memory
/// runs 11-43% above it), and the search leans toward layouts that just fit: where the best
/// leaves less than [`TIGHT_HEADROOM`] of usable memory, say so and name the fastest ranked
/// layout that leaves that much.
fn headroom_note(plan: &Plan) -> Option<String> {
    let room = |e: &Estimate| 1.0 - e.memory.total() / e.capacity;
    let best = &plan.best().estimate;
    if room(best) >= TIGHT_HEADROOM {
        return None;
    }
    let head = format!(
        "memory: the best layout leaves {:.1} GiB ({:.0}%) of usable memory free; an allocator's fragmentation can need more (docs/planner.md, Limits)",
        (best.capacity - best.memory.total()) / GIB,
        100.0 * room(best)
    );
    Some(match plan.ranked.iter().find(|r| room(&r.estimate) >= TIGHT_HEADROOM) {
        Some(r) => format!(
            "{head}; the fastest leaving {:.0}%: {} at {:.0} tokens/s ({:+.1}%)",
            100.0 * TIGHT_HEADROOM,
            r.estimate.layout,
            r.estimate.tokens_per_s,
            100.0 * (r.estimate.tokens_per_s / best.tokens_per_s - 1.0)
        ),
        None => format!("{head}; no evaluated layout leaves {:.0}%", 100.0 * TIGHT_HEADROOM),
    })
}

/// The `top` layouts that fit, fastest first.
fn print_ranked(plan: &Plan, top: usize) {
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
}

/// The best layout's step and memory, the network it ran on, the faster layouts that did not
/// fit, and how to price the job where the chip has no price.
fn print_best(plan: &Plan, chip: &Chip) {
    let b = &plan.best().estimate;
    print_breakdown(b);
    if let Some(line) = mfu_note(plan, chip) {
        println!("{line}");
    }
    if plan.over_memory.is_some() {
        println!(
            "memory: this layout does not fit, {:.1} GiB over what the chip can use; the step above is its time if it ran (some published runs ran at layouts the memory model prices over: docs/planner.md, Limits)",
            (b.memory.total() - b.capacity) / GIB
        );
    } else if let Some(line) = headroom_note(plan) {
        println!("{line}");
    }
    if let Some(line) = bubble_note(plan) {
        println!("{line}");
    }
    if let Some(line) = network_note(plan) {
        println!("{line}");
    }
    if !plan.near_misses.is_empty() {
        println!("faster layouts that do not fit, nearest to fitting first:");
        for r in &plan.near_misses {
            println!(
                "  {} ({:+.1}% tokens/s): {}",
                r.layout,
                100.0 * (r.tokens_per_s / b.tokens_per_s - 1.0),
                r.reason
            );
        }
    }
    if chip.get("price_per_hour").is_none() {
        println!("cost: no price for {}; add --override {}.price_per_hour=USD", chip.name, chip.name);
    }
}
