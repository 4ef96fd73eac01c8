//! `anychip train`: a training run from flags, or (with `--model`) fixed-batch parity training.

use anychip_model_config::ModelConfig;
use anychip_train::resume::Flags;
use anychip_train::signals::{self, StopRequest};
use anychip_train::step_guard::OnNan;
use anychip_train::trainer::{check_expert_parallel, train_with as run_train, Distributed, RunOptions, Summary};
use anychip_train::Precision;
use anychip_train::TrainConfig;
use anyhow::{anyhow, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The model config of a named preset, or an error listing the presets.
pub fn preset(name: &str) -> Result<ModelConfig> {
    ModelConfig::preset(name).ok_or_else(|| {
        anyhow!("unknown preset '{name}'; available presets: {}", ModelConfig::preset_names().join(", "))
    })
}

/// Arguments of `anychip train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Model preset [default: shakespeare-bytes].
    #[arg(long)]
    preset: Option<String>,
    /// Training text: a UTF-8 file or a directory of them (default: Shakespeare, fetched once).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer: bytes or gpt2 [default: bytes].
    #[arg(long)]
    tokenizer: Option<String>,
    /// Optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per micro-batch (the global batch under mpirun). A file name here is still
    /// accepted with --model, as --batch-file, for scripts written before --batch-file existed.
    #[arg(long, value_name = "N")]
    batch: Option<String>,
    /// Fixed-batch parity mode: the model (HF directory or anychip run) to train on --batch-file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --model: a safetensors file holding an integer tensor `tokens` [B, T+1].
    #[arg(long, value_name = "FILE")]
    batch_file: Option<PathBuf>,
    /// Start from the weights (and architecture) of this Hugging Face checkpoint.
    #[arg(long)]
    init: Option<PathBuf>,
    /// AdamW beta1.
    #[arg(long)]
    beta1: Option<f32>,
    /// AdamW beta2.
    #[arg(long)]
    beta2: Option<f32>,
    /// AdamW epsilon.
    #[arg(long)]
    eps: Option<f32>,
    /// Clip the global gradient norm (0 disables).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Keep the learning rate constant (no warmup, no decay).
    #[arg(long)]
    constant_lr: bool,
    /// Tokens per sequence.
    #[arg(long)]
    ctx: Option<usize>,
    /// Micro-batches accumulated per step.
    #[arg(long)]
    accum: Option<usize>,
    /// Peak learning rate (cosine decay to a tenth of it). Default: 3e-3; moe-tiny 2e-3.
    #[arg(long)]
    lr: Option<f32>,
    /// Warm-up steps (default 50, but at most a tenth of --steps).
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay (matrices only).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Validation every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Batches per validation (40 by default; fewer for a quicker, noisier number).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    eval_batches: Option<u64>,
    /// Checkpoint every N steps.
    #[arg(long)]
    ckpt_every: Option<u64>,
    /// Port to train on (see `anychip ports`).
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// What the linear layers and the LM head multiply in: f32, or bf16 (mixed precision:
    /// bf16 operands, f32 accumulation, f32 master weights, AdamW state, norms and loss)
    /// [default: f32].
    #[arg(long)]
    precision: Option<Precision>,
    /// A step whose loss or gradient norm is NaN or infinite is never applied; then: stop
    /// (after a checkpoint of the state before it) or skip it and go on, counting skips.
    #[arg(long, default_value = "stop", value_parser = clap::value_parser!(OnNan))]
    on_nan: OnNan,
    /// Seed for weights and data order.
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory (metrics.jsonl and the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run whose checkpoint is in this directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this many steps (checkpointing); a later --resume continues the same schedule.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    /// ZeRO stage under data parallelism: 0 replicates the AdamW state, 1 shards it across ranks.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    zero: u8,
    /// Under mpirun: seconds a rank waits in a collective for the others before ending the job.
    #[arg(long, default_value_t = 300.0)]
    comm_timeout: f64,
    /// Under mpirun: exchange gradient buckets while backward runs (true), or after it (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    overlap: bool,
    /// Under mpirun, for a mixture-of-experts model: ranks per expert group. Each of the
    /// group's N ranks holds experts/N of the experts, and tokens reach them by all-to-all;
    /// groups are data-parallel replicas (ranks = replicas x N). 1: every rank holds all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    ep: u64,
    /// For a mixture-of-experts model: expert capacity as a multiple of the mean share of a
    /// layer's routed slots; slots over it go to their token's next-best expert with room (none
    /// dropped). 0: uncapped. Default: the model's (moe-tiny 2; Hugging Face models uncapped).
    /// Under mpirun each rank caps its own tokens.
    #[arg(long, value_name = "F")]
    capacity_factor: Option<f32>,
}

/// Join the MPI job this process was launched in (`mpirun -np N anychip train ...`), if any.
fn join_job(zero: bool, overlap: bool, comm_timeout: f64, ep: usize) -> Result<Option<Distributed>> {
    if !(comm_timeout.is_finite() && comm_timeout > 0.0) {
        return Err(anyhow!("--comm-timeout must be a positive number of seconds, got {comm_timeout}"));
    }
    let world = anychip_dist::launched_world_size().unwrap_or(1);
    if world <= 1 {
        // One rank: ZeRO-1 is a no-op shard of everything, kept so `--zero 1` behaves the same.
        let one = anychip_dist::LocalComm::group(1).remove(0);
        return Ok(zero.then(|| Distributed { comm: std::sync::Arc::new(one), zero, overlap, ep }));
    }
    #[cfg(feature = "mpi")]
    {
        let comm = anychip_dist::MpiComm::init(std::time::Duration::from_secs_f64(comm_timeout))
            .map_err(|e| anyhow!("cannot join the MPI job: {e}"))?;
        Ok(Some(Distributed { comm: std::sync::Arc::new(comm), zero, overlap, ep }))
    }
    #[cfg(not(feature = "mpi"))]
    Err(anyhow!(
        "launched as one of {world} MPI ranks, but this anychip was built without MPI; rebuild with `cargo build --release -p anychip --features mpi` (needs libopenmpi-dev and libclang-dev)"
    ))
}

/// `anychip train`: build the config from the flags, join the MPI job if launched in one,
/// open the port, train, and print the summary (rank 0).
pub fn train(a: TrainArgs) -> Result<()> {
    if let Some(dir) = &a.model {
        return train_fixed_batch(dir, &a);
    }
    let mut cfg = config_from_flags(&a)?;
    check_ep(&a, &cfg)?;
    let dist = join_job(a.zero == 1, a.overlap, a.comm_timeout, a.ep as usize)?;
    let rank = dist.as_ref().map_or(0, |d| d.comm.rank());
    cfg.threads = threads_per_rank(a.threads);
    let opts = RunOptions {
        out: run_dir(&a, &cfg),
        resume: a.resume.clone(),
        progress: rank == 0 && std::io::stderr().is_terminal(),
        quiet: a.quiet || rank != 0,
        flags: resume_flags(&a)?,
        on_nan: a.on_nan,
        stop: StopRequest::on_signals()?,
        stop_after: a.stop_after,
    };
    let port = crate::ports::open(&cfg.port, cfg.threads)?;
    crate::ports::require_values(&port)?;
    let s = match (run_train(&cfg, &opts, dist.as_ref(), &port), &dist) {
        (Ok(s), _) => s,
        (Err(e), Some(d)) if d.comm.world() > 1 => {
            // The other ranks cannot learn of this error and would wait in their next
            // collective: say it here, then end the whole job.
            eprintln!("error: rank {rank}: {}", format!("{e:#}").replace('\n', " "));
            d.comm.abort(2)
        }
        (Err(e), _) => return Err(e),
    };
    if rank == 0 {
        print_summary(&s, a.zero);
    }
    if let Some(sig) = s.interrupted {
        if rank == 0 {
            eprintln!(
                "anychip: stopped by {} after step {}; the checkpoint is in {}: --resume {} to continue",
                signals::name(sig),
                s.steps,
                s.out.join("checkpoint").display(),
                s.out.display()
            );
        }
        std::process::exit(128 + sig);
    }
    Ok(())
}

/// `--ep N` against the model (a checkpoint's on `--resume`) and the job's rank count, before
/// joining the job: bad input ends every rank with the same one line.
fn check_ep(a: &TrainArgs, cfg: &TrainConfig) -> Result<()> {
    let ep = a.ep as usize;
    if ep == 1 {
        return Ok(());
    }
    match &a.resume {
        Some(dir) => check_expert_parallel(&anychip_train::checkpoint::open(dir)?.cfg.model, ep)?,
        None => check_expert_parallel(&cfg.model, ep)?,
    }
    let world = anychip_dist::launched_world_size().unwrap_or(1);
    anychip_dist::ExpertLayout::new(0, world, ep).map(|_| ()).map_err(|e| anyhow!(e))
}

/// `--batch N`: the number of sequences per micro-batch.
fn batch_rows(a: &TrainArgs) -> Result<Option<usize>> {
    let Some(b) = &a.batch else { return Ok(None) };
    match b.parse::<usize>() {
        Ok(0) => Err(anyhow!("--batch must be at least 1 sequence, got 0")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(anyhow!(
            "--batch '{b}' is not a number of sequences; to train on a fixed batch file pass --model DIR --batch-file FILE"
        )),
    }
}

/// The run's config: the preset (or the `--init` checkpoint's architecture) with every flag
/// the user gave applied over its defaults.
fn config_from_flags(a: &TrainArgs) -> Result<TrainConfig> {
    let batch = batch_rows(a)?;
    let (name, model) = match (&a.init, &a.resume) {
        (Some(dir), _) => (format!("hf:{}", dir.display()), anychip_hf::read_config(dir)?.1),
        // On --resume the checkpoint's model is used (a differing --preset is refused there).
        (None, Some(_)) => (DEFAULT_PRESET.to_string(), preset(DEFAULT_PRESET)?),
        (None, None) => {
            let name = a.preset.clone().unwrap_or_else(|| DEFAULT_PRESET.into());
            let model = preset(&name)?;
            (name, model)
        }
    };
    let mut cfg = TrainConfig::default_for(&name, model);
    cfg.init = a.init.clone();
    cfg.data = a.data.clone();
    cfg.tokenizer = a.tokenizer.clone().unwrap_or_else(|| "bytes".into());
    cfg.port = a.port.clone();
    cfg.precision = a.precision.unwrap_or_default();
    set(&mut cfg.steps, a.steps);
    set(&mut cfg.batch, batch);
    set(&mut cfg.ctx, a.ctx);
    set(&mut cfg.accum, a.accum);
    set(&mut cfg.eval_every, a.eval_every);
    set(&mut cfg.eval_batches, a.eval_batches.map(|v| v as usize));
    set(&mut cfg.ckpt_every, a.ckpt_every);
    set(&mut cfg.seed, a.seed);
    apply_optimizer_flags(&mut cfg, a);
    // On --resume the model above is a placeholder: the flag is applied to the checkpoint's
    // model with the other resume flags (`resume_flags`).
    if a.resume.is_none() {
        anychip_train::resume::set_capacity_factor(&mut cfg, a.capacity_factor)?;
    }
    Ok(cfg)
}

const DEFAULT_PRESET: &str = "shakespeare-bytes";

/// The flags given on the command line, for `--resume` to apply or refuse.
fn resume_flags(a: &TrainArgs) -> Result<Flags> {
    Ok(Flags {
        preset: a.preset.clone(),
        init: a.init.clone(),
        tokenizer: a.tokenizer.clone(),
        batch: batch_rows(a)?,
        ctx: a.ctx,
        accum: a.accum,
        seed: a.seed,
        data: a.data.clone(),
        steps: a.steps,
        lr: a.lr,
        constant_lr: a.constant_lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        grad_clip: a.grad_clip,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches.map(|v| v as usize),
        ckpt_every: a.ckpt_every,
        precision: a.precision,
        capacity_factor: a.capacity_factor,
    })
}

/// `*field = v` when the flag was given.
fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

/// Learning-rate schedule and AdamW flags.
fn apply_optimizer_flags(cfg: &mut TrainConfig, a: &TrainArgs) {
    if let Some(v) = a.lr {
        cfg.lr = v;
        cfg.min_lr = v / 10.0;
    }
    set(&mut cfg.warmup, a.warmup);
    set(&mut cfg.adamw.weight_decay, a.weight_decay);
    set(&mut cfg.adamw.beta1, a.beta1);
    set(&mut cfg.adamw.beta2, a.beta2);
    set(&mut cfg.adamw.eps, a.eps);
    set(&mut cfg.adamw.grad_clip, a.grad_clip);
    if a.constant_lr {
        cfg.min_lr = cfg.lr;
        cfg.warmup = 0;
    }
    // The default warm-up shrinks to a tenth of a short run; one the user asked for stands.
    if a.warmup.is_none() {
        cfg.warmup = cfg.warmup.min(cfg.steps / 10);
    }
}

/// Worker threads: `--threads`, else ranks sharing a machine split its cores (a rank bound to
/// one core by mpirun already sees only that core), else the port decides.
fn threads_per_rank(threads: Option<usize>) -> Option<usize> {
    let local = anychip_dist::launched_local_size().unwrap_or(1).max(1);
    threads.or_else(|| {
        (local > 1).then(|| std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(local).max(1))
    })
}

/// The run directory: `--out`, else the run `--resume` names (a run directory or the
/// checkpoint inside one; the run continues in place), else a new `runs/PRESET-SECONDS`.
fn run_dir(a: &TrainArgs, cfg: &TrainConfig) -> PathBuf {
    match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        // A checkpoint directory itself holds state.json; anything else is the run directory
        // (also when a crash mid-swap left it without `checkpoint/`).
        (None, Some(r)) if !r.join("state.json").exists() => r.clone(),
        (None, Some(r)) => r.parent().map(|p| p.to_path_buf()).unwrap_or_else(|| r.clone()),
        (None, None) => {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            PathBuf::from(format!("runs/{}-{secs}", cfg.preset))
        }
    }
}

/// The closing lines: data-parallel costs when distributed, then the `done:` summary.
fn print_summary(s: &Summary, zero: u8) {
    if s.skipped > 0 {
        println!("skipped {} steps whose loss or gradient norm was not finite (--on-nan skip)", s.skipped);
    }
    if s.world > 1 || zero == 1 {
        println!(
            "data parallel: {} ranks, ZeRO-{}, AdamW state {:.1} MiB per rank",
            s.world,
            zero,
            s.optimizer_bytes_per_rank as f64 / (1 << 20) as f64
        );
        if s.ep > 1 {
            println!(
                "expert parallel: {} x {} ranks (replicas x expert group), each rank holding 1/{} of the experts",
                s.world / s.ep,
                s.ep,
                s.ep
            );
        }
        match s.comm.filter(|c| c.exchanges > 0) {
            // Overlapped, the exchange's span includes waiting for backward to produce the
            // gradients, so it gives no bandwidth; what costs is the part left after backward.
            Some(c) if s.overlap => println!(
                "gradient exchange: {:.1} ms per step after backward ({:.1}% of the wall time); {:.1} ms per step in flight, overlapped with backward",
                c.exposed_seconds / c.exchanges as f64 * 1e3,
                100.0 * c.exposed_seconds / s.wall_s.max(1e-9),
                c.seconds / c.exchanges as f64 * 1e3,
            ),
            Some(c) => println!(
                "gradient exchange: {:.1} ms per step ({:.1}% of the wall time), bus bandwidth {:.2} GB/s",
                c.seconds / c.exchanges as f64 * 1e3,
                100.0 * c.seconds / s.wall_s.max(1e-9),
                c.bus_gbs()
            ),
            None => {}
        }
    }
    println!(
        "done: {} steps, {:.2}M params, wall {:.1} s | train loss {:.4} | val loss {} | {:.0} tok/s | MFU {} | checkpoint {}",
        s.steps,
        s.n_params as f64 / 1e6,
        s.wall_s,
        s.train_loss,
        s.val_loss.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into()),
        s.tokens_per_s,
        s.mfu.map(|m| format!("{:.1}%", m * 100.0)).unwrap_or_else(|| "n/a".into()),
        s.out.display()
    );
}

/// The fixed batch of `train --model DIR`: `--batch-file FILE`, or (the flag's meaning before
/// `--batch-file` existed, still accepted with a note on stderr) a non-numeric `--batch FILE`.
fn batch_file(a: &TrainArgs) -> Result<PathBuf> {
    match (&a.batch_file, &a.batch) {
        (Some(f), None) => Ok(f.clone()),
        (Some(_), Some(_)) => Err(anyhow!("--model trains on --batch-file alone; drop --batch")),
        (None, Some(b)) if b.parse::<usize>().is_err() => {
            eprintln!("note: --batch FILE is read as --batch-file FILE; --batch now means a number of sequences");
            Ok(PathBuf::from(b))
        }
        _ => Err(anyhow!("--model needs --batch-file FILE (a safetensors file with `tokens` [B, T+1])")),
    }
}

fn train_fixed_batch(dir: &Path, a: &TrainArgs) -> Result<()> {
    let file = batch_file(a)?;
    let defaults = anychip_optim::AdamWConfig::default();
    let s = anychip_train::fixed_batch::FixedBatchTrain {
        steps: a.steps.unwrap_or(10),
        lr: a.lr.unwrap_or(1e-3),
        constant_lr: a.constant_lr,
        adamw: anychip_optim::AdamWConfig {
            beta1: a.beta1.unwrap_or(0.9),
            beta2: a.beta2.unwrap_or(0.999),
            eps: a.eps.unwrap_or(defaults.eps),
            weight_decay: a.weight_decay.unwrap_or(0.01),
            grad_clip: a.grad_clip.unwrap_or(0.0),
        },
        precision: a.precision.unwrap_or_default(),
    };
    let port = crate::ports::open(&a.port, a.threads)?;
    anychip_train::fixed_batch::train(dir, &file, &s, &port, a.out.as_deref(), &mut std::io::stdout())?;
    Ok(())
}
