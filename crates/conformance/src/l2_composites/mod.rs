//! L2: every composite, forward AND backward, as the port runs it (fused kernel or default
//! decomposition) against the default decomposition on `ref`; a fused composite is also
//! checked against its own decomposition on the same port. f32 and bf16, odd shapes, GQA and
//! causal attention with T<S and T>S (queries with no visible key), ignored targets, -inf rows.

use crate::harness::{compare, data, error_row, supports};
use crate::report::{Level, Row};
use crate::tolerance::Tol;
use anychip_port::{Composite, DType, GeluKind, Port, Result, View};

pub(crate) struct Case {
    name: String,
    tol: f64,
    make: Box<dyn Fn(&dyn Port) -> Composite>,
}

fn up(p: &dyn Port, x: &[f32], shape: &[usize], dt: DType) -> View {
    let bytes: Vec<u8> = match dt {
        DType::BF16 => x.iter().flat_map(|&v| anychip_port::f32_to_bf16(v).to_le_bytes()).collect(),
        _ => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let b = p.alloc(bytes.len()).unwrap();
    p.write(&b, 0, &bytes).unwrap();
    View::contiguous(b, dt, shape)
}

fn ids(p: &dyn Port, x: &[i32]) -> View {
    let b = p.alloc(x.len() * 4).unwrap();
    p.write(&b, 0, &x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    View::contiguous(b, DType::I32, &[x.len()])
}

fn out(p: &dyn Port, shape: &[usize], dt: DType) -> View {
    let n: usize = shape.iter().product();
    let b = p.alloc(n * dt.size()).unwrap();
    p.write(&b, 0, &vec![0u8; n * dt.size()]).unwrap();
    View::contiguous(b, dt, shape)
}

fn down(p: &dyn Port, v: &View) -> Vec<f64> {
    let mut bytes = vec![0u8; v.numel() * v.dtype.size()];
    p.read(&v.buf, v.layout.offset * v.dtype.size(), &mut bytes).unwrap();
    match v.dtype {
        DType::BF16 => {
            bytes.chunks_exact(2).map(|c| anychip_port::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64).collect()
        }
        _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
    }
}

pub(crate) fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    let mut add = |name: String, tol: f64, make: Box<dyn Fn(&dyn Port) -> Composite>| v.push(Case { name, tol, make });
    for dt in [DType::F32, DType::BF16] {
        let tol = if dt == DType::F32 { 2e-5 } else { 2e-2 };
        for (r, d) in [(1, 1), (3, 17), (17, 783)] {
            let x = data(r * d, 1, 4.0);
            let dy = data(r * d, 2, 1.0);
            let (x2, dy2) = (x.clone(), dy.clone());
            add(
                format!("softmax fwd {dt} [{r},{d}]"),
                tol,
                Box::new(move |p| Composite::SoftmaxFwd { x: up(p, &x2, &[r, d], dt), y: out(p, &[r, d], dt) }),
            );
            let y = data(r * d, 3, 0.5).iter().map(|v| v.abs()).collect::<Vec<_>>();
            add(
                format!("softmax bwd {dt} [{r},{d}]"),
                tol,
                Box::new(move |p| Composite::SoftmaxBwd {
                    y: up(p, &y, &[r, d], dt),
                    dy: up(p, &dy2, &[r, d], dt),
                    dx: out(p, &[r, d], dt),
                }),
            );
            let x3 = x.clone();
            add(
                format!("log_softmax fwd {dt} [{r},{d}]"),
                tol,
                Box::new(move |p| Composite::LogSoftmaxFwd { x: up(p, &x3, &[r, d], dt), y: out(p, &[r, d], dt) }),
            );
            let (x4, w, b) = (x.clone(), data(d, 4, 1.0), data(d, 5, 1.0));
            let (x5, w5, dy5) = (x.clone(), w.clone(), dy.clone());
            add(
                format!("layer_norm fwd {dt} [{r},{d}]"),
                tol * 10.0,
                Box::new(move |p| Composite::LayerNormFwd {
                    x: up(p, &x4, &[r, d], dt),
                    weight: Some(up(p, &w, &[d], dt)),
                    bias: Some(up(p, &b, &[d], dt)),
                    eps: 1e-5,
                    y: out(p, &[r, d], dt),
                    mean: out(p, &[r], DType::F32),
                    rstd: out(p, &[r], DType::F32),
                }),
            );
            add(
                format!("rms_norm fwd+bwd {dt} [{r},{d}]"),
                tol * 10.0,
                Box::new(move |p| {
                    // rstd computed by the reference formula on the host so both sides get the same saved statistic.
                    let rstd: Vec<f32> = x5
                        .chunks(d)
                        .map(|row| 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + 1e-5).sqrt())
                        .collect();
                    Composite::RmsNormBwd {
                        x: up(p, &x5, &[r, d], dt),
                        weight: Some(up(p, &w5, &[d], dt)),
                        rstd: up(p, &rstd, &[r], DType::F32),
                        dy: up(p, &dy5, &[r, d], dt),
                        dx: out(p, &[r, d], dt),
                        dweight: Some(out(p, &[d], DType::F32)),
                    }
                }),
            );
            for kind in [GeluKind::Tanh, GeluKind::Erf] {
                let (xa, xb, dyb) = (x.clone(), x.clone(), dy.clone());
                add(
                    format!("gelu {kind:?} fwd {dt} [{r},{d}]"),
                    tol,
                    Box::new(move |p| Composite::GeluFwd { kind, x: up(p, &xa, &[r, d], dt), y: out(p, &[r, d], dt) }),
                );
                add(
                    format!("gelu {kind:?} bwd {dt} [{r},{d}]"),
                    tol,
                    Box::new(move |p| Composite::GeluBwd {
                        kind,
                        x: up(p, &xb, &[r, d], dt),
                        dy: up(p, &dyb, &[r, d], dt),
                        dx: out(p, &[r, d], dt),
                    }),
                );
            }
            let (xs, dys) = (x.clone(), dy.clone());
            add(
                format!("silu bwd {dt} [{r},{d}]"),
                tol,
                Box::new(move |p| Composite::SiluBwd {
                    x: up(p, &xs, &[r, d], dt),
                    dy: up(p, &dys, &[r, d], dt),
                    dx: out(p, &[r, d], dt),
                }),
            );
        }
        // A softmax row that is entirely -inf (a fully masked attention row).
        add(
            format!("softmax -inf row {dt}"),
            0.0,
            Box::new(move |p| Composite::SoftmaxFwd {
                x: up(p, &[f32::NEG_INFINITY; 5], &[1, 5], dt),
                y: out(p, &[1, 5], dt),
            }),
        );
        // Cross-entropy with an ignored target.
        let (n, vocab) = (5, 783);
        let logits = data(n * vocab, 6, 5.0);
        let t = [3i32, -1, 782, 0, 17];
        let l2 = logits.clone();
        add(
            format!("cross_entropy fwd {dt}"),
            tol,
            Box::new(move |p| Composite::CrossEntropyFwd {
                logits: up(p, &l2, &[n, vocab], dt),
                targets: ids(p, &t),
                loss: out(p, &[1], DType::F32),
                lse: out(p, &[n], DType::F32),
            }),
        );
        add(
            format!("cross_entropy bwd {dt}"),
            tol,
            Box::new(move |p| {
                let lse: Vec<f32> = logits
                    .chunks(vocab)
                    .map(|r| {
                        let m = r.iter().cloned().fold(f32::MIN, f32::max);
                        m + r.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
                    })
                    .collect();
                Composite::CrossEntropyBwd {
                    logits: up(p, &logits, &[n, vocab], dt),
                    targets: ids(p, &t),
                    lse: up(p, &lse, &[n], DType::F32),
                    dloss: up(p, &[0.7], &[1], DType::F32),
                    dlogits: out(p, &[n, vocab], dt),
                }
            }),
        );
        // Attention: MHA, GQA 2:1, T < S, and T > S (queries with no visible key).
        for (b, hq, hkv, t, s, d) in [(1, 2, 2, 17, 17, 8), (2, 4, 2, 3, 3, 16), (1, 2, 1, 5, 9, 4), (1, 1, 1, 4, 2, 4)]
        {
            let (q, k, vv, dout) = (
                data(b * hq * t * d, 7, 1.0),
                data(b * hkv * s * d, 8, 1.0),
                data(b * hkv * s * d, 9, 1.0),
                data(b * hq * t * d, 10, 1.0),
            );
            let (q2, k2, v2) = (q.clone(), k.clone(), vv.clone());
            let scale = 1.0 / (d as f32).sqrt();
            add(
                format!("attention fwd {dt} b{b} hq{hq} hkv{hkv} t{t} s{s}"),
                tol * 5.0,
                Box::new(move |p| Composite::AttentionFwd {
                    q: up(p, &q2, &[b, hq, t, d], dt),
                    k: up(p, &k2, &[b, hkv, s, d], dt),
                    v: up(p, &v2, &[b, hkv, s, d], dt),
                    scale,
                    causal: true,
                    out: out(p, &[b, hq, t, d], dt),
                    lse: out(p, &[b, hq, t], DType::F32),
                }),
            );
            add(
                format!("attention bwd {dt} b{b} hq{hq} hkv{hkv} t{t} s{s}"),
                tol * 10.0,
                Box::new(move |p| {
                    // Forward on this port first: the backward consumes its out and lse.
                    let (qv, kv, vv2) = (
                        up(p, &q, &[b, hq, t, d], dt),
                        up(p, &k, &[b, hkv, s, d], dt),
                        up(p, &vv, &[b, hkv, s, d], dt),
                    );
                    let (o, lse) = (out(p, &[b, hq, t, d], dt), out(p, &[b, hq, t], DType::F32));
                    anychip_decomp::dispatch(
                        p,
                        &Composite::AttentionFwd {
                            q: qv.clone(),
                            k: kv.clone(),
                            v: vv2.clone(),
                            scale,
                            causal: true,
                            out: o.clone(),
                            lse: lse.clone(),
                        },
                    )
                    .unwrap();
                    Composite::AttentionBwd {
                        q: qv,
                        k: kv,
                        v: vv2,
                        out: o,
                        lse,
                        dout: up(p, &dout, &[b, hq, t, d], dt),
                        scale,
                        causal: true,
                        dq: out(p, &[b, hq, t, d], dt),
                        dk: out(p, &[b, hkv, s, d], dt),
                        dv: out(p, &[b, hkv, s, d], dt),
                    }
                }),
            );
        }
        // Linear with bias, both directions; embedding with repeated ids; rope; AdamW; grad norm; dropout.
        let (x, w, bias, dy) = (data(17 * 33, 11, 1.0), data(9 * 33, 12, 1.0), data(9, 13, 1.0), data(17 * 9, 14, 1.0));
        let (x2, w2) = (x.clone(), w.clone());
        add(
            format!("linear fwd {dt}"),
            tol * 5.0,
            Box::new(move |p| Composite::LinearFwd {
                x: up(p, &x2, &[17, 33], dt),
                w: up(p, &w2, &[9, 33], dt),
                b: Some(up(p, &bias, &[9], dt)),
                y: out(p, &[17, 9], dt),
            }),
        );
        add(
            format!("linear bwd {dt}"),
            tol * 5.0,
            Box::new(move |p| Composite::LinearBwd {
                x: up(p, &x, &[17, 33], dt),
                w: up(p, &w, &[9, 33], dt),
                dy: up(p, &dy, &[17, 9], dt),
                dx: Some(out(p, &[17, 33], dt)),
                dw: Some(out(p, &[9, 33], dt)),
                db: Some(out(p, &[9], dt)),
            }),
        );
        let (table, dout) = (data(7 * 5, 15, 1.0), data(4 * 5, 16, 1.0));
        add(
            format!("embedding fwd {dt}"),
            0.0,
            Box::new(move |p| Composite::EmbeddingFwd {
                table: up(p, &table, &[7, 5], dt),
                ids: ids(p, &[6, 0, 6, 3]),
                out: out(p, &[4, 5], dt),
            }),
        );
        add(
            format!("embedding bwd {dt}"),
            tol,
            Box::new(move |p| Composite::EmbeddingBwd {
                ids: ids(p, &[6, 0, 6, 3]),
                dout: up(p, &dout, &[4, 5], dt),
                dtable: out(p, &[7, 5], dt),
            }),
        );
        let (xr, c, sn) = (data(2 * 3 * 17 * 8, 17, 1.0), data(17 * 4, 18, 1.0), data(17 * 4, 19, 1.0));
        let (xr2, c2, s2) = (xr.clone(), c.clone(), sn.clone());
        add(
            format!("rope fwd {dt}"),
            tol,
            Box::new(move |p| Composite::RopeFwd {
                x: up(p, &xr, &[2, 3, 17, 8], dt),
                cos: up(p, &c, &[17, 4], DType::F32),
                sin: up(p, &sn, &[17, 4], DType::F32),
                y: out(p, &[2, 3, 17, 8], dt),
            }),
        );
        add(
            format!("rope bwd {dt}"),
            tol,
            Box::new(move |p| Composite::RopeBwd {
                dy: up(p, &xr2, &[2, 3, 17, 8], dt),
                cos: up(p, &c2, &[17, 4], DType::F32),
                sin: up(p, &s2, &[17, 4], DType::F32),
                dx: out(p, &[2, 3, 17, 8], dt),
            }),
        );
        let (pp, g, m, vv) = (
            data(783, 20, 1.0),
            data(783, 21, 1.0),
            data(783, 22, 0.1),
            data(783, 23, 0.1).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        );
        add(
            format!("adamw {dt}"),
            tol,
            Box::new(move |p| Composite::AdamWStep {
                param: up(p, &pp, &[783], dt),
                grad: up(p, &g, &[783], dt),
                m: up(p, &m, &[783], DType::F32),
                v: up(p, &vv, &[783], DType::F32),
                grad_scale: Some(up(p, &[0.5], &[1], DType::F32)),
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                step: 3,
            }),
        );
        let (g1, g2) = (data(783, 24, 1.0), data(17, 25, 1.0));
        add(
            format!("grad_norm {dt}"),
            tol,
            Box::new(move |p| Composite::GradNorm {
                grads: vec![up(p, &g1, &[783], dt), up(p, &g2, &[17], dt)],
                out: out(p, &[1], DType::F32),
            }),
        );
        let xd = data(783, 26, 1.0);
        add(
            format!("dropout fwd {dt}"),
            tol,
            Box::new(move |p| Composite::DropoutFwd {
                x: up(p, &xd, &[783], dt),
                p: 0.3,
                seed: 5,
                offset: 11,
                y: out(p, &[783], dt),
                mask: out(p, &[783], dt),
            }),
        );
    }
    // Linear in mixed precision, as `linear_autocast` calls it: bf16 x, w and dy, f32 bias, y,
    // dx, dw and db. The products are exact in f32, so the f32 tolerance applies. Shapes span
    // several register tiles and an odd K on each of the three products.
    let (n, i, o) = (37, 67, 45);
    let (x, w, bias, dy) = (data(n * i, 41, 1.0), data(o * i, 42, 1.0), data(o, 43, 1.0), data(n * o, 44, 1.0));
    let (x2, w2) = (x.clone(), w.clone());
    add(
        "linear fwd bf16->f32".into(),
        1e-4,
        Box::new(move |p| Composite::LinearFwd {
            x: up(p, &x2, &[n, i], DType::BF16),
            w: up(p, &w2, &[o, i], DType::BF16),
            b: Some(up(p, &bias, &[o], DType::F32)),
            y: out(p, &[n, o], DType::F32),
        }),
    );
    add(
        "linear bwd bf16->f32".into(),
        1e-4,
        Box::new(move |p| Composite::LinearBwd {
            x: up(p, &x, &[n, i], DType::BF16),
            w: up(p, &w, &[o, i], DType::BF16),
            dy: up(p, &dy, &[n, o], DType::BF16),
            dx: Some(out(p, &[n, i], DType::F32)),
            dw: Some(out(p, &[o, i], DType::F32)),
            db: Some(out(p, &[o], DType::F32)),
        }),
    );
    v
}

fn outputs(p: &dyn Port, call: &Composite) -> Result<Vec<(String, DType, Vec<f64>)>> {
    call.outputs().into_iter().map(|(n, v)| Ok((n.to_string(), v.dtype, down(p, v)))).collect()
}

fn run_case(p: &dyn Port, case: &Case, fused_path: bool) -> Result<Vec<(String, DType, Vec<f64>)>> {
    let call = (case.make)(p);
    if fused_path {
        anychip_decomp::dispatch(p, &call)?;
    } else {
        anychip_decomp::run(p, &call)?;
    }
    outputs(p, &call)
}

pub fn run(p: &dyn Port, r: &dyn Port) -> Vec<Row> {
    let fused = p.capabilities().fused;
    let mut rows = Vec::new();
    for case in cases() {
        let dt = if case.name.contains("bf16") { DType::BF16 } else { DType::F32 };
        if !supports(p, dt) {
            continue;
        }
        let family = case.name.split_whitespace().next().unwrap_or("?").to_string();
        let tol = Tol { abs: case.tol, rel: case.tol };
        let want = match run_case(r, &case, false) {
            Ok(w) => w,
            Err(e) => {
                rows.push(error_row(
                    Level::L2,
                    &family,
                    dt,
                    &case.name,
                    &anychip_port::PortError::Invalid(format!("ref failed: {e}")),
                ));
                continue;
            }
        };
        let mut against = |label: &str,
                           got: Result<Vec<(String, DType, Vec<f64>)>>,
                           want: &[(String, DType, Vec<f64>)]| match got {
            Err(e) => rows.push(error_row(Level::L2, &family, dt, &format!("{} {label}", case.name), &e)),
            Ok(got) => {
                for ((name, _, g), (_, _, w)) in got.iter().zip(want) {
                    rows.push(compare(Level::L2, &family, dt, &format!("{} ({name}) {label}", case.name), g, w, tol));
                }
            }
        };
        against("vs ref", run_case(p, &case, true), &want);
        if fused.iter().any(|f| *f == family) {
            if let Ok(own) = run_case(p, &case, false) {
                against("fused vs own decomposition", run_case(p, &case, true), &own);
            }
        }
    }
    rows
}
