//! Scaled dot-product attention with grouped KV heads and an optional causal mask.
//!
//! Query heads that share a KV head are stacked along the row axis, so GQA is plain batched
//! matmul: q `[B,Hq,T,D]` is viewed as `[B*Hkv, G*T, D]` (G = Hq/Hkv, head h = kv*G + g).
//! fwd: S = scale q k^T + mask, P = softmax(S), out = P v, lse = logsumexp(S)
//! bwd: P = exp(S - lse), dv = P^T dout (sums the G query heads), dP = dout v^T,
//!      dS = P (dP - rowsum(dout * out)), dq = scale dS k, dk = scale dS^T q
//! Strided q, k, v, out and dout (heads of a fused QKV tensor) are copied to contiguous
//! buffers first; results are written through whatever strides out, dq, dk and dv have.
//!
//! Operands: the four products multiply in q's dtype (which k and v share), accumulating in
//! f32. With BF16 q, k, v (autocast) the other product operands are rounded to bf16 as well,
//! as FlashAttention does: dout; in the forward e = exp(S - m), m the row max (out =
//! (bf16(e) v) / sum(e)); in the backward P for dv and dS for dq and dk. Softmax, lse,
//! D = rowsum(dout * out) and dS are computed in f32.

use crate::prims::{reshaped, swap, Prims};
use crate::softmax::{lse as row_lse, row_stats};
use anychip_port::{invalid, CompareOp, DType, ReduceOp, Result, UnaryOp, View};

struct Dims {
    bh: usize,
    gt: usize,
    s: usize,
    d: usize,
    t: usize,
}

fn dims(q: &View, k: &View) -> Result<Dims> {
    let (qs, ks) = (q.shape(), k.shape());
    if qs.len() != 4 || ks.len() != 4 || ks[1] == 0 || qs[1] % ks[1] != 0 || qs[0] != ks[0] || qs[3] != ks[3] {
        return invalid(format!("attention: q {qs:?} and k {ks:?} do not fit [B,Hq,T,D] / [B,Hkv,S,D]"));
    }
    let g = qs[1] / ks[1];
    Ok(Dims { bh: ks[0] * ks[1], gt: g * qs[2], s: ks[2], d: qs[3], t: qs[2] })
}

/// The dtype the products multiply in: q's, which k and v must share.
fn operands(q: &View, kk: &View, v: &View) -> Result<DType> {
    if kk.dtype != q.dtype || v.dtype != q.dtype {
        return invalid(format!(
            "attention: q is {}, k {} and v {}; q, k and v must share one dtype (the products' operands)",
            q.dtype, kk.dtype, v.dtype
        ));
    }
    Ok(q.dtype)
}

/// Scaled, masked scores `[B*Hkv, G*T, S]`.
fn scores(k: &Prims, q: &View, kk: &View, scale: f32, causal: bool, dm: &Dims) -> Result<View> {
    let qg = reshaped(q, &[dm.bh, dm.gt, dm.d]);
    let kt = swap(&reshaped(kk, &[dm.bh, dm.s, dm.d]), 1, 2);
    let sc = k.matmul(&qg, &kt, scale)?;
    if !causal {
        return Ok(sc);
    }
    // Row r is query t = r % T, which sees keys s <= t + (S - T).
    let mut mask = vec![0f32; dm.gt * dm.s];
    for r in 0..dm.gt {
        let t = (r % dm.t) as i64;
        for s in 0..dm.s {
            if s as i64 > t + dm.s as i64 - dm.t as i64 {
                mask[r * dm.s + s] = f32::NEG_INFINITY;
            }
        }
    }
    k.add(&sc, &k.upload(&mask, &[1, dm.gt, dm.s])?)
}

pub(crate) fn fwd(
    k: &Prims,
    q: &View,
    kk: &View,
    v: &View,
    scale: f32,
    causal: bool,
    out: &View,
    lse: &View,
) -> Result<()> {
    let (dm, op) = (dims(q, kk)?, operands(q, kk, v)?);
    let (q, kk, v) = (k.dense_in(q, op)?, k.dense_in(kk, op)?, k.dense_in(v, op)?);
    let sc = scores(k, &q, &kk, scale, causal, &dm)?;
    let st = row_stats(k, &sc)?;
    let v3 = reshaped(&v, &[dm.bh, dm.s, dm.d]);
    let o = if op == DType::F32 {
        k.matmul(&k.div(&st.e, &st.s)?, &v3, 1.0)?
    } else {
        // Unnormalised probabilities rounded for the product, normalised after it.
        k.div(&k.matmul(&k.dense_in(&st.e, op)?, &v3, 1.0)?, &st.s)?
    };
    k.store(&o, out)?;
    k.store(&row_lse(k, &st, true)?, lse)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn bwd(
    k: &Prims,
    q: &View,
    kk: &View,
    v: &View,
    out: &View,
    lse: &View,
    dout: &View,
    scale: f32,
    causal: bool,
    dq: &View,
    dk: &View,
    dv: &View,
) -> Result<()> {
    let (dm, op) = (dims(q, kk)?, operands(q, kk, v)?);
    let (q, kk, v, dout) = (k.dense_in(q, op)?, k.dense_in(kk, op)?, k.dense_in(v, op)?, k.dense_in(dout, op)?);
    // D reads dout as the products do, widened.
    let (o, dout_f32) = (k.dense(out)?, k.dense(&dout)?);
    let sc = scores(k, &q, &kk, scale, causal, &dm)?;
    // Rows with no visible key have lse = -inf and all scores -inf: use 0 so P = exp(-inf) = 0.
    let l = reshaped(lse, &[dm.bh, dm.gt, 1]);
    let empty = k.cmp(CompareOp::Eq, &l, &k.scalar(f64::NEG_INFINITY)?)?;
    let l = k.select(&empty, &k.scalar(0.0)?, &l)?;
    let p = k.un(UnaryOp::Exp, &k.sub(&sc, &l)?)?;
    let gt = [dm.bh, dm.gt, dm.d];
    let (do3, o3) = (reshaped(&dout, &gt), reshaped(&o, &gt));
    let (k3, v3, q3) = (reshaped(&kk, &[dm.bh, dm.s, dm.d]), reshaped(&v, &[dm.bh, dm.s, dm.d]), reshaped(&q, &gt));
    k.store(&k.matmul(&swap(&k.dense_in(&p, op)?, 1, 2), &do3, 1.0)?, dv)?;
    let dp = k.matmul(&do3, &swap(&v3, 1, 2), 1.0)?;
    let di = k.reduce_last(ReduceOp::Sum, &k.mul(&reshaped(&dout_f32, &gt), &o3)?)?;
    let ds = k.dense_in(&k.mul(&p, &k.sub(&dp, &di)?)?, op)?;
    k.store(&k.matmul(&ds, &k3, scale)?, dq)?;
    k.store(&k.matmul(&swap(&ds, 1, 2), &q3, scale)?, dk)
}
