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

#[test]
fn attention_on_fused_qkv() {
    use anychip_core::{attention, attention_qkv, rope};
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
        let split = |x: &Tensor| -> Result<Tensor> {
            let heads = |start: usize, n: usize| {
                x.narrow(-1, start * 4, n * 4)?.reshape(&[2, 5, n as isize, 4])?.permute(&[0, 2, 1, 3])
            };
            let (mut q, mut k) = (heads(0, 2)?, heads(2, 1)?);
            if let Some((c, s)) = tables {
                (q, k) = (rope(&q, c, s)?, rope(&k, c, s)?);
            }
            let a = attention(&q, &k, &heads(3, 1)?, true, 0.5)?;
            a.permute(&[0, 2, 1, 3])?.reshape(&[2, 5, 8])
        };
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
