//! Checkpoints: safetensors weights and optimizer moments, the run config, and the exact
//! position of the run (step, data loader state), written so that a loadable checkpoint exists
//! at every instant, whatever moment the process dies at.
//!
//! ## The swap protocol
//! A run directory holds `checkpoint/`, the last good checkpoint. A new one is made in five steps:
//! 1. every tensor is checked finite (a diverged state is never written);
//! 2. its files are written into `.checkpoint.new/` and fsynced, `state.json` last;
//! 3. it is read back and validated (both safetensors files parse, every value finite, config and
//!    state parse);
//! 4. `checkpoint/` is renamed to `.checkpoint.old/`, then `.checkpoint.new/` to `checkpoint/`,
//!    and the directory is fsynced;
//! 5. `.checkpoint.old/` is removed.
//!
//! A crash inside step 4 leaves no `checkpoint/` but two complete ones; [`resolve`] then reads
//! `.checkpoint.new/` (validated in step 3) or else `.checkpoint.old/`, so `sample`, `export` and
//! `--resume` work from any intermediate state, and [`recover`] (run by the trainer under the run
//! lock) puts it back in place. The names are fixed rather than per process: the run lock
//! (`run_dir`) makes the one trainer the only writer, and a restarted process with the same PID
//! (containers, PID 1) finds nothing in its way. The crash tests abort at each of these points
//! through [`crate::fault`].

use crate::config::TrainConfig;
use crate::fault;
use anychip_core::Tensor;
use anychip_data::sync_dir;
use anychip_nn::Transformer;
use anychip_optim::AdamW;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Format version written into `state.json`.
pub const FORMAT: u32 = 1;

/// Name of the last good checkpoint inside a run directory.
const CURRENT: &str = "checkpoint";
/// Where the next checkpoint is written before it is swapped in.
const NEW: &str = ".checkpoint.new";
/// Where the previous checkpoint waits while the new one is swapped in.
const OLD: &str = ".checkpoint.old";

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
    /// Steps skipped under `--on-nan skip` (their update was not applied), so AdamW's own step
    /// count is `step - skipped`.
    #[serde(default)]
    pub skipped: u64,
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

/// How many values of a float tensor's little-endian bytes are NaN or infinite.
pub fn count_non_finite(dtype: StDtype, bytes: &[u8]) -> usize {
    match dtype {
        StDtype::F32 => {
            bytes.chunks_exact(4).filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()).count()
        }
        // bf16 is the top half of an f32: non-finite exactly when the exponent bits are all ones.
        StDtype::BF16 | StDtype::F16 => {
            let exp = if dtype == StDtype::BF16 { 0x7f80 } else { 0x7c00 };
            bytes.chunks_exact(2).filter(|c| u16::from_le_bytes([c[0], c[1]]) & exp == exp).count()
        }
        StDtype::F64 => {
            bytes.chunks_exact(8).filter(|c| !f64::from_le_bytes(std::array::from_fn(|i| c[i])).is_finite()).count()
        }
        _ => 0,
    }
}

/// The first tensor of a safetensors file holding NaN or infinite values, with their count.
pub fn first_non_finite(st: &SafeTensors) -> Option<(String, usize)> {
    let mut names = st.names();
    names.sort();
    names.into_iter().find_map(|n| {
        let v = st.tensor(n).ok()?;
        let bad = count_non_finite(v.dtype(), v.data());
        (bad > 0).then(|| (n.to_string(), bad))
    })
}

fn refuse_non_finite(bytes: &[u8], what: &str) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{what} did not serialise ({e})"))?;
    if let Some((name, bad)) = first_non_finite(&st) {
        bail!("{what}: tensor '{name}' holds {bad} NaN or infinite values; a diverged state is not written");
    }
    Ok(())
}

/// Write one file of a checkpoint being assembled and fsync it (the directory as a whole is
/// what is swapped in atomically, so the file itself needs no temp name).
fn write_file(dir: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(file);
    let fail = |e: std::io::Error| {
        anyhow!(
            "cannot write {} ({e}); free space or fix permissions on {}; the last checkpoint is untouched",
            path.display(),
            dir.display()
        )
    };
    fault::write_error(file).map_err(fail)?;
    let mut f = File::create(&path).map_err(fail)?;
    if fault::partial_write(file) {
        let _ = f.write_all(&bytes[..bytes.len() / 2]).and_then(|_| f.sync_all());
        eprintln!("anychip: ANYCHIP_FAULT: aborting halfway through {file}");
        std::process::abort();
    }
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)
}

/// The optimizer moments as named tensors, in the order of `opt.groups`.
pub fn moments(opt: &AdamW) -> Vec<(String, &Tensor)> {
    let mut out = Vec::new();
    for (i, g) in opt.groups.iter().enumerate() {
        out.push((format!("m.{}", g.name), &opt.m[i]));
        out.push((format!("v.{}", g.name), &opt.v[i]));
    }
    out
}

/// Write a checkpoint as `dir` (normally `<run>/checkpoint`), replacing the one there only once
/// the new one is complete and validated on disk (see the module docs for the protocol).
pub fn save(dir: &Path, cfg: &TrainConfig, model: &Transformer, opt: &AdamW, state: &RunState) -> Result<()> {
    let params: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), &p.tensor)).collect();
    save_parts(dir, cfg, &params, &moments(opt), state)
}

/// [`save`] from named weights and moments (`m.NAME`, `v.NAME`) gathered from several ranks
/// (expert parallelism): the same files as [`save`] of the whole model writes (safetensors
/// orders tensors by name, whatever order they come in).
pub fn save_parts(
    dir: &Path,
    cfg: &TrainConfig,
    params: &[(String, &Tensor)],
    moments: &[(String, &Tensor)],
    state: &RunState,
) -> Result<()> {
    let (run, name) = split(dir)?;
    fs::create_dir_all(&run).with_context(|| format!("cannot create {}", run.display()))?;
    let weights = tensors_to_bytes(params)?;
    refuse_non_finite(&weights, "the model's weights")?;
    let moments = tensors_to_bytes(moments)?;
    refuse_non_finite(&moments, "the optimizer's moments")?;
    let mut st = state.clone();
    st.format = FORMAT;

    let new = run.join(staging(&name, NEW));
    if new.exists() {
        fs::remove_dir_all(&new).with_context(|| format!("cannot remove the unfinished {}", new.display()))?;
    }
    fs::create_dir_all(&new).with_context(|| format!("cannot create {}", new.display()))?;
    let written = write_files(&new, &weights, &moments, cfg, &st);
    if written.is_err() {
        // A partial copy (a full disk, say) would keep the disk full: it goes at once.
        let _ = fs::remove_dir_all(&new);
    }
    written?;
    fault::crash_point("written");
    validate(&new).with_context(|| format!("the checkpoint just written to {} does not read back", new.display()))?;

    let old = run.join(staging(&name, OLD));
    if dir.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
        }
        fs::rename(dir, &old).with_context(|| format!("cannot rename {} to {}", dir.display(), old.display()))?;
        fault::crash_point("moved-old");
    }
    fs::rename(&new, dir).with_context(|| format!("cannot rename {} to {}", new.display(), dir.display()))?;
    sync_dir(&run);
    fault::crash_point("swapped");
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// The four files of a checkpoint, `state.json` last (its presence marks the copy complete).
fn write_files(dir: &Path, weights: &[u8], moments: &[u8], cfg: &TrainConfig, st: &RunState) -> Result<()> {
    write_file(dir, "model.safetensors", weights)?;
    write_file(dir, "optimizer.safetensors", moments)?;
    write_file(dir, "config.json", serde_json::to_string_pretty(cfg)?.as_bytes())?;
    write_file(dir, "state.json", serde_json::to_string_pretty(st)?.as_bytes())?;
    sync_dir(dir);
    Ok(())
}

/// `dir`'s parent (the run directory) and its name.
fn split(dir: &Path) -> Result<(PathBuf, String)> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir.file_name().ok_or_else(|| anyhow!("checkpoint path {} has no name", dir.display()))?;
    Ok((parent.to_path_buf(), name.to_string_lossy().into_owned()))
}

/// The staging name for checkpoint `name` (`.checkpoint.new` for `checkpoint`).
fn staging(name: &str, kind: &str) -> String {
    kind.replacen(CURRENT, name, 1)
}

/// Read back a checkpoint directory and check that it is whole and finite.
pub fn validate(dir: &Path) -> Result<()> {
    open_exact(dir)?;
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let bytes = read(dir, file)?;
        let st = parse_tensors(dir, file, &bytes)?;
        refuse_diverged(dir, file, &st)?;
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
    run.join(CURRENT)
}

/// Whether `dir` holds a complete checkpoint (its `state.json`, written last, parses).
fn is_complete(dir: &Path) -> bool {
    fs::read(dir.join("state.json")).is_ok_and(|b| serde_json::from_slice::<RunState>(&b).is_ok())
}

/// Where the checkpoint named by `path` (a run directory or its `checkpoint/`) really is: itself,
/// or, after a crash in the middle of a swap, the complete staging copy beside it. Read-only.
pub fn resolve(path: &Path) -> PathBuf {
    if in_run(path).is_dir() {
        return in_run(path);
    }
    if path.is_dir() && is_complete(path) {
        return path.to_path_buf();
    }
    // A run directory whose checkpoint is mid-swap, or the missing checkpoint directory itself.
    if let Some(c) = swap_leftover(path, CURRENT) {
        return c;
    }
    match split(path) {
        Ok((run, name)) if !path.exists() => swap_leftover(&run, &name).unwrap_or_else(|| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// The complete checkpoint a swap interrupted between its two renames left behind, if any: the
/// new one once the old one has been moved aside (it was validated before that), else the old
/// one. Also reads the `.checkpoint.tmp-PID` / `.checkpoint.old-PID` names of earlier versions.
fn swap_leftover(run: &Path, name: &str) -> Option<PathBuf> {
    let (new, old) = (run.join(staging(name, NEW)), run.join(staging(name, OLD)));
    let legacy = |kind: &str| -> Vec<PathBuf> {
        let prefix = format!(".{name}.{kind}-");
        let mut v: Vec<PathBuf> = fs::read_dir(run)
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()))
            .into_iter()
            .flatten()
            .collect();
        v.sort();
        v
    };
    let moved_old = old.exists() || !legacy("old").is_empty();
    let mut candidates = Vec::new();
    if moved_old {
        candidates.push(new.clone());
        candidates.extend(legacy("tmp"));
    }
    candidates.push(old);
    candidates.extend(legacy("old"));
    candidates.into_iter().find(|c| is_complete(c))
}

/// Put the checkpoint of run directory `run` back in place after a crash in the middle of a
/// swap. Returns the directory it restored from, if it did. Only the run's lock holder calls it.
pub fn recover(run: &Path) -> Result<Option<PathBuf>> {
    let current = in_run(run);
    if current.exists() {
        return Ok(None);
    }
    let Some(from) = swap_leftover(run, CURRENT) else { return Ok(None) };
    fs::rename(&from, &current)
        .with_context(|| format!("cannot rename {} back to {}", from.display(), current.display()))?;
    sync_dir(run);
    Ok(Some(from))
}

/// The staging directories a crash may leave in a run directory (to be removed once
/// [`recover`] has run): `.checkpoint.new`, `.checkpoint.old` and earlier versions' per-PID names.
pub fn leftovers(run: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(run) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == NEW || n == OLD || n.starts_with(".checkpoint.tmp-") || n.starts_with(".checkpoint.old-")
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Read the config and run state of the checkpoint in `dir` (a run directory or its `checkpoint/`,
/// or what a crash mid-swap left of them: see [`resolve`]).
pub fn open(dir: &Path) -> Result<Loaded> {
    open_exact(&resolve(dir))
}

fn open_exact(dir: &Path) -> Result<Loaded> {
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

fn parse_tensors<'a>(dir: &Path, file: &str, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow!("checkpoint {}: {file} is corrupt or truncated ({e}); use an earlier checkpoint", dir.display())
    })
}

fn refuse_diverged(dir: &Path, file: &str, st: &SafeTensors) -> Result<()> {
    if let Some((name, bad)) = first_non_finite(st) {
        bail!(
            "checkpoint {}: {file} tensor '{name}' holds {bad} NaN or infinite values (a diverged run); use an earlier checkpoint",
            dir.display()
        );
    }
    Ok(())
}

/// Load the tensors `targets` from `file`, which may also hold the tensors named in `elsewhere`
/// (other ranks' experts) but nothing else.
fn load_into(dir: &Path, file: &str, targets: &[(String, &Tensor)], elsewhere: &[String]) -> Result<()> {
    let bytes = read(dir, file)?;
    let st = parse_tensors(dir, file, &bytes)?;
    refuse_diverged(dir, file, &st)?;
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
    elsewhere.iter().for_each(|n| {
        have.remove(n);
    });
    if let Some((extra, _)) = have.into_iter().next() {
        bail!("checkpoint {}: {file} holds '{extra}', which this model does not have; the checkpoint does not match this config", dir.display());
    }
    Ok(())
}

/// Load weights (and optimizer moments when `opt` is given) from `dir` into existing tensors;
/// refuses weights holding NaN or infinities.
pub fn load_weights(dir: &Path, model: &Transformer, opt: Option<&mut AdamW>) -> Result<()> {
    load_sharded(dir, model, &mut opt.into_iter().collect::<Vec<_>>())
}

/// [`load_weights`] for a model whose parameters' moments are split over several optimizers
/// (`opts`, none to load weights only), and that may hold only some of the experts (expert
/// parallelism): it reads its own and passes over the others'.
pub fn load_sharded(dir: &Path, model: &Transformer, opts: &mut [&mut AdamW]) -> Result<()> {
    let params: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), &p.tensor)).collect();
    let elsewhere: Vec<String> = model.held_elsewhere().map(String::from).collect();
    load_into(dir, "model.safetensors", &params, &elsewhere)?;
    if !opts.is_empty() {
        let m: Vec<(String, &Tensor)> = opts.iter().flat_map(|o| moments(o)).collect();
        let other: Vec<String> = elsewhere.iter().flat_map(|n| [format!("m.{n}"), format!("v.{n}")]).collect();
        load_into(dir, "optimizer.safetensors", &m, &other)?;
    }
    Ok(())
}
