//! Hugging Face checkpoints in and out, in HF layout (`config.json` plus `model.safetensors` or
//! a sharded `model.safetensors.index.json`; f32, bf16 or f16 tensors) for GPT2LMHeadModel,
//! LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and Ernie4_5ForCausalLM (dense), and the
//! mixture-of-experts Qwen3MoeForCausalLM and Ernie4_5_MoeForCausalLM (`moe.rs`).
//!
//! anychip fuses q|k|v and gate|up into single matrices and uses rotate-half RoPE; the maps in
//! `names.rs` split and join them, transpose GPT-2's Conv1D weights, and permute ERNIE's
//! interleaved-RoPE q/k rows so both conventions compute the same attention.

mod config;
mod moe;
mod names;
mod tensors;

pub use config::{read_config, write_config, Arch};

use anychip_core::Tensor;
use anychip_nn::Transformer;
use anychip_port::{DType, Port};
use anyhow::{anyhow, Result};
use std::path::Path;
use std::sync::Arc;

/// Whether `dir` looks like a Hugging Face model directory.
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.join("config.json").exists()
        && (dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists())
}

/// Load an HF checkpoint as an anychip model on `port`.
pub fn load(dir: &Path, port: &Arc<dyn Port>) -> Result<(Arch, Transformer)> {
    let (arch, cfg) = read_config(dir)?;
    let model = Transformer::new(&cfg, port, 0)?;
    load_weights_into(dir, arch, &model)?;
    Ok((arch, model))
}

/// Overwrite `model`'s weights with the HF checkpoint's (its config must match).
pub fn load_weights_into(dir: &Path, arch: Arch, model: &Transformer) -> Result<()> {
    let store = tensors::Store::open(dir)?;
    // Under expert parallelism other ranks hold (and load) the other experts.
    let elsewhere: std::collections::HashSet<&str> = model.held_elsewhere().collect();
    for (name, value, shape) in names::import(arch, model.config(), &store)? {
        if elsewhere.contains(name.as_str()) {
            continue;
        }
        let p = model
            .param(&name)
            .ok_or_else(|| anyhow!("{}: maps to '{name}', which this model does not have", dir.display()))?;
        if p.tensor.shape() != shape.as_slice() {
            return Err(anyhow!(
                "{}: tensor for '{name}' has shape {shape:?} but the config implies {:?}; config.json and the weights disagree",
                dir.display(),
                p.tensor.shape()
            ));
        }
        p.tensor.assign(&Tensor::from_f32(model.port(), &value, &shape, DType::F32)?)?;
    }
    Ok(())
}

/// Write `model` as an HF checkpoint of architecture `arch` into `dir` (f32 safetensors).
pub fn export(model: &Transformer, arch: Arch, dir: &Path) -> Result<()> {
    match (&model.config().moe, arch.is_moe()) {
        (Some(m), true) => moe::check_exportable(arch, m)?,
        (Some(_), false) => {
            return Err(anyhow!("this model has mixture-of-experts layers, which {} has not", arch.class()))
        }
        (None, true) => return Err(anyhow!("{} needs mixture-of-experts layers; this model has none", arch.class())),
        (None, false) => {}
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut ours = std::collections::BTreeMap::new();
    for p in model.params() {
        ours.insert(p.name.clone(), (p.tensor.to_vec_f32()?, p.tensor.shape().to_vec()));
    }
    let hf = names::export(arch, model.config(), &ours)?;
    tensors::write(&dir.join("model.safetensors"), &hf)?;
    write_config(dir, arch, model.config())
}
