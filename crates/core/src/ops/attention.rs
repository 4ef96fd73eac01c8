//! Scaled dot-product attention: on separate q, k, v tensors, or straight on the output of a
//! fused QKV projection (the layout every model here uses), where it saves the copies that
//! split, permute and merge heads, and in the backward the zero fills and sums that splitting
//! the gradient back into one tensor would take.

use super::composite::run;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::{Composite, DType, Layout, View};

/// Scaled dot-product attention: q `[B,Hq,T,D]`, k and v `[B,Hkv,S,D]` (GQA when Hkv < Hq).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, scale: f32) -> Result<Tensor> {
    let ok = q.rank() == 4
        && k.rank() == 4
        && k.shape() == v.shape()
        && q.dim(0) == k.dim(0)
        && q.dim(3) == k.dim(3)
        && k.dim(1) > 0
        && q.dim(1) % k.dim(1) == 0;
    if !ok {
        return shape_err("attention", format!("q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape()));
    }
    // The composite reads q, k and v through their strides: no copies.
    let out = q.empty_on(q.shape(), q.dtype())?;
    let lse = q.empty_on(&q.shape()[..3], DType::F32)?;
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    run(
        q.port(),
        Composite::AttentionFwd {
            q: qd.view(),
            k: kd.view(),
            v: vd.view(),
            scale,
            causal,
            out: out.view(),
            lse: lse.view(),
        },
    )?;
    let od = out.detach();
    Ok(out.record("attention", &[q, k, v], move |g, _| {
        let dout = g.contiguous()?;
        let dq = qd.empty_on(qd.shape(), qd.dtype())?;
        let (dk, dv) = (kd.empty_on(kd.shape(), kd.dtype())?, vd.empty_on(vd.shape(), vd.dtype())?);
        run(
            qd.port(),
            Composite::AttentionBwd {
                q: qd.view(),
                k: kd.view(),
                v: vd.view(),
                out: od.view(),
                lse: lse.view(),
                dout: dout.view(),
                scale,
                causal,
                dq: dq.view(),
                dk: dk.view(),
                dv: dv.view(),
            },
        )?;
        Ok(vec![Some(dq), Some(dk), Some(dv)])
    }))
}

/// Heads `first..first + n` of a contiguous `[B,T,W]` view as a `[B,n,T,dh]` view (no copy).
fn heads(x: &View, first: usize, n: usize, dh: usize) -> View {
    let (b, t, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let layout =
        Layout { shape: vec![b, n, t, dh], strides: vec![t * w, dh, w, 1], offset: x.layout.offset + first * dh };
    View { layout, ..x.clone() }
}

/// Attention on a fused projection `qkv [B,T,(Hq + 2 Hkv) Dh]` holding the q heads, then the k
/// heads, then the v heads: output `[B,T,Hq Dh]`, the heads side by side, ready for the output
/// projection. With `rope` = (cos, sin) tables `[T, Dh/2]`, q and k are rotated first (as
/// [`crate::rope`] does). The same math as [`attention`]; its gradient is one tensor shaped
/// like `qkv`, written in place by the composites (rotated heads pass through a buffer).
pub fn attention_qkv(
    qkv: &Tensor,
    q_heads: usize,
    kv_heads: usize,
    rope: Option<(&Tensor, &Tensor)>,
    causal: bool,
    scale: f32,
) -> Result<Tensor> {
    let n = q_heads + 2 * kv_heads;
    let ok = qkv.rank() == 3 && kv_heads > 0 && q_heads % kv_heads == 0 && qkv.dim(2) % n == 0;
    if !ok {
        return shape_err(
            "attention_qkv",
            format!("qkv {:?} with {q_heads} query and {kv_heads} KV heads", qkv.shape()),
        );
    }
    let x = qkv.contiguous()?;
    let (b, t, dh) = (x.dim(0), x.dim(1), x.dim(2) / n);
    let rope = match rope {
        Some((c, s)) if c.shape() == [t, dh / 2] && s.shape() == c.shape() && dh % 2 == 0 => {
            Some((c.contiguous()?.detach(), s.contiguous()?.detach()))
        }
        Some((c, _)) => return shape_err("attention_qkv", format!("rope tables {:?} for T={t}, Dh={dh}", c.shape())),
        None => None,
    };
    let out = x.empty_on(&[b, t, q_heads * dh], x.dtype())?;
    let lse = x.empty_on(&[b, q_heads, t], DType::F32)?;
    let xd = x.detach();
    let split = move |v: &View| {
        (heads(v, 0, q_heads, dh), heads(v, q_heads, kv_heads, dh), heads(v, n - kv_heads, kv_heads, dh))
    };
    let (q, k, v) = split(&xd.view());
    // Rotated q and k live in their own [B,H,T,Dh] tensors (kept for the backward).
    let rotated = match &rope {
        Some((c, s)) => {
            let qr = x.empty_on(&[b, q_heads, t, dh], x.dtype())?;
            let kr = x.empty_on(&[b, kv_heads, t, dh], x.dtype())?;
            for (src, dst) in [(&q, &qr), (&k, &kr)] {
                run(x.port(), Composite::RopeFwd { x: src.clone(), cos: c.view(), sin: s.view(), y: dst.view() })?;
            }
            Some((qr, kr))
        }
        None => None,
    };
    let (qa, ka) = match &rotated {
        Some((qr, kr)) => (qr.view(), kr.view()),
        None => (q, k),
    };
    let o = heads(&out.view(), 0, q_heads, dh);
    run(
        x.port(),
        Composite::AttentionFwd { q: qa.clone(), k: ka.clone(), v: v.clone(), scale, causal, out: o, lse: lse.view() },
    )?;
    let od = out.detach();
    Ok(out.record("attention", &[&x], move |g, _| {
        let dout = g.contiguous()?;
        // dq, dk and dv tile the gradient exactly, so it needs no zero fill.
        let dx = xd.empty_like()?;
        let (dq, dk, dv) = split(&dx.view());
        // With RoPE the attention gradients of the rotated heads go through buffers and are
        // rotated back into place.
        let grads = match &rotated {
            Some((qr, kr)) => Some((qr.empty_like()?, kr.empty_like()?)),
            None => None,
        };
        let (dqa, dka) = match &grads {
            Some((gq, gk)) => (gq.view(), gk.view()),
            None => (dq.clone(), dk.clone()),
        };
        run(
            xd.port(),
            Composite::AttentionBwd {
                q: qa.clone(),
                k: ka.clone(),
                v: v.clone(),
                out: heads(&od.view(), 0, q_heads, dh),
                lse: lse.view(),
                dout: heads(&dout.view(), 0, q_heads, dh),
                scale,
                causal,
                dq: dqa,
                dk: dka,
                dv,
            },
        )?;
        if let (Some((gq, gk)), Some((c, s))) = (&grads, &rope) {
            for (src, dst) in [(gq, &dq), (gk, &dk)] {
                run(xd.port(), Composite::RopeBwd { dy: src.view(), cos: c.view(), sin: s.view(), dx: dst.clone() })?;
            }
        }
        Ok(vec![Some(dx)])
    }))
}
