//! Checkpoints: safetensors weights and optimizer moments, the run config, and the exact
//! position of the run (step, data loader state), written so a crash never leaves a
//! half-written checkpoint behind.

use crate::config::TrainConfig;
use anychip_core::Tensor;
use anychip_data::{sync_dir, write_atomic};
use anychip_nn::Transformer;
use anychip_optim::AdamW;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Format version written into `state.json`.
pub const FORMAT: u32 = 1;

/// Where a run stands: enough to continue bit-exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// Data loader state (serialised by anychip-data).
    pub loader: serde_json::Value,
    /// Tokens seen so far.
    pub tokens: u64,
    /// Validation loss at this point, if measured.
    pub val_loss: Option<f32>,
}

fn st_dtype(t: &Tensor) -> StDtype {
    match t.dtype() {
        anychip_port::DType::F32 => StDtype::F32,
        anychip_port::DType::BF16 => StDtype::BF16,
        anychip_port::DType::I32 => StDtype::I32,
    }
}

fn tensors_to_bytes(named: &[(String, &Tensor)]) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<u8>, &Tensor)> =
        named.iter().map(|(n, t)| Ok((n.clone(), t.to_bytes()?, *t))).collect::<Result<_>>()?;
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, b, t)| Ok((n.clone(), TensorView::new(st_dtype(t), t.shape().to_vec(), b)?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// Write a checkpoint into `dir` (created or replaced as a whole).
pub fn save(dir: &Path, cfg: &TrainConfig, model: &Transformer, opt: &AdamW, state: &RunState) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir.file_name().ok_or_else(|| anyhow!("checkpoint path {} has no name", dir.display()))?;
    let tmp = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let params: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), &p.tensor)).collect();
    write_atomic(&tmp.join("model.safetensors"), &tensors_to_bytes(&params)?)?;
    let mut moments: Vec<(String, &Tensor)> = Vec::new();
    for (i, g) in opt.groups.iter().enumerate() {
        moments.push((format!("m.{}", g.name), &opt.m[i]));
        moments.push((format!("v.{}", g.name), &opt.v[i]));
    }
    write_atomic(&tmp.join("optimizer.safetensors"), &tensors_to_bytes(&moments)?)?;
    write_atomic(&tmp.join("config.json"), serde_json::to_string_pretty(cfg)?.as_bytes())?;
    let mut st = state.clone();
    st.format = FORMAT;
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(&st)?.as_bytes())?;
    sync_dir(&tmp);
    // Swap in: the old checkpoint is only removed once the new one is complete on disk.
    let old = parent.join(format!(".{}.old-{}", name.to_string_lossy(), std::process::id()));
    if dir.exists() {
        fs::rename(dir, &old)?;
    }
    fs::rename(&tmp, dir)?;
    sync_dir(parent);
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// A checkpoint read back from disk.
pub struct Loaded {
    pub cfg: TrainConfig,
    pub state: RunState,
    pub dir: PathBuf,
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let p = dir.join(file);
    fs::read(&p).map_err(|e| {
        anyhow!(
            "checkpoint {}: cannot read {file} ({e}); is this a directory written by `anychip train`?",
            dir.display()
        )
    })
}

/// The checkpoint directory inside a run directory.
pub fn in_run(run: &Path) -> PathBuf {
    run.join("checkpoint")
}

/// Read the config and run state of the checkpoint in `dir` (a run directory or its `checkpoint/`).
pub fn open(dir: &Path) -> Result<Loaded> {
    let dir = &if in_run(dir).join("state.json").exists() { in_run(dir) } else { dir.to_path_buf() };
    if !dir.is_dir() {
        bail!(
            "checkpoint {} does not exist or is not a directory; pass the --out directory of a training run",
            dir.display()
        );
    }
    let cfg: TrainConfig = serde_json::from_slice(&read(dir, "config.json")?).map_err(|e| {
        anyhow!("checkpoint {}: config.json is corrupt ({e}); restore it or start a new run", dir.display())
    })?;
    let state: RunState = serde_json::from_slice(&read(dir, "state.json")?).map_err(|e| {
        anyhow!("checkpoint {}: state.json is corrupt ({e}); restore it or start a new run", dir.display())
    })?;
    if state.format != FORMAT {
        bail!("checkpoint {}: format {} but this anychip reads format {FORMAT}", dir.display(), state.format);
    }
    Ok(Loaded { cfg, state, dir: dir.to_path_buf() })
}

fn load_into(dir: &Path, file: &str, targets: &[(String, &Tensor)]) -> Result<()> {
    let bytes = read(dir, file)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow!("checkpoint {}: {file} is corrupt or truncated ({e}); use an earlier checkpoint", dir.display())
    })?;
    let mut have: BTreeMap<String, ()> = st.names().into_iter().map(|n| (n.to_string(), ())).collect();
    for (name, t) in targets {
        let v = st.tensor(name).map_err(|_| {
            anyhow!("checkpoint {}: {file} has no tensor '{name}'; it was written for a different model", dir.display())
        })?;
        if v.shape() != t.shape() || v.dtype() != st_dtype(t) {
            bail!(
                "checkpoint {}: tensor '{name}' is {:?} {:?} but the model expects {:?} {:?}; the checkpoint does not match this config",
                dir.display(),
                v.dtype(),
                v.shape(),
                st_dtype(t),
                t.shape()
            );
        }
        let src = Tensor::from_bytes(t.port(), v.data(), t.shape(), t.dtype())?;
        t.assign(&src)?;
        have.remove(name);
    }
    if let Some((extra, _)) = have.into_iter().next() {
        bail!("checkpoint {}: {file} holds '{extra}', which this model does not have; the checkpoint does not match this config", dir.display());
    }
    Ok(())
}

/// Load weights (and optimizer moments when `opt` is given) from `dir` into existing tensors.
pub fn load_weights(dir: &Path, model: &Transformer, opt: Option<&mut AdamW>) -> Result<()> {
    let params: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), &p.tensor)).collect();
    load_into(dir, "model.safetensors", &params)?;
    if let Some(opt) = opt {
        let mut moments: Vec<(String, &Tensor)> = Vec::new();
        for (i, g) in opt.groups.iter().enumerate() {
            moments.push((format!("m.{}", g.name), &opt.m[i]));
            moments.push((format!("v.{}", g.name), &opt.v[i]));
        }
        load_into(dir, "optimizer.safetensors", &moments)?;
    }
    Ok(())
}
