//! `anychip eval`: the loss of a model on one fixed batch, as one JSON line.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `anychip eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face model directory or anychip run/checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// Safetensors file holding an integer tensor `tokens` [B, T+1] (`--batch FILE`, its name
    /// before `--batch` came to mean a number of sequences everywhere, still works).
    #[arg(long, value_name = "FILE", alias = "batch")]
    batch_file: PathBuf,
    /// Port to run on.
    #[arg(long, default_value = "cpu")]
    port: String,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
}

/// `anychip eval`: print `{"loss": x}`.
pub fn eval(a: EvalArgs) -> Result<()> {
    let port = crate::ports::open(&a.port, a.threads)?;
    let loss = anychip_train::fixed_batch::eval(&a.model, &a.batch_file, &port)?;
    println!("{}", serde_json::json!({ "loss": loss }));
    Ok(())
}
