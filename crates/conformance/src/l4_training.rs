//! L4: training behaviour. A short run on a fixed stream of batches stays within a band of the
//! `ref` port's loss curve, and two identical runs give identical losses.

use crate::harness::{check_row, compare};
use crate::report::{Level, Row};
use crate::tolerance::Tol;
use anychip_core::Tensor;
use anychip_model_config::ModelConfig;
use anychip_nn::Transformer;
use anychip_optim::{AdamW, AdamWConfig, ParamGroup};
use anychip_port::{philox, DType, Port};
use std::sync::Arc;

const STEPS: usize = 15;

fn curve(port: &Arc<dyn Port>, cfg: &ModelConfig) -> anychip_core::Result<Vec<f64>> {
    let model = Transformer::new(cfg, port, 42)?;
    let groups = model
        .params()
        .iter()
        .map(|p| ParamGroup { name: p.name.clone(), param: p.tensor.clone(), decay: p.kind.decays() })
        .collect();
    let mut opt = AdamW::new(AdamWConfig::default(), groups)?;
    let (b, t) = (4, 16);
    let mut losses = Vec::new();
    for step in 0..STEPS {
        // A learnable stream: each row counts up from a random start (mod vocab).
        let toks: Vec<i32> = (0..b)
            .flat_map(|r| {
                let start = (philox::uniform(step as u64, r as u64) * 60.0) as i32;
                (0..=t as i32).map(move |i| (start + i) % 64)
            })
            .collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for r in 0..b {
            x.extend_from_slice(&toks[r * (t + 1)..r * (t + 1) + t]);
            y.extend_from_slice(&toks[r * (t + 1) + 1..(r + 1) * (t + 1)]);
        }
        let loss = model.loss(&Tensor::from_i32(port, &x, &[b, t])?, &Tensor::from_i32(port, &y, &[b, t])?)?;
        losses.push(loss.item()? as f64);
        let mut g = loss.backward()?;
        let gs = model
            .params()
            .iter()
            .map(|p| {
                g.remove(&p.tensor)
                    .ok_or_else(|| anychip_core::Error::Backward(format!("no gradient reached {}", p.name)))
            })
            .collect::<anychip_core::Result<Vec<Tensor>>>()?;
        opt.step(&gs, 3e-3)?;
    }
    Ok(losses)
}

pub fn run(port: &Arc<dyn Port>, reference: &Arc<dyn Port>) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut llama = ModelConfig::llama(64, 16, 2, 4, 2, 32, 64);
    llama.qk_norm = true;
    for (tag, cfg) in [("gpt2", ModelConfig::gpt2(64, 16, 2, 2, 32)), ("llama+qk_norm", llama)] {
        match (curve(port, &cfg), curve(port, &cfg), curve(reference, &cfg)) {
            (Ok(a), Ok(b), Ok(r)) => {
                let learned = a[STEPS - 1] < a[0] - 0.3;
                rows.push(compare(
                    Level::L4,
                    &format!("{tag} loss curve"),
                    DType::F32,
                    &format!("{STEPS} steps vs ref"),
                    &a,
                    &r,
                    Tol { abs: 2e-3, rel: 2e-3 },
                ));
                rows.push(compare(
                    Level::L4,
                    &format!("{tag} determinism"),
                    DType::F32,
                    "two identical runs",
                    &a,
                    &b,
                    Tol::EXACT,
                ));
                rows.push(check_row(
                    Level::L4,
                    &format!("{tag} learns"),
                    "loss drops by > 0.3",
                    learned,
                    format!("{:.3} -> {:.3}", a[0], a[STEPS - 1]),
                ));
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                rows.push(check_row(Level::L4, tag, "training run", false, e.to_string()))
            }
        }
    }
    rows
}
