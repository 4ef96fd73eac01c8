//! `anychip sample`: generate text from a checkpoint.

use anychip_train::sample::{sample as run_sample, SampleOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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

/// `anychip sample`: stream generated text to stdout.
pub fn sample(a: SampleArgs) -> Result<()> {
    let opts =
        SampleOptions { prompt: a.prompt, tokens: a.tokens, temperature: a.temperature, top_k: a.top_k, seed: a.seed };
    let port = crate::ports::open(&a.port, a.threads)?;
    crate::ports::require_values(&port)?;
    run_sample(&a.ckpt, &opts, &port, &mut std::io::stdout())?;
    Ok(())
}
