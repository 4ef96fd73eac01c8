//! Parity mode: evaluate or train on one fixed batch (`anychip eval --model DIR --batch-file FILE`,
//! `anychip train --model DIR --batch-file FILE ...`), printing one JSON line per result, so losses
//! can be compared number for number with another framework.

use crate::checkpoint;
use anychip_core::{cross_entropy, no_grad, Tensor};
use anychip_hf::Arch;
use anychip_nn::Transformer;
use anychip_optim::{AdamW, AdamWConfig, CosineSchedule, ParamGroup};
use anychip_port::Port;
use anyhow::{anyhow, bail, Result};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Load an HF directory or an anychip run/checkpoint directory.
pub fn load_model(dir: &Path, port: &Arc<dyn Port>) -> Result<(Transformer, Arch)> {
    if anychip_hf::is_hf_dir(dir) {
        let (arch, m) = anychip_hf::load(dir, port)?;
        refuse_non_finite(&m, dir)?;
        return Ok((m, arch));
    }
    let ck = checkpoint::open(dir)?;
    let model = Transformer::new(&ck.cfg.model, port, ck.cfg.seed)?;
    checkpoint::load_weights(&ck.dir, &model, None)?;
    let arch = Arch::for_family(&ck.cfg.model.family)?;
    Ok((model, arch))
}

/// Refuse a model whose weights hold NaN or infinities (anychip checkpoints are checked as
/// they load; Hugging Face ones here).
fn refuse_non_finite(model: &Transformer, dir: &Path) -> Result<()> {
    for p in model.params() {
        let bad = p.tensor.to_vec_f32()?.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            bail!("{}: weight '{}' holds {bad} NaN or infinite values; use another checkpoint", dir.display(), p.name);
        }
    }
    Ok(())
}

/// Read `tokens` [B, T+1] (any integer dtype) and split into inputs [B,T] and flat targets.
pub fn load_batch(file: &Path, port: &Arc<dyn Port>, vocab: usize, max_ctx: usize) -> Result<(Tensor, Tensor)> {
    let bytes = std::fs::read(file).map_err(|e| anyhow!("cannot read batch file {} ({e})", file.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{} is not a safetensors file ({e})", file.display()))?;
    let t = st.tensor("tokens").map_err(|_| anyhow!("{} has no tensor 'tokens' of shape [B, T+1]", file.display()))?;
    let d = t.data();
    let toks: Vec<i64> = match t.dtype() {
        Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
        Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
        Dtype::U32 => d.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
        other => bail!("{}: 'tokens' is {other:?}; store token ids as an integer tensor", file.display()),
    };
    split_batch(&toks, t.shape(), port, vocab, max_ctx).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// Split token ids `toks` of shape [B, T+1] (row-major) into inputs [B,T] and flat targets
/// [B*T], checking the shape, the context against `max_ctx` and that every id is inside the
/// vocabulary.
pub fn split_batch(
    toks: &[i64],
    shape: &[usize],
    port: &Arc<dyn Port>,
    vocab: usize,
    max_ctx: usize,
) -> Result<(Tensor, Tensor)> {
    if shape.len() != 2 || shape[0] == 0 || shape[1] < 2 || shape.iter().product::<usize>() != toks.len() {
        bail!("'tokens' has shape {shape:?}; want [B, T+1] with B >= 1 and T >= 1");
    }
    if shape[1] - 1 > max_ctx {
        bail!(
            "rows of {} tokens make a context of {}, longer than the model's maximum {max_ctx}; write rows of at most {} tokens",
            shape[1],
            shape[1] - 1,
            max_ctx + 1
        );
    }
    if let Some(bad) = toks.iter().find(|&&v| v < 0 || v as usize >= vocab) {
        bail!("token id {bad} is outside the model's vocabulary of {vocab}");
    }
    let (b, n) = (shape[0], shape[1]);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..b {
        x.extend(toks[r * n..r * n + n - 1].iter().map(|&v| v as i32));
        y.extend(toks[r * n + 1..(r + 1) * n].iter().map(|&v| v as i32));
    }
    Ok((Tensor::from_i32(port, &x, &[b, n - 1])?, Tensor::from_i32(port, &y, &[b * (n - 1)])?))
}

/// The mean next-token loss of `model` on inputs `x` [B,T] and flat targets `y` [B*T].
pub fn loss(model: &Transformer, x: &Tensor, y: &Tensor) -> Result<f32> {
    let _g = no_grad();
    Ok(cross_entropy(&model.forward(x)?, y)?.item()?)
}

/// `anychip eval`: the mean loss of the model on the batch.
pub fn eval(model_dir: &Path, batch: &Path, port: &Arc<dyn Port>) -> Result<f32> {
    let (model, _) = load_model(model_dir, port)?;
    let (x, y) = load_batch(batch, port, model.config().vocab_size, model.config().max_ctx)?;
    loss(&model, &x, &y)
}

/// Settings of a fixed-batch training run.
pub struct FixedBatchTrain {
    pub steps: u64,
    pub lr: f32,
    pub constant_lr: bool,
    pub adamw: AdamWConfig,
    /// What the linear layers and the LM head multiply in.
    pub precision: anychip_nn::Precision,
}

/// `anychip train --model DIR --batch-file FILE`: print `{"step": i, "loss": x}` per step (the loss
/// before that step's update); weight decay applies to every parameter, as torch.optim.AdamW
/// given `model.parameters()`. Writes the trained model in HF layout to `out` when given.
pub fn train(
    model_dir: &Path,
    batch: &Path,
    s: &FixedBatchTrain,
    port: &Arc<dyn Port>,
    out: Option<&Path>,
    w: &mut dyn Write,
) -> Result<Vec<f32>> {
    if let Some(o) = out {
        if o.join("model.safetensors").exists() {
            bail!("{} already holds a model; choose another --out", o.display());
        }
    }
    let (model, arch) = load_model(model_dir, port)?;
    let model = model.with_precision(s.precision);
    let (x, y) = load_batch(batch, port, model.config().vocab_size, model.config().max_ctx)?;
    let groups = model
        .params()
        .iter()
        .map(|p| ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: p.kind.trained() })
        .collect();
    let mut opt = AdamW::new(s.adamw, groups)?;
    let sched = if s.constant_lr {
        CosineSchedule::constant(s.lr)
    } else {
        CosineSchedule { max_lr: s.lr, min_lr: s.lr / 10.0, warmup: 0, total: s.steps }
    };
    let mut losses = Vec::new();
    for step in 0..s.steps {
        // The training objective: cross-entropy, plus the load-balancing term of a MoE model.
        let loss = model.loss(&x, &y)?;
        let l = loss.item()?;
        if !l.is_finite() {
            bail!("loss became {l} at step {step}; lower --lr");
        }
        writeln!(w, "{}", serde_json::json!({"step": step, "loss": l}))?;
        losses.push(l);
        let mut g = loss.backward()?;
        let grads: Vec<Tensor> = model
            .params()
            .iter()
            .map(|p| g.remove(&p.tensor).map_or_else(|| p.tensor.zeros_like(), Ok))
            .collect::<anychip_core::Result<_>>()?;
        opt.step(&grads, sched.lr(step))?;
    }
    if let Some(o) = out {
        anychip_hf::export(&model, arch, o)?;
    }
    Ok(losses)
}
