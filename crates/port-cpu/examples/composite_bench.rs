//! Milliseconds per fused composite at GPT-2-small training sizes (B=4, T=256, d=768).
//!
//! `cargo run --release -p anychip-port-cpu --example composite_bench -- [threads] [repeats] [tiny]`

use anychip_port::{Composite, DType, GeluKind, Port, View};
use std::time::Instant;

fn tensor(port: &dyn Port, shape: &[usize], dtype: DType) -> View {
    let n: usize = shape.iter().product();
    let buf = port.alloc(n * dtype.size()).expect("alloc");
    let v = View::contiguous(buf, dtype, shape);
    port.random(anychip_port::Distribution::Normal, n as u64, 0, &v).expect("random");
    v
}

fn ms(port: &dyn Port, repeats: usize, calls: &[Composite]) -> f64 {
    ms_of(repeats, || calls.iter().for_each(|c| assert_eq!(port.composite(c).unwrap(), anychip_port::Handled::Yes)))
}

/// Median milliseconds of `run` over `repeats` calls, after one untimed call.
fn ms_of(repeats: usize, run: impl Fn()) -> f64 {
    run();
    let mut t: Vec<f64> = (0..repeats)
        .map(|_| {
            let s = Instant::now();
            run();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|s| s.parse().ok());
    let repeats = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let p = anychip_port_cpu::new(threads);
    let f = DType::F32;
    // GPT-2 small's sizes, or with `tiny` as the third argument the tiny preset's attention.
    let tiny = args.get(3).map(String::as_str) == Some("tiny");
    let (b, h, t, dh, d, v) = if tiny { (16, 4, 128, 64, 256, 256) } else { (4, 12, 256, 64, 768, 50257) };
    let n = b * t;
    println!("{} threads, median of {repeats}", p.threads());

    let (q, k, vv, o, lse) = (
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t], f),
    );
    let (dq, dk, dv, dout) = (
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
        tensor(&p, &[b, h, t, dh], f),
    );
    let scale = 0.125;
    let fwd = Composite::AttentionFwd {
        q: q.clone(),
        k: k.clone(),
        v: vv.clone(),
        scale,
        causal: true,
        out: o.clone(),
        lse: lse.clone(),
    };
    let bwd = Composite::AttentionBwd { q, k, v: vv, out: o, lse, dout, scale, causal: true, dq, dk, dv };
    // Causal: half of the 4 T^2 Dh FLOPs (QK^T and PV) forward, 2.5x that backward.
    let flops = 2.0 * (b * h * t * t * dh) as f64;
    let (a, c) = (ms(&p, repeats, std::slice::from_ref(&fwd)), ms(&p, repeats, std::slice::from_ref(&bwd)));
    println!("attention fwd  [{b},{h},{t},{dh}] causal  {a:8.2} ms  {:6.1} GFLOP/s", flops / a / 1e6);
    println!("attention bwd                         {c:8.2} ms  {:6.1} GFLOP/s", 2.5 * flops / c / 1e6);

    let (logits, lse, loss, dl) =
        (tensor(&p, &[n, v], f), tensor(&p, &[n], f), tensor(&p, &[1], f), tensor(&p, &[n, v], f));
    let tb = p.alloc(n * 4).unwrap();
    let ids: Vec<u8> = (0..n).flat_map(|i| ((i * 7919 % v) as i32).to_le_bytes()).collect();
    p.write(&tb, 0, &ids).unwrap();
    let targets = View::contiguous(tb, DType::I32, &[n]);
    let dloss = tensor(&p, &[1], f);
    let a = ms(
        &p,
        repeats,
        &[Composite::CrossEntropyFwd { logits: logits.clone(), targets: targets.clone(), loss, lse: lse.clone() }],
    );
    let c = ms(&p, repeats, &[Composite::CrossEntropyBwd { logits, targets, lse, dloss, dlogits: dl }]);
    let gb = (n * v * 4) as f64 / 1e6;
    println!("cross_entropy fwd [1024,50257]        {a:8.2} ms  {:6.1} GB/s read", gb / a);
    println!("cross_entropy bwd                     {c:8.2} ms  {:6.1} GB/s read+write", 2.0 * gb / c);

    let (x, w, bb, y, mean, rstd) = (
        tensor(&p, &[n, d], f),
        tensor(&p, &[d], f),
        tensor(&p, &[d], f),
        tensor(&p, &[n, d], f),
        tensor(&p, &[n], f),
        tensor(&p, &[n], f),
    );
    let (dy, dx, dw, db) = (tensor(&p, &[n, d], f), tensor(&p, &[n, d], f), tensor(&p, &[d], f), tensor(&p, &[d], f));
    let a = ms(
        &p,
        repeats,
        &[Composite::LayerNormFwd {
            x: x.clone(),
            weight: Some(w.clone()),
            bias: Some(bb),
            eps: 1e-5,
            y,
            mean: mean.clone(),
            rstd: rstd.clone(),
        }],
    );
    let c = ms(
        &p,
        repeats,
        &[Composite::LayerNormBwd { x, weight: Some(w), mean, rstd, dy, dx, dweight: Some(dw), dbias: Some(db) }],
    );
    println!("layer_norm fwd / bwd [1024,768]       {a:8.3} / {c:.3} ms");

    let (x, y, dy, dx) = (
        tensor(&p, &[n, 4 * d], f),
        tensor(&p, &[n, 4 * d], f),
        tensor(&p, &[n, 4 * d], f),
        tensor(&p, &[n, 4 * d], f),
    );
    let a = ms(&p, repeats, &[Composite::GeluFwd { kind: GeluKind::Tanh, x: x.clone(), y }]);
    let c = ms(&p, repeats, &[Composite::GeluBwd { kind: GeluKind::Tanh, x, dy, dx }]);
    println!("gelu tanh fwd / bwd [{n},{}]       {a:8.3} / {c:.3} ms", 4 * d);
    let db = tensor(&p, &[1, 4 * d], f);
    let dy2 = tensor(&p, &[n, 4 * d], f);
    let a = ms_of(repeats, || p.reduce(anychip_port::ReduceOp::Sum, &dy2, &db).unwrap());
    println!("bias grad: sum of [{n},{}] over rows {a:8.3} ms  {:6.1} GB/s", 4 * d, (n * 4 * d * 4) as f64 / a / 1e6);

    let np = 10_000_000;
    let (pa, g, m, vv) = (tensor(&p, &[np], f), tensor(&p, &[np], f), tensor(&p, &[np], f), tensor(&p, &[np], f));
    let call = Composite::AdamWStep {
        param: pa,
        grad: g,
        m,
        v: vv,
        grad_scale: None,
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 3,
    };
    let a = ms(&p, repeats, &[call]);
    println!("adamw 10M params                      {a:8.2} ms  {:6.1} GB/s", (np * 4 * 7) as f64 / a / 1e6);
}
