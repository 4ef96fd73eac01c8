//! The L2 cases, one function per composite family, each covering its forward and backward.

use super::attention_terms::{terms, Shape};
use super::{Case, On};
use crate::harness::data;
use anychip_port::{bf16_to_f32, f32_to_bf16, Composite, DType, GeluKind, Result, View};
use anychip_test_support::transfer;

/// Row shapes for the row-wise families: a single element, odd small, and long rows.
const ROWS: [(usize, usize); 3] = [(1, 1), (3, 17), (17, 783)];

/// Every case, f32 then bf16, then the mixed-precision linear and attention.
pub(crate) fn all() -> Vec<Case> {
    let mut v = Vec::new();
    for dt in [DType::F32, DType::BF16] {
        for (r, d) in ROWS {
            v.extend(softmax(dt, r, d));
            v.extend(log_softmax(dt, r, d));
            v.extend(layer_norm(dt, r, d));
            v.extend(rms_norm(dt, r, d));
            v.extend(activations(dt, r, d));
        }
        v.push(softmax_masked_row(dt));
        v.extend(cross_entropy(dt));
        v.extend(attention(dt));
        v.extend(linear(dt));
        v.extend(embedding(dt));
        v.extend(rope(dt));
        v.push(adamw(dt));
        v.push(grad_norm(dt));
        v.extend(dropout(dt));
        v.extend(moe_combine(dt));
        v.extend(moe_router(dt));
        v.extend(grouped_linear(dt));
    }
    v.extend(linear_mixed_precision());
    v.extend(grouped_linear_mixed_precision());
    v.extend(attention_mixed_precision());
    v
}

/// `v` as `dt` stores it, widened to f64 (what both sides actually read).
fn stored(v: &[f32], dt: DType) -> Vec<f64> {
    v.iter().map(|&x| if dt == DType::BF16 { bf16_to_f32(f32_to_bf16(x)) as f64 } else { x as f64 }).collect()
}

/// Per-row (mean, 1/sqrt(var + eps)) of the stored rows of `x`, in f64, as f32.
fn mean_rstd(x: &[f64], d: usize, eps: f64) -> (Vec<f32>, Vec<f32>) {
    x.chunks(d)
        .map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
        })
        .unzip()
}

/// Per-row 1/sqrt(mean(x^2) + eps), in f64, as f32.
fn rms_rstd(x: &[f64], d: usize, eps: f64) -> Vec<f32> {
    x.chunks(d).map(|row| (1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt()) as f32).collect()
}

/// Per-row log-sum-exp, in f64, as f32.
fn row_lse(x: &[f64], d: usize) -> Vec<f32> {
    x.chunks(d)
        .map(|row| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            (m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()) as f32
        })
        .collect()
}

fn softmax(dt: DType, r: usize, d: usize) -> Vec<Case> {
    let (x, dy) = (data(r * d, 1, 4.0), data(r * d, 2, 1.0));
    // Any y in [0, 1) exercises dx = y (dy - sum(y dy)); it need not be a softmax output.
    let y: Vec<f32> = data(r * d, 3, 0.5).iter().map(|v| v.abs()).collect();
    vec![
        Case::new(format!("softmax fwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::SoftmaxFwd { x: o.x(&x, &[r, d])?, y: o.out(&[r, d])? })
        }),
        Case::new(format!("softmax bwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::SoftmaxBwd { y: o.x(&y, &[r, d])?, dy: o.x(&dy, &[r, d])?, dx: o.out(&[r, d])? })
        }),
    ]
}

/// A softmax row that is entirely -inf (a fully masked attention row) gives zeros.
fn softmax_masked_row(dt: DType) -> Case {
    Case::new(format!("softmax -inf row {dt}"), dt, |o| {
        Ok(Composite::SoftmaxFwd { x: o.x(&[f32::NEG_INFINITY; 5], &[1, 5])?, y: o.out(&[1, 5])? })
    })
}

fn log_softmax(dt: DType, r: usize, d: usize) -> Vec<Case> {
    let (x, dy) = (data(r * d, 1, 4.0), data(r * d, 2, 1.0));
    // A log-softmax output: every value <= 0, so exp(y) in (0, 1].
    let y: Vec<f32> = data(r * d, 4, 6.0).iter().map(|v| -v.abs()).collect();
    vec![
        Case::new(format!("log_softmax fwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::LogSoftmaxFwd { x: o.x(&x, &[r, d])?, y: o.out(&[r, d])? })
        }),
        Case::new(format!("log_softmax bwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::LogSoftmaxBwd { y: o.x(&y, &[r, d])?, dy: o.x(&dy, &[r, d])?, dx: o.out(&[r, d])? })
        }),
    ]
}

fn layer_norm(dt: DType, r: usize, d: usize) -> Vec<Case> {
    let (x, dy, w, b) = (data(r * d, 1, 4.0), data(r * d, 2, 1.0), data(d, 4, 1.0), data(d, 5, 1.0));
    let (mean, rstd) = mean_rstd(&stored(&x, dt), d, 1e-5);
    let (x2, w2) = (x.clone(), w.clone());
    vec![
        Case::new(format!("layer_norm fwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::LayerNormFwd {
                x: o.x(&x, &[r, d])?,
                weight: Some(o.x(&w, &[d])?),
                bias: Some(o.x(&b, &[d])?),
                eps: 1e-5,
                y: o.out(&[r, d])?,
                mean: o.out_f32(&[r])?,
                rstd: o.out_f32(&[r])?,
            })
        }),
        Case::new(format!("layer_norm bwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::LayerNormBwd {
                x: o.x(&x2, &[r, d])?,
                weight: Some(o.x(&w2, &[d])?),
                mean: o.f32(&mean, &[r])?,
                rstd: o.f32(&rstd, &[r])?,
                dy: o.x(&dy, &[r, d])?,
                dx: o.out(&[r, d])?,
                dweight: Some(o.out_f32(&[d])?),
                dbias: Some(o.out_f32(&[d])?),
            })
        }),
    ]
}

fn rms_norm(dt: DType, r: usize, d: usize) -> Vec<Case> {
    let (x, dy, w) = (data(r * d, 1, 4.0), data(r * d, 2, 1.0), data(d, 4, 1.0));
    let rstd = rms_rstd(&stored(&x, dt), d, 1e-5);
    let (x2, w2) = (x.clone(), w.clone());
    vec![
        Case::new(format!("rms_norm fwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::RmsNormFwd {
                x: o.x(&x, &[r, d])?,
                weight: Some(o.x(&w, &[d])?),
                eps: 1e-5,
                y: o.out(&[r, d])?,
                rstd: o.out_f32(&[r])?,
            })
        }),
        Case::new(format!("rms_norm bwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::RmsNormBwd {
                x: o.x(&x2, &[r, d])?,
                weight: Some(o.x(&w2, &[d])?),
                rstd: o.f32(&rstd, &[r])?,
                dy: o.x(&dy, &[r, d])?,
                dx: o.out(&[r, d])?,
                dweight: Some(o.out_f32(&[d])?),
            })
        }),
    ]
}

/// GELU (tanh and erf forms), SiLU and SwiGLU, forward and backward.
fn activations(dt: DType, r: usize, d: usize) -> Vec<Case> {
    let (x, dy) = (data(r * d, 1, 4.0), data(r * d, 2, 1.0));
    let mut v = Vec::new();
    for kind in [GeluKind::Tanh, GeluKind::Erf] {
        let (xa, xb, dyb) = (x.clone(), x.clone(), dy.clone());
        v.push(Case::new(format!("gelu {kind:?} fwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::GeluFwd { kind, x: o.x(&xa, &[r, d])?, y: o.out(&[r, d])? })
        }));
        v.push(Case::new(format!("gelu {kind:?} bwd {dt} [{r},{d}]"), dt, move |o| {
            Ok(Composite::GeluBwd { kind, x: o.x(&xb, &[r, d])?, dy: o.x(&dyb, &[r, d])?, dx: o.out(&[r, d])? })
        }));
    }
    let xs = x.clone();
    v.push(Case::new(format!("silu fwd {dt} [{r},{d}]"), dt, move |o| {
        Ok(Composite::SiluFwd { x: o.x(&xs, &[r, d])?, y: o.out(&[r, d])? })
    }));
    v.push(Case::new(format!("silu bwd {dt} [{r},{d}]"), dt, move |o| {
        Ok(Composite::SiluBwd { x: o.x(&x, &[r, d])?, dy: o.x(&dy, &[r, d])?, dx: o.out(&[r, d])? })
    }));
    v.extend(swiglu(dt, r, (d / 2).max(1)));
    v
}

/// SwiGLU over x `[r, 2f]` (gate half, up half), forward and backward.
fn swiglu(dt: DType, r: usize, f: usize) -> Vec<Case> {
    let (x, dy) = (data(r * 2 * f, 3, 4.0), data(r * f, 4, 1.0));
    let xs = x.clone();
    vec![
        Case::new(format!("swiglu fwd {dt} [{r},{}]", 2 * f), dt, move |o| {
            Ok(Composite::SwigluFwd { x: o.x(&xs, &[r, 2 * f])?, y: o.out(&[r, f])? })
        }),
        Case::new(format!("swiglu bwd {dt} [{r},{}]", 2 * f), dt, move |o| {
            Ok(Composite::SwigluBwd { x: o.x(&x, &[r, 2 * f])?, dy: o.x(&dy, &[r, f])?, dx: o.out(&[r, 2 * f])? })
        }),
    ]
}

/// Cross-entropy over 783 classes with an ignored target (-1).
fn cross_entropy(dt: DType) -> Vec<Case> {
    let (n, vocab) = (5, 783);
    let logits = data(n * vocab, 6, 5.0);
    let targets = [3i32, -1, 782, 0, 17];
    let lse = row_lse(&stored(&logits, dt), vocab);
    let l2 = logits.clone();
    vec![
        Case::new(format!("cross_entropy fwd {dt}"), dt, move |o| {
            Ok(Composite::CrossEntropyFwd {
                logits: o.x(&l2, &[n, vocab])?,
                targets: o.ids(&targets)?,
                loss: o.out_f32(&[1])?,
                lse: o.out_f32(&[n])?,
            })
        }),
        Case::new(format!("cross_entropy bwd {dt}"), dt, move |o| {
            Ok(Composite::CrossEntropyBwd {
                logits: o.x(&logits, &[n, vocab])?,
                targets: o.ids(&targets)?,
                lse: o.f32(&lse, &[n])?,
                dloss: o.f32(&[0.7], &[1])?,
                dlogits: o.out(&[n, vocab])?,
            })
        }),
    ]
}

/// Attention shapes (b, hq, hkv, t, s, d): MHA, GQA 2:1, T < S, and T > S (queries with no
/// visible key).
const ATTENTION: [Shape; 4] = [(1, 2, 2, 17, 17, 8), (2, 4, 2, 3, 3, 16), (1, 2, 1, 5, 9, 4), (1, 1, 1, 4, 2, 4)];

fn attention(dt: DType) -> Vec<Case> {
    ATTENTION.iter().flat_map(|&shape| attention_case(dt, dt, shape)).collect()
}

/// Attention as `attention_autocast` calls it: bf16 q, k, v and dout, f32 out, lse, dq, dk and
/// dv; the shapes above and one whose rows span more than one 64-key block of a blocked
/// (online-softmax) kernel.
fn attention_mixed_precision() -> Vec<Case> {
    let long: Shape = (1, 2, 1, 80, 80, 8);
    ATTENTION.iter().chain([&long]).flat_map(|&shape| attention_case(DType::BF16, DType::F32, shape)).collect()
}

/// One attention shape's inputs.
struct Attention {
    shape: Shape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// `v` uploaded in `dt` (the case's dtype or F32).
fn upload_in(o: &On, v: &[f32], shape: &[usize], dt: DType) -> Result<View> {
    if dt == DType::F32 {
        o.f32(v, shape)
    } else {
        o.x(v, shape)
    }
}

/// A zeroed output in `dt` (the case's dtype or F32).
fn out_in(o: &On, shape: &[usize], dt: DType) -> Result<View> {
    if dt == DType::F32 {
        o.out_f32(shape)
    } else {
        o.out(shape)
    }
}

impl Attention {
    fn q_shape(&self) -> [usize; 4] {
        let (b, hq, _, t, _, d) = self.shape;
        [b, hq, t, d]
    }
    fn kv_shape(&self) -> [usize; 4] {
        let (b, _, hkv, _, s, d) = self.shape;
        [b, hkv, s, d]
    }
    fn lse_shape(&self) -> [usize; 3] {
        let (b, hq, _, t, _, _) = self.shape;
        [b, hq, t]
    }
    fn scale(&self) -> f32 {
        1.0 / (self.shape.5 as f32).sqrt()
    }
    /// The causal forward on `o`'s port, writing `out` and `lse`.
    fn forward(&self, o: &On, out: View, lse: View) -> Result<Composite> {
        Ok(Composite::AttentionFwd {
            q: o.x(&self.q, &self.q_shape())?,
            k: o.x(&self.k, &self.kv_shape())?,
            v: o.x(&self.v, &self.kv_shape())?,
            scale: self.scale(),
            causal: true,
            out,
            lse,
        })
    }
    /// The forward's out (in `out_dt`) and lse as `ref` computes them: what the backward is
    /// given on every port, so that both sides differentiate the same saved values.
    fn saved_by_ref(&self, dt: DType, out_dt: DType) -> Result<(Vec<f32>, Vec<f32>)> {
        let oracle = anychip_port_ref::new();
        let on = On { p: &oracle, dt };
        let (out, lse) = (out_in(&on, &self.q_shape(), out_dt)?, on.out_f32(&self.lse_shape())?);
        anychip_decomp::run(&oracle, &self.forward(&on, out.clone(), lse.clone())?)?;
        Ok((transfer::download_f32(&oracle, &out)?, transfer::download_f32(&oracle, &lse)?))
    }
    /// The magnitudes of the terms of every output, from the inputs as `dt` stores them.
    fn terms(&self, dout: &[f32], dt: DType) -> super::attention_terms::Terms {
        let (q, k, v, g) = (stored(&self.q, dt), stored(&self.k, dt), stored(&self.v, dt), stored(dout, dt));
        terms(self.shape, &q, &k, &v, &g, self.scale() as f64)
    }
}

/// Forward and backward of one shape: operands (q, k, v, dout) in `dt`, out, dq, dk and dv in
/// `out_dt`. With bf16 operands the contract rounds P and dS to bf16 for the products, so the
/// bound counts one bf16 step of each output's terms ([`crate::tolerance::rounded_operands`]).
fn attention_case(dt: DType, out_dt: DType, shape: Shape) -> Vec<Case> {
    let (b, hq, hkv, t, s, d) = shape;
    let a = Attention {
        shape,
        q: data(b * hq * t * d, 7, 1.0),
        k: data(b * hkv * s * d, 8, 1.0),
        v: data(b * hkv * s * d, 9, 1.0),
    };
    let dout = data(b * hq * t * d, 10, 1.0);
    let dts = if out_dt == dt { format!("{dt}") } else { format!("{dt}->{out_dt}") };
    let name = |dir: &str| format!("attention {dir} {dts} b{b} hq{hq} hkv{hkv} t{t} s{s}");
    let a = std::rc::Rc::new(a);
    let (a2, a3, dout2) = (a.clone(), a.clone(), dout.clone());
    let fwd =
        Case::new(name("fwd"), dt, move |o| a.forward(o, out_in(o, &a.q_shape(), out_dt)?, o.out_f32(&a.lse_shape())?));
    let bwd = Case::new(name("bwd"), dt, move |o| {
        let (out, lse) = a2.saved_by_ref(dt, out_dt)?;
        let (qs, kvs) = (a2.q_shape(), a2.kv_shape());
        Ok(Composite::AttentionBwd {
            q: o.x(&a2.q, &qs)?,
            k: o.x(&a2.k, &kvs)?,
            v: o.x(&a2.v, &kvs)?,
            out: upload_in(o, &out, &qs, out_dt)?,
            lse: o.f32(&lse, &a2.lse_shape())?,
            dout: o.x(&dout, &qs)?,
            scale: a2.scale(),
            causal: true,
            dq: out_in(o, &qs, out_dt)?,
            dk: out_in(o, &kvs, out_dt)?,
            dv: out_in(o, &kvs, out_dt)?,
        })
    });
    if dt == DType::F32 {
        return vec![fwd, bwd];
    }
    let a4 = a3.clone();
    let dout3 = dout2.clone();
    vec![
        fwd.with_terms(move || {
            let m = a3.terms(&dout2, dt);
            vec![m.out, m.lse]
        }),
        bwd.with_terms(move || {
            let m = a4.terms(&dout3, dt);
            vec![m.dq, m.dk, m.dv]
        }),
    ]
}

/// Linear with bias, both directions, in the case's dtype throughout.
fn linear(dt: DType) -> Vec<Case> {
    let (x, w, bias, dy) = (data(17 * 33, 11, 1.0), data(9 * 33, 12, 1.0), data(9, 13, 1.0), data(17 * 9, 14, 1.0));
    let (x2, w2) = (x.clone(), w.clone());
    vec![
        Case::new(format!("linear fwd {dt}"), dt, move |o| {
            Ok(Composite::LinearFwd {
                x: o.x(&x2, &[17, 33])?,
                w: o.x(&w2, &[9, 33])?,
                b: Some(o.x(&bias, &[9])?),
                y: o.out(&[17, 9])?,
            })
        }),
        Case::new(format!("linear bwd {dt}"), dt, move |o| {
            Ok(Composite::LinearBwd {
                x: o.x(&x, &[17, 33])?,
                w: o.x(&w, &[9, 33])?,
                dy: o.x(&dy, &[17, 9])?,
                dx: Some(o.out(&[17, 33])?),
                dw: Some(o.out(&[9, 33])?),
                db: Some(o.out(&[9])?),
            })
        }),
    ]
}

/// Linear in mixed precision, as `linear_autocast` calls it: bf16 x, w and dy, f32 bias, y,
/// dx, dw and db. Shapes span several register tiles and an odd K on each of the three
/// products.
fn linear_mixed_precision() -> Vec<Case> {
    let (n, i, o) = (37, 67, 45);
    let (x, w, bias, dy) = (data(n * i, 41, 1.0), data(o * i, 42, 1.0), data(o, 43, 1.0), data(n * o, 44, 1.0));
    let (x2, w2) = (x.clone(), w.clone());
    vec![
        Case::new("linear fwd bf16->f32".into(), DType::BF16, move |on| {
            Ok(Composite::LinearFwd {
                x: on.x(&x2, &[n, i])?,
                w: on.x(&w2, &[o, i])?,
                b: Some(on.f32(&bias, &[o])?),
                y: on.out_f32(&[n, o])?,
            })
        }),
        Case::new("linear bwd bf16->f32".into(), DType::BF16, move |on| {
            Ok(Composite::LinearBwd {
                x: on.x(&x, &[n, i])?,
                w: on.x(&w, &[o, i])?,
                dy: on.x(&dy, &[n, o])?,
                dx: Some(on.out_f32(&[n, i])?),
                dw: Some(on.out_f32(&[o, i])?),
                db: Some(on.out_f32(&[o])?),
            })
        }),
    ]
}

/// Embedding lookup and its scatter-add backward, with a repeated id.
fn embedding(dt: DType) -> Vec<Case> {
    let (table, dout) = (data(7 * 5, 15, 1.0), data(4 * 5, 16, 1.0));
    let ids = [6, 0, 6, 3];
    vec![
        Case::new(format!("embedding fwd {dt}"), dt, move |o| {
            Ok(Composite::EmbeddingFwd { table: o.x(&table, &[7, 5])?, ids: o.ids(&ids)?, out: o.out(&[4, 5])? })
        }),
        Case::new(format!("embedding bwd {dt}"), dt, move |o| {
            Ok(Composite::EmbeddingBwd { ids: o.ids(&ids)?, dout: o.x(&dout, &[4, 5])?, dtable: o.out(&[7, 5])? })
        }),
    ]
}

/// MoE combine and its backward, with one token taking three rows and one none.
fn moe_combine(dt: DType) -> Vec<Case> {
    let (s, d, n) = (9, 33, 5);
    let (y, w, dout) = (data(s * d, 41, 2.0), data(s, 42, 1.0), data(n * d, 43, 1.0));
    let tok = [2, 0, 2, 1, 0, 3, 2, 1, 0]; // token 4 gets no row: its output row is zero
    let (y2, w2) = (y.clone(), w.clone());
    vec![
        Case::new(format!("moe_combine fwd {dt}"), dt, move |o| {
            Ok(Composite::MoeCombineFwd {
                y: o.x(&y, &[s, d])?,
                w: o.x(&w, &[s, 1])?,
                tok: o.ids(&tok)?,
                out: o.out(&[n, d])?,
            })
        }),
        Case::new(format!("moe_combine bwd {dt}"), dt, move |o| {
            Ok(Composite::MoeCombineBwd {
                y: o.x(&y2, &[s, d])?,
                w: o.x(&w2, &[s, 1])?,
                tok: o.ids(&tok)?,
                dout: o.x(&dout, &[n, d])?,
                dy: Some(o.out(&[s, d])?),
                dw: Some(o.out(&[s, 1])?),
            })
        }),
    ]
}

/// MoE router and its backward (with dx and dw, and with dw alone as the load-balancing loss
/// asks for it): 150 rows (three chunks of a 64-row blocked dw sum), 7 experts (a group of four
/// and three alone in a kernel that takes four at a time), 67 features (16-lane blocks and a tail).
fn moe_router(dt: DType) -> Vec<Case> {
    let (n, d, e) = (150, 67, 7);
    let (x, w, dprobs) = (data(n * d, 51, 1.0), data(e * d, 52, 0.5), data(n * e, 53, 1.0));
    // A softmax output, as the backward receives one: rows of random logits in [-3, 3).
    let probs: Vec<f32> = data(n * e, 54, 3.0)
        .chunks(e)
        .flat_map(|z| {
            let s: f64 = z.iter().map(|&v| (v as f64).exp()).sum();
            z.iter().map(move |&v| ((v as f64).exp() / s) as f32)
        })
        .collect();
    let fwd = {
        let (x, w) = (x.clone(), w.clone());
        Case::new(format!("moe_router fwd {dt}"), dt, move |o| {
            Ok(Composite::MoeRouterFwd { x: o.x(&x, &[n, d])?, w: o.x(&w, &[e, d])?, probs: o.out(&[n, e])? })
        })
    };
    let bwd = |with_dx: bool| {
        let (x, w, probs, dprobs) = (x.clone(), w.clone(), probs.clone(), dprobs.clone());
        let name = if with_dx { "bwd" } else { "bwd dw only" };
        Case::new(format!("moe_router {name} {dt}"), dt, move |o| {
            Ok(Composite::MoeRouterBwd {
                x: o.x(&x, &[n, d])?,
                w: o.x(&w, &[e, d])?,
                probs: o.x(&probs, &[n, e])?,
                dprobs: o.x(&dprobs, &[n, e])?,
                dx: if with_dx { Some(o.out(&[n, d])?) } else { None },
                dw: Some(o.out(&[e, d])?),
            })
        })
    };
    vec![fwd, bwd(true), bwd(false)]
}

/// Grouped linear's groups: 700 rows in five uneven groups, one empty (61, 0, 400, 3, 236
/// rows), so a port that schedules groups is checked on an empty group, a group of a few rows
/// and one big enough for the cpu port to split it (above a thread's fair share of the call at
/// 2 threads, and over two 128-row slices) while the others run side by side; In 67 and Out 45
/// reach register-tile tails.
const GROUPS: [usize; 6] = [0, 61, 61, 461, 464, 700];

/// Grouped linear (a MoE layer's experts), forward and backward: all outputs present (the empty
/// group's weight gradient zeroed), and dx absent with only some weight gradients asked for.
fn grouped_linear(dt: DType) -> Vec<Case> {
    grouped_cases(&format!("{dt}"), dt, dt)
}

/// Grouped linear in mixed precision, as with `linear_autocast`: bf16 x, ws and dy; f32 y, dx
/// and weight gradients.
fn grouped_linear_mixed_precision() -> Vec<Case> {
    grouped_cases("bf16->f32", DType::BF16, DType::F32)
}

fn grouped_cases(label: &str, dt: DType, out_dt: DType) -> Vec<Case> {
    let (s, inp, out, e) = (GROUPS[5], 67, 45, GROUPS.len() - 1);
    let (x, dy) = (data(s * inp, 61, 1.0), data(s * out, 62, 1.0));
    let ws: Vec<Vec<f32>> = (0..e).map(|i| data(out * inp, 63 + i as u64, 0.5)).collect();
    let upload = move |o: &On, ws: &[Vec<f32>]| ws.iter().map(|w| o.x(w, &[out, inp])).collect::<Result<Vec<View>>>();
    let outv = move |o: &On, shape: &[usize]| if out_dt == DType::F32 { o.out_f32(shape) } else { o.out(shape) };
    let fwd = {
        let (x, ws) = (x.clone(), ws.clone());
        Case::new(format!("grouped_linear fwd {label}"), dt, move |o| {
            Ok(Composite::GroupedLinearFwd {
                x: o.x(&x, &[s, inp])?,
                ws: upload(o, &ws)?,
                offsets: GROUPS.to_vec(),
                y: outv(o, &[s, out])?,
            })
        })
    };
    // `all`: dx and every weight gradient; else no dx and the gradients of groups 0 and 2 only.
    let bwd = |all: bool| {
        let (x, ws, dy) = (x.clone(), ws.clone(), dy.clone());
        let name = if all { "bwd" } else { "bwd some dw" };
        Case::new(format!("grouped_linear {name} {label}"), dt, move |o| {
            let dws = (0..e).map(|i| (all || i % 2 == 0).then(|| outv(o, &[out, inp])).transpose());
            Ok(Composite::GroupedLinearBwd {
                x: o.x(&x, &[s, inp])?,
                ws: upload(o, &ws)?,
                dy: o.x(&dy, &[s, out])?,
                offsets: GROUPS.to_vec(),
                dx: if all { Some(outv(o, &[s, inp])?) } else { None },
                dws: dws.collect::<Result<_>>()?,
            })
        })
    };
    vec![fwd, bwd(true), bwd(false)]
}

fn rope(dt: DType) -> Vec<Case> {
    let (x, cos, sin) = (data(2 * 3 * 17 * 8, 17, 1.0), data(17 * 4, 18, 1.0), data(17 * 4, 19, 1.0));
    let (x2, cos2, sin2) = (x.clone(), cos.clone(), sin.clone());
    let shape = [2, 3, 17, 8];
    vec![
        Case::new(format!("rope fwd {dt}"), dt, move |o| {
            Ok(Composite::RopeFwd {
                x: o.x(&x, &shape)?,
                cos: o.f32(&cos, &[17, 4])?,
                sin: o.f32(&sin, &[17, 4])?,
                y: o.out(&shape)?,
            })
        }),
        Case::new(format!("rope bwd {dt}"), dt, move |o| {
            Ok(Composite::RopeBwd {
                dy: o.x(&x2, &shape)?,
                cos: o.f32(&cos2, &[17, 4])?,
                sin: o.f32(&sin2, &[17, 4])?,
                dx: o.out(&shape)?,
            })
        }),
    ]
}

/// One AdamW step in place (param in the case's dtype, moments F32, a gradient scale).
fn adamw(dt: DType) -> Case {
    let (param, grad, m) = (data(783, 20, 1.0), data(783, 21, 1.0), data(783, 22, 0.1));
    let v: Vec<f32> = data(783, 23, 0.1).iter().map(|x| x.abs()).collect();
    Case::new(format!("adamw {dt}"), dt, move |o| {
        Ok(Composite::AdamWStep {
            param: o.x(&param, &[783])?,
            grad: o.x(&grad, &[783])?,
            m: o.f32(&m, &[783])?,
            v: o.f32(&v, &[783])?,
            grad_scale: Some(o.f32(&[0.5], &[1])?),
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step: 3,
        })
    })
}

/// The global norm of two gradients of different lengths.
fn grad_norm(dt: DType) -> Case {
    let (g1, g2) = (data(783, 24, 1.0), data(17, 25, 1.0));
    Case::new(format!("grad_norm {dt}"), dt, move |o| {
        Ok(Composite::GradNorm { grads: vec![o.x(&g1, &[783])?, o.x(&g2, &[17])?], out: o.out_f32(&[1])? })
    })
}

/// Dropout forward (mask from Philox, bit-exact) and backward through a given mask.
fn dropout(dt: DType) -> Vec<Case> {
    let (x, dy) = (data(783, 26, 1.0), data(783, 27, 1.0));
    // A mask as the forward writes it: 0 or 1/(1-p), here with p = 0.3.
    let mask: Vec<f32> = data(783, 28, 1.0).iter().map(|&u| if u.abs() < 0.3 { 0.0 } else { 1.0 / 0.7 }).collect();
    vec![
        Case::new(format!("dropout fwd {dt}"), dt, move |o| {
            Ok(Composite::DropoutFwd {
                x: o.x(&x, &[783])?,
                p: 0.3,
                seed: 5,
                offset: 11,
                y: o.out(&[783])?,
                mask: o.out(&[783])?,
            })
        }),
        Case::new(format!("dropout bwd {dt}"), dt, move |o| {
            Ok(Composite::DropoutBwd { dy: o.x(&dy, &[783])?, mask: o.x(&mask, &[783])?, dx: o.out(&[783])? })
        }),
    ]
}
