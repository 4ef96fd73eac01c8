//! Every fused composite on `cpu` against small plain-Rust f64 implementations of the formulas
//! in `anychip_port::Composite`'s docs (the oracle until the decomposition crate lands):
//! odd shapes, shapes above the threading threshold, special values, f32 and bf16.

use anychip_port::{philox, Composite, DType, GeluKind, Handled, Port, View};
use anychip_port_cpu::CpuPort;
use anychip_test_support::*;

fn cpu() -> CpuPort {
    anychip_port_cpu::new(Some(2))
}

fn run(p: &CpuPort, call: Composite) {
    let name = call.name();
    assert_eq!(p.composite(&call).unwrap_or_else(|e| panic!("{name}: {e}")), Handled::Yes, "{name} not fused");
}

/// The values a view holds (after any bf16 rounding), widened to f64 for the oracle.
fn f64s(p: &CpuPort, v: &View) -> Vec<f64> {
    get(p, v).iter().map(|&x| x as f64).collect()
}

fn close(what: &str, p: &CpuPort, v: &View, want: &[f64], tol: Tol) {
    let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    assert_close(what, &get(p, v), &want, tol);
}

fn tol(dtype: DType) -> Tol {
    if dtype == DType::BF16 {
        Tol::BF16_SUM
    } else {
        Tol::F32_FUSED
    }
}

const ROWS: [(usize, usize); 5] = [(1, 1), (3, 17), (17, 783), (64, 783), (2, 3)];

/// Row values with special rows: all -inf (row 1) and a NaN (row 2), where the shape allows.
fn row_data(g: &mut Gen, r: usize, c: usize, specials: bool) -> Vec<f32> {
    let mut x = g.vec(r * c, 4.0);
    if specials && r >= 3 {
        x[c..2 * c].fill(f32::NEG_INFINITY);
        x[2 * c] = f32::NAN;
        x[0] = -0.0;
    }
    x
}

fn softmax_rows(x: &[f64], c: usize, log: bool) -> Vec<f64> {
    x.chunks(c)
        .flat_map(|r| {
            let m =
                r.iter().cloned().fold(
                    f64::NEG_INFINITY,
                    |a, b| {
                        if a.is_nan() || b.is_nan() {
                            f64::NAN
                        } else {
                            a.max(b)
                        }
                    },
                );
            if m == f64::NEG_INFINITY {
                return vec![if log { f64::NEG_INFINITY } else { 0.0 }; c];
            }
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(|v| if log { v - m - s.ln() } else { (v - m).exp() / s }).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn softmax_and_log_softmax() {
    let p = cpu();
    let mut g = Gen::new(11);
    for (r, c) in ROWS {
        for dtype in [DType::F32, DType::BF16] {
            for log in [false, true] {
                let x = tensor(&p, &row_data(&mut g, r, c, true), dtype, &[r, c]);
                let y = output(&p, dtype, &[r, c]);
                run(
                    &p,
                    if log {
                        Composite::LogSoftmaxFwd { x: x.clone(), y: y.clone() }
                    } else {
                        Composite::SoftmaxFwd { x: x.clone(), y: y.clone() }
                    },
                );
                let want = softmax_rows(&f64s(&p, &x), c, log);
                close(&format!("softmax fwd log={log} [{r},{c}] {dtype}"), &p, &y, &want, tol(dtype));
                // Backward from the port's own y, on rows without specials.
                let x = tensor(&p, &row_data(&mut g, r, c, false), dtype, &[r, c]);
                let y = output(&p, dtype, &[r, c]);
                run(
                    &p,
                    if log {
                        Composite::LogSoftmaxFwd { x: x.clone(), y: y.clone() }
                    } else {
                        Composite::SoftmaxFwd { x, y: y.clone() }
                    },
                );
                let dy = tensor(&p, &g.vec(r * c, 1.0), dtype, &[r, c]);
                let dx = output(&p, dtype, &[r, c]);
                run(
                    &p,
                    if log {
                        Composite::LogSoftmaxBwd { y: y.clone(), dy: dy.clone(), dx: dx.clone() }
                    } else {
                        Composite::SoftmaxBwd { y: y.clone(), dy: dy.clone(), dx: dx.clone() }
                    },
                );
                let (yv, gv) = (f64s(&p, &y), f64s(&p, &dy));
                let mut want = vec![0.0; r * c];
                for i in 0..r {
                    let (ys, gs) = (&yv[i * c..(i + 1) * c], &gv[i * c..(i + 1) * c]);
                    let (sg, dot): (f64, f64) = (gs.iter().sum(), gs.iter().zip(ys).map(|(a, b)| a * b).sum());
                    for j in 0..c {
                        want[i * c + j] = if log { gs[j] - ys[j].exp() * sg } else { ys[j] * (gs[j] - dot) };
                    }
                }
                close(&format!("softmax bwd log={log} [{r},{c}] {dtype}"), &p, &dx, &want, tol(dtype));
            }
        }
    }
}

#[test]
fn layer_norm_and_rms_norm() {
    let p = cpu();
    let mut g = Gen::new(12);
    for (r, c) in ROWS {
        for dtype in [DType::F32, DType::BF16] {
            for rms in [false, true] {
                for affine in [false, true] {
                    let what =
                        format!("{} [{r},{c}] {dtype} affine={affine}", if rms { "rms_norm" } else { "layer_norm" });
                    let mut xv = g.vec(r * c, 2.0);
                    xv.iter_mut().enumerate().for_each(|(i, v)| *v += (i / c) as f32); // per-row offsets
                    let x = tensor(&p, &xv, dtype, &[r, c]);
                    let w = affine.then(|| tensor(&p, &g.vec(c, 1.5), dtype, &[c]));
                    let b = (affine && !rms).then(|| tensor(&p, &g.vec(c, 0.5), dtype, &[c]));
                    let (y, mean, rstd) =
                        (output(&p, dtype, &[r, c]), output(&p, DType::F32, &[r]), output(&p, DType::F32, &[r]));
                    let eps = 1e-5;
                    run(
                        &p,
                        if rms {
                            Composite::RmsNormFwd {
                                x: x.clone(),
                                weight: w.clone(),
                                eps,
                                y: y.clone(),
                                rstd: rstd.clone(),
                            }
                        } else {
                            Composite::LayerNormFwd {
                                x: x.clone(),
                                weight: w.clone(),
                                bias: b.clone(),
                                eps,
                                y: y.clone(),
                                mean: mean.clone(),
                                rstd: rstd.clone(),
                            }
                        },
                    );
                    let xs = f64s(&p, &x);
                    let wv = w.as_ref().map(|w| f64s(&p, w)).unwrap_or(vec![1.0; c]);
                    let bv = b.as_ref().map(|b| f64s(&p, b)).unwrap_or(vec![0.0; c]);
                    let (mut my, mut mm, mut mr) = (vec![0.0; r * c], vec![0.0; r], vec![0.0; r]);
                    let dyv = g.vec(r * c, 1.0);
                    let dy = tensor(&p, &dyv, dtype, &[r, c]);
                    let dys = f64s(&p, &dy);
                    let (mut mdx, mut mdw, mut mdb) = (vec![0.0; r * c], vec![0.0; c], vec![0.0; c]);
                    for i in 0..r {
                        let row = &xs[i * c..(i + 1) * c];
                        let mu = if rms { 0.0 } else { row.iter().sum::<f64>() / c as f64 };
                        let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / c as f64;
                        let rs = 1.0 / (var + eps as f64).sqrt();
                        (mm[i], mr[i]) = (mu, rs);
                        let xh: Vec<f64> = row.iter().map(|v| (v - mu) * rs).collect();
                        let gr: Vec<f64> = (0..c).map(|j| dys[i * c + j] * wv[j]).collect();
                        let mg = if rms { 0.0 } else { gr.iter().sum::<f64>() / c as f64 };
                        let mgx = gr.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / c as f64;
                        for j in 0..c {
                            my[i * c + j] = xh[j] * wv[j] + bv[j];
                            mdx[i * c + j] = rs * (gr[j] - mg - xh[j] * mgx);
                            mdw[j] += dys[i * c + j] * xh[j];
                            mdb[j] += dys[i * c + j];
                        }
                    }
                    close(&format!("{what} y"), &p, &y, &my, tol(dtype));
                    close(&format!("{what} rstd"), &p, &rstd, &mr, Tol::F32_FUSED);
                    if !rms {
                        close(&format!("{what} mean"), &p, &mean, &mm, Tol::F32_FUSED);
                    }
                    let dx = output(&p, dtype, &[r, c]);
                    let dw = affine.then(|| output(&p, DType::F32, &[c]));
                    let db = (affine && !rms).then(|| output(&p, DType::F32, &[c]));
                    run(
                        &p,
                        if rms {
                            Composite::RmsNormBwd {
                                x: x.clone(),
                                weight: w.clone(),
                                rstd: rstd.clone(),
                                dy: dy.clone(),
                                dx: dx.clone(),
                                dweight: dw.clone(),
                            }
                        } else {
                            Composite::LayerNormBwd {
                                x,
                                weight: w,
                                mean,
                                rstd,
                                dy,
                                dx: dx.clone(),
                                dweight: dw.clone(),
                                dbias: db.clone(),
                            }
                        },
                    );
                    let gtol =
                        if dtype == DType::BF16 { Tol { abs: 3e-2, rel: 3e-2 } } else { Tol { abs: 2e-4, rel: 2e-4 } };
                    close(&format!("{what} dx"), &p, &dx, &mdx, gtol);
                    if let Some(dw) = &dw {
                        close(&format!("{what} dweight"), &p, dw, &mdw, gtol);
                    }
                    if let Some(db) = &db {
                        close(&format!("{what} dbias"), &p, db, &mdb, gtol);
                    }
                }
            }
        }
    }
}

fn gelu64(kind: GeluKind, x: f64) -> (f64, f64) {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    match kind {
        GeluKind::Tanh => {
            let t = (k * (x + 0.044715 * x * x * x)).tanh();
            (0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x))
        }
        GeluKind::Erf => {
            let cdf = 0.5 * (1.0 + libm::erf(x / 2f64.sqrt()));
            (x * cdf, cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt())
        }
    }
}

#[test]
fn gelu_and_silu() {
    let p = cpu();
    let mut g = Gen::new(13);
    for n in [1usize, 17, 783, 64 * 783] {
        for dtype in [DType::F32, DType::BF16] {
            let mut xv = g.vec(n, 6.0);
            for (x, s) in xv.iter_mut().zip([f32::NAN, -0.0, 30.0, -30.0]) {
                *x = s;
            }
            let x = tensor(&p, &xv, dtype, &[n]);
            let dy = tensor(&p, &g.vec(n, 1.0), dtype, &[n]);
            let (xs, gs) = (f64s(&p, &x), f64s(&p, &dy));
            for kind in [Some(GeluKind::Tanh), Some(GeluKind::Erf), None] {
                let what = format!("{kind:?} n={n} {dtype}");
                let (y, dx) = (output(&p, dtype, &[n]), output(&p, dtype, &[n]));
                let f = |v: f64| match kind {
                    Some(k) => gelu64(k, v),
                    None => {
                        let s = 1.0 / (1.0 + (-v).exp());
                        (v * s, s * (1.0 + v * (1.0 - s)))
                    }
                };
                match kind {
                    Some(kind) => {
                        run(&p, Composite::GeluFwd { kind, x: x.clone(), y: y.clone() });
                        run(&p, Composite::GeluBwd { kind, x: x.clone(), dy: dy.clone(), dx: dx.clone() });
                    }
                    None => {
                        run(&p, Composite::SiluFwd { x: x.clone(), y: y.clone() });
                        run(&p, Composite::SiluBwd { x: x.clone(), dy: dy.clone(), dx: dx.clone() });
                    }
                }
                let want_y: Vec<f64> = xs.iter().map(|&v| f(v).0).collect();
                let want_dx: Vec<f64> = xs.iter().zip(&gs).map(|(&v, &g)| g * f(v).1).collect();
                close(&format!("{what} fwd"), &p, &y, &want_y, tol_for(dtype, Tol::F32_FUSED));
                close(&format!("{what} bwd"), &p, &dx, &want_dx, tol_for(dtype, Tol::F32_FUSED));
            }
        }
    }
}

#[test]
fn cross_entropy_with_ignored_rows() {
    let p = cpu();
    let mut g = Gen::new(14);
    for (n, v) in [(1, 3), (3, 17), (17, 783), (64, 783)] {
        for dtype in [DType::F32, DType::BF16] {
            for ignore_all in [false, true] {
                let what = format!("cross_entropy [{n},{v}] {dtype} ignore_all={ignore_all}");
                let logits = tensor(&p, &g.vec(n * v, 5.0), dtype, &[n, v]);
                let t: Vec<i32> =
                    (0..n).map(|i| if ignore_all || i % 4 == 3 { -1 } else { ((i * 13 + 1) % v) as i32 }).collect();
                let targets = ints(&p, &t, &[n]);
                let (loss, lse) = (output(&p, DType::F32, &[1]), output(&p, DType::F32, &[n]));
                run(
                    &p,
                    Composite::CrossEntropyFwd {
                        logits: logits.clone(),
                        targets: targets.clone(),
                        loss: loss.clone(),
                        lse: lse.clone(),
                    },
                );
                let x = f64s(&p, &logits);
                let mlse: Vec<f64> = x
                    .chunks(v)
                    .map(|r| {
                        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        m + r.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
                    })
                    .collect();
                let counted: Vec<usize> = (0..n).filter(|&i| t[i] >= 0).collect();
                let mloss = if counted.is_empty() {
                    0.0
                } else {
                    counted.iter().map(|&i| mlse[i] - x[i * v + t[i] as usize]).sum::<f64>() / counted.len() as f64
                };
                close(&format!("{what} lse"), &p, &lse, &mlse, Tol::F32_FUSED);
                close(&format!("{what} loss"), &p, &loss, &[mloss], Tol::F32_FUSED);
                let dloss = tensor(&p, &[2.0], DType::F32, &[1]);
                let dlogits = output(&p, dtype, &[n, v]);
                run(&p, Composite::CrossEntropyBwd { logits, targets, lse, dloss, dlogits: dlogits.clone() });
                let mut want = vec![0.0; n * v];
                for &i in &counted {
                    for j in 0..v {
                        let onehot = if j == t[i] as usize { 1.0 } else { 0.0 };
                        want[i * v + j] = 2.0 / counted.len() as f64 * ((x[i * v + j] - mlse[i]).exp() - onehot);
                    }
                }
                close(&format!("{what} dlogits"), &p, &dlogits, &want, tol_for(dtype, Tol::F32_FUSED));
            }
        }
    }
}

/// Naive f64 attention: (out, lse, dq, dk, dv) for the given dout.
#[allow(clippy::too_many_arguments)]
fn attention64(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    d: [usize; 6],
    scale: f64,
    causal: bool,
) -> [Vec<f64>; 5] {
    let [b, hq, hkv, t, s, dh] = d;
    let (mut out, mut lse) = (vec![0.0; b * hq * t * dh], vec![0.0; b * hq * t]);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / (hq / hkv);
            let qa = |i: usize, c: usize| ((bi * hq + h) * t + i) * dh + c;
            let ka = |j: usize, c: usize| ((bi * hkv + kh) * s + j) * dh + c;
            let vis = |i: usize, j: usize| !causal || (j as isize) <= i as isize + s as isize - t as isize;
            for i in 0..t {
                let sc: Vec<f64> = (0..s)
                    .map(|j| {
                        if vis(i, j) {
                            scale * (0..dh).map(|c| q[qa(i, c)] * k[ka(j, c)]).sum::<f64>()
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l = (bi * hq + h) * t + i;
                if m == f64::NEG_INFINITY {
                    lse[l] = f64::NEG_INFINITY;
                    continue;
                }
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                lse[l] = m + z.ln();
                let pr: Vec<f64> = sc.iter().map(|x| (x - m).exp() / z).collect();
                for c in 0..dh {
                    out[qa(i, c)] = (0..s).map(|j| pr[j] * v[ka(j, c)]).sum();
                }
                // dp_j = dout . v_j; ds_j = p_j (dp_j - sum_j p_j dp_j)
                let dp: Vec<f64> = (0..s).map(|j| (0..dh).map(|c| dout[qa(i, c)] * v[ka(j, c)]).sum()).collect();
                let pdp: f64 = (0..s).map(|j| pr[j] * dp[j]).sum();
                for j in 0..s {
                    let ds = pr[j] * (dp[j] - pdp);
                    for c in 0..dh {
                        dv[ka(j, c)] += pr[j] * dout[qa(i, c)];
                        dq[qa(i, c)] += scale * ds * k[ka(j, c)];
                        dk[ka(j, c)] += scale * ds * q[qa(i, c)];
                    }
                }
            }
        }
    }
    [out, lse, dq, dk, dv]
}

#[test]
fn attention_causal_gqa_and_masked_rows() {
    let p = cpu();
    let mut g = Gen::new(15);
    // [B, Hq, Hkv, T, S, Dh]: single element, GQA, above one 64-query block, T < S, and T > S
    // (whose first queries see no key at all); then heads enough for one task per head, over
    // three query blocks, with Dh above the kernel's 64 columns.
    let cases = [
        [1, 1, 1, 1, 1, 1],
        [1, 2, 1, 3, 3, 4],
        [2, 4, 2, 17, 17, 8],
        [1, 2, 2, 70, 70, 16],
        [1, 2, 1, 5, 9, 8],
        [1, 1, 1, 9, 5, 8],
        [2, 3, 1, 33, 33, 24],
        [3, 4, 2, 130, 130, 72],
    ];
    for d in cases {
        let [b, hq, hkv, t, s, dh] = d;
        for causal in [true, false] {
            for dtype in [DType::F32, DType::BF16] {
                let what = format!("attention {d:?} causal={causal} {dtype}");
                let q = tensor(&p, &g.vec(b * hq * t * dh, 1.5), dtype, &[b, hq, t, dh]);
                let k = tensor(&p, &g.vec(b * hkv * s * dh, 1.5), dtype, &[b, hkv, s, dh]);
                let v = tensor(&p, &g.vec(b * hkv * s * dh, 1.0), dtype, &[b, hkv, s, dh]);
                let dout = tensor(&p, &g.vec(b * hq * t * dh, 1.0), dtype, &[b, hq, t, dh]);
                let (out, lse) = (output(&p, dtype, &[b, hq, t, dh]), output(&p, DType::F32, &[b, hq, t]));
                let scale = 1.0 / (dh as f32).sqrt();
                run(
                    &p,
                    Composite::AttentionFwd {
                        q: q.clone(),
                        k: k.clone(),
                        v: v.clone(),
                        scale,
                        causal,
                        out: out.clone(),
                        lse: lse.clone(),
                    },
                );
                let [mo, ml, mdq, mdk, mdv] =
                    attention64(&f64s(&p, &q), &f64s(&p, &k), &f64s(&p, &v), &f64s(&p, &dout), d, scale as f64, causal);
                let tl = tol(dtype);
                close(&format!("{what} out"), &p, &out, &mo, tl);
                close(&format!("{what} lse"), &p, &lse, &ml, Tol::F32_FUSED);
                let (dq, dk, dv) = (
                    output(&p, dtype, &[b, hq, t, dh]),
                    output(&p, dtype, &[b, hkv, s, dh]),
                    output(&p, dtype, &[b, hkv, s, dh]),
                );
                run(
                    &p,
                    Composite::AttentionBwd {
                        q,
                        k,
                        v,
                        out,
                        lse,
                        dout,
                        scale,
                        causal,
                        dq: dq.clone(),
                        dk: dk.clone(),
                        dv: dv.clone(),
                    },
                );
                // bf16 gradients inherit the rounding of out (used in D = dout . out).
                let gt = if dtype == DType::BF16 { Tol { abs: 5e-2, rel: 5e-2 } } else { Tol { abs: 2e-4, rel: 2e-4 } };
                close(&format!("{what} dq"), &p, &dq, &mdq, gt);
                close(&format!("{what} dk"), &p, &dk, &mdk, gt);
                close(&format!("{what} dv"), &p, &dv, &mdv, gt);
            }
        }
    }
}

#[test]
fn attention_reads_heads_of_a_fused_qkv_in_place() {
    // q, k, v as heads of one [B,T,(Hq+2Hkv)Dh] tensor; out, dout, dq, dk, dv strided the same
    // way: the layout the engine's attention_qkv passes, with nothing copied.
    let p = cpu();
    let mut g = Gen::new(16);
    let (b, hq, hkv, t, dh) = (2, 4, 2, 70, 8);
    let w = (hq + 2 * hkv) * dh;
    let heads = |v: &View, first: usize, n: usize| View {
        layout: anychip_port::Layout {
            shape: vec![b, n, t, dh],
            strides: vec![t * w, dh, w, 1],
            offset: v.layout.offset + first * dh,
        },
        ..v.clone()
    };
    for dtype in [DType::F32, DType::BF16] {
        let x = tensor(&p, &g.vec(b * t * w, 1.5), dtype, &[b, t, w]);
        let gx = tensor(&p, &g.vec(b * t * w, 1.0), dtype, &[b, t, w]);
        let (dx, lse) = (output(&p, dtype, &[b, t, w]), output(&p, DType::F32, &[b, hq, t]));
        let (q, k, v) = (heads(&x, 0, hq), heads(&x, hq, hkv), heads(&x, hq + hkv, hkv));
        let out_buf = output(&p, dtype, &[b, t, hq * dh]);
        let out = View {
            layout: anychip_port::Layout {
                shape: vec![b, hq, t, dh],
                strides: vec![t * hq * dh, dh, hq * dh, 1],
                offset: 0,
            },
            ..out_buf.clone()
        };
        let dout = heads(&gx, 0, hq);
        let scale = 0.3;
        let fwd = Composite::AttentionFwd {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            scale,
            causal: true,
            out: out.clone(),
            lse: lse.clone(),
        };
        run(&p, fwd);
        let [mo, ml, mdq, mdk, mdv] = attention64(
            &f64s(&p, &q),
            &f64s(&p, &k),
            &f64s(&p, &v),
            &f64s(&p, &dout),
            [b, hq, hkv, t, t, dh],
            scale as f64,
            true,
        );
        let what = format!("strided attention {dtype}");
        close(&format!("{what} out"), &p, &out, &mo, tol(dtype));
        close(&format!("{what} lse"), &p, &lse, &ml, Tol::F32_FUSED);
        let (dq, dk, dv) = (heads(&dx, 0, hq), heads(&dx, hq, hkv), heads(&dx, hq + hkv, hkv));
        let bwd = Composite::AttentionBwd {
            q,
            k,
            v,
            out,
            lse,
            dout,
            scale,
            causal: true,
            dq: dq.clone(),
            dk: dk.clone(),
            dv: dv.clone(),
        };
        run(&p, bwd);
        let gt = if dtype == DType::BF16 { Tol { abs: 5e-2, rel: 5e-2 } } else { Tol { abs: 2e-4, rel: 2e-4 } };
        close(&format!("{what} dq"), &p, &dq, &mdq, gt);
        close(&format!("{what} dk"), &p, &dk, &mdk, gt);
        close(&format!("{what} dv"), &p, &dv, &mdv, gt);
        // The three gradients tile dx: no sentinel is left.
        assert!(get(&p, &dx).iter().all(|&v| v != -777.0), "{what}: part of dx was not written");
    }
}

#[test]
fn rope_reads_and_writes_strided_heads() {
    // Heads 1..3 of a [B,T,4 heads x Dh] tensor, rotated into a contiguous tensor and back into
    // a strided one: the same numbers as on contiguous copies.
    let p = cpu();
    let mut g = Gen::new(17);
    let (b, t, dh) = (2, 9, 8);
    let w = 4 * dh;
    let heads = |v: &View| View {
        layout: anychip_port::Layout { shape: vec![b, 2, t, dh], strides: vec![t * w, dh, w, 1], offset: dh },
        ..v.clone()
    };
    for dtype in [DType::F32, DType::BF16] {
        let x = tensor(&p, &g.vec(b * t * w, 1.0), dtype, &[b, t, w]);
        let (cos, sin) = (
            tensor(&p, &g.vec(t * dh / 2, 1.0), DType::F32, &[t, dh / 2]),
            tensor(&p, &g.vec(t * dh / 2, 1.0), DType::F32, &[t, dh / 2]),
        );
        let xc = tensor(&p, &get(&p, &heads(&x)), dtype, &[b, 2, t, dh]);
        let (y, yc) = (output(&p, dtype, &[b, 2, t, dh]), output(&p, dtype, &[b, 2, t, dh]));
        run(&p, Composite::RopeFwd { x: heads(&x), cos: cos.clone(), sin: sin.clone(), y: y.clone() });
        run(&p, Composite::RopeFwd { x: xc, cos: cos.clone(), sin: sin.clone(), y: yc.clone() });
        assert_eq!(get(&p, &y), get(&p, &yc), "rope fwd from strided heads, {dtype}");
        let dx = output(&p, dtype, &[b, t, w]);
        let dxc = output(&p, dtype, &[b, 2, t, dh]);
        run(&p, Composite::RopeBwd { dy: y.clone(), cos: cos.clone(), sin: sin.clone(), dx: heads(&dx) });
        run(&p, Composite::RopeBwd { dy: y, cos, sin, dx: dxc.clone() });
        assert_eq!(get(&p, &heads(&dx)), get(&p, &dxc), "rope bwd into strided heads, {dtype}");
        // Nothing outside the two heads was written (the sentinel, as this dtype stores it).
        let (all, sentinel) = (get_all(&p, &dx), get_all(&p, &output(&p, dtype, &[1]))[0]);
        let untouched = |(i, c): (usize, &[f32])| (i % 4 == 1 || i % 4 == 2) || c.iter().all(|&v| v == sentinel);
        assert!(all.chunks(dh).enumerate().all(untouched), "rope bwd wrote outside its heads, {dtype}");
    }
}

#[test]
fn silu_reads_and_writes_strided_halves() {
    // The gate half of a [N, 2F] projection in, the other half of a [N, 2F] gradient out.
    let p = cpu();
    let mut g = Gen::new(18);
    let (n, f) = (300, 120);
    let half = |v: &View, start: usize| View {
        layout: anychip_port::Layout { shape: vec![n, f], strides: vec![2 * f, 1], offset: start },
        ..v.clone()
    };
    for dtype in [DType::F32, DType::BF16] {
        let x = tensor(&p, &g.vec(n * 2 * f, 3.0), dtype, &[n, 2 * f]);
        let xc = tensor(&p, &get(&p, &half(&x, 0)), dtype, &[n, f]);
        let dy = tensor(&p, &g.vec(n * f, 1.0), dtype, &[n, f]);
        let (y, yc) = (output(&p, dtype, &[n, 2 * f]), output(&p, dtype, &[n, f]));
        run(&p, Composite::SiluFwd { x: half(&x, 0), y: half(&y, f) });
        run(&p, Composite::SiluFwd { x: xc.clone(), y: yc.clone() });
        assert_eq!(get(&p, &half(&y, f)), get(&p, &yc), "silu fwd on strided halves, {dtype}");
        let (dx, dxc) = (output(&p, dtype, &[n, 2 * f]), output(&p, dtype, &[n, f]));
        run(&p, Composite::SiluBwd { x: half(&x, 0), dy: dy.clone(), dx: half(&dx, f) });
        run(&p, Composite::SiluBwd { x: xc, dy, dx: dxc.clone() });
        assert_eq!(get(&p, &half(&dx, f)), get(&p, &dxc), "silu bwd into strided halves, {dtype}");
    }
}

#[test]
fn embedding_rope_linear() {
    let p = cpu();
    let mut g = Gen::new(16);
    for dtype in [DType::F32, DType::BF16] {
        // Embedding with repeated ids, ids shaped [B, T] as the engine passes them.
        let (vocab, d, n) = (17, 783, 40);
        let table = tensor(&p, &g.vec(vocab * d, 1.0), dtype, &[vocab, d]);
        let idv: Vec<i32> = (0..n).map(|i| ((i * 5) % vocab) as i32).collect();
        let ids = ints(&p, &idv, &[n]);
        let out = output(&p, dtype, &[n, d]);
        run(&p, Composite::EmbeddingFwd { table: table.clone(), ids: ids.clone(), out: out.clone() });
        let tv = f64s(&p, &table);
        let want: Vec<f64> = idv.iter().flat_map(|&i| tv[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        close(&format!("embedding fwd {dtype}"), &p, &out, &want, Tol::EXACT);
        let dout = tensor(&p, &g.vec(n * d, 1.0), dtype, &[n, d]);
        let dtable = output(&p, dtype, &[vocab, d]);
        run(&p, Composite::EmbeddingBwd { ids, dout: dout.clone(), dtable: dtable.clone() });
        let dv = f64s(&p, &dout);
        let mut want = vec![0.0; vocab * d];
        for (r, &i) in idv.iter().enumerate() {
            for j in 0..d {
                want[i as usize * d + j] += dv[r * d + j];
            }
        }
        close(&format!("embedding bwd {dtype}"), &p, &dtable, &want, tol_for(dtype, Tol::F32_SUM));

        // RoPE forward then backward: the backward is the inverse rotation applied to dy.
        let (b, h, t, dh) = (2, 3, 5, 8);
        let x = tensor(&p, &g.vec(b * h * t * dh, 1.0), dtype, &[b, h, t, dh]);
        let ang: Vec<f32> = (0..t * dh / 2).map(|i| (i / (dh / 2)) as f32 * 0.37 / (1 + i % (dh / 2)) as f32).collect();
        let cos = tensor(&p, &ang.iter().map(|a| a.cos()).collect::<Vec<_>>(), DType::F32, &[t, dh / 2]);
        let sin = tensor(&p, &ang.iter().map(|a| a.sin()).collect::<Vec<_>>(), DType::F32, &[t, dh / 2]);
        let y = output(&p, dtype, &[b, h, t, dh]);
        run(&p, Composite::RopeFwd { x: x.clone(), cos: cos.clone(), sin: sin.clone(), y: y.clone() });
        let (xv, cv, sv) = (f64s(&p, &x), f64s(&p, &cos), f64s(&p, &sin));
        let rot = |v: &[f64], sign: f64| -> Vec<f64> {
            let mut o = vec![0.0; v.len()];
            for r in 0..b * h * t {
                let pos = r % t;
                for i in 0..dh / 2 {
                    let (x1, x2, c, s) =
                        (v[r * dh + i], v[r * dh + i + dh / 2], cv[pos * dh / 2 + i], sign * sv[pos * dh / 2 + i]);
                    o[r * dh + i] = x1 * c - x2 * s;
                    o[r * dh + i + dh / 2] = x2 * c + x1 * s;
                }
            }
            o
        };
        close(&format!("rope fwd {dtype}"), &p, &y, &rot(&xv, 1.0), tol_for(dtype, Tol::F32_ELEM));
        let dx = output(&p, dtype, &[b, h, t, dh]);
        run(&p, Composite::RopeBwd { dy: x.clone(), cos, sin, dx: dx.clone() });
        close(&format!("rope bwd {dtype}"), &p, &dx, &rot(&xv, -1.0), tol_for(dtype, Tol::F32_ELEM));

        // Linear with leading axes [2, 3, In], with and without bias.
        for bias in [true, false] {
            let (nin, nout) = (33, 5);
            let x = tensor(&p, &g.vec(6 * nin, 1.0), dtype, &[2, 3, nin]);
            let w = tensor(&p, &g.vec(nout * nin, 1.0), dtype, &[nout, nin]);
            let bb = bias.then(|| tensor(&p, &g.vec(nout, 1.0), dtype, &[nout]));
            let y = output(&p, dtype, &[2, 3, nout]);
            run(&p, Composite::LinearFwd { x: x.clone(), w: w.clone(), b: bb.clone(), y: y.clone() });
            let (xs, ws) = (f64s(&p, &x), f64s(&p, &w));
            let bs = bb.as_ref().map(|b| f64s(&p, b)).unwrap_or(vec![0.0; nout]);
            let want: Vec<f64> = (0..6 * nout)
                .map(|i| {
                    let (r, o) = (i / nout, i % nout);
                    bs[o] + (0..nin).map(|j| xs[r * nin + j] * ws[o * nin + j]).sum::<f64>()
                })
                .collect();
            let tl = if dtype == DType::BF16 { Tol::BF16_SUM } else { Tol::F32_MATMUL };
            close(&format!("linear fwd bias={bias} {dtype}"), &p, &y, &want, tl);
            let dy = tensor(&p, &g.vec(6 * nout, 1.0), dtype, &[2, 3, nout]);
            let (dx, dw, db) = (
                output(&p, dtype, &[2, 3, nin]),
                output(&p, DType::F32, &[nout, nin]),
                output(&p, DType::F32, &[nout]),
            );
            run(
                &p,
                Composite::LinearBwd {
                    x,
                    w,
                    dy: dy.clone(),
                    dx: Some(dx.clone()),
                    dw: Some(dw.clone()),
                    db: bias.then(|| db.clone()),
                },
            );
            let gs = f64s(&p, &dy);
            let wdx: Vec<f64> =
                (0..6 * nin).map(|i| (0..nout).map(|o| gs[i / nin * nout + o] * ws[o * nin + i % nin]).sum()).collect();
            let wdw: Vec<f64> =
                (0..nout * nin).map(|i| (0..6).map(|r| gs[r * nout + i / nin] * xs[r * nin + i % nin]).sum()).collect();
            let wdb: Vec<f64> = (0..nout).map(|o| (0..6).map(|r| gs[r * nout + o]).sum()).collect();
            close(&format!("linear dx {dtype}"), &p, &dx, &wdx, tl);
            close(&format!("linear dw {dtype}"), &p, &dw, &wdw, Tol::F32_MATMUL);
            if bias {
                close(&format!("linear db {dtype}"), &p, &db, &wdb, Tol::F32_MATMUL);
            } else {
                assert!(get(&p, &db).iter().all(|&v| v == -777.0), "db written although not asked for");
            }
        }
    }
}

#[test]
fn adamw_grad_norm_dropout() {
    let p = cpu();
    let mut g = Gen::new(17);
    for n in [1usize, 783, 64 * 783] {
        for dtype in [DType::F32, DType::BF16] {
            let (lr, b1, b2, eps, wd) = (3e-3f32, 0.9f32, 0.95f32, 1e-8f32, 0.1f32);
            let param = tensor(&p, &g.vec(n, 1.0), dtype, &[n]);
            let (m, v) = (tensor(&p, &vec![0.0; n], DType::F32, &[n]), tensor(&p, &vec![0.0; n], DType::F32, &[n]));
            let scale = tensor(&p, &[0.5], DType::F32, &[1]);
            let mut pw = f64s(&p, &param);
            let (mut mw, mut vw) = (vec![0.0f64; n], vec![0.0f64; n]);
            for step in 1..=2u64 {
                let grad = tensor(&p, &g.vec(n, 1.0), dtype, &[n]);
                let gv = f64s(&p, &grad);
                let call = Composite::AdamWStep {
                    param: param.clone(),
                    grad,
                    m: m.clone(),
                    v: v.clone(),
                    grad_scale: Some(scale.clone()),
                    lr,
                    beta1: b1,
                    beta2: b2,
                    eps,
                    weight_decay: wd,
                    step,
                };
                run(&p, call);
                let (b1, b2) = (b1 as f64, b2 as f64);
                for i in 0..n {
                    let gr = gv[i] * 0.5;
                    mw[i] = b1 * mw[i] + (1.0 - b1) * gr;
                    vw[i] = b2 * vw[i] + (1.0 - b2) * gr * gr;
                    pw[i] *= 1.0 - lr as f64 * wd as f64;
                    pw[i] -= lr as f64 / (1.0 - b1.powi(step as i32)) * mw[i]
                        / (vw[i].sqrt() / (1.0 - b2.powi(step as i32)).sqrt() + eps as f64);
                }
                if dtype == DType::BF16 {
                    pw = f64s(&p, &param); // the oracle continues from the rounded parameters
                }
            }
            close(&format!("adamw m n={n} {dtype}"), &p, &m, &mw, Tol::F32_FUSED);
            close(&format!("adamw v n={n} {dtype}"), &p, &v, &vw, Tol::F32_FUSED);
            close(&format!("adamw param n={n} {dtype}"), &p, &param, &pw, tol_for(dtype, Tol::F32_FUSED));

            // Global norm over tensors of mixed dtypes.
            let grads = vec![tensor(&p, &g.vec(n, 2.0), dtype, &[n]), tensor(&p, &g.vec(17, 2.0), DType::F32, &[17])];
            let out = output(&p, DType::F32, &[1]);
            run(&p, Composite::GradNorm { grads: grads.clone(), out: out.clone() });
            let want: f64 = grads.iter().flat_map(|t| f64s(&p, t)).map(|x| x * x).sum::<f64>().sqrt();
            close(&format!("grad_norm n={n} {dtype}"), &p, &out, &[want], Tol::F32_SUM);

            // Dropout: the mask comes from the shared Philox stream, element for element.
            let (seed, offset, pr) = (1234u64, 99u64, 0.3f32);
            let x = tensor(&p, &g.vec(n, 1.0), dtype, &[n]);
            let (y, mask) = (output(&p, dtype, &[n]), output(&p, dtype, &[n]));
            run(&p, Composite::DropoutFwd { x: x.clone(), p: pr, seed, offset, y: y.clone(), mask: mask.clone() });
            let keep = (1.0 / (1.0 - pr)) as f64;
            let wmask: Vec<f64> =
                (0..n as u64).map(|i| if philox::uniform(seed, offset + i) >= pr { keep } else { 0.0 }).collect();
            close(&format!("dropout mask n={n} {dtype}"), &p, &mask, &wmask, tol_for(dtype, Tol::EXACT));
            let mv = f64s(&p, &mask);
            let wy: Vec<f64> = f64s(&p, &x).iter().zip(&mv).map(|(a, b)| a * b).collect();
            close(&format!("dropout y n={n} {dtype}"), &p, &y, &wy, tol_for(dtype, Tol::F32_ELEM));
            let dx = output(&p, dtype, &[n]);
            run(&p, Composite::DropoutBwd { dy: x.clone(), mask, dx: dx.clone() });
            close(&format!("dropout bwd n={n} {dtype}"), &p, &dx, &wy, tol_for(dtype, Tol::F32_ELEM));
        }
    }
}

#[test]
fn non_contiguous_composites_fall_back() {
    let p = cpu();
    let x = tensor(&p, &[1.0; 6], DType::F32, &[2, 3]);
    let t = View { layout: anychip_port::Layout { shape: vec![3, 2], strides: vec![1, 3], offset: 0 }, ..x.clone() };
    let y = output(&p, DType::F32, &[3, 2]);
    assert_eq!(p.composite(&Composite::SoftmaxFwd { x: t, y }).unwrap(), Handled::No);
    let caps = p.capabilities();
    assert_eq!(caps.fused.len(), Composite::NAMES.len());
}

#[test]
fn results_do_not_depend_on_thread_count() {
    // Bit-identical across thread counts: what makes a one-thread resume reproducible and lets
    // runs be compared across machines.
    let (one, four) = (anychip_port_cpu::new(Some(1)), anychip_port_cpu::new(Some(4)));
    let (r, c) = (300, 257);
    let mut bits = Vec::new();
    for p in [&one, &four] {
        let mut g = Gen::new(18);
        let x = tensor(p, &g.vec(r * c, 2.0), DType::F32, &[r, c]);
        let w = tensor(p, &g.vec(c, 1.0), DType::F32, &[c]);
        let dy = tensor(p, &g.vec(r * c, 1.0), DType::F32, &[r, c]);
        let (y, mean, rstd) =
            (output(p, DType::F32, &[r, c]), output(p, DType::F32, &[r]), output(p, DType::F32, &[r]));
        run(
            p,
            Composite::LayerNormFwd {
                x: x.clone(),
                weight: Some(w.clone()),
                bias: None,
                eps: 1e-5,
                y,
                mean: mean.clone(),
                rstd: rstd.clone(),
            },
        );
        let (dx, dw, db) = (output(p, DType::F32, &[r, c]), output(p, DType::F32, &[c]), output(p, DType::F32, &[c]));
        run(
            p,
            Composite::LayerNormBwd {
                x: x.clone(),
                weight: Some(w),
                mean,
                rstd,
                dy: dy.clone(),
                dx: dx.clone(),
                dweight: Some(dw.clone()),
                dbias: Some(db.clone()),
            },
        );
        let ids = ints(p, &(0..r as i32).map(|i| i % 7).collect::<Vec<_>>(), &[r]);
        let (loss, lse) = (output(p, DType::F32, &[1]), output(p, DType::F32, &[r]));
        run(p, Composite::CrossEntropyFwd { logits: x.clone(), targets: ids, loss: loss.clone(), lse });
        let norm = output(p, DType::F32, &[1]);
        run(p, Composite::GradNorm { grads: vec![x.clone(), dy], out: norm.clone() });
        let wl = tensor(p, &g.vec(c * c, 1.0), DType::F32, &[c, c]);
        let yl = output(p, DType::F32, &[r, c]);
        run(p, Composite::LinearFwd { x: dx.clone(), w: wl, b: Some(db.clone()), y: yl.clone() });
        // The router's dw sums over 300 rows in partial sums of fixed chunks of rows.
        let (wr, probs) = (tensor(p, &g.vec(8 * c, 0.5), DType::F32, &[8, c]), output(p, DType::F32, &[r, 8]));
        run(p, Composite::MoeRouterFwd { x: x.clone(), w: wr.clone(), probs: probs.clone() });
        let dprobs = tensor(p, &g.vec(r * 8, 1.0), DType::F32, &[r, 8]);
        let (dxr, dwr) = (output(p, DType::F32, &[r, c]), output(p, DType::F32, &[8, c]));
        let (dx_o, dw_o) = (Some(dxr.clone()), Some(dwr.clone()));
        run(p, Composite::MoeRouterBwd { x, w: wr, probs: probs.clone(), dprobs, dx: dx_o, dw: dw_o });
        let all: Vec<u32> =
            [dx, dw, db, loss, norm, yl, probs, dxr, dwr].iter().flat_map(|v| get(p, v)).map(f32::to_bits).collect();
        bits.push(all);
    }
    assert!(bits[0] == bits[1], "results differ between 1 and 4 threads");
}

#[test]
fn grouped_linear_is_each_groups_linear_bit_for_bit_at_any_thread_count() {
    // Groups of 0, 700, 5, 0, 301 and 130 rows (In 67, Out 45): at 2 threads the 700-row group
    // is above a thread's fair share of the call and runs split across the pool, the rest side
    // by side on one thread each; at 4 threads the 301-row group is split too. Every output must
    // be the lone linear's bits for its group (however the products were scheduled), the same
    // at 1, 2 and 4 threads; an empty group's weight gradient zeroed.
    let offsets = vec![0, 0, 700, 705, 705, 1006, 1136];
    let (s, inp, out, e) = (1136, 67, 45, 6);
    let mut runs = Vec::new();
    for threads in [1, 2, 4] {
        let p = anychip_port_cpu::new(Some(threads));
        let mut bits = Vec::new();
        for dtype in [DType::F32, DType::BF16] {
            let mut g = Gen::new(23);
            let x = tensor(&p, &g.vec(s * inp, 1.0), dtype, &[s, inp]);
            let dy = tensor(&p, &g.vec(s * out, 1.0), dtype, &[s, out]);
            let ws: Vec<View> = (0..e).map(|_| tensor(&p, &g.vec(out * inp, 0.5), dtype, &[out, inp])).collect();
            let (y, dx) = (output(&p, dtype, &[s, out]), output(&p, dtype, &[s, inp]));
            // Group 4 (rows 705..1006) asks for no weight gradient.
            let dws: Vec<Option<View>> =
                (0..e).map(|i| (i != 4).then(|| output(&p, DType::F32, &[out, inp]))).collect();
            run(
                &p,
                Composite::GroupedLinearFwd { x: x.clone(), ws: ws.clone(), offsets: offsets.clone(), y: y.clone() },
            );
            let call = Composite::GroupedLinearBwd {
                x: x.clone(),
                ws: ws.clone(),
                dy: dy.clone(),
                offsets: offsets.clone(),
                dx: Some(dx.clone()),
                dws: dws.clone(),
            };
            run(&p, call);
            let rows = |v: &View, start: usize, n: usize| {
                let c = v.shape()[1];
                restride(v, &[n, c], &[c, 1], start * c)
            };
            let (y1, dx1) = (output(&p, dtype, &[s, out]), output(&p, dtype, &[s, inp]));
            for i in 0..e {
                let (start, n) = (offsets[i], offsets[i + 1] - offsets[i]);
                let dw1 = output(&p, DType::F32, &[out, inp]);
                if n == 0 {
                    if let Some(dw) = &dws[i] {
                        assert!(get(&p, dw).iter().all(|&v| v == 0.0), "group {i} has no rows: its dw must be zero");
                    }
                    continue;
                }
                let (xe, dye) = (rows(&x, start, n), rows(&dy, start, n));
                run(&p, Composite::LinearFwd { x: xe.clone(), w: ws[i].clone(), b: None, y: rows(&y1, start, n) });
                let (dxe, dwe) = (Some(rows(&dx1, start, n)), Some(dw1.clone()));
                run(&p, Composite::LinearBwd { x: xe, w: ws[i].clone(), dy: dye, dx: dxe, dw: dwe, db: None });
                if let Some(dw) = &dws[i] {
                    assert!(get_bits(&p, dw) == get_bits(&p, &dw1), "{dtype} {threads} threads: dw {i} differs");
                    bits.extend(get_bits(&p, dw));
                }
            }
            assert!(
                get_bits(&p, &y) == get_bits(&p, &y1),
                "{dtype} {threads} threads: y differs from per-group linears"
            );
            assert!(get_bits(&p, &dx) == get_bits(&p, &dx1), "{dtype} {threads} threads: dx differs");
            bits.extend(get_bits(&p, &y));
            bits.extend(get_bits(&p, &dx));
        }
        runs.push(bits);
    }
    assert!(runs[0] == runs[1] && runs[1] == runs[2], "grouped_linear differs between 1, 2 and 4 threads");
}

#[test]
fn linear_accepts_a_transposed_weight_view() {
    // w given as a strided view (the transpose of a stored [In, Out] matrix): no copy needed.
    let p = cpu();
    let mut g = Gen::new(19);
    let (n, nin, nout) = (17, 33, 5);
    let x = tensor(&p, &g.vec(n * nin, 1.0), DType::F32, &[n, nin]);
    let stored = g.vec(nin * nout, 1.0); // [In, Out]
    let wt = put(
        &p,
        &stored,
        DType::F32,
        anychip_port::Layout { shape: vec![nout, nin], strides: vec![1, nout], offset: 0 },
    );
    let y = output(&p, DType::F32, &[n, nout]);
    run(&p, Composite::LinearFwd { x: x.clone(), w: wt, b: None, y: y.clone() });
    let xs = f64s(&p, &x);
    let want: Vec<f64> = (0..n * nout)
        .map(|i| (0..nin).map(|j| xs[i / nout * nin + j] * stored[j * nout + i % nout] as f64).sum())
        .collect();
    close("linear with strided w", &p, &y, &want, Tol::F32_MATMUL);
}
