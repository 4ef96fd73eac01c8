//! Causal, grouped-query attention: flash-style forward with an online softmax, and a backward
//! that recomputes the probabilities from the saved logsumexp (FlashAttention-2's scheme).
//!
//! Shapes: q [B,Hq,T,Dh], k and v [B,Hkv,S,Dh], query head h reads KV head h / (Hq / Hkv).
//! With `causal`, query t sees key s when s <= t + (S - T).
//!
//! Forward, per block of queries, over blocks of keys (never holding a full T x S matrix):
//!   s_ij = scale q_i . k_j (masked -> -inf); m_i' = max(m_i, max_j s_ij);
//!   l_i = l_i exp(m_i - m_i') + sum_j exp(s_ij - m_i'); o_i = o_i exp(m_i - m_i') + sum_j p_ij v_j;
//!   finally o_i /= l_i and lse_i = m_i + ln l_i. A row with no visible key (m = -inf) keeps
//!   l = 0 and gives o = 0, lse = -inf.
//! Backward, with D_i = dout_i . out_i and p_ij = exp(s_ij - lse_i) (0 where lse = -inf):
//!   dv_j += sum_i p_ij dout_i; dp_ij = dout_i . v_j; ds_ij = p_ij (dp_ij - D_i);
//!   dq_i += scale sum_j ds_ij k_j; dk_j += scale sum_i ds_ij q_i.
//! The forward runs one task per (batch, query head, query block); the backward one task per
//! (batch, KV head), which owns dk and dv for that head (so the query heads sharing it add up
//! without atomics) and the dq rows of its query heads.

use super::{floats, is_f32};
use crate::elem::{dot, max, raw, row, store, Raw};
use crate::math::exp;
use crate::prim::elementwise::max_nan;
use crate::prim::matmul::gemm_one;
use anychip_port::{invalid, Handled, Result, View};
use gemm::Parallelism;
use rayon::prelude::*;

/// Queries per block: the score tile [BQ, BK] and output tile [BQ, Dh] stay in L1/L2.
const BQ: usize = 64;
/// Keys per block.
const BK: usize = 64;

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    t: usize,
    s: usize,
    dh: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.hq / self.hkv
    }
    /// Keys visible to queries [t0, t1): the prefix [0, end).
    fn key_end(&self, causal: bool, t1: usize) -> usize {
        if !causal {
            return self.s;
        }
        let end = t1 as isize + self.s as isize - self.t as isize;
        end.clamp(0, self.s as isize) as usize
    }
    /// Index within the key block [s0, s0 + nk) of the first key query t may not see (nk if
    /// none): the last visible key is t + S - T.
    fn first_hidden(&self, causal: bool, t: usize, s0: usize, nk: usize) -> usize {
        if !causal {
            return nk;
        }
        let last = t as isize + self.s as isize - self.t as isize;
        (last + 1 - s0 as isize).clamp(0, nk as isize) as usize
    }
}

fn dims(q: &View, k: &View, v: &View, out: &View, lse: &View) -> Result<Dims> {
    let (qs, ks) = (q.shape(), k.shape());
    if qs.len() != 4 || ks.len() != 4 || v.shape() != ks || out.shape() != qs {
        return invalid(format!(
            "attention wants q, out [B,Hq,T,Dh] and k, v [B,Hkv,S,Dh]; got q {qs:?} k {ks:?} v {:?} out {:?}",
            v.shape(),
            out.shape()
        ));
    }
    let d = Dims { b: qs[0], hq: qs[1], hkv: ks[1], t: qs[2], s: ks[2], dh: qs[3] };
    if ks[0] != d.b || ks[3] != d.dh || d.hkv == 0 || !d.hq.is_multiple_of(d.hkv) {
        return invalid(format!(
            "attention: k/v batch and head size must match q, and Hq ({}) be a multiple of Hkv ({})",
            d.hq, d.hkv
        ));
    }
    if lse.numel() != d.b * d.hq * d.t {
        return invalid(format!("attention lse must be [B,Hq,T] = [{}, {}, {}]", d.b, d.hq, d.t));
    }
    Ok(d)
}

/// Small single-threaded product c = alpha a b + beta c on f32 slices with explicit strides.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs_cs: (usize, usize),
    b: &[f32],
    b_rs_cs: (usize, usize),
    c: &mut [f32],
    c_rs: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: callers size every slice for the shapes and strides they pass.
    unsafe {
        gemm_one(
            m,
            n,
            k,
            a.as_ptr(),
            a_rs_cs.0,
            a_rs_cs.1,
            b.as_ptr(),
            b_rs_cs.0,
            b_rs_cs.1,
            c.as_mut_ptr(),
            c_rs,
            1,
            alpha,
            beta,
            Parallelism::None,
        )
    }
}

/// Forward pass: out and lse.
pub fn fwd(q: &View, k: &View, v: &View, scale: f32, causal: bool, out: &View, lse: &View) -> Result<Handled> {
    if !floats(&[q, k, v, out]) || !is_f32(lse) {
        return Ok(Handled::No);
    }
    let d = dims(q, k, v, out, lse)?;
    let (qr, kr, vr, or, lr) = (raw(q)?, raw(k)?, raw(v)?, raw(out)?, raw(lse)?);
    let offs = [q.layout.offset, k.layout.offset, v.layout.offset, out.layout.offset, lse.layout.offset];
    let qblocks = d.t.div_ceil(BQ);
    let task = |i: usize| {
        let (bh, qb) = (i / qblocks, i % qblocks);
        let (bi, h) = (bh / d.hq, bh % d.hq);
        let kvh = h / d.group();
        let (t0, nq) = (qb * BQ, BQ.min(d.t - qb * BQ));
        let dh = d.dh;
        let qat = (bh * d.t + t0) * dh;
        let kat = (bi * d.hkv + kvh) * d.s * dh;
        let (mut sq, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new());
        let mut o = vec![0f32; nq * dh];
        let mut m = vec![f32::NEG_INFINITY; nq];
        let mut l = vec![0f32; nq];
        let mut sc = vec![0f32; nq * BK];
        // SAFETY: in bounds (checked by `raw` and `dims`); inputs are only read.
        let qs = unsafe { row(qr, offs[0] + qat, nq * dh, &mut sq) };
        let kend = d.key_end(causal, t0 + nq);
        for s0 in (0..kend).step_by(BK) {
            let nk = BK.min(kend - s0);
            // SAFETY: as above.
            let (ks, vs) = unsafe {
                (row(kr, offs[1] + kat + s0 * dh, nk * dh, &mut sk), row(vr, offs[2] + kat + s0 * dh, nk * dh, &mut sv))
            };
            let sc = &mut sc[..nq * nk];
            mm(nq, nk, dh, qs, (dh, 1), ks, (1, dh), sc, nk, scale, 0.0);
            for i in 0..nq {
                let srow = &mut sc[i * nk..(i + 1) * nk];
                // Only blocks crossing the diagonal have hidden keys: mask the tail of the row.
                srow[d.first_hidden(causal, t0 + i, s0, nk)..].fill(f32::NEG_INFINITY);
                let mnew = max_nan(m[i], max(srow));
                if mnew == f32::NEG_INFINITY {
                    srow.fill(0.0);
                    continue;
                }
                let corr = exp(m[i] - mnew);
                let sum = crate::math::exp_shift_sum_inplace(srow, mnew);
                l[i] = l[i] * corr + sum;
                m[i] = mnew;
                if corr != 1.0 {
                    o[i * dh..(i + 1) * dh].iter_mut().for_each(|x| *x *= corr);
                }
            }
            mm(nq, dh, nk, sc, (nk, 1), vs, (dh, 1), &mut o, dh, 1.0, 1.0);
        }
        let mut lse_blk = vec![0f32; nq];
        for i in 0..nq {
            let orow = &mut o[i * dh..(i + 1) * dh];
            if l[i] == 0.0 {
                orow.fill(0.0);
                lse_blk[i] = f32::NEG_INFINITY;
            } else {
                let inv = 1.0 / l[i];
                orow.iter_mut().for_each(|x| *x *= inv);
                lse_blk[i] = m[i] + l[i].ln();
            }
        }
        // SAFETY: this task owns these rows of out and lse.
        unsafe {
            store(or, offs[3] + qat, 1, &o);
            store(lr, offs[4] + bh * d.t + t0, 1, &lse_blk);
        }
    };
    let tasks = d.b * d.hq * qblocks;
    if tasks > 1 && d.t * d.s * d.dh >= 1 << 12 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    Ok(Handled::Yes)
}

/// Backward pass: dq, dk, dv (dk and dv summed over the query heads sharing a KV head).
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    q: &View,
    k: &View,
    v: &View,
    out: &View,
    lse: &View,
    dout: &View,
    scale: f32,
    causal: bool,
    dq: &View,
    dk: &View,
    dv: &View,
) -> Result<Handled> {
    if !floats(&[q, k, v, out, dout, dq, dk, dv]) || !is_f32(lse) {
        return Ok(Handled::No);
    }
    let d = dims(q, k, v, out, lse)?;
    if dout.shape() != q.shape() || dq.shape() != q.shape() || dk.shape() != k.shape() || dv.shape() != k.shape() {
        return invalid("attention backward: dout and dq must match q, dk and dv must match k");
    }
    let r = |x: &View| -> Result<(Raw, usize)> { Ok((raw(x)?, x.layout.offset)) };
    let (q_, k_, v_, o_, l_, g_) = (r(q)?, r(k)?, r(v)?, r(out)?, r(lse)?, r(dout)?);
    let (dq_, dk_, dv_) = (r(dq)?, r(dk)?, r(dv)?);
    let dh = d.dh;
    let task = |i: usize| {
        let (bi, kvh) = (i / d.hkv, i % d.hkv);
        let kat = (bi * d.hkv + kvh) * d.s * dh;
        let mut s = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let [sk, sv, sq, so, sg, sl] = &mut s;
        // SAFETY: in bounds (checked by `raw` and `dims`); inputs are only read.
        let (ks, vs) = unsafe { (row(k_.0, k_.1 + kat, d.s * dh, sk), row(v_.0, v_.1 + kat, d.s * dh, sv)) };
        let mut dkh = vec![0f32; d.s * dh];
        let mut dvh = vec![0f32; d.s * dh];
        let mut dqh = vec![0f32; d.t * dh];
        let mut p = vec![0f32; BQ * BK];
        let mut dp = vec![0f32; BQ * BK];
        let mut big_d = vec![0f32; d.t];
        for h in kvh * d.group()..(kvh + 1) * d.group() {
            let bh = bi * d.hq + h;
            let qat = bh * d.t * dh;
            // SAFETY: as above.
            let (qs, os, gs, ls) = unsafe {
                (
                    row(q_.0, q_.1 + qat, d.t * dh, sq),
                    row(o_.0, o_.1 + qat, d.t * dh, so),
                    row(g_.0, g_.1 + qat, d.t * dh, sg),
                    row(l_.0, l_.1 + bh * d.t, d.t, sl),
                )
            };
            for t in 0..d.t {
                big_d[t] = dot(&gs[t * dh..(t + 1) * dh], &os[t * dh..(t + 1) * dh]);
            }
            dqh.fill(0.0);
            for t0 in (0..d.t).step_by(BQ) {
                let nq = BQ.min(d.t - t0);
                let (qb, gb) = (&qs[t0 * dh..(t0 + nq) * dh], &gs[t0 * dh..(t0 + nq) * dh]);
                let kend = d.key_end(causal, t0 + nq);
                for s0 in (0..kend).step_by(BK) {
                    let nk = BK.min(kend - s0);
                    let (kb, vb) = (&ks[s0 * dh..(s0 + nk) * dh], &vs[s0 * dh..(s0 + nk) * dh]);
                    let (p, dp) = (&mut p[..nq * nk], &mut dp[..nq * nk]);
                    mm(nq, nk, dh, qb, (dh, 1), kb, (1, dh), p, nk, scale, 0.0);
                    for i in 0..nq {
                        let (li, row) = (ls[t0 + i], &mut p[i * nk..(i + 1) * nk]);
                        if li == f32::NEG_INFINITY {
                            row.fill(0.0);
                        } else {
                            crate::math::exp_shift_sum_inplace(row, li);
                            row[d.first_hidden(causal, t0 + i, s0, nk)..].fill(0.0);
                        }
                    }
                    mm(nk, dh, nq, p, (1, nk), gb, (dh, 1), &mut dvh[s0 * dh..(s0 + nk) * dh], dh, 1.0, 1.0);
                    mm(nq, nk, dh, gb, (dh, 1), vb, (1, dh), dp, nk, 1.0, 0.0);
                    for i in 0..nq {
                        let di = big_d[t0 + i];
                        for j in 0..nk {
                            dp[i * nk + j] = p[i * nk + j] * (dp[i * nk + j] - di);
                        }
                    }
                    mm(nq, dh, nk, dp, (nk, 1), kb, (dh, 1), &mut dqh[t0 * dh..(t0 + nq) * dh], dh, scale, 1.0);
                    mm(nk, dh, nq, dp, (1, nk), qb, (dh, 1), &mut dkh[s0 * dh..(s0 + nk) * dh], dh, scale, 1.0);
                }
            }
            // SAFETY: this task owns the dq rows of its query heads.
            unsafe { store(dq_.0, dq_.1 + qat, 1, &dqh) };
        }
        // SAFETY: this task owns dk and dv of its KV head.
        unsafe {
            store(dk_.0, dk_.1 + kat, 1, &dkh);
            store(dv_.0, dv_.1 + kat, 1, &dvh);
        }
    };
    let tasks = d.b * d.hkv;
    if tasks > 1 && d.t * d.s * d.dh >= 1 << 12 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    Ok(Handled::Yes)
}
