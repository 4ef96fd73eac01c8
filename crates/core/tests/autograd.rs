//! Gradients of the core ops against finite differences, on the reference port.

use anychip_core::{Result, Tensor};
use anychip_port::{DType, Port, PortOptions, Registry};
use std::sync::Arc;

fn port() -> Arc<dyn Port> {
    let mut r = Registry::new();
    anychip_port_ref::register(&mut r);
    r.create("ref", &PortOptions::default()).unwrap()
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| anychip_port::philox::uniform(seed, i as u64) * 2.0 - 1.0).collect()
}

/// Check d(sum(f(x) * w))/dx for every input against central differences in f64-ish f32.
fn check(shapes: &[&[usize]], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let p = port();
    let vals: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, s)| data(s.iter().product(), 10 + i as u64)).collect();
    let leaves: Vec<Tensor> = vals
        .iter()
        .zip(shapes)
        .map(|(v, s)| Tensor::from_f32(&p, v, s, DType::F32).unwrap().with_requires_grad())
        .collect();
    let y = f(&leaves).unwrap();
    let w = Tensor::from_f32(&p, &data(y.numel(), 99), y.shape(), DType::F32).unwrap();
    let obj = |ts: &[Tensor]| -> f64 { f(ts).unwrap().mul(&w).unwrap().sum().unwrap().item().unwrap() as f64 };
    let grads = y.mul(&w).unwrap().sum().unwrap().backward().unwrap();
    for (i, leaf) in leaves.iter().enumerate() {
        let g = grads.get(leaf).expect("gradient reached every leaf").to_vec_f32().unwrap();
        for j in 0..vals[i].len() {
            let h = 1e-2f32;
            let at = |d: f32| {
                let ts: Vec<Tensor> = vals
                    .iter()
                    .zip(shapes)
                    .enumerate()
                    .map(|(k, (v, s))| {
                        let mut v = v.clone();
                        if k == i {
                            v[j] += d;
                        }
                        Tensor::from_f32(&p, &v, s, DType::F32).unwrap()
                    })
                    .collect();
                obj(&ts)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            assert!(
                (fd - g[j] as f64).abs() < 2e-2 * (1.0 + fd.abs()),
                "input {i} elem {j}: fd {fd} vs analytic {}",
                g[j]
            );
        }
    }
}

#[test]
fn broadcasting_arithmetic() {
    check(&[&[2, 3], &[3]], |t| t[0].add(&t[1])?.mul(&t[0])?.sub(&t[1]));
    check(&[&[2, 1, 3], &[4, 1]], |t| t[0].mul(&t[1]));
    check(&[&[3, 2], &[3, 1]], |t| t[0].div(&t[1].exp()?));
}

#[test]
fn unary_ops() {
    check(&[&[5]], |t| t[0].exp()?.add(&t[0].tanh()?));
    check(&[&[5]], |t| t[0].mul(&t[0])?.add_scalar(1.0)?.log()?.add(&t[0].mul(&t[0])?.add_scalar(0.5)?.sqrt()?));
    check(&[&[4]], |t| t[0].mul(&t[0])?.add_scalar(1.0)?.recip());
}

#[test]
fn views_and_reductions() {
    check(&[&[2, 3, 4]], |t| t[0].permute(&[2, 0, 1])?.narrow(0, 1, 2)?.reshape(&[-1])?.exp());
    check(&[&[2, 3]], |t| t[0].sum_axes(&[1], false)?.mul(&t[0].mean_axis(0)?.sum()?));
    check(&[&[3, 1], &[3, 2]], |t| Tensor::cat(&[t[0].clone(), t[1].clone()], 1)?.tanh());
    check(&[&[2, 3]], |t| t[0].expand(&[4, 2, 3])?.mul(&t[0])?.max_axes(&[2]));
}

#[test]
fn batched_matmul_with_broadcast_and_transposes() {
    check(&[&[2, 3, 4], &[4, 5]], |t| t[0].matmul(&t[1]));
    check(&[&[4, 3], &[2, 4, 5]], |t| t[0].transpose(0, 1)?.matmul(&t[1]));
    check(&[&[2, 2, 3], &[2, 5, 3]], |t| t[0].matmul(&t[1].transpose(-1, -2)?));
}

#[test]
fn a_shared_input_accumulates_gradients() {
    let p = port();
    let x = Tensor::from_f32(&p, &[3.0], &[1], DType::F32).unwrap().with_requires_grad();
    // y = x*x + x: dy/dx = 2x + 1 = 7
    let g = x.mul(&x).unwrap().add(&x).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec_f32().unwrap(), vec![7.0]);
}

#[test]
fn no_grad_records_nothing_and_errors_are_clear() {
    let p = port();
    let x = Tensor::from_f32(&p, &[1.0, 2.0], &[2], DType::F32).unwrap().with_requires_grad();
    let y = {
        let _g = anychip_core::no_grad();
        x.mul(&x).unwrap()
    };
    assert!(!y.requires_grad());
    assert!(y.sum().unwrap().backward().is_err());
    let e = x.add(&Tensor::from_f32(&p, &[1.0, 2.0, 3.0], &[3], DType::F32).unwrap()).unwrap_err();
    assert!(e.to_string().contains("do not broadcast"), "{e}");
}

/// Attention on a `[2, 5, 16]` fused projection (Hq=2, Hkv=1, Dh=4) with the heads split (and
/// rotated) by hand, products in `operands`: what the fused-QKV forms must equal.
fn attention_split_by_hand(x: &Tensor, tables: Option<(&Tensor, &Tensor)>, operands: DType) -> Result<Tensor> {
    use anychip_core::{attention_autocast, rope};
    let heads = |start: usize, n: usize| {
        x.narrow(-1, start * 4, n * 4)?.reshape(&[2, 5, n as isize, 4])?.permute(&[0, 2, 1, 3])
    };
    let (mut q, mut k) = (heads(0, 2)?, heads(2, 1)?);
    if let Some((c, s)) = tables {
        (q, k) = (rope(&q, c, s)?, rope(&k, c, s)?);
    }
    let a = attention_autocast(&q, &k, &heads(3, 1)?, true, 0.5, operands)?;
    a.permute(&[0, 2, 1, 3])?.reshape(&[2, 5, 8])
}

#[test]
fn attention_on_fused_qkv() {
    use anychip_core::attention_qkv;
    let p = port();
    // RoPE tables for T=5, Dh=4.
    let (c, sn) = (data(10, 7), data(10, 8));
    let (cos, sin) = (
        Tensor::from_f32(&p, &c, &[5, 2], DType::F32).unwrap(),
        Tensor::from_f32(&p, &sn, &[5, 2], DType::F32).unwrap(),
    );
    for tables in [None, Some((&cos, &sin))] {
        // [B=2, T=5, (Hq=2 + 2 Hkv=1) * Dh=4]: GQA, heads read in place through strides.
        check(&[&[2, 5, 16]], |t| attention_qkv(&t[0], 2, 1, tables, true, 0.5));
        // The same numbers as splitting the heads by hand (and rotating q and k).
        let split = |x: &Tensor| attention_split_by_hand(x, tables, DType::F32);
        let x = Tensor::from_f32(&p, &data(160, 3), &[2, 5, 16], DType::F32).unwrap().with_requires_grad();
        let w = Tensor::from_f32(&p, &data(80, 4), &[2, 5, 8], DType::F32).unwrap();
        let fused = |x: &Tensor| attention_qkv(x, 2, 1, tables, true, 0.5);
        let mut got = Vec::new();
        for f in [&split as &dyn Fn(&Tensor) -> Result<Tensor>, &fused] {
            let y = f(&x).unwrap();
            let g = y.mul(&w).unwrap().sum().unwrap().backward().unwrap();
            got.push((y.to_vec_f32().unwrap(), g.get(&x).unwrap().to_vec_f32().unwrap()));
        }
        for (a, b) in got[0].0.iter().chain(&got[0].1).zip(got[1].0.iter().chain(&got[1].1)) {
            assert!((a - b).abs() < 1e-5, "rope {}: {a} vs {b}", tables.is_some());
        }
    }
}

/// The autocast linear's forward and gradients are the products of bf16-rounded operands
/// (x, w, and dy for the backward) summed in f32, with db summed from the unrounded dy; its
/// gradients reach the f32 leaves as f32.
#[test]
fn linear_autocast_bf16_multiplies_rounded_operands_with_f32_gradients() {
    use anychip_core::{linear, linear_autocast};
    let p = port();
    let (n, i, o) = (6, 9, 4);
    let r = |v: &[f32]| v.iter().map(|&x| anychip_port::bf16_to_f32(anychip_port::f32_to_bf16(x))).collect::<Vec<_>>();
    // Values with more than 8 significant bits, so rounding to bf16 changes them.
    let (xv, wv, bv, sv) = (data(n * i, 1), data(o * i, 2), data(o, 3), data(n * o, 4));
    let leaf = |v: &[f32], s: &[usize]| Tensor::from_f32(&p, v, s, DType::F32).unwrap().with_requires_grad();
    let (x, w, b) = (leaf(&xv, &[2, 3, i]), leaf(&wv, &[o, i]), leaf(&bv, &[o]));
    let seed = Tensor::from_f32(&p, &sv, &[2, 3, o], DType::F32).unwrap();
    let y = linear_autocast(&x, &w, Some(&b), DType::BF16).unwrap();
    assert_eq!((y.shape(), y.dtype()), (&[2, 3, o][..], DType::F32));
    let g = y.mul(&seed).unwrap().sum().unwrap().backward().unwrap();
    let (xr, wr, dyr) = (r(&xv), r(&wv), r(&sv));
    let close = |what: &str, got: &[f32], want: &[f64]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}[{j}]: {g} vs exact {w}");
        }
    };
    let dot = |f: &dyn Fn(usize) -> f64, len: usize| (0..len).map(f).sum::<f64>();
    let want_y: Vec<f64> = (0..n * o)
        .map(|e| {
            let (t, c) = (e / o, e % o);
            dot(&|l| xr[t * i + l] as f64 * wr[c * i + l] as f64, i) + bv[c] as f64
        })
        .collect();
    let want_dx: Vec<f64> =
        (0..n * i).map(|e| dot(&|c| dyr[(e / i) * o + c] as f64 * wr[c * i + e % i] as f64, o)).collect();
    let want_dw: Vec<f64> =
        (0..o * i).map(|e| dot(&|t| dyr[t * o + e / i] as f64 * xr[t * i + e % i] as f64, n)).collect();
    let want_db: Vec<f64> = (0..o).map(|c| dot(&|t| sv[t * o + c] as f64, n)).collect();
    close("y", &y.to_vec_f32().unwrap(), &want_y);
    for (what, t, want) in [("dx", &x, &want_dx), ("dw", &w, &want_dw), ("db", &b, &want_db)] {
        let gt = g.get(t).unwrap();
        assert_eq!((gt.shape(), gt.dtype()), (t.shape(), DType::F32), "{what}");
        close(what, &gt.to_vec_f32().unwrap(), want);
    }
    // Against the f32 layer: bf16 rounding (2^-9 relative per operand) moves results a little.
    let y32 = linear(&x, &w, Some(&b)).unwrap().to_vec_f32().unwrap();
    let yb = y.to_vec_f32().unwrap();
    assert!(yb.iter().zip(&y32).all(|(a, b)| (a - b).abs() < 2e-2), "{yb:?} vs {y32:?}");
    assert!(yb.iter().zip(&y32).any(|(a, b)| a != b), "rounding to bf16 must change something");
    // Operands already in the autocast dtype: the plain layer.
    let (xb, wb) = (x.cast(DType::BF16).unwrap(), w.cast(DType::BF16).unwrap());
    let plain = linear(&xb, &wb, None).unwrap().to_vec_f32().unwrap();
    let auto = linear_autocast(&xb, &wb, None, DType::BF16).unwrap().to_vec_f32().unwrap();
    assert_eq!(plain, auto);
}

/// Round to bf16 (nearest even) and widen, in f64.
fn bf16(x: f64) -> f64 {
    anychip_port::bf16_to_f32(anychip_port::f32_to_bf16(x as f32)) as f64
}

/// Autocast attention on one [T, D] head (causal, single KV head) in f64 on the host, as the
/// contract defines it: q, k, v and dout rounded to bf16; the unnormalised probabilities
/// rounded before P V, P before dv and dS before dq and dk. Returns (out, dq, dk, dv).
fn host_attention_bf16(q: &[f32], k: &[f32], v: &[f32], dout: &[f32], t: usize, d: usize, scale: f64) -> [Vec<f64>; 4] {
    let r = |x: &[f32]| x.iter().map(|&v| bf16(v as f64)).collect::<Vec<f64>>();
    let (q, k, v, g) = (r(q), r(k), r(v), r(dout));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (mut out, mut dq, mut dk, mut dv) = (vec![0.0; t * d], vec![0.0; t * d], vec![0.0; t * d], vec![0.0; t * d]);
    for i in 0..t {
        let row = |x: &[f64], j: usize| x[j * d..(j + 1) * d].to_vec();
        let s: Vec<f64> = (0..=i).map(|j| scale * dot(&row(&q, i), &row(&k, j))).collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let l: f64 = e.iter().sum();
        for x in 0..d {
            out[i * d + x] = (0..=i).map(|j| bf16(e[j]) * v[j * d + x]).sum::<f64>() / l;
        }
        let big_d = dot(&row(&g, i), &out[i * d..(i + 1) * d]);
        for j in 0..=i {
            let p = e[j] / l;
            let ds = bf16(p * (dot(&row(&g, i), &row(&v, j)) - big_d));
            for x in 0..d {
                dv[j * d + x] += bf16(p) * g[i * d + x];
                dq[i * d + x] += scale * ds * k[j * d + x];
                dk[j * d + x] += scale * ds * q[i * d + x];
            }
        }
    }
    [out, dq, dk, dv]
}

/// Autocast attention multiplies bf16 operands (q, k, v, dout, and the rounded P and dS) with
/// f32 accumulation, returns f32 output and f32 gradients, and gives the same numbers on
/// separate heads and on a fused QKV projection (with and without RoPE).
#[test]
fn attention_autocast_bf16_rounds_operands_and_probabilities() {
    use anychip_core::{attention, attention_autocast, attention_qkv_autocast};
    let p = port();
    let (t, d) = (6, 4);
    let (qv, kv, vv, gv) = (data(t * d, 21), data(t * d, 22), data(t * d, 23), data(t * d, 24));
    let leaf = |v: &[f32]| Tensor::from_f32(&p, v, &[1, 1, t, d], DType::F32).unwrap().with_requires_grad();
    let (q, k, v) = (leaf(&qv), leaf(&kv), leaf(&vv));
    let seed = Tensor::from_f32(&p, &gv, &[1, 1, t, d], DType::F32).unwrap();
    let y = attention_autocast(&q, &k, &v, true, 0.5, DType::BF16).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let g = y.mul(&seed).unwrap().sum().unwrap().backward().unwrap();
    let want = host_attention_bf16(&qv, &kv, &vv, &gv, t, d, 0.5);
    let got = [
        y.to_vec_f32().unwrap(),
        g.get(&q).unwrap().to_vec_f32().unwrap(),
        g.get(&k).unwrap().to_vec_f32().unwrap(),
        g.get(&v).unwrap().to_vec_f32().unwrap(),
    ];
    for (what, (gt, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
        for (j, (&a, &b)) in gt.iter().zip(w).enumerate() {
            assert!((a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}[{j}]: {a} vs host {b}");
        }
    }
    for leaf in [&q, &k, &v] {
        assert_eq!(g.get(leaf).unwrap().dtype(), DType::F32);
    }
    // Against f32 attention: the roundings move the output (by ~2^-9 relative), a little.
    let y32 = attention(&q, &k, &v, true, 0.5).unwrap().to_vec_f32().unwrap();
    let yb = &got[0];
    assert!(yb.iter().zip(&y32).all(|(a, b)| (a - b).abs() < 2e-2), "{yb:?} vs {y32:?}");
    assert!(yb.iter().zip(&y32).any(|(a, b)| a != b), "rounding to bf16 must change something");

    // On a fused projection [B=2, T=5, (Hq=2 + 2 Hkv=1) * Dh=4]: the same numbers as the heads
    // split (and rotated) by hand.
    let (c, sn) = (data(10, 7), data(10, 8));
    let (cos, sin) = (
        Tensor::from_f32(&p, &c, &[5, 2], DType::F32).unwrap(),
        Tensor::from_f32(&p, &sn, &[5, 2], DType::F32).unwrap(),
    );
    for tables in [None, Some((&cos, &sin))] {
        let split = |x: &Tensor| attention_split_by_hand(x, tables, DType::BF16);
        let fused = |x: &Tensor| attention_qkv_autocast(x, 2, 1, tables, true, 0.5, DType::BF16);
        let x = Tensor::from_f32(&p, &data(160, 3), &[2, 5, 16], DType::F32).unwrap().with_requires_grad();
        let w = Tensor::from_f32(&p, &data(80, 4), &[2, 5, 8], DType::F32).unwrap();
        let mut got = Vec::new();
        for f in [&split as &dyn Fn(&Tensor) -> Result<Tensor>, &fused] {
            let y = f(&x).unwrap();
            let g = y.mul(&w).unwrap().sum().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap();
            assert_eq!((y.dtype(), gx.dtype()), (DType::F32, DType::F32));
            got.push((y.to_vec_f32().unwrap(), gx.to_vec_f32().unwrap()));
        }
        for (a, b) in got[0].0.iter().chain(&got[0].1).zip(got[1].0.iter().chain(&got[1].1)) {
            assert!((a - b).abs() < 1e-5, "rope {}: {a} vs {b}", tables.is_some());
        }
    }
}

#[test]
fn swiglu_on_fused_gate_and_up() {
    use anychip_core::swiglu;
    check(&[&[2, 3, 8]], |t| swiglu(&t[0]));
    // The same numbers as narrow + silu + mul.
    let p = port();
    let x = Tensor::from_f32(&p, &data(48, 5), &[2, 3, 8], DType::F32).unwrap().with_requires_grad();
    let w = Tensor::from_f32(&p, &data(24, 6), &[2, 3, 4], DType::F32).unwrap();
    let plain = |x: &Tensor| x.narrow(-1, 0, 4)?.silu()?.mul(&x.narrow(-1, 4, 4)?);
    let mut got = Vec::new();
    for f in [&plain as &dyn Fn(&Tensor) -> Result<Tensor>, &|x: &Tensor| swiglu(x)] {
        let y = f(&x).unwrap();
        let g = y.mul(&w).unwrap().sum().unwrap().backward().unwrap();
        got.push((y.to_vec_f32().unwrap(), g.get(&x).unwrap().to_vec_f32().unwrap()));
    }
    for (a, b) in got[0].0.iter().chain(&got[0].1).zip(got[1].0.iter().chain(&got[1].1)) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

#[test]
fn backward_hooked_hands_over_each_leaf_once_with_its_final_gradient() {
    // w0 feeds two layers (its gradient sums two uses), w2 only the last: the hook must see w2
    // before w0, and w0 only once both uses are in.
    let p = port();
    let leaf = |n: usize, seed| Tensor::from_f32(&p, &data(n, seed), &[n], DType::F32).unwrap().with_requires_grad();
    let (w0, w1, w2) = (leaf(4, 1), leaf(4, 2), leaf(4, 3));
    let graph = || w0.mul(&w1).unwrap().tanh().unwrap().mul(&w0).unwrap().add(&w2).unwrap().sum().unwrap();
    let loss = graph();
    let plain = loss.backward().unwrap();
    let mut seen: Vec<(u64, Vec<f32>)> = Vec::new();
    let hooked = loss
        .backward_hooked(&mut |t, g| {
            seen.push((t.id(), g.to_vec_f32()?));
            Ok(())
        })
        .unwrap();
    let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), 3, "each leaf once: {ids:?}");
    let at = |t: &Tensor| ids.iter().position(|&i| i == t.id()).expect("every leaf handed over");
    assert!(at(&w2) < at(&w0), "w2 is final before w0's second use is differentiated");
    for w in [&w0, &w1, &w2] {
        let g = plain.get(w).unwrap().to_vec_f32().unwrap();
        assert_eq!(seen[at(w)].1, g, "the hook saw the final gradient");
        assert_eq!(hooked.get(w).unwrap().to_vec_f32().unwrap(), g);
    }
    // An error from the hook ends the pass (on a fresh graph: the hooked pass freed this one).
    let stop = graph().backward_hooked(&mut |_, _| Err(anychip_core::Error::Backward("stop here".into())));
    assert!(stop.err().unwrap().to_string().contains("stop here"));
}

#[test]
fn backward_once_gives_the_same_gradients_and_a_second_pass_is_a_clear_error() {
    let p = port();
    let leaf = |n: usize, seed| Tensor::from_f32(&p, &data(n, seed), &[n], DType::F32).unwrap().with_requires_grad();
    let (w0, w1) = (leaf(5, 1), leaf(5, 2));
    let graph = || w0.mul(&w1).unwrap().tanh().unwrap().mul(&w0).unwrap().sum().unwrap();
    let kept = graph();
    let plain = kept.backward().unwrap();
    // backward() keeps the graph: a second pass works and agrees.
    let again = kept.backward().unwrap();
    let once = graph();
    let freed = once.backward_once().unwrap();
    for w in [&w0, &w1] {
        let g = plain.get(w).unwrap().to_vec_f32().unwrap();
        assert_eq!(again.get(w).unwrap().to_vec_f32().unwrap(), g);
        assert_eq!(freed.get(w).unwrap().to_vec_f32().unwrap(), g);
    }
    // The loss keeps its value; only the graph behind it is gone.
    assert_eq!(once.item().unwrap(), kept.item().unwrap());
    let err = once.backward_once().err().expect("a freed graph cannot be walked again").to_string();
    assert!(err.contains("already freed") && err.contains("backward()"), "{err}");
    assert!(once.backward().is_err(), "nor by a keeping pass");
}

#[test]
fn the_graph_does_not_keep_an_activation_that_no_backward_reads() {
    // y = relu(x * w) feeds only a sum: sum's backward needs no data of its input, and relu
    // keeps what it needs itself, so once the caller drops `h` its storage may go. The graph
    // must still carry h's identity, shape and node so gradients flow through it unchanged.
    let p = port();
    let w = Tensor::from_f32(&p, &data(6, 1), &[6], DType::F32).unwrap().with_requires_grad();
    let x = Tensor::from_f32(&p, &data(6, 2), &[6], DType::F32).unwrap();
    let h = x.mul(&w).unwrap();
    let weak = std::sync::Arc::downgrade(&h.buffer().0);
    let loss = h.sum().unwrap();
    drop(h);
    assert!(weak.upgrade().is_none(), "the sum's node kept its input's storage alive");
    let g = loss.backward().unwrap().get(&w).unwrap().to_vec_f32().unwrap();
    assert_eq!(g, data(6, 2), "d sum(x w) / dw = x");
}

#[test]
fn moe_experts_on_expert_sorted_rows() {
    use anychip_core::moe_experts;
    // 7 rows, d = 4, three experts of width F = 3 taking rows 0..2, 2..3 and 3..7.
    let (d, f) = (4, 3);
    let up: &[usize] = &[2 * f, d];
    let down: &[usize] = &[d, f];
    check(&[&[7, d], up, up, up, down, down, down], |t| moe_experts(&t[0], &[0, 2, 3, 7], &t[1..4], &t[4..7]));
}

#[test]
fn moe_experts_match_each_expert_alone_and_skip_an_empty_one() {
    use anychip_core::{linear, moe_experts, swiglu};
    let p = port();
    let (d, f) = (4, 3);
    let t =
        |n: usize, s: &[usize], seed| Tensor::from_f32(&p, &data(n, seed), s, DType::F32).unwrap().with_requires_grad();
    let x = t(5 * d, &[5, d], 1);
    let up: Vec<Tensor> = (0..3).map(|e| t(2 * f * d, &[2 * f, d], 10 + e)).collect();
    let down: Vec<Tensor> = (0..3).map(|e| t(d * f, &[d, f], 20 + e)).collect();
    // Expert 1 gets no rows.
    let y = moe_experts(&x, &[0, 2, 2, 5], &up, &down).unwrap();
    let got = y.to_vec_f32().unwrap();
    for (e, (a, b)) in [(0usize, (0usize, 2usize)), (2, (2, 5))] {
        let want =
            linear(&swiglu(&linear(&x.narrow(0, a, b - a).unwrap(), &up[e], None).unwrap()).unwrap(), &down[e], None)
                .unwrap()
                .to_vec_f32()
                .unwrap();
        for (g, w) in got[a * d..b * d].iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "expert {e}: {g} vs {w}");
        }
    }
    let g = y.sum().unwrap().backward().unwrap();
    assert!(g.get(&up[1]).is_none() && g.get(&down[1]).is_none(), "an expert without rows gets no gradient");
    assert!(g.get(&up[2]).is_some() && g.get(&x).is_some());
}

#[test]
fn moe_combine_weights_and_sums_rows_per_token() {
    use anychip_core::moe_combine;
    let p = port();
    let tok = Tensor::from_i32(&p, &[0, 2, 0, 1, 2], &[5]).unwrap();
    check(&[&[5, 4], &[5, 1]], |t| moe_combine(&t[0], &t[1], &tok, 3));
    let y = Tensor::from_f32(&p, &data(20, 3), &[5, 4], DType::F32).unwrap();
    let w = Tensor::from_f32(&p, &data(5, 4), &[5, 1], DType::F32).unwrap();
    let out = moe_combine(&y, &w, &tok, 3).unwrap().to_vec_f32().unwrap();
    let (yv, wv) = (y.to_vec_f32().unwrap(), w.to_vec_f32().unwrap());
    for (t, slots) in [(0usize, vec![0usize, 2]), (1, vec![3]), (2, vec![1, 4])] {
        for c in 0..4 {
            let want: f32 = slots.iter().map(|&s| wv[s] * yv[s * 4 + c]).sum();
            assert!((out[t * 4 + c] - want).abs() < 1e-6, "token {t} col {c}");
        }
    }
}

#[test]
fn moe_router_matches_linear_then_softmax() {
    use anychip_core::{linear, moe_router};
    let p = port();
    check(&[&[5, 4], &[3, 4]], |t| moe_router(&t[0], &t[1]));
    // With x detached (the load-balancing loss's router) only w gets a gradient.
    let x = Tensor::from_f32(&p, &data(20, 5), &[5, 4], DType::F32).unwrap().with_requires_grad();
    let w = Tensor::from_f32(&p, &data(12, 6), &[3, 4], DType::F32).unwrap().with_requires_grad();
    let (got, want) = (moe_router(&x, &w).unwrap(), linear(&x, &w, None).unwrap().softmax().unwrap());
    for (g, v) in got.to_vec_f32().unwrap().iter().zip(want.to_vec_f32().unwrap()) {
        assert!((g - v).abs() < 1e-6, "{g} vs {v}");
    }
    let g = moe_router(&x.detach(), &w).unwrap().sum().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none() && g.get(&w).is_some());
    let bad = moe_router(&x, &Tensor::from_f32(&p, &data(15, 7), &[3, 5], DType::F32).unwrap());
    assert!(bad.unwrap_err().to_string().contains("moe_router"));
}
