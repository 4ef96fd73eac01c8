//! L3: whole-model goldens written by PyTorch (tools/golden/make_l3.py): a tiny GPT-2 and a
//! tiny Llama with fixed weights and a fixed batch. Checks logits, loss, every named
//! parameter's gradient, and the losses of 10 AdamW steps.

use crate::harness::{check_row, compare};
use crate::report::{Level, Row};
use crate::tolerance::Tol;
use anychip_core::{cross_entropy, Tensor};
use anychip_model_config::ModelConfig;
use anychip_nn::Transformer;
use anychip_optim::{AdamW, AdamWConfig, ParamGroup};
use anychip_port::{DType, Port};
use safetensors::SafeTensors;
use std::sync::Arc;

const GPT2: &[u8] = include_bytes!("../../../tools/golden/out/l3-gpt2.safetensors");
const LLAMA: &[u8] = include_bytes!("../../../tools/golden/out/l3-llama.safetensors");

fn f32s(st: &SafeTensors, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let t = st.tensor(name).map_err(|e| format!("golden has no {name}: {e}"))?;
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((v, t.shape().to_vec()))
}

/// The error of an engine call, as the case reports it.
fn e(x: anychip_core::Error) -> String {
    x.to_string()
}

fn as64(v: Vec<f32>) -> Vec<f64> {
    v.into_iter().map(|x| x as f64).collect()
}

fn model_case(port: &Arc<dyn Port>, tag: &str, cfg: ModelConfig, bytes: &[u8]) -> Result<Vec<Row>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|x| x.to_string())?;
    let model = golden_model(port, &cfg, &st)?;
    let (xi, yi) = golden_batch(port, &st)?;
    let mut rows = forward_rows(&model, tag, &st, &xi, &yi)?;
    rows.push(adamw_row(&model, tag, &st, &xi, &yi)?);
    Ok(rows)
}

/// The model with every parameter set from the golden's `param.*` tensors.
fn golden_model(port: &Arc<dyn Port>, cfg: &ModelConfig, st: &SafeTensors) -> Result<Transformer, String> {
    let model = Transformer::new(cfg, port, 0).map_err(e)?;
    for p in model.params() {
        let (v, shape) = f32s(st, &format!("param.{}", p.name))?;
        if shape != p.tensor.shape() {
            return Err(format!("{}: golden shape {shape:?} vs model {:?}", p.name, p.tensor.shape()));
        }
        p.tensor.assign(&Tensor::from_f32(port, &v, &shape, DType::F32).map_err(e)?).map_err(e)?;
    }
    Ok(model)
}

/// The golden's `tokens [B, T+1]` as inputs `[B, T]` and next-token targets `[B T]`.
fn golden_batch(port: &Arc<dyn Port>, st: &SafeTensors) -> Result<(Tensor, Tensor), String> {
    let tok = st.tensor("tokens").map_err(|x| x.to_string())?;
    let toks: Vec<i32> = tok.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let (b, t1) = (tok.shape()[0], tok.shape()[1]);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..b {
        x.extend_from_slice(&toks[r * t1..r * t1 + t1 - 1]);
        y.extend_from_slice(&toks[r * t1 + 1..(r + 1) * t1]);
    }
    let xi = Tensor::from_i32(port, &x, &[b, t1 - 1]).map_err(e)?;
    let yi = Tensor::from_i32(port, &y, &[b * (t1 - 1)]).map_err(e)?;
    Ok((xi, yi))
}

/// Logits, loss and every parameter's gradient against the golden's.
fn forward_rows(
    model: &Transformer,
    tag: &str,
    st: &SafeTensors,
    xi: &Tensor,
    yi: &Tensor,
) -> Result<Vec<Row>, String> {
    let tol = Tol { abs: 1e-4, rel: 1e-4 };
    let logits = model.forward(xi).map_err(e)?;
    let loss = cross_entropy(&logits, yi).map_err(e)?;
    let mut rows = Vec::new();
    let got = as64(logits.to_vec_f32().map_err(e)?);
    rows.push(compare(
        Level::L3,
        &format!("{tag} logits"),
        DType::F32,
        "vs PyTorch",
        &got,
        &as64(f32s(st, "logits")?.0),
        tol,
    ));
    let got = as64(loss.to_vec_f32().map_err(e)?);
    rows.push(compare(
        Level::L3,
        &format!("{tag} loss"),
        DType::F32,
        "vs PyTorch",
        &got,
        &as64(f32s(st, "loss")?.0),
        tol,
    ));
    let grads = loss.backward().map_err(e)?;
    for p in model.params() {
        let g = grads.get(&p.tensor).ok_or(format!("no gradient reached {}", p.name))?;
        let got = as64(g.to_vec_f32().map_err(e)?);
        let want = as64(f32s(st, &format!("grad.{}", p.name))?.0);
        rows.push(compare(
            Level::L3,
            &format!("{tag} grad"),
            DType::F32,
            &p.name,
            &got,
            &want,
            Tol { abs: 2e-5, rel: 1e-3 },
        ));
    }
    Ok(rows)
}

/// 10 AdamW steps, as the twin: lr 1e-2, betas (0.9, 0.95), decay 0.1 on matrices, clip 1.0;
/// the losses against the golden's.
fn adamw_row(model: &Transformer, tag: &str, st: &SafeTensors, xi: &Tensor, yi: &Tensor) -> Result<Row, String> {
    let groups = model
        .params()
        .iter()
        .map(|p| ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: p.kind.decays() })
        .collect();
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 };
    let mut opt = AdamW::new(cfg, groups).map_err(e)?;
    let mut losses = Vec::new();
    for _ in 0..10 {
        let l = cross_entropy(&model.forward(xi).map_err(e)?, yi).map_err(e)?;
        losses.push(l.item().map_err(e)? as f64);
        let mut g = l.backward().map_err(e)?;
        let gs: Vec<Tensor> =
            model.params().iter().map(|p| g.remove(&p.tensor).ok_or("missing grad")).collect::<Result<_, _>>()?;
        opt.step(&gs, 1e-2).map_err(e)?;
    }
    let want = as64(f32s(st, "losses")?.0);
    Ok(compare(
        Level::L3,
        &format!("{tag} 10 AdamW steps"),
        DType::F32,
        "losses vs PyTorch",
        &losses,
        &want,
        Tol { abs: 1e-4, rel: 1e-4 },
    ))
}

pub fn run(port: &Arc<dyn Port>) -> Vec<Row> {
    let gpt2 = ModelConfig::gpt2(64, 16, 2, 2, 32);
    let llama = ModelConfig::llama(64, 16, 2, 4, 2, 32, 64);
    let mut rows = Vec::new();
    for (tag, cfg, bytes) in [("gpt2", gpt2, GPT2), ("llama", llama, LLAMA)] {
        match model_case(port, tag, cfg, bytes) {
            Ok(r) => rows.extend(r),
            Err(msg) => rows.push(check_row(Level::L3, tag, "model golden", false, msg)),
        }
    }
    rows
}
