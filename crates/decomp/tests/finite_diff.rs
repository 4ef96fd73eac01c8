//! Every composite's default decomposition, run on the `ref` port, against an independent
//! plain-Rust f64 forward (values) and f64 central finite differences of that forward
//! (analytic backward). The objective is L = sum(w * y) with a random w, so dy = w.

use anychip_decomp::run;
use anychip_port::{Composite, DType, GeluKind, Port, View};

const EPS: f64 = 1e-4;

fn port() -> anychip_port_ref::RefPort {
    anychip_port_ref::new()
}

fn rnd(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    (0..n).map(|i| (anychip_port::philox::uniform(seed, i as u64) as f64 * 2.0 - 1.0) * scale).collect()
}

fn up(p: &dyn Port, x: &[f64], shape: &[usize]) -> View {
    let b = p.alloc(x.len() * 4).unwrap();
    let bytes: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
    p.write(&b, 0, &bytes).unwrap();
    View::contiguous(b, DType::F32, shape)
}

fn up_bf16(p: &dyn Port, x: &[f64], shape: &[usize]) -> View {
    let b = p.alloc(x.len() * 2).unwrap();
    let bytes: Vec<u8> = x.iter().flat_map(|&v| anychip_port::f32_to_bf16(v as f32).to_le_bytes()).collect();
    p.write(&b, 0, &bytes).unwrap();
    View::contiguous(b, DType::BF16, shape)
}

fn ids(p: &dyn Port, x: &[i32]) -> View {
    let b = p.alloc(x.len() * 4).unwrap();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    p.write(&b, 0, &bytes).unwrap();
    View::contiguous(b, DType::I32, &[x.len()])
}

fn new(p: &dyn Port, shape: &[usize]) -> View {
    let n: usize = shape.iter().product();
    View::contiguous(p.alloc(n * 4).unwrap(), DType::F32, shape)
}

fn down(p: &dyn Port, v: &View) -> Vec<f64> {
    let n = v.numel();
    let mut bytes = vec![0u8; n * v.dtype.size()];
    p.read(&v.buf, 0, &mut bytes).unwrap();
    match v.dtype {
        DType::BF16 => {
            bytes.chunks_exact(2).map(|c| anychip_port::bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64).collect()
        }
        _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
    }
}

fn close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
        assert!(ok, "{name}[{i}]: got {g}, want {w} (tol {tol})");
    }
}

/// Central differences of sum(w * f(inputs)) with respect to input `k`.
fn fd(f: &dyn Fn(&[Vec<f64>]) -> Vec<f64>, inputs: &[Vec<f64>], w: &[f64], k: usize) -> Vec<f64> {
    let obj = |xs: &[Vec<f64>]| f(xs).iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    (0..inputs[k].len())
        .map(|j| {
            let mut a = inputs.to_vec();
            a[k][j] += EPS;
            let mut b = inputs.to_vec();
            b[k][j] -= EPS;
            (obj(&a) - obj(&b)) / (2.0 * EPS)
        })
        .collect()
}

// ---------- f64 host forwards (independent of the decomposition) ----------

fn h_softmax(x: &[f64], d: usize, log: bool) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                return vec![if log { f64::NEG_INFINITY } else { 0.0 }; d];
            }
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(|v| if log { v - m - s.ln() } else { (v - m).exp() / s }).collect::<Vec<_>>()
        })
        .collect()
}

fn h_layer_norm(x: &[f64], w: &[f64], b: &[f64], d: usize, rms: bool) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|r| {
            let mean = if rms { 0.0 } else { r.iter().sum::<f64>() / d as f64 };
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            r.iter()
                .enumerate()
                .map(|(i, v)| (v - mean) * rstd * w[i] + if rms { 0.0 } else { b[i] })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn h_gelu(x: f64, kind: GeluKind) -> f64 {
    match kind {
        GeluKind::Tanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        GeluKind::Erf => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
    }
}

/// q [B,Hq,T,D], k/v [B,Hkv,S,D]; causal with offset S-T.
#[allow(clippy::too_many_arguments)]
fn h_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    b: usize,
    hq: usize,
    hkv: usize,
    t: usize,
    s: usize,
    d: usize,
) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; b * hq * t * d];
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / (hq / hkv);
            for ti in 0..t {
                let qrow = &q[((bi * hq + h) * t + ti) * d..][..d];
                let vis: Vec<usize> = (0..s).filter(|&si| si as i64 <= ti as i64 + s as i64 - t as i64).collect();
                if vis.is_empty() {
                    continue;
                }
                let sc: Vec<f64> = vis
                    .iter()
                    .map(|&si| {
                        let krow = &k[((bi * hkv + kh) * s + si) * d..][..d];
                        qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f64>() * scale
                    })
                    .collect();
                let p = h_softmax(&sc, sc.len(), false);
                for (j, &si) in vis.iter().enumerate() {
                    let vrow = &v[((bi * hkv + kh) * s + si) * d..][..d];
                    for c in 0..d {
                        out[((bi * hq + h) * t + ti) * d + c] += p[j] * vrow[c];
                    }
                }
            }
        }
    }
    out
}

// ---------- tests ----------

#[test]
fn softmax_and_log_softmax() {
    let p = port();
    for (log, d, rows) in [(false, 17, 3), (true, 17, 3), (false, 1, 2), (true, 5, 1)] {
        let x = rnd(rows * d, 1, 3.0);
        let w = rnd(rows * d, 2, 1.0);
        let xv = up(&p, &x, &[rows, d]);
        let y = new(&p, &[rows, d]);
        let call = if log {
            Composite::LogSoftmaxFwd { x: xv, y: y.clone() }
        } else {
            Composite::SoftmaxFwd { x: xv, y: y.clone() }
        };
        run(&p, &call).unwrap();
        close("softmax fwd", &down(&p, &y), &h_softmax(&x, d, log), 1e-5);
        let dx = new(&p, &[rows, d]);
        let dy = up(&p, &w, &[rows, d]);
        let call = if log {
            Composite::LogSoftmaxBwd { y: y.clone(), dy, dx: dx.clone() }
        } else {
            Composite::SoftmaxBwd { y: y.clone(), dy, dx: dx.clone() }
        };
        run(&p, &call).unwrap();
        let f = |xs: &[Vec<f64>]| h_softmax(&xs[0], d, log);
        close("softmax bwd", &down(&p, &dx), &fd(&f, &[x], &w, 0), 1e-3);
    }
    // A row that is entirely -inf: softmax gives zeros, log-softmax -inf, never NaN.
    let x = vec![f64::NEG_INFINITY; 4];
    for log in [false, true] {
        let y = new(&p, &[1, 4]);
        let xv = up(&p, &x, &[1, 4]);
        let call = if log {
            Composite::LogSoftmaxFwd { x: xv, y: y.clone() }
        } else {
            Composite::SoftmaxFwd { x: xv, y: y.clone() }
        };
        run(&p, &call).unwrap();
        close("masked row", &down(&p, &y), &h_softmax(&x, 4, log), 0.0);
    }
}

#[test]
fn layer_norm_and_rms_norm() {
    let p = port();
    for rms in [false, true] {
        let (n, d) = (3, 17);
        let (x, wt, bs, w) = (rnd(n * d, 3, 2.0), rnd(d, 4, 1.0), rnd(d, 5, 1.0), rnd(n * d, 6, 1.0));
        let (xv, wv, bv) = (up(&p, &x, &[n, d]), up(&p, &wt, &[d]), up(&p, &bs, &[d]));
        let (y, mean, rstd) = (new(&p, &[n, d]), new(&p, &[n]), new(&p, &[n]));
        let fwd = if rms {
            Composite::RmsNormFwd {
                x: xv.clone(),
                weight: Some(wv.clone()),
                eps: 1e-5,
                y: y.clone(),
                rstd: rstd.clone(),
            }
        } else {
            Composite::LayerNormFwd {
                x: xv.clone(),
                weight: Some(wv.clone()),
                bias: Some(bv),
                eps: 1e-5,
                y: y.clone(),
                mean: mean.clone(),
                rstd: rstd.clone(),
            }
        };
        run(&p, &fwd).unwrap();
        close("norm fwd", &down(&p, &y), &h_layer_norm(&x, &wt, &bs, d, rms), 1e-5);
        let (dx, dw, db) = (new(&p, &[n, d]), new(&p, &[d]), new(&p, &[d]));
        let dy = up(&p, &w, &[n, d]);
        let bwd = if rms {
            Composite::RmsNormBwd { x: xv, weight: Some(wv), rstd, dy, dx: dx.clone(), dweight: Some(dw.clone()) }
        } else {
            Composite::LayerNormBwd {
                x: xv,
                weight: Some(wv),
                mean,
                rstd,
                dy,
                dx: dx.clone(),
                dweight: Some(dw.clone()),
                dbias: Some(db.clone()),
            }
        };
        run(&p, &bwd).unwrap();
        let f = |xs: &[Vec<f64>]| h_layer_norm(&xs[0], &xs[1], &xs[2], d, rms);
        let ins = [x, wt, bs];
        close("norm dx", &down(&p, &dx), &fd(&f, &ins, &w, 0), 2e-3);
        close("norm dw", &down(&p, &dw), &fd(&f, &ins, &w, 1), 2e-3);
        if !rms {
            close("norm db", &down(&p, &db), &fd(&f, &ins, &w, 2), 2e-3);
        }
    }
}

#[test]
fn gelu_both_kinds_and_silu() {
    let p = port();
    let n = 17;
    let (x, w) = (rnd(n, 7, 4.0), rnd(n, 8, 1.0));
    for kind in [Some(GeluKind::Tanh), Some(GeluKind::Erf), None] {
        let (xv, y, dx, dy) = (up(&p, &x, &[n]), new(&p, &[n]), new(&p, &[n]), up(&p, &w, &[n]));
        let h = move |v: f64| match kind {
            Some(k) => h_gelu(v, k),
            None => v / (1.0 + (-v).exp()),
        };
        match kind {
            Some(kind) => {
                run(&p, &Composite::GeluFwd { kind, x: xv.clone(), y: y.clone() }).unwrap();
                run(&p, &Composite::GeluBwd { kind, x: xv, dy, dx: dx.clone() }).unwrap();
            }
            None => {
                run(&p, &Composite::SiluFwd { x: xv.clone(), y: y.clone() }).unwrap();
                run(&p, &Composite::SiluBwd { x: xv, dy, dx: dx.clone() }).unwrap();
            }
        }
        let want: Vec<f64> = x.iter().map(|&v| h(v)).collect();
        close("act fwd", &down(&p, &y), &want, 1e-5);
        let f = |xs: &[Vec<f64>]| xs[0].iter().map(|&v| h(v)).collect::<Vec<_>>();
        close("act bwd", &down(&p, &dx), &fd(&f, std::slice::from_ref(&x), &w, 0), 1e-3);
    }
    // bf16 storage: same math, rounded once on store.
    let (xv, y) = (up_bf16(&p, &x, &[n]), View::contiguous(p.alloc(n * 2).unwrap(), DType::BF16, &[n]));
    run(&p, &Composite::GeluFwd { kind: GeluKind::Tanh, x: xv, y: y.clone() }).unwrap();
    let xb: Vec<f64> =
        x.iter().map(|&v| anychip_port::bf16_to_f32(anychip_port::f32_to_bf16(v as f32)) as f64).collect();
    let want: Vec<f64> = xb.iter().map(|&v| h_gelu(v, GeluKind::Tanh)).collect();
    close("gelu bf16", &down(&p, &y), &want, 1e-2);
}

#[test]
fn swiglu_over_the_two_halves() {
    let p = port();
    let (r, f) = (3, 5);
    let (x, w) = (rnd(r * 2 * f, 11, 4.0), rnd(r * f, 12, 1.0));
    let (xv, y, dx, dy) = (up(&p, &x, &[r, 2 * f]), new(&p, &[r, f]), new(&p, &[r, 2 * f]), up(&p, &w, &[r, f]));
    run(&p, &Composite::SwigluFwd { x: xv.clone(), y: y.clone() }).unwrap();
    run(&p, &Composite::SwigluBwd { x: xv, dy, dx: dx.clone() }).unwrap();
    let h = |xs: &[Vec<f64>]| {
        let x = &xs[0];
        (0..r * f)
            .map(|i| (i / f, i % f))
            .map(|(row, j)| {
                let (g, u) = (x[row * 2 * f + j], x[row * 2 * f + f + j]);
                g / (1.0 + (-g).exp()) * u
            })
            .collect::<Vec<_>>()
    };
    close("swiglu fwd", &down(&p, &y), &h(std::slice::from_ref(&x)), 1e-5);
    close("swiglu bwd", &down(&p, &dx), &fd(&h, std::slice::from_ref(&x), &w, 0), 1e-3);
}

#[test]
fn moe_combine_sums_each_tokens_weighted_rows() {
    let p = port();
    let (s, d, n) = (7, 5, 4);
    let tok = [2i32, 0, 2, 1, 0, 3, 2]; // token 2 takes three rows, token 1 one
    let (y, w, g) = (rnd(s * d, 13, 2.0), rnd(s, 14, 1.0), rnd(n * d, 15, 1.0));
    let (yv, wv, tv) = (up(&p, &y, &[s, d]), up(&p, &w, &[s, 1]), ids(&p, &tok));
    let (out, dy, dw) = (new(&p, &[n, d]), new(&p, &[s, d]), new(&p, &[s, 1]));
    run(&p, &Composite::MoeCombineFwd { y: yv.clone(), w: wv.clone(), tok: tv.clone(), out: out.clone() }).unwrap();
    let dout = up(&p, &g, &[n, d]);
    run(&p, &Composite::MoeCombineBwd { y: yv, w: wv, tok: tv, dout, dy: Some(dy.clone()), dw: Some(dw.clone()) })
        .unwrap();
    let h = |xs: &[Vec<f64>]| {
        let mut o = vec![0.0; n * d];
        for (r, &t) in tok.iter().enumerate() {
            (0..d).for_each(|j| o[t as usize * d + j] += xs[1][r] * xs[0][r * d + j]);
        }
        o
    };
    let inputs = [y, w];
    close("moe_combine fwd", &down(&p, &out), &h(&inputs), 1e-5);
    close("moe_combine bwd dy", &down(&p, &dy), &fd(&h, &inputs, &g, 0), 1e-3);
    close("moe_combine bwd dw", &down(&p, &dw), &fd(&h, &inputs, &g, 1), 1e-3);
}

#[test]
fn moe_router_is_a_softmax_of_the_product() {
    let p = port();
    let (n, d, e) = (6, 5, 4);
    let (x, w, g) = (rnd(n * d, 16, 1.0), rnd(e * d, 17, 1.0), rnd(n * e, 18, 1.0));
    let (xv, wv, probs) = (up(&p, &x, &[n, d]), up(&p, &w, &[e, d]), new(&p, &[n, e]));
    run(&p, &Composite::MoeRouterFwd { x: xv.clone(), w: wv.clone(), probs: probs.clone() }).unwrap();
    let h = |xs: &[Vec<f64>]| {
        let z: Vec<f64> =
            (0..n * e).map(|i| (0..d).map(|c| xs[0][i / e * d + c] * xs[1][i % e * d + c]).sum()).collect();
        h_softmax(&z, e, false)
    };
    let inputs = [x, w];
    close("moe_router fwd", &down(&p, &probs), &h(&inputs), 1e-5);
    let (dx, dw, dw_only) = (new(&p, &[n, d]), new(&p, &[e, d]), new(&p, &[e, d]));
    let dprobs = up(&p, &g, &[n, e]);
    let bwd = |dx: Option<View>, dw: View| Composite::MoeRouterBwd {
        x: xv.clone(),
        w: wv.clone(),
        probs: probs.clone(),
        dprobs: dprobs.clone(),
        dx,
        dw: Some(dw),
    };
    run(&p, &bwd(Some(dx.clone()), dw.clone())).unwrap();
    run(&p, &bwd(None, dw_only.clone())).unwrap(); // the load-balancing loss's call: dw alone
    close("moe_router bwd dx", &down(&p, &dx), &fd(&h, &inputs, &g, 0), 1e-3);
    close("moe_router bwd dw", &down(&p, &dw), &fd(&h, &inputs, &g, 1), 1e-3);
    close("moe_router bwd dw alone", &down(&p, &dw_only), &down(&p, &dw), 0.0);
}

#[test]
fn grouped_linear_is_each_groups_product() {
    let p = port();
    // Three groups of 2, 0 and 3 rows (the empty one's weight gradient must come back zero).
    let (s, inp, out, offsets) = (5, 4, 3, vec![0, 2, 2, 5]);
    let e = offsets.len() - 1;
    let (x, g) = (rnd(s * inp, 19, 1.0), rnd(s * out, 20, 1.0));
    let ws: Vec<Vec<f64>> = (0..e).map(|i| rnd(out * inp, 21 + i as u64, 1.0)).collect();
    let (xv, y) = (up(&p, &x, &[s, inp]), new(&p, &[s, out]));
    let wvs: Vec<View> = ws.iter().map(|w| up(&p, w, &[out, inp])).collect();
    let fwd = Composite::GroupedLinearFwd { x: xv.clone(), ws: wvs.clone(), offsets: offsets.clone(), y: y.clone() };
    run(&p, &fwd).unwrap();
    // inputs: x, then each group's weight.
    let h = |xs: &[Vec<f64>]| {
        (0..s * out)
            .map(|i| {
                let (r, o) = (i / out, i % out);
                let grp = (0..e).find(|&k| offsets[k] <= r && r < offsets[k + 1]).unwrap();
                (0..inp).map(|c| xs[0][r * inp + c] * xs[1 + grp][o * inp + c]).sum()
            })
            .collect::<Vec<f64>>()
    };
    let inputs: Vec<Vec<f64>> = std::iter::once(x).chain(ws).collect();
    close("grouped_linear fwd", &down(&p, &y), &h(&inputs), 1e-5);
    let dx = new(&p, &[s, inp]);
    let dws: Vec<View> = (0..e).map(|_| up(&p, &vec![7.0; out * inp], &[out, inp])).collect();
    let dy = up(&p, &g, &[s, out]);
    let bwd = Composite::GroupedLinearBwd {
        x: xv,
        ws: wvs,
        dy,
        offsets: offsets.clone(),
        dx: Some(dx.clone()),
        dws: dws.iter().cloned().map(Some).collect(),
    };
    run(&p, &bwd).unwrap();
    close("grouped_linear bwd dx", &down(&p, &dx), &fd(&h, &inputs, &g, 0), 1e-3);
    for (i, dw) in dws.iter().enumerate() {
        close(&format!("grouped_linear bwd dw {i}"), &down(&p, dw), &fd(&h, &inputs, &g, 1 + i), 1e-3);
    }
}

#[test]
fn cross_entropy_with_ignored_targets() {
    let p = port();
    let (n, v) = (4, 17);
    let x = rnd(n * v, 9, 3.0);
    let t = [3i32, -1, 16, 0];
    let host = |xs: &[Vec<f64>]| {
        let ls = h_softmax(&xs[0], v, true);
        let (mut s, mut c) = (0.0, 0.0);
        for (r, &ti) in t.iter().enumerate() {
            if ti >= 0 {
                s -= ls[r * v + ti as usize];
                c += 1.0;
            }
        }
        vec![s / c]
    };
    let (loss, lse) = (new(&p, &[1]), new(&p, &[n]));
    let (xv, tv) = (up(&p, &x, &[n, v]), ids(&p, &t));
    run(
        &p,
        &Composite::CrossEntropyFwd { logits: xv.clone(), targets: tv.clone(), loss: loss.clone(), lse: lse.clone() },
    )
    .unwrap();
    close("ce loss", &down(&p, &loss), &host(std::slice::from_ref(&x)), 1e-5);
    let dl = new(&p, &[n, v]);
    run(
        &p,
        &Composite::CrossEntropyBwd { logits: xv, targets: tv, lse, dloss: up(&p, &[1.5], &[1]), dlogits: dl.clone() },
    )
    .unwrap();
    close("ce bwd", &down(&p, &dl), &fd(&host, &[x], &[1.5], 0), 1e-3);
    // Nothing counted: loss 0, not NaN.
    let (loss, lse) = (new(&p, &[1]), new(&p, &[1]));
    run(
        &p,
        &Composite::CrossEntropyFwd {
            logits: up(&p, &rnd(v, 1, 1.0), &[1, v]),
            targets: ids(&p, &[-1]),
            loss: loss.clone(),
            lse,
        },
    )
    .unwrap();
    assert_eq!(down(&p, &loss), vec![0.0]);
}

#[test]
fn attention_gqa_causal_with_offset() {
    let p = port();
    // (B, Hq, Hkv, T, S, D): plain MHA, GQA ratio 2, and T < S (queries at the end of the keys),
    // and T > S (the first queries see no key: out 0, lse -inf).
    for (b, hq, hkv, t, s, d) in [(1, 2, 2, 3, 3, 4), (2, 4, 2, 3, 3, 2), (1, 2, 1, 2, 5, 3), (1, 1, 1, 4, 2, 2)] {
        let (q, k, v) = (rnd(b * hq * t * d, 10, 1.0), rnd(b * hkv * s * d, 11, 1.0), rnd(b * hkv * s * d, 12, 1.0));
        let w = rnd(b * hq * t * d, 13, 1.0);
        let (qv, kv, vv) = (up(&p, &q, &[b, hq, t, d]), up(&p, &k, &[b, hkv, s, d]), up(&p, &v, &[b, hkv, s, d]));
        let (out, lse) = (new(&p, &[b, hq, t, d]), new(&p, &[b, hq, t]));
        let scale = 1.0 / (d as f32).sqrt();
        run(
            &p,
            &Composite::AttentionFwd {
                q: qv.clone(),
                k: kv.clone(),
                v: vv.clone(),
                scale,
                causal: true,
                out: out.clone(),
                lse: lse.clone(),
            },
        )
        .unwrap();
        let host = |xs: &[Vec<f64>]| h_attention(&xs[0], &xs[1], &xs[2], b, hq, hkv, t, s, d);
        let ins = [q, k, v];
        close("attn fwd", &down(&p, &out), &host(&ins), 1e-5);
        if t > s {
            assert_eq!(down(&p, &lse)[0], f64::NEG_INFINITY, "a query with no visible key has lse -inf");
        }
        let (dq, dk, dv) = (new(&p, &[b, hq, t, d]), new(&p, &[b, hkv, s, d]), new(&p, &[b, hkv, s, d]));
        run(
            &p,
            &Composite::AttentionBwd {
                q: qv,
                k: kv,
                v: vv,
                out,
                lse,
                dout: up(&p, &w, &[b, hq, t, d]),
                scale,
                causal: true,
                dq: dq.clone(),
                dk: dk.clone(),
                dv: dv.clone(),
            },
        )
        .unwrap();
        close("attn dq", &down(&p, &dq), &fd(&host, &ins, &w, 0), 2e-3);
        close("attn dk", &down(&p, &dk), &fd(&host, &ins, &w, 1), 2e-3);
        close("attn dv", &down(&p, &dv), &fd(&host, &ins, &w, 2), 2e-3);
    }
}

#[test]
fn linear_embedding_and_rope() {
    let p = port();
    // linear: x [3,5], w [4,5], b [4]
    let (x, wt, bs, w) = (rnd(15, 14, 1.0), rnd(20, 15, 1.0), rnd(4, 16, 1.0), rnd(12, 17, 1.0));
    let host = |xs: &[Vec<f64>]| {
        (0..3)
            .flat_map(|i| (0..4).map(move |o| (i, o)))
            .map(|(i, o)| (0..5).map(|c| xs[0][i * 5 + c] * xs[1][o * 5 + c]).sum::<f64>() + xs[2][o])
            .collect::<Vec<_>>()
    };
    let (xv, wv, bv, y) = (up(&p, &x, &[3, 5]), up(&p, &wt, &[4, 5]), up(&p, &bs, &[4]), new(&p, &[3, 4]));
    run(&p, &Composite::LinearFwd { x: xv.clone(), w: wv.clone(), b: Some(bv), y: y.clone() }).unwrap();
    let ins = [x, wt, bs];
    close("linear fwd", &down(&p, &y), &host(&ins), 1e-5);
    let (dx, dw, db) = (new(&p, &[3, 5]), new(&p, &[4, 5]), new(&p, &[4]));
    let dy = up(&p, &w, &[3, 4]);
    run(
        &p,
        &Composite::LinearBwd { x: xv, w: wv, dy, dx: Some(dx.clone()), dw: Some(dw.clone()), db: Some(db.clone()) },
    )
    .unwrap();
    for (i, g) in [dx, dw, db].iter().enumerate() {
        close("linear bwd", &down(&p, g), &fd(&host, &ins, &w, i), 1e-3);
    }

    // embedding with a repeated id: gradients accumulate.
    let (table, idx, w) = (rnd(12, 18, 1.0), [2i32, 0, 2], rnd(9, 19, 1.0));
    let host = |xs: &[Vec<f64>]| idx.iter().flat_map(|&i| xs[0][i as usize * 3..][..3].to_vec()).collect::<Vec<_>>();
    let (tv, iv, out) = (up(&p, &table, &[4, 3]), ids(&p, &idx), new(&p, &[3, 3]));
    run(&p, &Composite::EmbeddingFwd { table: tv, ids: iv.clone(), out: out.clone() }).unwrap();
    close("emb fwd", &down(&p, &out), &host(std::slice::from_ref(&table)), 0.0);
    let dt = new(&p, &[4, 3]);
    run(&p, &Composite::EmbeddingBwd { ids: iv, dout: up(&p, &w, &[3, 3]), dtable: dt.clone() }).unwrap();
    close("emb bwd", &down(&p, &dt), &fd(&host, &[table], &w, 0), 1e-4);

    // rope: x [1,2,3,4], tables [3,2]
    let (b, h, t, d) = (1, 2, 3, 4);
    let (x, w) = (rnd(b * h * t * d, 20, 1.0), rnd(b * h * t * d, 21, 1.0));
    let ang: Vec<f64> = (0..t)
        .flat_map(|ti| (0..d / 2).map(move |i| ti as f64 * 10000f64.powf(-(2.0 * i as f64) / d as f64)))
        .collect();
    let (cos, sin): (Vec<f64>, Vec<f64>) =
        (ang.iter().map(|a| a.cos()).collect(), ang.iter().map(|a| a.sin()).collect());
    let host = |xs: &[Vec<f64>]| {
        let mut y = vec![0.0; xs[0].len()];
        for r in 0..b * h * t {
            let ti = r % t;
            for i in 0..d / 2 {
                let (x1, x2) = (xs[0][r * d + i], xs[0][r * d + d / 2 + i]);
                let (c, s) = (cos[ti * d / 2 + i], sin[ti * d / 2 + i]);
                y[r * d + i] = x1 * c - x2 * s;
                y[r * d + d / 2 + i] = x2 * c + x1 * s;
            }
        }
        y
    };
    let (cv, sv) = (up(&p, &cos, &[t, d / 2]), up(&p, &sin, &[t, d / 2]));
    let y = new(&p, &[b, h, t, d]);
    run(&p, &Composite::RopeFwd { x: up(&p, &x, &[b, h, t, d]), cos: cv.clone(), sin: sv.clone(), y: y.clone() })
        .unwrap();
    close("rope fwd", &down(&p, &y), &host(std::slice::from_ref(&x)), 1e-5);
    let dx = new(&p, &[b, h, t, d]);
    run(&p, &Composite::RopeBwd { dy: up(&p, &w, &[b, h, t, d]), cos: cv, sin: sv, dx: dx.clone() }).unwrap();
    close("rope bwd", &down(&p, &dx), &fd(&host, &[x], &w, 0), 1e-3);
}

#[test]
fn adamw_matches_pytorch_formula_over_three_steps() {
    let p = port();
    let n = 5;
    let (mut pp, (lr, b1, b2, eps, wd)) = (rnd(n, 22, 1.0), (1e-2f64, 0.9f64, 0.95f64, 1e-8f64, 0.1f64));
    let (param, m, v) = (up(&p, &pp, &[n]), up(&p, &vec![0.0; n], &[n]), up(&p, &vec![0.0; n], &[n]));
    let (mut hm, mut hv) = (vec![0.0; n], vec![0.0; n]);
    for step in 1..=3u64 {
        let g = rnd(n, 30 + step, 1.0);
        run(
            &p,
            &Composite::AdamWStep {
                param: param.clone(),
                grad: up(&p, &g, &[n]),
                m: m.clone(),
                v: v.clone(),
                grad_scale: Some(up(&p, &[0.5], &[1])),
                lr: lr as f32,
                beta1: b1 as f32,
                beta2: b2 as f32,
                eps: eps as f32,
                weight_decay: wd as f32,
                step,
            },
        )
        .unwrap();
        for i in 0..n {
            let gi = g[i] * 0.5;
            hm[i] = b1 * hm[i] + (1.0 - b1) * gi;
            hv[i] = b2 * hv[i] + (1.0 - b2) * gi * gi;
            pp[i] *= 1.0 - lr * wd;
            let denom = hv[i].sqrt() / (1.0 - b2.powi(step as i32)).sqrt() + eps;
            pp[i] -= lr / (1.0 - b1.powi(step as i32)) * hm[i] / denom;
        }
        close("adamw param", &down(&p, &param), &pp, 1e-5);
        close("adamw m", &down(&p, &m), &hm, 1e-5);
    }
}

#[test]
fn dropout_follows_the_philox_stream_and_grad_norm_sums_everything() {
    let p = port();
    let n = 783;
    let x = rnd(n, 40, 1.0);
    let (y, mask) = (new(&p, &[n]), new(&p, &[n]));
    run(
        &p,
        &Composite::DropoutFwd { x: up(&p, &x, &[n]), p: 0.25, seed: 9, offset: 100, y: y.clone(), mask: mask.clone() },
    )
    .unwrap();
    let want: Vec<f64> = (0..n)
        .map(|i| if anychip_port::philox::uniform(9, 100 + i as u64) < 0.25 { 0.0 } else { 1.0 / 0.75 })
        .collect();
    close("dropout mask", &down(&p, &mask), &want, 1e-7);
    let yw: Vec<f64> = x.iter().zip(&want).map(|(a, b)| a * b).collect();
    close("dropout y", &down(&p, &y), &yw, 1e-6);

    let (a, b) = (rnd(17, 41, 1.0), rnd(6, 42, 1.0));
    let out = new(&p, &[1]);
    run(&p, &Composite::GradNorm { grads: vec![up(&p, &a, &[17]), up(&p, &b, &[2, 3])], out: out.clone() }).unwrap();
    let want = a.iter().chain(&b).map(|v| v * v).sum::<f64>().sqrt();
    close("grad norm", &down(&p, &out), &[want], 1e-6);
}
