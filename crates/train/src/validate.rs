//! Every setting of a run checked at the door, before anything is allocated or written: one
//! line naming the flag, the value and the range it must be in.

use crate::config::TrainConfig;
use anyhow::{bail, Result};

/// Check the settings that do not depend on the data (the model's shape, ranges of the
/// optimizer's and the schedule's numbers, the step budget).
pub fn check_settings(cfg: &TrainConfig) -> Result<()> {
    cfg.model.validate().map_err(anyhow::Error::msg)?;
    if cfg.ctx > cfg.model.max_ctx {
        bail!(
            "--ctx {} is larger than the model's maximum context {}; use --ctx {} or less",
            cfg.ctx,
            cfg.model.max_ctx,
            cfg.model.max_ctx
        );
    }
    for (flag, v) in [("--batch", cfg.batch), ("--ctx", cfg.ctx), ("--accum", cfg.accum)] {
        if v == 0 {
            bail!("{flag} must be at least 1, got 0");
        }
    }
    if cfg.steps == 0 {
        bail!("--steps must be at least 1, got 0");
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", cfg.lr);
    }
    let a = &cfg.adamw;
    in_unit_interval("--beta1", a.beta1)?;
    in_unit_interval("--beta2", a.beta2)?;
    if !(a.eps.is_finite() && a.eps > 0.0) {
        bail!("--eps must be a positive number (AdamW's default is 1e-8), got {}", a.eps);
    }
    if !(a.grad_clip.is_finite() && a.grad_clip >= 0.0) {
        bail!("--grad-clip must be 0 (off) or a positive norm, got {}", a.grad_clip);
    }
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        bail!("--weight-decay must be 0 or a positive number (typically 0.01 to 0.1), got {}", a.weight_decay);
    }
    if cfg.eval_batches == 0 {
        bail!("--eval-batches must be at least 1, got 0");
    }
    Ok(())
}

fn in_unit_interval(flag: &str, v: f32) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        bail!("{flag} must be in [0, 1), got {v}");
    }
    Ok(())
}

/// `--stop-after`, when given, must let at least one step run.
pub fn check_stop_after(stop_after: Option<u64>) -> Result<()> {
    if stop_after == Some(0) {
        bail!("--stop-after must be at least 1, got 0; leave it out to train to --steps");
    }
    Ok(())
}

/// Most worker threads a port may be given, as a multiple of the machine's cores: more only
/// costs (thousands of threads take minutes to start and then contend).
const MAX_THREADS_PER_CORE: usize = 4;

/// `--threads` must be between 1 and a few times the machine's cores.
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max = cores * MAX_THREADS_PER_CORE;
    if n == 0 {
        bail!("--threads must be at least 1, got 0; leave it out to use all {cores} cores");
    }
    if n > max {
        bail!("--threads {n} is more than {max} ({MAX_THREADS_PER_CORE} per core on this {cores}-core machine); leave it out to use all {cores} cores");
    }
    Ok(())
}

/// Bytes a training step needs, from the model's shape: what must fit for it to run at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Weights, gradients and AdamW's two moments (f32 each).
    pub state: u64,
    /// Activations kept for backward, and the logits with their gradient, for one micro-batch.
    pub activations: u64,
    /// Host buffers the command allocates besides (bench's random tokens).
    pub extra: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.state.saturating_add(self.activations).saturating_add(self.extra)
    }
}

/// A lower estimate of a step's memory: 16 bytes per parameter, and per token of the micro-batch
/// the activations a transformer block keeps for backward (about 16 `d_model`-wide f32 rows:
/// norms' inputs, q/k/v, attention output, the MLP's two hidden rows, residuals) in every layer,
/// plus the logits and their gradient. It leaves out the attention tiles and the allocator's
/// slack, so a batch it refuses is surely too large; one it admits may still be tight.
pub fn memory_estimate(cfg: &TrainConfig, rows: usize) -> MemoryEstimate {
    let m = &cfg.model;
    let tokens = (rows as u64).saturating_mul(cfg.ctx as u64);
    let per_token_layer = (12 * m.d_model + 2 * m.d_ff) as u64 * 4;
    let per_token = per_token_layer.saturating_mul(m.n_layer as u64).saturating_add(2 * 4 * m.vocab_size as u64);
    MemoryEstimate { state: m.n_params() as u64 * 16, activations: tokens.saturating_mul(per_token), extra: 0 }
}

/// Memory the machine can give this process now (Linux `MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Refuse a batch whose estimated memory exceeds what the machine has, before allocating it.
pub fn check_memory(est: MemoryEstimate, available: Option<u64>, batch: usize) -> Result<()> {
    let Some(avail) = available else { return Ok(()) };
    if est.total() <= avail {
        return Ok(());
    }
    // The largest batch whose estimate fits, for the fix.
    let per_row = est.activations / batch.max(1) as u64;
    let fits = avail.saturating_sub(est.state + est.extra.min(avail)) / per_row.max(1);
    bail!(
        "--batch {batch} needs at least {} (weights and optimizer {}, activations {}{}) but this machine has {} available; use --batch {} or less, or --accum to split it",
        gib(est.total()),
        gib(est.state),
        gib(est.activations),
        if est.extra > 0 { format!(", buffers {}", gib(est.extra)) } else { String::new() },
        gib(avail),
        fits.max(1)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_model_config::ModelConfig;

    fn cfg() -> TrainConfig {
        TrainConfig::default_for("gpt2-tiny", ModelConfig::preset("gpt2-tiny").unwrap())
    }

    /// A flag and a change to a valid config that puts it out of range.
    type Case = (&'static str, Box<dyn Fn(&mut TrainConfig)>);

    #[test]
    fn out_of_range_settings_name_their_flag() {
        let cases: Vec<Case> = vec![
            ("--steps", Box::new(|c| c.steps = 0)),
            ("--beta1", Box::new(|c| c.adamw.beta1 = 2.0)),
            ("--beta2", Box::new(|c| c.adamw.beta2 = -0.1)),
            ("--eps", Box::new(|c| c.adamw.eps = -1.0)),
            ("--grad-clip", Box::new(|c| c.adamw.grad_clip = -1.0)),
            ("--weight-decay", Box::new(|c| c.adamw.weight_decay = f32::NAN)),
            ("--lr", Box::new(|c| c.lr = f32::INFINITY)),
            ("--batch", Box::new(|c| c.batch = 0)),
        ];
        assert!(check_settings(&cfg()).is_ok());
        for (flag, break_it) in cases {
            let mut c = cfg();
            break_it(&mut c);
            let e = check_settings(&c).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn threads_and_stop_after_ranges() {
        assert!(check_threads(Some(0)).is_err());
        assert!(check_threads(Some(10_000_000)).is_err());
        assert!(check_threads(Some(1)).is_ok());
        assert!(check_threads(None).is_ok());
        assert!(check_stop_after(Some(0)).is_err());
        assert!(check_stop_after(Some(1)).is_ok());
    }

    #[test]
    fn a_batch_too_large_is_refused_with_a_batch_that_fits() {
        let c = cfg();
        let est = memory_estimate(&c, 1_000_000);
        // gpt2-tiny's logits alone: 1e6 rows x 128 tokens x 2 x 4 bytes x vocab.
        assert!(est.activations > 1_000_000 * 128 * 8 * c.model.vocab_size as u64);
        let e = check_memory(est, Some(8 << 30), 1_000_000).unwrap_err().to_string();
        assert!(e.contains("--batch 1000000 needs at least") && e.contains("8.0 GiB available"), "{e}");
        let fits: usize = e.split("use --batch ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(check_memory(memory_estimate(&c, fits), Some(8 << 30), fits).is_ok());
        assert!(check_memory(memory_estimate(&c, fits * 2), Some(8 << 30), fits * 2).is_err());
        assert!(check_memory(memory_estimate(&c, 16), Some(8 << 30), 16).is_ok());
    }
}
