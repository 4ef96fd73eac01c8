//! `train`, `sample`, `bench` and `ports`.

use anychip_models::ModelConfig;
use anychip_train::bench::bench as run_bench;
use anychip_train::sample::{sample as run_sample, SampleOptions};
use anychip_train::trainer::{train_with as run_train, Distributed, RunOptions};
use anychip_train::Precision;
use anychip_train::TrainConfig;
use anyhow::{anyhow, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

fn preset(name: &str) -> Result<ModelConfig> {
    ModelConfig::preset(name).ok_or_else(|| {
        anyhow!("unknown preset '{name}'; available presets: {}", ModelConfig::preset_names().join(", "))
    })
}

/// Arguments of `anychip train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Model preset.
    #[arg(long, default_value = "shakespeare-bytes")]
    preset: String,
    /// Training text: a UTF-8 file or a directory of them (default: Shakespeare, fetched once).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer: bytes or gpt2.
    #[arg(long, default_value = "bytes")]
    tokenizer: String,
    /// Optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per micro-batch; with --model, a safetensors file holding `tokens` [B, T+1].
    #[arg(long)]
    batch: Option<String>,
    /// Fixed-batch parity mode: the model (HF directory or anychip run) to train on --batch FILE.
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// Peak learning rate (cosine decay to a tenth of it).
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
    /// bf16 operands, f32 accumulation, f32 master weights, AdamW state, norms and loss).
    #[arg(long, default_value = "f32")]
    precision: Precision,
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
}

/// Join the MPI job this process was launched in (`mpirun -np N anychip train ...`), if any.
fn join_job(zero: bool, overlap: bool, comm_timeout: f64) -> Result<Option<Distributed>> {
    if !(comm_timeout.is_finite() && comm_timeout > 0.0) {
        return Err(anyhow!("--comm-timeout must be a positive number of seconds, got {comm_timeout}"));
    }
    let world = anychip_dist::launched_world_size().unwrap_or(1);
    if world <= 1 {
        // One rank: ZeRO-1 is a no-op shard of everything, kept so `--zero 1` behaves the same.
        let one = anychip_dist::LocalComm::group(1).remove(0);
        return Ok(zero.then(|| Distributed { comm: std::sync::Arc::new(one), zero, overlap }));
    }
    #[cfg(feature = "mpi")]
    {
        let comm = anychip_dist::MpiComm::init(std::time::Duration::from_secs_f64(comm_timeout))
            .map_err(|e| anyhow!("cannot join the MPI job: {e}"))?;
        Ok(Some(Distributed { comm: std::sync::Arc::new(comm), zero, overlap }))
    }
    #[cfg(not(feature = "mpi"))]
    Err(anyhow!(
        "launched as one of {world} MPI ranks, but this anychip was built without MPI; rebuild with `cargo build --release -p anychip --features mpi` (needs libopenmpi-dev and libclang-dev)"
    ))
}

pub fn train(a: TrainArgs) -> Result<()> {
    if let Some(dir) = &a.model {
        return train_fixed_batch(dir, &a);
    }
    let batch: Option<usize> = match &a.batch {
        Some(b) => Some(b.parse().map_err(|_| {
            anyhow!("--batch '{b}' is not a number; a batch file is only used together with --model DIR")
        })?),
        None => None,
    };
    let (name, model) = match &a.init {
        Some(dir) => (format!("hf:{}", dir.display()), anychip_hf::read_config(dir)?.1),
        None => (a.preset.clone(), preset(&a.preset)?),
    };
    let mut cfg = TrainConfig::default_for(&name, model);
    cfg.init = a.init.clone();
    cfg.data = a.data;
    cfg.tokenizer = a.tokenizer;
    if let Some(v) = a.steps {
        cfg.steps = v;
    }
    if let Some(v) = batch {
        cfg.batch = v;
    }
    if let Some(v) = a.ctx {
        cfg.ctx = v;
    }
    if let Some(v) = a.accum {
        cfg.accum = v;
    }
    if let Some(v) = a.lr {
        cfg.lr = v;
        cfg.min_lr = v / 10.0;
    }
    if let Some(v) = a.warmup {
        cfg.warmup = v;
    }
    if let Some(v) = a.weight_decay {
        cfg.adamw.weight_decay = v;
    }
    if let Some(v) = a.beta1 {
        cfg.adamw.beta1 = v;
    }
    if let Some(v) = a.beta2 {
        cfg.adamw.beta2 = v;
    }
    if let Some(v) = a.eps {
        cfg.adamw.eps = v;
    }
    if let Some(v) = a.grad_clip {
        cfg.adamw.grad_clip = v;
    }
    if a.constant_lr {
        cfg.min_lr = cfg.lr;
        cfg.warmup = 0;
    }
    if let Some(v) = a.eval_every {
        cfg.eval_every = v;
    }
    if let Some(v) = a.eval_batches {
        cfg.eval_batches = v as usize;
    }
    if let Some(v) = a.ckpt_every {
        cfg.ckpt_every = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    // The default warm-up shrinks to a tenth of a short run; one the user asked for stands.
    if a.warmup.is_none() {
        cfg.warmup = cfg.warmup.min(cfg.steps / 10);
    }
    cfg.port = a.port.clone();
    cfg.precision = a.precision;
    let dist = join_job(a.zero == 1, a.overlap, a.comm_timeout)?;
    let (rank, world) = dist.as_ref().map_or((0, 1), |d| (d.comm.rank(), d.comm.world()));
    // Ranks sharing a machine split its cores unless told otherwise (a rank bound to one core
    // by mpirun already sees only that core).
    let local = anychip_dist::launched_local_size().unwrap_or(1).max(1);
    cfg.threads = a.threads.or_else(|| {
        (local > 1).then(|| std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(local).max(1))
    });
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        // --resume takes a run directory or the checkpoint inside one; the run continues in place.
        (None, Some(r)) if r.join("checkpoint").exists() => r.clone(),
        (None, Some(r)) => r.parent().map(|p| p.to_path_buf()).unwrap_or_else(|| r.clone()),
        (None, None) => {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            PathBuf::from(format!("runs/{}-{secs}", cfg.preset))
        }
    };
    let opts = RunOptions {
        out,
        resume: a.resume,
        progress: rank == 0 && std::io::stderr().is_terminal(),
        quiet: a.quiet || rank != 0,
        steps: a.steps,
        stop_after: a.stop_after,
    };
    let port = crate::ports::open(&cfg.port, cfg.threads)?;
    crate::ports::require_values(&port)?;
    let s = match (run_train(&cfg, &opts, dist.as_ref(), &port), &dist) {
        (Ok(s), _) => s,
        (Err(e), Some(d)) if world > 1 => {
            // The other ranks cannot learn of this error and would wait in their next
            // collective: say it here, then end the whole job.
            eprintln!("error: rank {rank}: {}", format!("{e:#}").replace('\n', " "));
            d.comm.abort(2)
        }
        (Err(e), _) => return Err(e),
    };
    if rank != 0 {
        return Ok(());
    }
    if s.world > 1 || a.zero == 1 {
        println!(
            "data parallel: {} ranks, ZeRO-{}, AdamW state {:.1} MiB per rank",
            s.world,
            a.zero,
            s.optimizer_bytes_per_rank as f64 / (1 << 20) as f64
        );
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
    Ok(())
}

fn train_fixed_batch(dir: &std::path::Path, a: &TrainArgs) -> Result<()> {
    let file = a
        .batch
        .as_ref()
        .ok_or_else(|| anyhow!("--model needs --batch FILE (a safetensors file with `tokens` [B, T+1])"))?;
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
        precision: a.precision,
    };
    let port = crate::ports::open(&a.port, a.threads)?;
    let batch = std::path::Path::new(file);
    anychip_train::fixed_batch::train(dir, batch, &s, &port, a.out.as_deref(), &mut std::io::stdout())?;
    Ok(())
}

/// Arguments of `anychip eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face model directory or anychip run/checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file holding an integer tensor `tokens` [B, T+1].
    #[arg(long)]
    batch: PathBuf,
    /// Port to run on.
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let port = crate::ports::open(&a.port, a.threads)?;
    let loss = anychip_train::fixed_batch::eval(&a.model, &a.batch, &port)?;
    println!("{}", serde_json::json!({ "loss": loss }));
    Ok(())
}

/// Arguments of `anychip export`.
#[derive(Args)]
pub struct ExportArgs {
    /// anychip run or checkpoint directory.
    #[arg(long)]
    ckpt: PathBuf,
    /// Output directory for the Hugging Face checkpoint (config.json + model.safetensors).
    #[arg(long)]
    hf: PathBuf,
}

pub fn export(a: ExportArgs) -> Result<()> {
    if a.hf.join("model.safetensors").exists() || a.hf.join("config.json").exists() {
        return Err(anyhow!("{} already holds a model; choose another --hf directory", a.hf.display()));
    }
    let port = crate::ports::open("cpu", None)?;
    let (model, arch) = anychip_train::fixed_batch::load_model(&a.ckpt, &port)?;
    anychip_hf::export(&model, arch, &a.hf)?;
    println!("exported {} ({:.2}M params) to {}", arch.class(), model.n_params() as f64 / 1e6, a.hf.display());
    Ok(())
}

/// Arguments of `anychip sample`.
#[derive(Args)]
pub struct SampleArgs {
    /// Checkpoint directory (a training run's --out).
    #[arg(long)]
    ckpt: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Port to run on.
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn sample(a: SampleArgs) -> Result<()> {
    let opts =
        SampleOptions { prompt: a.prompt, tokens: a.tokens, temperature: a.temperature, top_k: a.top_k, seed: a.seed };
    let port = crate::ports::open(&a.port, a.threads)?;
    crate::ports::require_values(&port)?;
    run_sample(&a.ckpt, &opts, &port, &mut std::io::stdout())?;
    Ok(())
}

/// Arguments of `anychip bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Model preset.
    #[arg(long, default_value = "gpt2-tiny")]
    preset: String,
    /// Port to measure.
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// What the linear layers and the LM head multiply in: f32 or bf16 (see `anychip train`).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Sequences per step (default: 16 for byte-level presets, 8 for small BPE ones, 4 above 50M params).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default: min(256, the preset's maximum)).
    #[arg(long)]
    ctx: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also print (and put in the JSON) the time per op kind: matmul, attention, norms, ...
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    sim: crate::cmd_sim::SimArgs,
}

/// `bench`'s default sequences per step: 16 for byte-level presets, 8 for small BPE ones, 4 above 50M params.
pub(crate) fn default_batch(model: &ModelConfig) -> usize {
    if model.n_params() > 50_000_000 {
        4
    } else if model.vocab_size > 256 {
        8
    } else {
        16
    }
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if a.port.starts_with("sim:") {
        let job = crate::cmd_sim::BenchJob {
            preset: a.preset,
            port: a.port,
            threads: a.threads,
            precision: a.precision,
            batch: a.batch,
            ctx: a.ctx,
            profile: a.profile,
            json: a.json,
        };
        return crate::cmd_sim::bench(job, &a.sim);
    }
    let model = preset(&a.preset)?;
    let default_batch = default_batch(&model);
    let mut cfg = TrainConfig::default_for(&a.preset, model);
    cfg.batch = a.batch.unwrap_or(default_batch);
    cfg.ctx = a.ctx.unwrap_or(cfg.model.max_ctx.min(256));
    cfg.port = a.port;
    cfg.threads = a.threads;
    cfg.precision = a.precision;
    cfg.lr = 1e-4;
    if cfg.ctx > cfg.model.max_ctx {
        return Err(anyhow!("--ctx {} is larger than the model's maximum context {}", cfg.ctx, cfg.model.max_ctx));
    }
    let port = crate::ports::open(&cfg.port, cfg.threads)?;
    let r = run_bench(&cfg, port, a.warmup, a.steps, a.profile)?;
    println!(
        "bench {} on {} [{}]: batch {}x{}, {:.2}M params, {} matmuls | step {:.1} ms (median of {}, min {:.1}) | {:.0} tok/s | {:.1} GFLOP/s | MFU {} | peak RSS {}",
        r.preset,
        r.port,
        r.device,
        r.batch,
        r.ctx,
        r.n_params as f64 / 1e6,
        r.precision,
        r.step_ms_median,
        a.steps,
        r.step_ms_min,
        r.tokens_per_s,
        r.model_gflops,
        r.mfu.map(|m| format!("{:.1}% of {:.0} GFLOP/s", m * 100.0, r.peak_gflops.unwrap_or(0.0))).unwrap_or_else(|| "n/a".into()),
        r.peak_rss_mib.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into()),
    );
    if let Some(p) = &r.profile {
        println!("{p}");
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

pub fn ports() -> Result<()> {
    let reg = crate::ports::registry();
    for (name, about) in reg.list() {
        println!("{name}: {about}");
        match reg.create(&name, &Default::default()) {
            Ok(p) => {
                let c = p.capabilities();
                let names = |v: &[anychip_port::DType]| v.iter().map(|d| d.name()).collect::<Vec<_>>().join(",");
                println!("  device:     {}", c.device);
                println!("  storage:    {}", names(&c.storage));
                println!("  arithmetic: {}", names(&c.arithmetic));
                println!("  fast matmul: {}", names(&c.fast_matmul));
                println!(
                    "  fused:      {}",
                    if c.fused.is_empty() { "none (default decompositions)".into() } else { c.fused.join(", ") }
                );
            }
            Err(e) => println!("  unavailable: {e}"),
        }
    }
    Ok(())
}
