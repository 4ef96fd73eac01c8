//! Causal, grouped-query attention: flash-style forward with an online softmax, and a backward
//! that recomputes the probabilities from the saved logsumexp (FlashAttention-2's scheme).
//!
//! Shapes: q [B,Hq,T,Dh], k and v [B,Hkv,S,Dh], query head h reads KV head h / (Hq / Hkv).
//! With `causal`, query t sees key s when s <= t + (S - T). Any strides work as long as each
//! row of Dh elements is unit-stride: q, k and v may be heads of one fused QKV tensor and out
//! may be laid out [B,T,H,Dh], which saves the engine a permuting copy of each.
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
use crate::elem::{dot, load, max, raw, row, store, Raw};
use crate::math::exp;
use crate::prim::elementwise::max_nan;
use crate::prim::matmul::gemm_one;
use anychip_port::{invalid, DType, Handled, Result, View};
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

/// A `[B,H,T,Dh]` view whose rows (the Dh axis) are unit-stride: heads of a fused QKV projection
/// or an output in `[B,T,H,Dh]` order are read and written in place, without a permuting copy.
#[derive(Clone, Copy)]
struct Heads {
    raw: Raw,
    off: usize,
    sb: usize,
    sh: usize,
    st: usize,
}

/// An f32 matrix in memory: base pointer and row stride (columns are unit-stride).
#[derive(Clone, Copy)]
struct M {
    p: *const f32,
    rs: usize,
}

impl M {
    /// Row `i` as a slice of `n` elements.
    ///
    /// # Safety
    /// The matrix must have row `i` with `n` readable elements.
    unsafe fn row(&self, i: usize, n: usize) -> &[f32] {
        std::slice::from_raw_parts(self.p.add(i * self.rs), n)
    }
}

impl Heads {
    /// The view's layout, or `None` when its rows are not unit-stride (the decomposition then runs).
    fn new(v: &View) -> Result<Option<Heads>> {
        let (l, sh) = (&v.layout, v.shape());
        if sh.len() != 4 || (sh[3] > 1 && l.strides[3] != 1) {
            return Ok(None);
        }
        let s = &l.strides;
        Ok(Some(Heads { raw: raw(v)?, off: l.offset, sb: s[0], sh: s[1], st: s[2] }))
    }
    fn at(&self, b: usize, h: usize, t: usize) -> usize {
        self.off + b * self.sb + h * self.sh + t * self.st
    }
    /// Rows `t0..t0 + n` of head (b, h): in place for f32, else widened into `scratch`.
    ///
    /// # Safety
    /// The rows must be in bounds (checked by `raw`) and not written while the result is used.
    unsafe fn rows(&self, b: usize, h: usize, t0: usize, n: usize, dh: usize, scratch: &mut Vec<f32>) -> M {
        let at = self.at(b, h, t0);
        if self.raw.dtype == DType::F32 {
            return M { p: self.raw.ptr::<f32>().add(at), rs: self.st };
        }
        scratch.resize(n * dh, 0.0);
        for i in 0..n {
            load(self.raw, at + i * self.st, 1, &mut scratch[i * dh..(i + 1) * dh]);
        }
        M { p: scratch.as_ptr(), rs: dh }
    }
    /// Write the `[n, dh]` block `src` to rows `t0..` of head (b, h).
    ///
    /// # Safety
    /// The rows must be in bounds and owned by the calling task.
    unsafe fn store_rows(&self, b: usize, h: usize, t0: usize, src: &[f32], dh: usize) {
        for (i, r) in src.chunks_exact(dh.max(1)).enumerate() {
            store(self.raw, self.at(b, h, t0 + i), 1, r);
        }
    }
}

/// Small single-threaded product c = alpha a b + beta c; `a_t`/`b_t` read the operand transposed.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: M,
    a_t: bool,
    b: M,
    b_t: bool,
    c: &mut [f32],
    c_rs: usize,
    alpha: f32,
    beta: f32,
) {
    let (ars, acs) = if a_t { (1, a.rs) } else { (a.rs, 1) };
    let (brs, bcs) = if b_t { (1, b.rs) } else { (b.rs, 1) };
    // SAFETY: callers pass operands and a `c` sized for these shapes and strides.
    unsafe { gemm_one(m, n, k, a.p, ars, acs, b.p, brs, bcs, c.as_mut_ptr(), c_rs, 1, alpha, beta, Parallelism::None) }
}

/// A local `[rows, cols]` buffer as an operand.
fn local(x: &[f32], cols: usize) -> M {
    M { p: x.as_ptr(), rs: cols }
}

/// The layouts of q, k, v and out (or dout), if every one has unit-stride rows.
fn heads4(vs: [&View; 4]) -> Result<Option<[Heads; 4]>> {
    let mut hs = Vec::with_capacity(4);
    for v in vs {
        match Heads::new(v)? {
            Some(h) => hs.push(h),
            None => return Ok(None),
        }
    }
    Ok(Some([hs[0], hs[1], hs[2], hs[3]]))
}

/// Forward pass: out and lse.
pub fn fwd(q: &View, k: &View, v: &View, scale: f32, causal: bool, out: &View, lse: &View) -> Result<Handled> {
    if !floats(&[q, k, v, out]) || !is_f32(lse) || !lse.layout.is_contiguous() {
        return Ok(Handled::No);
    }
    let d = dims(q, k, v, out, lse)?;
    let Some([qh, kh, vh, oh]) = heads4([q, k, v, out])? else { return Ok(Handled::No) };
    let (lr, loff) = (raw(lse)?, lse.layout.offset);
    let qblocks = d.t.div_ceil(BQ);
    let task = |i: usize| {
        let (bh, qb) = (i / qblocks, i % qblocks);
        let (bi, h) = (bh / d.hq, bh % d.hq);
        let kvh = h / d.group();
        let (t0, nq) = (qb * BQ, BQ.min(d.t - qb * BQ));
        let dh = d.dh;
        let (mut sq, mut sk, mut sv) = (Vec::new(), Vec::new(), Vec::new());
        let mut o = vec![0f32; nq * dh];
        let mut m = vec![f32::NEG_INFINITY; nq];
        let mut l = vec![0f32; nq];
        let mut sc = vec![0f32; nq * BK];
        // SAFETY: in bounds (checked by `raw` and `dims`); inputs are only read.
        let qs = unsafe { qh.rows(bi, h, t0, nq, dh, &mut sq) };
        let kend = d.key_end(causal, t0 + nq);
        for s0 in (0..kend).step_by(BK) {
            let nk = BK.min(kend - s0);
            // SAFETY: as above.
            let (ks, vs) = unsafe { (kh.rows(bi, kvh, s0, nk, dh, &mut sk), vh.rows(bi, kvh, s0, nk, dh, &mut sv)) };
            let sc = &mut sc[..nq * nk];
            mm(nq, nk, dh, qs, false, ks, true, sc, nk, scale, 0.0);
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
            mm(nq, dh, nk, local(sc, nk), false, vs, false, &mut o, dh, 1.0, 1.0);
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
            oh.store_rows(bi, h, t0, &o, dh);
            store(lr, loff + bh * d.t + t0, 1, &lse_blk);
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
    if !floats(&[q, k, v, out, dout, dq, dk, dv]) || !is_f32(lse) || !lse.layout.is_contiguous() {
        return Ok(Handled::No);
    }
    let d = dims(q, k, v, out, lse)?;
    if dout.shape() != q.shape() || dq.shape() != q.shape() || dk.shape() != k.shape() || dv.shape() != k.shape() {
        return invalid("attention backward: dout and dq must match q, dk and dv must match k");
    }
    let (Some([qh, kh, vh, oh]), Some([gh, dqh, dkh, dvh])) = (heads4([q, k, v, out])?, heads4([dout, dq, dk, dv])?)
    else {
        return Ok(Handled::No);
    };
    let (lr, loff) = (raw(lse)?, lse.layout.offset);
    let dh = d.dh;
    let task = |i: usize| {
        let (bi, kvh) = (i / d.hkv, i % d.hkv);
        let mut s = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let [sk, sv, sq, so, sg, sl] = &mut s;
        // SAFETY: in bounds (checked by `raw` and `dims`); inputs are only read.
        let (ks, vs) = unsafe { (kh.rows(bi, kvh, 0, d.s, dh, sk), vh.rows(bi, kvh, 0, d.s, dh, sv)) };
        let mut dk_acc = vec![0f32; d.s * dh];
        let mut dv_acc = vec![0f32; d.s * dh];
        let mut dq_acc = vec![0f32; d.t * dh];
        let mut p = vec![0f32; BQ * BK];
        let mut dp = vec![0f32; BQ * BK];
        let mut big_d = vec![0f32; d.t];
        for h in kvh * d.group()..(kvh + 1) * d.group() {
            let bh = bi * d.hq + h;
            // SAFETY: as above.
            let (qs, os, gs, ls) = unsafe {
                (
                    qh.rows(bi, h, 0, d.t, dh, sq),
                    oh.rows(bi, h, 0, d.t, dh, so),
                    gh.rows(bi, h, 0, d.t, dh, sg),
                    row(lr, loff + bh * d.t, d.t, sl),
                )
            };
            for (t, dt) in big_d.iter_mut().enumerate() {
                // SAFETY: row t of a [T, Dh] head.
                *dt = unsafe { dot(gs.row(t, dh), os.row(t, dh)) };
            }
            dq_acc.fill(0.0);
            for t0 in (0..d.t).step_by(BQ) {
                let nq = BQ.min(d.t - t0);
                // SAFETY: rows t0.. of the heads above.
                let (qb, gb) = unsafe { (M { p: qs.p.add(t0 * qs.rs), ..qs }, M { p: gs.p.add(t0 * gs.rs), ..gs }) };
                let kend = d.key_end(causal, t0 + nq);
                for s0 in (0..kend).step_by(BK) {
                    let nk = BK.min(kend - s0);
                    // SAFETY: rows s0.. of the K and V heads.
                    let (kb, vb) =
                        unsafe { (M { p: ks.p.add(s0 * ks.rs), ..ks }, M { p: vs.p.add(s0 * vs.rs), ..vs }) };
                    let (p, dp) = (&mut p[..nq * nk], &mut dp[..nq * nk]);
                    mm(nq, nk, dh, qb, false, kb, true, p, nk, scale, 0.0);
                    for i in 0..nq {
                        let (li, row) = (ls[t0 + i], &mut p[i * nk..(i + 1) * nk]);
                        if li == f32::NEG_INFINITY {
                            row.fill(0.0);
                        } else {
                            crate::math::exp_shift_sum_inplace(row, li);
                            row[d.first_hidden(causal, t0 + i, s0, nk)..].fill(0.0);
                        }
                    }
                    let dv_blk = &mut dv_acc[s0 * dh..(s0 + nk) * dh];
                    mm(nk, dh, nq, local(p, nk), true, gb, false, dv_blk, dh, 1.0, 1.0);
                    mm(nq, nk, dh, gb, false, vb, true, dp, nk, 1.0, 0.0);
                    for i in 0..nq {
                        let di = big_d[t0 + i];
                        for j in 0..nk {
                            dp[i * nk + j] = p[i * nk + j] * (dp[i * nk + j] - di);
                        }
                    }
                    let dq_blk = &mut dq_acc[t0 * dh..(t0 + nq) * dh];
                    mm(nq, dh, nk, local(dp, nk), false, kb, false, dq_blk, dh, scale, 1.0);
                    let dk_blk = &mut dk_acc[s0 * dh..(s0 + nk) * dh];
                    mm(nk, dh, nq, local(dp, nk), true, qb, false, dk_blk, dh, scale, 1.0);
                }
            }
            // SAFETY: this task owns the dq rows of its query heads.
            unsafe { dqh.store_rows(bi, h, 0, &dq_acc, dh) };
        }
        // SAFETY: this task owns dk and dv of its KV head.
        unsafe {
            dkh.store_rows(bi, kvh, 0, &dk_acc, dh);
            dvh.store_rows(bi, kvh, 0, &dv_acc, dh);
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
