//! Scaled dot-product attention: on separate q, k, v tensors, or straight on the output of a
//! fused QKV projection (the layout every model here uses), where it saves the copies that
//! split, permute and merge heads, and in the backward the zero fills and sums that splitting
//! the gradient back into one tensor would take.
//!
//! Each has an autocast form ([`attention_autocast`], [`attention_qkv_autocast`]) with the
//! convention of [`crate::linear_autocast`]: q, k and v are rounded to the operand dtype on
//! the way in (RoPE writes its rotation straight in that dtype), the composite multiplies
//! bf16 operands with f32 accumulation (softmax and the log-sum-exp in f32, the probabilities
//! rounded to bf16 before the product with v, as FlashAttention does), the output keeps the
//! input's dtype; the backward rounds the incoming gradient to the operand dtype and writes
//! dq, dk and dv in the inputs' own dtypes.

use super::composite::{operand, run};
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::{Composite, DType, Layout, View};

/// Scaled dot-product attention: q `[B,Hq,T,D]`, k and v `[B,Hkv,S,D]` (GQA when Hkv < Hq).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, scale: f32) -> Result<Tensor> {
    attention_impl(q, k, v, causal, scale, None)
}

/// [`attention`] with its products' operands rounded to `operands` (autocast, module docs):
/// with f32 q, k, v and `operands` = BF16, bf16 attention as `torch.autocast` runs
/// `scaled_dot_product_attention`, with the output and the gradients kept in f32. With
/// `operands` equal to every input's dtype it is plain [`attention`].
pub fn attention_autocast(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    scale: f32,
    operands: DType,
) -> Result<Tensor> {
    if [q, k, v].iter().all(|t| t.dtype() == operands) {
        return attention(q, k, v, causal, scale);
    }
    attention_impl(q, k, v, causal, scale, Some(operands))
}

fn attention_impl(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal: bool,
    scale: f32,
    operands: Option<DType>,
) -> Result<Tensor> {
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
    // The composite reads q, k and v through their strides: no copies (but the rounded ones
    // when autocasting).
    let out = q.empty_on(q.shape(), q.dtype())?;
    let lse = q.empty_on(&q.shape()[..3], DType::F32)?;
    let (qd, kd, vd) = (operand(q, operands)?, operand(k, operands)?, operand(v, operands)?);
    let dtypes = [q.dtype(), k.dtype(), v.dtype()];
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
        let dout = operand(&g.contiguous()?, operands)?;
        let dq = qd.empty_on(qd.shape(), dtypes[0])?;
        let (dk, dv) = (kd.empty_on(kd.shape(), dtypes[1])?, vd.empty_on(vd.shape(), dtypes[2])?);
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
    attention_qkv_autocast(qkv, q_heads, kv_heads, rope, causal, scale, qkv.dtype())
}

/// [`attention_qkv`] with its products' operands rounded to `operands` (autocast, module
/// docs): the heads are staged once in that dtype (RoPE writes its rotation straight into
/// it), the output and the gradient keep `qkv`'s dtype. With `operands` equal to `qkv`'s dtype
/// it is plain [`attention_qkv`], which reads the heads in place.
pub fn attention_qkv_autocast(
    qkv: &Tensor,
    q_heads: usize,
    kv_heads: usize,
    rope: Option<(&Tensor, &Tensor)>,
    causal: bool,
    scale: f32,
    operands: DType,
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
    // The heads the products read: in place when x holds the operand dtype and needs no
    // rotation, else staged in their own [B,H,T,Dh] tensors (kept for the backward): rotated
    // q and k written by RoPE in the operand dtype, rounded copies otherwise.
    let stage = |src: &View, h: usize, rotate: bool| -> Result<Option<Tensor>> {
        match &rope {
            Some((c, s)) if rotate => {
                let dst = x.empty_on(&[b, h, t, dh], operands)?;
                run(x.port(), Composite::RopeFwd { x: src.clone(), cos: c.view(), sin: s.view(), y: dst.view() })?;
                Ok(Some(dst))
            }
            _ if operands == x.dtype() => Ok(None),
            _ => Ok(Some(xd.with_layout(src.layout.clone()).cast(operands)?)),
        }
    };
    let staged = [stage(&q, q_heads, true)?, stage(&k, kv_heads, true)?, stage(&v, kv_heads, false)?];
    let read = |i: usize, own: &View| staged[i].as_ref().map_or_else(|| own.clone(), |s| s.view());
    let (qa, ka, va) = (read(0, &q), read(1, &k), read(2, &v));
    let o = heads(&out.view(), 0, q_heads, dh);
    run(
        x.port(),
        Composite::AttentionFwd { q: qa.clone(), k: ka.clone(), v: va.clone(), scale, causal, out: o, lse: lse.view() },
    )?;
    let od = out.detach();
    // The backward needs x's shape and dtype, not its storage (unless it reads heads in place,
    // whose views hold it).
    let (port, x_shape, x_dtype) = (x.port().clone(), x.shape().to_vec(), x.dtype());
    Ok(out.record("attention", &[&x], move |g, _| {
        let dout = g.contiguous()?.detach().cast(operands)?;
        // dq, dk and dv tile the gradient exactly, so it needs no zero fill.
        let dx = Tensor::empty(&port, &x_shape, x_dtype)?;
        let (dq, dk, dv) = split(&dx.view());
        // With RoPE the attention gradients of the rotated heads go through buffers and are
        // rotated back into place.
        let grads = match &rope {
            Some(_) => Some((
                Tensor::empty(&port, &[b, q_heads, t, dh], x_dtype)?,
                Tensor::empty(&port, &[b, kv_heads, t, dh], x_dtype)?,
            )),
            None => None,
        };
        let (dqa, dka) = match &grads {
            Some((gq, gk)) => (gq.view(), gk.view()),
            None => (dq.clone(), dk.clone()),
        };
        run(
            &port,
            Composite::AttentionBwd {
                q: qa.clone(),
                k: ka.clone(),
                v: va.clone(),
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
                run(&port, Composite::RopeBwd { dy: src.view(), cos: c.view(), sin: s.view(), dx: dst.clone() })?;
            }
        }
        Ok(vec![Some(dx)])
    }))
}
