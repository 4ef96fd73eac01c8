//! The training loop: data, forward/backward, AdamW, validation, logging and checkpoints.

use crate::checkpoint::{self, RunState};
use crate::config::TrainConfig;
use crate::precision::matmul_precision;
use crate::resume;
use crate::run_dir::{Metrics, RunDir};
use crate::signals::StopRequest;
use crate::step_guard::{self, guarded_step, OnNan, StepOutcome};
use crate::validate;
use anychip_core::{no_grad, Tensor};
use anychip_data::{eval_batches, Batch, Dataset, Loader, LoaderState, TokenizerKind};
use anychip_dist::{collectives_for, Collectives, Comm, DataParallel, DpOptions, ExpertLayout, ExpertParallel};
use anychip_nn::{ExpertGroup, Placement, Precision, Transformer};
use anychip_optim::{AdamW, CosineSchedule, ParamGroup};
use anychip_port::Port;
use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How a run ended.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub steps: u64,
    pub train_loss: f32,
    pub val_loss: Option<f32>,
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation against the port's measured fp32 peak, when known.
    pub mfu: Option<f64>,
    pub wall_s: f64,
    pub n_params: usize,
    pub out: PathBuf,
    /// Ranks that trained together (1 without data parallelism).
    pub world: usize,
    /// Ranks per expert group (1 without expert parallelism).
    pub ep: usize,
    /// Bytes of AdamW moments each rank held (about 1/world of the whole under ZeRO-1).
    pub optimizer_bytes_per_rank: usize,
    /// Gradient (and ZeRO-1 weight) exchange time and traffic, under data parallelism.
    #[serde(skip)]
    pub comm: Option<anychip_dist::CommStats>,
    /// Whether that exchange overlapped backward.
    pub overlap: bool,
    /// The signal that ended the run early (after a checkpoint), if one did.
    pub interrupted: Option<i32>,
    /// Steps whose update was skipped for a non-finite loss or gradient norm (`--on-nan skip`).
    pub skipped: u64,
}

/// How this process takes part in a data-parallel job (see `anychip-dist`).
pub struct Distributed {
    /// The job's communicator (MPI under `mpirun`); its rank 0 writes logs and checkpoints.
    pub comm: Arc<dyn Comm>,
    /// Shard the AdamW state across ranks (ZeRO-1).
    pub zero: bool,
    /// Exchange gradient buckets during backward, on a communication thread.
    pub overlap: bool,
    /// Ranks per expert group (expert parallelism; 1: every rank holds every expert). Must
    /// divide the world and the expert count of a MoE model.
    pub ep: usize,
}

/// Options of one invocation that are not part of the run's identity.
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue from this checkpoint directory.
    pub resume: Option<PathBuf>,
    /// Show a progress bar (otherwise print a line per log step).
    pub progress: bool,
    /// Print only the summary.
    pub quiet: bool,
    /// The flags given on the command line: on `--resume`, those that may change are applied
    /// over the checkpoint's config and those that may not are checked against it.
    pub flags: resume::Flags,
    /// What a step with a non-finite loss or gradient norm does.
    pub on_nan: OnNan,
    /// Set by SIGINT/SIGTERM: finish the step, write a checkpoint, end.
    pub stop: StopRequest,
    /// Stop (with a checkpoint) after this many steps of this invocation; the schedule still
    /// follows the full budget, so a later `--resume` continues exactly.
    pub stop_after: Option<u64>,
}

/// One optimizer step's metrics: a line of `metrics.jsonl`, and what [`train_observed`]'s
/// observer is shown.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    /// Tokens trained on since the run began (across resumes).
    pub tokens: u64,
    /// Throughput of this invocation so far.
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f32>,
    /// The update of this step was skipped (`--on-nan skip`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Router statistics of the step's last micro-batch (MoE models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeLog>,
}

/// What a MoE model's routers did in one step, as written to metrics.jsonl.
#[derive(Clone, Debug, Serialize)]
pub struct MoeLog {
    /// The load-balancing loss before its coefficient (top_k when perfectly balanced).
    pub aux_loss: f32,
    /// Tokens routed to each expert, summed over the MoE layers.
    pub tokens_per_expert: Vec<usize>,
    /// The busiest expert's share over the mean share, in the worst layer.
    pub max_load_ratio: f32,
    /// The busiest expert's share over the mean share of each MoE layer, in layer order.
    pub load_ratio_per_layer: Vec<f32>,
    /// `max_load_ratio` of the router's own picks, before the capacity cap (the same without one).
    pub router_max_load_ratio: f32,
    /// Slots the capacity cap moved to another expert, summed over the MoE layers.
    pub rerouted: usize,
}

/// What an observer of [`train_observed`] tells the loop after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Checkpoint this step and return, as `stop_after` would: `resume` continues exactly.
    Stop,
}

/// Upload a batch as `[B, T]` I32 inputs and targets.
pub fn batch_tensors(port: &Arc<dyn Port>, b: &Batch) -> Result<(Tensor, Tensor)> {
    Ok((Tensor::from_i32(port, &b.inputs, &[b.batch, b.ctx])?, Tensor::from_i32(port, &b.targets, &[b.batch, b.ctx])?))
}

/// Mean loss over the validation windows (no gradients).
pub fn evaluate(model: &Transformer, val: &[u32], batch: usize, ctx: usize, max_batches: usize) -> Result<f32> {
    let (sum, n) = eval_sums(model, val, batch, ctx, max_batches, 0, 1)?;
    if n == 0 {
        bail!("no validation windows of {ctx} tokens to evaluate on; pass more data");
    }
    Ok((sum / n as f64) as f32)
}

/// Summed loss and row count over the validation batches `rank`, `rank + world`, ... Under
/// expert parallelism every forward exchanges tokens, so every rank runs as many (a rank whose
/// share has run out evaluates its first batch again without counting it), on the calling
/// thread (the one MPI was set up on).
fn eval_sums(
    model: &Transformer,
    val: &[u32],
    batch: usize,
    ctx: usize,
    max_batches: usize,
    rank: usize,
    world: usize,
) -> Result<(f64, usize)> {
    let lockstep = model.placement().experts.is_some();
    let sums = || {
        let _g = no_grad();
        let all: Vec<Batch> = eval_batches(val, batch, ctx, max_batches)?.collect();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for round in 0..all.len().div_ceil(world) {
            let (b, counted) = match all.get(round * world + rank) {
                Some(b) => (b, true),
                None if lockstep => (&all[rank % all.len()], false),
                None => break,
            };
            let (x, y) = batch_tensors(model.port(), b)?;
            let loss = model.lm_loss(&x, &y)?.item()? as f64;
            if counted {
                sum += loss * b.batch as f64;
                n += b.batch;
            }
        }
        Ok((sum, n))
    };
    if lockstep {
        sums()
    } else {
        on_port(&**model.port(), sums)
    }
}

/// Validation loss over every rank's share of the validation batches.
fn evaluate_dp(model: &Transformer, val: &[u32], cfg: &TrainConfig, dp: Option<&DataParallel>) -> Result<f32> {
    let Some(dp) = dp else { return evaluate(model, val, cfg.batch, cfg.ctx, cfg.eval_batches) };
    let (sum, n) = eval_sums(model, val, cfg.batch, cfg.ctx, cfg.eval_batches, dp.rank(), dp.world())?;
    let total = dp.sum(&[sum as f32, n as f32])?;
    Ok(total[0] / total[1].max(1.0))
}

/// Load (fetching if needed) the corpus the config names.
pub fn load_dataset(cfg: &TrainConfig) -> Result<Dataset> {
    let cache = anychip_data::default_cache_dir();
    let kind: TokenizerKind = cfg.tokenizer.parse().map_err(|e: anyhow::Error| e)?;
    let path = match &cfg.data {
        Some(p) if p.is_relative() && !p.exists() => bail!(
            "the data path {} is relative (saved by an earlier anychip) and not found from {}; pass --data with its full path",
            p.display(),
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        ),
        Some(p) => p.clone(),
        None => anychip_data::default_corpus(&cache)?,
    };
    anychip_data::prepare(&path, kind, &cache, cfg.val_fraction)
}

/// The tokenizer's ids must fit the model's vocabulary.
fn check_vocab(cfg: &TrainConfig, data: &Dataset) -> Result<()> {
    if data.vocab_size > cfg.model.vocab_size {
        bail!(
            "the {} tokenizer has {} tokens but the model's vocabulary is {}; pick a preset made for it (gpt2-* for --tokenizer gpt2)",
            cfg.tokenizer,
            data.vocab_size,
            cfg.model.vocab_size
        );
    }
    Ok(())
}

/// Build the optimizer over a model's parameters with the usual decay convention (under expert
/// parallelism: those every rank holds; [`ExpertParallel`] has the experts').
pub fn optimizer(cfg: &TrainConfig, model: &Transformer) -> Result<AdamW> {
    Ok(AdamW::new(cfg.adamw, param_groups(model, false))?)
}

/// A group per parameter: this rank's experts under expert parallelism (`experts`), or the others.
fn param_groups(model: &Transformer, experts: bool) -> Vec<ParamGroup> {
    model
        .params()
        .iter()
        .zip(model.expert_shard())
        .filter(|(_, &e)| e == experts)
        .map(|(p, _)| ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: p.kind.decays() })
        .collect()
}

/// Train as `cfg` says; with `opts.resume`, continue that run (its config wins over `cfg`
/// except the step budget).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, port: &Arc<dyn Port>) -> Result<Summary> {
    train_with(cfg, opts, None, port)
}

/// [`train`] as one rank of a data-parallel job when `dist` is given: `cfg.batch` is the
/// global batch, each rank draws its `cfg.batch / world` rows of it, and rank 0 alone writes
/// logs and checkpoints (which hold the full state, so any number of ranks can resume them).
pub fn train_with(
    cfg: &TrainConfig,
    opts: &RunOptions,
    dist: Option<&Distributed>,
    port: &Arc<dyn Port>,
) -> Result<Summary> {
    train_observed(cfg, opts, dist, port, &mut |_| Flow::Continue)
}

/// [`train_with`] that shows every step's record to `observe` once it is logged; when
/// `observe` answers [`Flow::Stop`] the run checkpoints that step and returns (front ends use
/// this for progress callbacks and to stop on an interrupt).
pub fn train_observed(
    cfg: &TrainConfig,
    opts: &RunOptions,
    dist: Option<&Distributed>,
    port: &Arc<dyn Port>,
    observe: &mut dyn FnMut(&StepRecord) -> Flow,
) -> Result<Summary> {
    let t0 = Instant::now();
    let (rank, world) = dist.map_or((0, 1), |d| (d.comm.rank(), d.comm.world()));
    validate::check_stop_after(opts.stop_after)?;
    if opts.resume.is_none() {
        validate::check_settings(cfg)?;
    }
    // Rank 0 alone writes the run directory: it holds the lock (until this function returns)
    // and puts right what a crash left there.
    let run_dir = match rank {
        0 => Some(open_run_dir(opts)?),
        _ => None,
    };
    let (mut cfg, resumed, data) = settle_job(cfg, opts, world)?;
    let (precision, note) = matmul_precision(port.as_ref(), cfg.precision);
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let coll = match dist {
        Some(d) => Some(collectives_for(port, d.comm.clone())?),
        None => None,
    };
    let layout = expert_layout(&cfg, dist)?;
    let ep_size = layout.map_or(1, |l| l.ep);
    let model = Transformer::new_placed(&cfg.model, port, cfg.seed, placement(coll.as_ref(), layout))?
        .with_precision(precision);
    let zero = dist.is_some_and(|d| d.zero);
    let mut opt = if zero { sharded_optimizer(&cfg, &model) } else { optimizer(&cfg, &model)? };
    let mut dp = match (dist, &coll) {
        (Some(d), Some(c)) => Some(data_parallel(&cfg, &opt, c.clone(), d, layout.is_some())?),
        _ => None,
    };
    let mut ep = match (layout, &coll) {
        (Some(l), Some(c)) => {
            Some(ExpertParallel::new(c.clone(), l, AdamW::new(cfg.adamw, param_groups(&model, true))?)?)
        }
        _ => None,
    };
    let mut loader = Loader::new(data.train.clone(), cfg.batch / world, cfg.ctx, cfg.seed, rank, world)?;
    if let (Some(dir), None) = (&cfg.init, &resumed) {
        let (arch, _) = anychip_hf::read_config(dir)?;
        anychip_hf::load_weights_into(dir, arch, &model)?;
    }
    let (start, tokens, skipped) = match &resumed {
        Some(ck) => restore(ck, &cfg, &data, &model, (&mut opt, ep.as_mut()), dp.as_mut(), &mut loader)?,
        None => (0, 0, 0),
    };
    if let Some(dp) = &dp {
        // Replicas must start from the same bits whatever each rank read or initialised.
        dp.broadcast_params()?;
    }
    cfg.steps = cfg.steps.max(start);
    let expert_bytes = ep.as_ref().map_or(0, |e| e.opt.groups.iter().map(|g| g.param.numel() * 8).sum());
    let opt_bytes = dp.as_ref().map_or(model.n_params() * 8, |dp| dp.optimizer_state_bytes()) + expert_bytes;
    // MFU compares the job's tokens/s with the whole job's peak: every rank's, summed (each
    // measured its own cores at about the same moment, so none was measured under another's load).
    let peak = match (&dp, port.capabilities().peak_flops_f32) {
        (Some(dp), Some(p)) => Some(dp.sum(&[p as f32])?[0] as f64),
        (_, p) => p,
    };
    if !opts.quiet {
        announce(&cfg, &model, precision, &**port, &data, (world, ep_size), zero, opt_bytes);
    }
    let end = opts.stop_after.map_or(cfg.steps, |n| (start + n).min(cfg.steps));
    let log = match &run_dir {
        Some(dir) => Some(metrics_log(dir, opts, resumed.as_ref().map(|ck| ck.state.step))?),
        None => None,
    };
    let mut run = Run {
        log,
        bar: progress_bar(opts, cfg.steps, start),
        cfg: &cfg,
        opts,
        model: &model,
        val: &data.val,
        opt,
        dp,
        ep,
        loader,
        rank,
        zero,
        tokens,
        val_loss: None,
        skipped,
        skips_in_a_row: 0,
        last_ckpt: resumed.as_ref().map(|ck| ck.state.step),
        interrupted: None,
        done: start,
        observe,
    };
    let loop_start = Instant::now();
    let last_loss = run.steps(start, end)?;
    let elapsed = loop_start.elapsed().as_secs_f64();
    let tps = ((run.done - start) * cfg.tokens_per_step() as u64) as f64 / elapsed.max(1e-9);
    drop(run_dir);
    let mfu = peak.map(|p| tps * cfg.model.train_flops_per_token(cfg.ctx) / p);
    Ok(summarise(&run, (last_loss, tps, mfu, t0), (world, ep_size), opt_bytes))
}

/// The settings the job runs with (from the checkpoint when resuming), checked against the
/// data, the world size and the memory of this machine before anything is allocated.
fn settle_job(
    cfg: &TrainConfig,
    opts: &RunOptions,
    world: usize,
) -> Result<(TrainConfig, Option<checkpoint::Loaded>, Dataset)> {
    let (cfg, resumed) = resolve_config(cfg, opts)?;
    validate::check_settings(&cfg)?;
    let data = load_dataset(&cfg)?;
    check_vocab(&cfg, &data)?;
    if cfg.batch % world != 0 {
        bail!(
            "--batch {} (the global batch) does not split evenly over {world} ranks; use a multiple of {world}",
            cfg.batch
        );
    }
    validate::check_memory(
        validate::memory_estimate(&cfg, cfg.batch / world),
        validate::available_memory(),
        cfg.batch,
    )?;
    Ok((cfg, resumed, data))
}

/// The run's [`Summary`] once its loop has ended: `(last loss, tokens/s, MFU, start time)`
/// and `(ranks, expert-parallel group size)`.
fn summarise(
    run: &Run,
    (train_loss, tokens_per_s, mfu, t0): (f32, f64, Option<f64>, Instant),
    (world, ep): (usize, usize),
    optimizer_bytes_per_rank: usize,
) -> Summary {
    Summary {
        steps: run.done,
        train_loss,
        val_loss: run.val_loss,
        tokens_per_s,
        mfu,
        wall_s: t0.elapsed().as_secs_f64(),
        n_params: run.model.n_params_whole(),
        out: run.opts.out.clone(),
        world,
        ep,
        optimizer_bytes_per_rank,
        comm: run.dp.as_ref().map(|d| d.comm_stats()),
        overlap: run.dp.as_ref().is_some_and(|d| d.overlaps()),
        interrupted: run.interrupted,
        skipped: run.skipped,
    }
}

/// Lock the run directory, saying what a crash had left there and what was done about it.
fn open_run_dir(opts: &RunOptions) -> Result<RunDir> {
    let (run, tidied) = RunDir::open(&opts.out)?;
    if !opts.quiet {
        if let Some(from) = &tidied.recovered {
            eprintln!("anychip: restored the checkpoint from {} (a crash interrupted its swap)", from.display());
        }
        if tidied.removed > 0 {
            eprintln!(
                "anychip: removed {} unfinished checkpoint copies ({:.1} MB) left by an interrupted run",
                tidied.removed,
                tidied.removed_bytes as f64 / 1e6
            );
        }
    }
    Ok(run)
}

/// The config this invocation runs: `cfg` for a new run (its data path made absolute), or the
/// resumed checkpoint's with the flags that may change applied (said in one line), and this
/// invocation's port and threads. A new run refuses an `--out` that already holds a checkpoint.
fn resolve_config(cfg: &TrainConfig, opts: &RunOptions) -> Result<(TrainConfig, Option<checkpoint::Loaded>)> {
    match &opts.resume {
        Some(dir) => {
            let ck = checkpoint::open(dir)?;
            let (mut c, changes) = resume::apply(&ck.cfg, &opts.flags)?;
            c.port = cfg.port.clone();
            c.threads = cfg.threads;
            if !changes.is_empty() && !opts.quiet {
                eprintln!("anychip: resuming at step {} with {}", ck.state.step, changes.join(", "));
            }
            Ok((c, Some(ck)))
        }
        None if checkpoint::in_run(&opts.out).exists() => bail!(
            "{} already holds a checkpoint; pass --resume {} to continue it or choose another --out",
            opts.out.display(),
            opts.out.display()
        ),
        None => {
            let mut c = cfg.clone();
            c.data = c.data.as_deref().map(resume::absolute);
            Ok((c, None))
        }
    }
}

/// This rank's side of the gradient exchange of `opt`'s parameters over `coll`. Under expert
/// parallelism the exchange waits for the end of backward: the token all-to-alls of backward
/// and the gradient buckets would otherwise meet in MPI in a different order on each rank.
fn data_parallel(
    cfg: &TrainConfig,
    opt: &AdamW,
    coll: Arc<dyn Collectives>,
    d: &Distributed,
    experts: bool,
) -> Result<DataParallel> {
    let params: Vec<(Tensor, bool)> = opt.groups.iter().map(|g| (g.param.clone(), g.decay)).collect();
    let opts = DpOptions { zero: d.zero, overlap: d.overlap && !experts, ..DpOptions::default() };
    Ok(DataParallel::new(coll, &params, cfg.adamw, opts)?)
}

/// Where this rank stands under expert parallelism (`--ep` above 1), checked against the model.
fn expert_layout(cfg: &TrainConfig, dist: Option<&Distributed>) -> Result<Option<ExpertLayout>> {
    let Some(d) = dist.filter(|d| d.ep > 1) else { return Ok(None) };
    check_expert_parallel(&cfg.model, d.ep)?;
    Ok(Some(ExpertLayout::new(d.comm.rank(), d.comm.world(), d.ep).map_err(|e| anyhow!(e))?))
}

/// Whether `model` can spread its experts over groups of `ep` ranks; the error says the fix.
pub fn check_expert_parallel(model: &anychip_nn::ModelConfig, ep: usize) -> Result<()> {
    if ep <= 1 {
        return Ok(());
    }
    let Some(m) = &model.moe else {
        bail!("--ep {ep} spreads a mixture-of-experts model's experts over ranks, but this model is dense (no experts); drop --ep or train a MoE preset such as moe-tiny")
    };
    m.validate().map_err(|e| anyhow!(e))?;
    if m.n_experts % ep != 0 {
        bail!(
            "the model's {} experts do not split evenly over --ep {ep} ranks; pick an --ep that divides {}",
            m.n_experts,
            m.n_experts
        );
    }
    Ok(())
}

/// How the model is spread: router counts pooled over every rank, experts over `layout`'s group.
fn placement(coll: Option<&Arc<dyn Collectives>>, layout: Option<ExpertLayout>) -> Placement {
    let Some(coll) = coll.filter(|c| c.world() > 1) else { return Placement::default() };
    let experts = layout.map(|l| ExpertGroup { coll: coll.clone(), members: l.members(), index: l.member() });
    Placement { world: Some(coll.clone()), experts }
}

/// Load a checkpoint's weights, AdamW moments (under ZeRO-1 this rank's shard of them) and
/// data position; returns the step and token count it reached, and the steps it skipped.
/// Under expert parallelism each rank reads its own experts (and their moments) from the
/// checkpoint, which holds every expert whatever the rank count that wrote it.
fn restore(
    ck: &checkpoint::Loaded,
    cfg: &TrainConfig,
    data: &Dataset,
    model: &Transformer,
    (opt, mut ep): (&mut AdamW, Option<&mut ExpertParallel>),
    dp: Option<&mut DataParallel>,
    loader: &mut Loader,
) -> Result<(u64, u64, u64)> {
    let skipped = ck.state.skipped;
    match dp.filter(|dp| dp.is_zero()) {
        // The checkpoint holds every moment: load them whole once, keep this rank's shard.
        Some(dp) => {
            let mut full = optimizer(cfg, model)?;
            let mut opts: Vec<&mut AdamW> = vec![&mut full];
            opts.extend(ep.as_deref_mut().map(|e| &mut e.opt));
            checkpoint::load_sharded(&ck.dir, model, &mut opts)?;
            dp.load_moments(&full.m, &full.v, ck.state.step - skipped)?;
        }
        None => {
            let mut opts: Vec<&mut AdamW> = vec![&mut *opt];
            opts.extend(ep.as_deref_mut().map(|e| &mut e.opt));
            checkpoint::load_sharded(&ck.dir, model, &mut opts)?;
        }
    }
    if let Some(e) = ep {
        e.opt.step = ck.state.step - skipped;
    }
    let mut st: LoaderState = serde_json::from_value(ck.state.loader.clone())
        .map_err(|e| anyhow!("checkpoint {}: data position is corrupt ({e})", ck.dir.display()))?;
    if cfg.data != ck.cfg.data {
        // New data (--data on resume): the same window stream, drawn from the new tokens.
        st.n_tokens = data.train.len() as u64;
    }
    loader.restore(&st)?;
    let start = ck.state.step;
    opt.step = start - skipped;
    if start >= cfg.steps {
        bail!(
            "checkpoint {} is already at step {start}; pass --steps larger than {start} to train further",
            ck.dir.display()
        );
    }
    Ok((start, ck.state.tokens, skipped))
}

/// `metrics.jsonl` in the run directory (rank 0), cut back to the resumed checkpoint's step.
fn metrics_log(dir: &RunDir, opts: &RunOptions, resume_step: Option<u64>) -> Result<Metrics> {
    let (log, note) = dir.metrics(resume_step)?;
    if let Some(note) = note.filter(|_| !opts.quiet) {
        eprintln!("anychip: {note}");
    }
    Ok(log)
}

/// The opening lines on stderr: model, port, data and batch; the data-parallel layout.
#[allow(clippy::too_many_arguments)]
fn announce(
    cfg: &TrainConfig,
    model: &Transformer,
    precision: Precision,
    port: &dyn Port,
    data: &Dataset,
    (world, ep): (usize, usize),
    zero: bool,
    opt_bytes: usize,
) {
    eprintln!(
        "anychip: {} ({:.2}M params, {} matmuls) on port {} [{}], {} train / {} val tokens ({}), batch {}x{}x{}",
        cfg.preset,
        model.n_params_whole() as f64 / 1e6,
        precision,
        port.name(),
        port.capabilities().device,
        data.train.len(),
        data.val.len(),
        data.source,
        cfg.batch,
        cfg.ctx,
        cfg.accum
    );
    if world > 1 || zero {
        eprintln!(
            "anychip: data parallel over {world} ranks, {} rows each per micro-batch (global batch {}), ZeRO-1 {}, AdamW state {:.1} MiB per rank",
            cfg.batch / world,
            cfg.batch,
            if zero { "on" } else { "off" },
            opt_bytes as f64 / (1 << 20) as f64
        );
    }
    if ep > 1 {
        let e = cfg.model.moe.as_ref().map_or(0, |m| m.n_experts);
        eprintln!(
            "anychip: expert parallel: {} x {ep} ranks (replicas x expert group), {} of the {e} experts per rank, tokens moved by all-to-all; gradient exchange after backward",
            world / ep,
            e / ep
        );
    }
}

/// The state of a run's step loop.
struct Run<'a> {
    cfg: &'a TrainConfig,
    opts: &'a RunOptions,
    model: &'a Transformer,
    val: &'a [u32],
    opt: AdamW,
    dp: Option<DataParallel>,
    /// This rank's experts under expert parallelism.
    ep: Option<ExpertParallel>,
    loader: Loader,
    /// `metrics.jsonl` (rank 0 only).
    log: Option<Metrics>,
    bar: ProgressBar,
    rank: usize,
    zero: bool,
    /// Tokens trained on since the run began (across invocations).
    tokens: u64,
    val_loss: Option<f32>,
    /// Steps whose update was skipped (`--on-nan skip`), across invocations.
    skipped: u64,
    skips_in_a_row: u64,
    /// Step of the last checkpoint on disk, for messages that tell what is there.
    last_ckpt: Option<u64>,
    /// The signal that stopped the loop early.
    interrupted: Option<i32>,
    /// Steps completed.
    done: u64,
    /// Shown every step's record; may stop the run.
    observe: &'a mut dyn FnMut(&StepRecord) -> Flow,
}

impl Run<'_> {
    /// Steps `start..end`: train, log, validate and checkpoint on schedule, stop early (with a
    /// checkpoint) on SIGINT/SIGTERM or when the observer asks; returns the last finite loss.
    fn steps(&mut self, start: u64, end: u64) -> Result<f32> {
        let cfg = self.cfg;
        let sched = CosineSchedule { max_lr: cfg.lr, min_lr: cfg.min_lr, warmup: cfg.warmup, total: cfg.steps };
        let loop_start = Instant::now();
        let mut last_loss = f32::NAN;
        for step in start..end {
            let lr = sched.lr(step);
            let before = (self.loader.state(), self.tokens);
            let (model, port) = (self.model, self.model.port().clone());
            let opts = (&mut self.opt, self.ep.as_mut());
            let outcome = guarded_step(model, &mut self.loader, cfg, opts, self.dp.as_mut(), lr, &*port)?;
            self.tokens += cfg.tokens_per_step() as u64;
            self.done = step + 1;
            let done = self.done;
            if outcome.finite() {
                self.skips_in_a_row = 0;
                last_loss = outcome.loss;
            } else {
                self.not_finite(&outcome, step, before)?;
            }
            let elapsed = loop_start.elapsed().as_secs_f64();
            let tps = (self.tokens - start * cfg.tokens_per_step() as u64) as f64 / elapsed.max(1e-9);
            let stop_now = self.stop_requested()?;
            let mut line = self.record_of(done, &outcome, lr, tps, elapsed);
            if ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == end) && !stop_now {
                let v = evaluate_dp(self.model, self.val, cfg, self.dp.as_ref())?;
                (line.val_loss, self.val_loss) = (Some(v), Some(v));
                let loss = outcome.loss;
                say(&self.bar, self.opts, format!("step {done}: train loss {loss:.4}, val loss {v:.4}"));
            }
            self.record(&line)?;
            let observer_stop = (self.observe)(&line) == Flow::Stop;
            if (cfg.ckpt_every > 0 && done % cfg.ckpt_every == 0) || done == end || stop_now || observer_stop {
                self.checkpoint(done, self.loader.state(), self.tokens)?;
            }
            if stop_now {
                self.interrupted = Some(self.opts.stop.signal());
                break;
            }
            if observer_stop {
                break;
            }
        }
        self.bar.finish_and_clear();
        Ok(last_loss)
    }

    /// Step `done`'s log record (no validation loss yet): its loss, learning rate, gradient norm,
    /// throughput so far and, for a MoE model, what the routers did.
    fn record_of(&self, done: u64, outcome: &StepOutcome, lr: f32, tps: f64, elapsed: f64) -> StepRecord {
        StepRecord {
            step: done,
            loss: outcome.loss,
            lr,
            grad_norm: outcome.grad_norm,
            tokens: self.tokens,
            tokens_per_s: tps,
            elapsed_s: elapsed,
            val_loss: None,
            moe: self.model.router_stats().map(|r| MoeLog {
                aux_loss: r.aux_loss,
                tokens_per_expert: r.tokens_per_expert,
                max_load_ratio: r.max_load_ratio,
                load_ratio_per_layer: r.load_ratio_per_layer,
                router_max_load_ratio: r.router_max_load_ratio,
                rerouted: r.rerouted,
            }),
            skipped: !outcome.finite(),
        }
    }

    /// A step whose loss or gradient norm was not finite (its update was not applied, except
    /// under ZeRO-1): skip it as `--on-nan skip` asks, or stop with a checkpoint of the state
    /// before it and an error that says what is on disk.
    fn not_finite(&mut self, o: &StepOutcome, step: u64, before: (LoaderState, u64)) -> Result<()> {
        self.skips_in_a_row += 1;
        let give_up = self.skips_in_a_row > step_guard::MAX_SKIPS_IN_A_ROW;
        if !o.applied && self.opts.on_nan == OnNan::Skip && !give_up {
            self.skipped += 1;
            let msg = format!(
                "step {}: loss {} gradient norm {}: update skipped ({} so far)",
                step + 1,
                o.loss,
                o.grad_norm,
                self.skipped
            );
            say(&self.bar, self.opts, msg);
            return Ok(());
        }
        if !o.applied && step > self.last_ckpt.unwrap_or(0) {
            // The weights are still those after `step` steps: keep them before stopping.
            self.checkpoint(step, before.0, before.1)?;
        }
        self.bar.finish_and_clear();
        Err(step_guard::diverged(o, step + 1, self.cfg, &self.opts.out, self.last_ckpt))
    }

    /// Whether SIGINT/SIGTERM asked to stop; under data parallelism, whether any rank was asked,
    /// so that all stop after the same step.
    fn stop_requested(&self) -> Result<bool> {
        let here = self.opts.stop.requested();
        Ok(match &self.dp {
            Some(dp) => dp.sum(&[here as u8 as f32])?[0] > 0.0,
            None => here,
        })
    }

    /// Append the step's line to `metrics.jsonl` and show progress.
    fn record(&mut self, line: &StepRecord) -> Result<()> {
        let (done, loss, lr, tps) = (line.step, line.loss, line.lr, line.tokens_per_s);
        if self.bar.is_hidden() && done % 50 == 0 && line.val_loss.is_none() {
            say(
                &self.bar,
                self.opts,
                format!("step {done}/{}: loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s", self.cfg.steps),
            );
        }
        if let Some(log) = &mut self.log {
            log.append(&serde_json::to_string(line)?)
                .map_err(|e| anyhow!("{e:#}; {}", step_guard::on_disk(&self.opts.out, self.last_ckpt)))?;
        }
        self.bar.set_position(done);
        self.bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
        Ok(())
    }

    /// Write the checkpoint after step `done` with the data position and token count of then
    /// (rank 0; under ZeRO-1 every rank takes part in gathering the moments rank 0 writes).
    fn checkpoint(&mut self, done: u64, loader: LoaderState, tokens: u64) -> Result<()> {
        let gathered = match &self.dp {
            Some(dp) => dp.gather_moments()?,
            None => None,
        };
        let experts = match &self.ep {
            Some(ep) => gather_experts(self.model, ep)?,
            None => None,
        };
        if self.rank != 0 {
            return Ok(());
        }
        let state = RunState {
            format: checkpoint::FORMAT,
            step: done,
            loader: serde_json::to_value(loader)?,
            tokens,
            val_loss: self.val_loss,
            skipped: self.skipped,
        };
        if let Some((m, v)) = gathered {
            (self.opt.m, self.opt.v) = (m, v);
        }
        let dir = checkpoint::in_run(&self.opts.out);
        let saved = match &experts {
            Some(all) => {
                let mut params: Vec<(String, &Tensor)> = (self.model.params().iter().zip(self.model.expert_shard()))
                    .filter(|(_, &e)| !e)
                    .map(|(p, _)| (p.name.clone(), &p.tensor))
                    .collect();
                let mut moments = checkpoint::moments(&self.opt);
                for (name, w, m, v) in all {
                    params.push((name.clone(), w));
                    moments.push((format!("m.{name}"), m));
                    moments.push((format!("v.{name}"), v));
                }
                checkpoint::save_parts(&dir, self.cfg, &params, &moments, &state)
            }
            None => checkpoint::save(&dir, self.cfg, self.model, &self.opt, &state),
        };
        if self.zero {
            (self.opt.m, self.opt.v) = (Vec::new(), Vec::new());
        }
        saved.map_err(|e| anyhow!("{e:#}; {}", step_guard::on_disk(&self.opts.out, self.last_ckpt)))?;
        self.last_ckpt = Some(done);
        Ok(())
    }
}

/// The optimizer's groups without moments: under ZeRO-1 [`DataParallel`] holds this rank's
/// shard of them, and full moments exist only while a checkpoint is written.
fn sharded_optimizer(cfg: &TrainConfig, model: &Transformer) -> AdamW {
    AdamW { cfg: cfg.adamw, groups: param_groups(model, false), m: Vec::new(), v: Vec::new(), step: 0 }
}

/// Every expert of the whole model with its moments, `(name, weight, m, v)`, on rank 0 (None on
/// the others; every rank takes part): what a one-rank checkpoint holds for them.
type ExpertState = Vec<(String, Tensor, Tensor, Tensor)>;

fn gather_experts(model: &Transformer, ep: &ExpertParallel) -> Result<Option<ExpertState>> {
    let weights: Vec<Tensor> = ep.opt.groups.iter().map(|g| g.param.clone()).collect();
    let (w, m, v) = (ep.gather_to_root(&weights)?, ep.gather_to_root(&ep.opt.m)?, ep.gather_to_root(&ep.opt.v)?);
    let (Some(w), Some(m), Some(v)) = (w, m, v) else { return Ok(None) };
    // Member j's tensors are, in order, the expert weights of experts j E/ep .. (j+1) E/ep as
    // the whole model lists them.
    let n_experts = model.config().moe.as_ref().map_or(0, |c| c.n_experts);
    let per = n_experts / w.len().max(1);
    let mut out = Vec::new();
    for (j, ((w, m), v)) in w.into_iter().zip(m).zip(v).enumerate() {
        let names = model.expert_slots().iter().filter(|s| s.expert / per == j).map(|s| s.name.clone());
        let names: Vec<String> = names.collect();
        if names.len() != w.len() {
            bail!("member {j} sent {} expert tensors for {} expert weights", w.len(), names.len());
        }
        for (((n, w), m), v) in names.into_iter().zip(w).zip(m).zip(v) {
            out.push((n, w, m, v));
        }
    }
    Ok(Some(out))
}

/// Run `f` through [`Port::enter`] (on the CPU port: on one of its worker threads, so the
/// step's hundred-odd calls run inline rather than each handing off to the pool) and return
/// its result.
pub fn on_port<R: Send>(port: &dyn Port, f: impl FnOnce() -> R + Send) -> R {
    let (mut f, mut out) = (Some(f), None);
    port.enter(&mut || out = f.take().map(|f| f()));
    out.expect("Port::enter must run the closure it is given")
}

/// One optimizer step's worth of micro-batches: mean loss and summed gradients per parameter.
pub fn forward_backward(model: &Transformer, loader: &mut Loader, cfg: &TrainConfig) -> Result<(f32, Vec<Tensor>)> {
    let params = model.params();
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let loss = forward_backward_hooked(model, loader, cfg, &mut |i, g| {
        grads[i] = Some(g);
        Ok(())
    })?;
    let grads = params
        .iter()
        .zip(grads)
        .map(|(p, g)| match g {
            Some(g) => Ok(g),
            None => Ok(p.tensor.zeros_like()?),
        })
        .collect::<Result<_>>()?;
    Ok((loss, grads))
}

/// [`forward_backward`] that hands each parameter's gradient (summed over the micro-batches)
/// to `ready(index in params(), grad)` the moment the last backward pass has finished it,
/// rather than returning them all at the end; unused parameters are never handed over.
/// Returns the mean loss.
pub fn forward_backward_hooked(
    model: &Transformer,
    loader: &mut Loader,
    cfg: &TrainConfig,
    ready: &mut dyn FnMut(usize, Tensor) -> anychip_core::Result<()>,
) -> Result<f32> {
    let index: HashMap<u64, usize> = model.params().iter().enumerate().map(|(i, p)| (p.tensor.id(), i)).collect();
    let mut acc: Option<Vec<Tensor>> = None;
    let mut loss_sum = 0.0f32;
    for micro in 0..cfg.accum {
        let b = loader.next_batch();
        let (x, y) = batch_tensors(model.port(), &b)?;
        let loss = model.loss(&x, &y)?;
        let scaled = if cfg.accum > 1 { loss.mul_scalar(1.0 / cfg.accum as f64)? } else { loss.clone() };
        if micro + 1 < cfg.accum {
            let g = param_grads(model, &scaled)?;
            acc = Some(match acc {
                None => g,
                Some(a) => {
                    let _ng = no_grad();
                    a.iter().zip(&g).map(|(a, g)| a.add(g)).collect::<anychip_core::Result<_>>()?
                }
            });
        } else {
            scaled.backward_hooked(&mut |leaf, g| {
                let Some(&i) = index.get(&leaf.id()) else { return Ok(()) };
                ready(
                    i,
                    match &acc {
                        Some(a) => a[i].add(g)?,
                        None => g.clone(),
                    },
                )
            })?;
        }
        loss_sum += loss.item()?;
    }
    Ok(loss_sum / cfg.accum as f32)
}

/// Gradients of `loss` for every parameter of `model`, in `params()` order (zeros where unused).
pub fn param_grads(model: &Transformer, loss: &Tensor) -> Result<Vec<Tensor>> {
    let mut grads = loss.backward_once()?;
    model
        .params()
        .iter()
        .map(|p| match grads.remove(&p.tensor) {
            Some(g) => Ok(g),
            None => Ok(p.tensor.zeros_like()?),
        })
        .collect()
}

fn progress_bar(opts: &RunOptions, steps: u64, start: u64) -> ProgressBar {
    if !opts.progress || opts.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start);
    bar
}

fn say(bar: &ProgressBar, opts: &RunOptions, msg: String) {
    if opts.quiet {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}
