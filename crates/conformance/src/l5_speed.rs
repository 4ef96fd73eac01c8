//! L5: throughput, reported and never failing: a matmul and a training step of a small model.

use crate::report::{Level, Row, Status};
use anychip_core::Tensor;
use anychip_model_config::ModelConfig;
use anychip_nn::Transformer;
use anychip_port::{DType, Layout, Port, View};
use std::sync::Arc;
use std::time::Instant;

fn info(op: &str, case: &str, note: String) -> Row {
    Row {
        level: Level::L5,
        op: op.into(),
        dtype: "f32".into(),
        case: case.into(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        tolerance: "-".into(),
        status: Status::Info,
        note,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(port: &Arc<dyn Port>) -> Vec<Row> {
    let mut rows = Vec::new();
    let n = 512;
    let mm = || -> anychip_port::Result<f64> {
        let mk = || -> anychip_port::Result<View> {
            let b = port.alloc(n * n * 4)?;
            port.write(&b, 0, &vec![0u8; n * n * 4])?;
            Ok(View { buf: b, dtype: DType::F32, layout: Layout::contiguous(&[1, n, n]) })
        };
        let (a, b, c) = (mk()?, mk()?, mk()?);
        let mut times = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            port.matmul(&a, &b, &c, 1.0, 0.0)?;
            port.synchronize()?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (n * n * n) as f64 / median(times) / 1e9)
    };
    rows.push(info(
        "matmul",
        "512x512x512",
        match mm() {
            Ok(g) => format!("{g:.1} GFLOP/s"),
            Err(e) => format!("unavailable: {e}"),
        },
    ));
    let cfg = ModelConfig::gpt2(256, 128, 4, 4, 256);
    let step = || -> anychip_core::Result<f64> {
        let model = Transformer::new(&cfg, port, 1)?;
        let (b, t) = (8, 128);
        let toks: Vec<i32> = (0..b * t).map(|i| (i * 7 % 256) as i32).collect();
        let x = Tensor::from_i32(port, &toks, &[b, t])?;
        let mut times = Vec::new();
        for _ in 0..4 {
            let s = Instant::now();
            let l = model.loss(&x, &x)?;
            let _g = l.backward()?;
            port.synchronize()?;
            times.push(s.elapsed().as_secs_f64());
        }
        let flops = cfg.train_flops_per_token(t) * (b * t) as f64 / median(times);
        Ok(flops / 1e9)
    };
    let peak = port.capabilities().peak_flops_f32;
    rows.push(info(
        "model step",
        "gpt2-tiny fwd+bwd, 8x128",
        match step() {
            Ok(g) => match peak {
                Some(p) => format!("{g:.1} GFLOP/s, MFU {:.1}%", 100.0 * g * 1e9 / p),
                None => format!("{g:.1} GFLOP/s"),
            },
            Err(e) => format!("unavailable: {e}"),
        },
    ));
    rows
}
