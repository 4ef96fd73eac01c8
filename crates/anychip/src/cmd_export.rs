//! `anychip export`: an anychip checkpoint written as a Hugging Face checkpoint.

use anyhow::{anyhow, Result};
use clap::Args;
use std::path::PathBuf;

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

/// `anychip export`: refuse to overwrite, load the checkpoint on `cpu`, write HF files.
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
