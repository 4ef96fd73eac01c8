//! Causal, grouped-query attention: flash-style forward with an online softmax, and a backward
//! that recomputes the probabilities from the saved logsumexp (FlashAttention-2's scheme).
//!
//! Shapes: q [B,Hq,T,Dh], k and v [B,Hkv,S,Dh], query head h reads KV head h / (Hq / Hkv).
//! With `causal`, query t sees key s when s <= t + (S - T). Any strides work as long as each
//! row of Dh elements is unit-stride: q, k and v may be heads of one fused QKV tensor and out
//! may be laid out [B,T,H,Dh], which saves the engine a permuting copy of each.
//!
//! Forward, per block of queries, over blocks of keys (never holding a full T x S matrix):
//!   s_ij = scale q_i . k_j over visible keys; m_i' = max(m_i, max_j s_ij);
//!   l_i = l_i exp(m_i - m_i') + sum_j exp(s_ij - m_i'); o_i = o_i exp(m_i - m_i') + sum_j p_ij v_j;
//!   finally o_i /= l_i and lse_i = m_i + ln l_i. A row with no visible key (m = -inf) keeps
//!   l = 0 and gives o = 0, lse = -inf.
//! Backward, with D_i = dout_i . out_i and p_ij = exp(s_ij - lse_i) (0 where lse = -inf):
//!   dv_j += sum_i p_ij dout_i; dp_ij = dout_i . v_j; ds_ij = p_ij (dp_ij - D_i);
//!   dq_i += scale sum_j ds_ij k_j; dk_j += scale sum_i ds_ij q_i.
//! Operands: the products multiply in q's dtype (k, v and dout share it; any other mix is left
//! to the decomposition), bf16 rows widened on load (exact), accumulating in f32. With bf16
//! operands the f32 intermediates that enter a product are rounded to bf16 first, as
//! FlashAttention does: p = exp(s - m) of the running max before p v (l sums the unrounded p),
//! and in the backward p before dv and ds before dq and dk (ds itself from the f32 p).
//! The forward runs one task per (batch, query head), split into its query blocks only when
//! there are fewer heads than twice the threads; the backward one task per (batch, KV head),
//! which owns dk and dv for that head (so the query heads sharing it add up without atomics)
//! and the dq rows of its query heads. Each task transposes its K (and in the backward V) head
//! once, so every block product is a row-major [`tile::mm`]; blocks that cross the causal
//! diagonal compute only the triangle they need ([`Tri`]), and hidden keys get probability 0
//! without an exp.

use super::tile::{self, Tri};
use super::{floats, is_f32};
use crate::elem::{dot, load, max, raw, row, store, Raw};
use crate::math::{exp, round_bf16_inplace};
use crate::prim::elementwise::max_nan;
use anychip_port::{invalid, DType, Handled, Result, View};
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
    /// The last key query t sees, counted from key s0 (negative when it sees none from there).
    fn last_seen(&self, t: usize, s0: usize) -> isize {
        t as isize + self.s as isize - self.t as isize - s0 as isize
    }
    /// How a causal block (queries from t0, keys from s0) cuts its products: local key j is
    /// visible to local query i when j <= i + d (everything when not causal).
    fn tri(&self, causal: bool, t0: usize, s0: usize) -> [Tri; 3] {
        if !causal {
            return [Tri::Full; 3];
        }
        let d = self.last_seen(t0, s0);
        // Scores (queries x keys), probabilities times values/K (k over keys), and their
        // transposes (keys x queries, k over queries).
        [Tri::Cols(d), Tri::KUpTo(d), Tri::KFrom(-d)]
    }
    /// Index within the key block [s0, s0 + nk) of the first key query t may not see (nk if
    /// none): the last visible key is t + S - T.
    fn first_hidden(&self, causal: bool, t: usize, s0: usize, nk: usize) -> usize {
        if !causal {
            return nk;
        }
        (self.last_seen(t, s0) + 1).clamp(0, nk as isize) as usize
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

/// a as a [`tile::A`] operand, read as is (`t` false) or transposed.
fn op(a: M, t: bool) -> tile::A {
    if t {
        tile::A { p: a.p, rs: 1, cs: a.rs }
    } else {
        tile::A { p: a.p, rs: a.rs, cs: 1 }
    }
}

/// A local `[rows, cols]` buffer as an operand.
fn local(x: &[f32], cols: usize) -> M {
    M { p: x.as_ptr(), rs: cols }
}

/// Rows `0..n` of a head, transposed into `dst` as `[dh, n]`, so key blocks are row-major
/// operands of [`tile::mm`] (row stride n).
fn transposed(x: M, n: usize, dh: usize, dst: &mut Vec<f32>) {
    dst.resize(dh * n, 0.0);
    // SAFETY: `x` has n rows of dh elements (it came from `Heads::rows`).
    unsafe { tile::transpose(x.p, x.rs, n, dh, dst, n) };
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
    if !floats(&[q, k, v, out]) || !is_f32(lse) || !lse.layout.is_contiguous() || !same_dtype(&[q, k, v]) {
        return Ok(Handled::No);
    }
    let round = q.dtype == DType::BF16;
    let d = dims(q, k, v, out, lse)?;
    let Some([qh, kh, vh, oh]) = heads4([q, k, v, out])? else { return Ok(Handled::No) };
    let (lr, loff) = (raw(lse)?, lse.layout.offset);
    let qblocks = d.t.div_ceil(BQ);
    // One task per head, so its keys are transposed once; split heads into their query blocks
    // only when there are too few heads to keep every thread busy.
    let chunks = if d.b * d.hq >= 2 * rayon::current_num_threads() { 1 } else { qblocks };
    let task = |i: usize| {
        let (bh, ci) = (i / chunks, i % chunks);
        let (bi, h) = (bh / d.hq, bh % d.hq);
        let kvh = h / d.group();
        let (qb0, qb1) = (ci * qblocks / chunks, (ci + 1) * qblocks / chunks);
        let dh = d.dh;
        let kall = d.key_end(causal, (qb1 * BQ).min(d.t));
        let (mut sq, mut sk, mut sv, mut kt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // SAFETY: in bounds (checked by `raw` and `dims`); inputs are only read.
        let (ks, vs) = unsafe { (kh.rows(bi, kvh, 0, kall, dh, &mut sk), vh.rows(bi, kvh, 0, kall, dh, &mut sv)) };
        transposed(ks, kall, dh, &mut kt);
        let mut o = vec![0f32; BQ * dh];
        let mut sc = vec![0f32; BQ * BK];
        for qb in qb0..qb1 {
            let (t0, nq) = (qb * BQ, BQ.min(d.t - qb * BQ));
            let o = &mut o[..nq * dh];
            o.fill(0.0);
            let mut m = [f32::NEG_INFINITY; BQ];
            let mut l = [0f32; BQ];
            // SAFETY: as above.
            let qs = unsafe { qh.rows(bi, h, t0, nq, dh, &mut sq) };
            let kend = d.key_end(causal, t0 + nq);
            for s0 in (0..kend).step_by(BK) {
                let nk = BK.min(kend - s0);
                let sc = &mut sc[..nq * nk];
                let [cols, kupto, _] = d.tri(causal, t0, s0);
                // SAFETY: kt is [dh, kall] and s0 + nk <= kall; sc is [nq, nk].
                unsafe {
                    tile::mm(nq, nk, dh, op(qs, false), kt[s0..].as_ptr(), kall, sc.as_mut_ptr(), nk, scale, 0.0, cols)
                };
                for i in 0..nq {
                    let srow = &mut sc[i * nk..(i + 1) * nk];
                    // Only blocks crossing the diagonal have hidden keys (the tail of the row,
                    // not computed): they get probability 0.
                    let fh = d.first_hidden(causal, t0 + i, s0, nk);
                    srow[fh..].fill(0.0);
                    let mnew = max_nan(m[i], max(&srow[..fh]));
                    if mnew == f32::NEG_INFINITY {
                        srow.fill(0.0);
                        continue;
                    }
                    let corr = exp(m[i] - mnew);
                    let sum = crate::math::exp_shift_sum_inplace(&mut srow[..fh], mnew);
                    if round {
                        round_bf16_inplace(&mut srow[..fh]);
                    }
                    l[i] = l[i] * corr + sum;
                    m[i] = mnew;
                    if corr != 1.0 {
                        o[i * dh..(i + 1) * dh].iter_mut().for_each(|x| *x *= corr);
                    }
                }
                // SAFETY: rows s0.. of the V head; o is [nq, dh].
                unsafe {
                    let vb = vs.p.add(s0 * vs.rs);
                    tile::mm(nq, dh, nk, op(local(sc, nk), false), vb, vs.rs, o.as_mut_ptr(), dh, 1.0, 1.0, kupto)
                };
            }
            let mut lse_blk = [0f32; BQ];
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
                oh.store_rows(bi, h, t0, o, dh);
                store(lr, loff + bh * d.t + t0, 1, &lse_blk[..nq]);
            }
        }
    };
    let tasks = d.b * d.hq * chunks;
    if tasks > 1 && d.t * d.s * d.dh >= 1 << 12 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    Ok(Handled::Yes)
}

/// Whether the product operands share one dtype (the one they multiply in).
fn same_dtype(vs: &[&View]) -> bool {
    vs.iter().all(|v| v.dtype == vs[0].dtype)
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
    let operands_ok = same_dtype(&[q, k, v, dout]);
    if !floats(&[q, k, v, out, dout, dq, dk, dv]) || !is_f32(lse) || !lse.layout.is_contiguous() || !operands_ok {
        return Ok(Handled::No);
    }
    let round = q.dtype == DType::BF16;
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
        let (mut kt, mut vt) = (Vec::new(), Vec::new());
        transposed(ks, d.s, dh, &mut kt);
        transposed(vs, d.s, dh, &mut vt);
        let mut acc = BwdAcc::new(&d);
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
            for (t, dt) in acc.big_d.iter_mut().enumerate() {
                // SAFETY: row t of a [T, Dh] head.
                *dt = unsafe { dot(gs.row(t, dh), os.row(t, dh)) };
            }
            acc.dq.fill(0.0);
            let head = BwdHead { d: &d, causal, scale, round, qs, gs, ks, kt: &kt, vt: &vt, lse: ls };
            for t0 in (0..d.t).step_by(BQ) {
                let nq = BQ.min(d.t - t0);
                for s0 in (0..d.key_end(causal, t0 + nq)).step_by(BK) {
                    head.block(t0, nq, s0, &mut acc);
                }
            }
            // SAFETY: this task owns the dq rows of its query heads.
            unsafe { dqh.store_rows(bi, h, 0, &acc.dq, dh) };
        }
        // SAFETY: this task owns dk and dv of its KV head.
        unsafe {
            dkh.store_rows(bi, kvh, 0, &acc.dk, dh);
            dvh.store_rows(bi, kvh, 0, &acc.dv, dh);
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

/// One query head's inputs to the backward pass, as one KV-head task holds them: q, dout and
/// K as rows, K and V transposed to [dh, S], the saved logsumexp; `round` when the products
/// take bf16 operands.
struct BwdHead<'a> {
    d: &'a Dims,
    causal: bool,
    scale: f32,
    round: bool,
    qs: M,
    gs: M,
    ks: M,
    kt: &'a [f32],
    vt: &'a [f32],
    lse: &'a [f32],
}

/// A KV-head task's accumulators and scratch: dq of the current query head [T, dh], dk and dv
/// of the KV head [S, dh], D_i = dout_i . out_i, and one block of p, of p rounded to bf16
/// (bf16 operands only) and of dp.
struct BwdAcc {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    big_d: Vec<f32>,
    p: Vec<f32>,
    p_bf16: Vec<f32>,
    dp: Vec<f32>,
}

impl BwdAcc {
    fn new(d: &Dims) -> BwdAcc {
        BwdAcc {
            dq: vec![0.0; d.t * d.dh],
            dk: vec![0.0; d.s * d.dh],
            dv: vec![0.0; d.s * d.dh],
            big_d: vec![0.0; d.t],
            p: vec![0.0; BQ * BK],
            p_bf16: Vec::new(),
            dp: vec![0.0; BQ * BK],
        }
    }
}

// In the blocks below, t0 + nq <= T (the query loop) and s0 + nk <= key_end <= S (`block`);
// qs and gs hold the T rows of their [T, dh] heads, ks the S rows of the K head, and kt and vt
// are the K and V heads transposed to [dh, S]; every product's output is a task-local Vec.
impl BwdHead<'_> {
    /// The block of queries [t0, t0 + nq) and keys from s0, in the module docs' four steps.
    fn block(&self, t0: usize, nq: usize, s0: usize, acc: &mut BwdAcc) {
        let nk = BK.min(self.d.key_end(self.causal, t0 + nq) - s0);
        let (p, dp) = (&mut acc.p[..nq * nk], &mut acc.dp[..nq * nk]);
        self.probabilities(t0, nq, s0, nk, p);
        // bf16 operands: dv's product takes p rounded, ds is formed from the f32 p and then
        // rounded for dq's and dk's products.
        let pv: &[f32] = if self.round {
            acc.p_bf16.clear();
            acc.p_bf16.extend_from_slice(p);
            round_bf16_inplace(&mut acc.p_bf16);
            &acc.p_bf16
        } else {
            p
        };
        self.value_grads(t0, nq, s0, nk, pv, dp, &mut acc.dv);
        self.score_grads(t0, s0, nk, p, dp, &acc.big_d);
        if self.round {
            round_bf16_inplace(dp);
        }
        self.query_key_grads(t0, nq, s0, nk, dp, &mut acc.dq, &mut acc.dk);
    }

    /// Rows t0.. of an [T, dh] head.
    fn rows_from(m: M, t0: usize) -> M {
        // SAFETY: callers pass t0 < T of a head with T rows.
        M { p: unsafe { m.p.add(t0 * m.rs) }, ..m }
    }

    /// p_ij = exp(scale q_i . k_j - lse_i), 0 for hidden keys (never exp'd) and rows with no
    /// visible key (lse = -inf).
    fn probabilities(&self, t0: usize, nq: usize, s0: usize, nk: usize, p: &mut [f32]) {
        let [cols, _, _] = self.d.tri(self.causal, t0, s0);
        let qb = Self::rows_from(self.qs, t0);
        let (kt, s) = (self.kt[s0..].as_ptr(), self.d.s);
        // SAFETY: a is rows t0..t0 + nq of the [T, dh] query head; b, read as [dh, nk] with row
        // stride S from column s0 of kt = [dh, S], ends at (dh - 1) S + s0 + nk <= dh S; c is the
        // local [nq, nk] block p, which overlaps neither operand.
        unsafe { tile::mm(nq, nk, self.d.dh, op(qb, false), kt, s, p.as_mut_ptr(), nk, self.scale, 0.0, cols) };
        for i in 0..nq {
            let (li, row) = (self.lse[t0 + i], &mut p[i * nk..(i + 1) * nk]);
            let fh = if li == f32::NEG_INFINITY { 0 } else { self.d.first_hidden(self.causal, t0 + i, s0, nk) };
            crate::math::exp_shift_sum_inplace(&mut row[..fh], li);
            row[fh..].fill(0.0);
        }
    }

    /// dv_j += sum_i p_ij dout_i, and dp_ij = dout_i . v_j.
    #[allow(clippy::too_many_arguments)]
    fn value_grads(&self, t0: usize, nq: usize, s0: usize, nk: usize, p: &[f32], dp: &mut [f32], dv: &mut [f32]) {
        let [cols, _, kfrom] = self.d.tri(self.causal, t0, s0);
        let (gb, dh, vt) = (Self::rows_from(self.gs, t0), self.d.dh, self.vt[s0..].as_ptr());
        let dv_blk = &mut dv[s0 * dh..(s0 + nk) * dh];
        // SAFETY: first product: a is p^T, [nk, nq] over the local [nq, nk] p; b is rows
        // t0..t0 + nq of the [T, dh] dout head; c is dv_blk, rows s0..s0 + nk of the local
        // [S, dh] dv. Second: a is those dout rows; b, read as [dh, nk] with row stride S from
        // column s0 of vt = [dh, S], stays inside it as s0 + nk <= S; c is the local [nq, nk] dp.
        // Both outputs are this task's own Vecs, which no operand points into.
        unsafe {
            tile::mm(nk, dh, nq, op(local(p, nk), true), gb.p, gb.rs, dv_blk.as_mut_ptr(), dh, 1.0, 1.0, kfrom);
            tile::mm(nq, nk, dh, op(gb, false), vt, self.d.s, dp.as_mut_ptr(), nk, 1.0, 0.0, cols);
        }
    }

    /// ds_ij = p_ij (dp_ij - D_i), in place of dp; 0 for hidden keys.
    fn score_grads(&self, t0: usize, s0: usize, nk: usize, p: &[f32], dp: &mut [f32], big_d: &[f32]) {
        for (i, (dr, pr)) in dp.chunks_exact_mut(nk).zip(p.chunks_exact(nk)).enumerate() {
            let (di, fh) = (big_d[t0 + i], self.d.first_hidden(self.causal, t0 + i, s0, nk));
            dr[..fh].iter_mut().zip(&pr[..fh]).for_each(|(x, &pv)| *x = pv * (*x - di));
            dr[fh..].fill(0.0);
        }
    }

    /// dq_i += scale sum_j ds_ij k_j; dk_j += scale sum_i ds_ij q_i.
    #[allow(clippy::too_many_arguments)]
    fn query_key_grads(&self, t0: usize, nq: usize, s0: usize, nk: usize, ds: &[f32], dq: &mut [f32], dk: &mut [f32]) {
        let [_, kupto, kfrom] = self.d.tri(self.causal, t0, s0);
        let (dh, sc) = (self.d.dh, self.scale);
        let (kb, qb) = (Self::rows_from(self.ks, s0), Self::rows_from(self.qs, t0));
        let (dq_blk, dk_blk) = (&mut dq[t0 * dh..(t0 + nq) * dh], &mut dk[s0 * dh..(s0 + nk) * dh]);
        // SAFETY: a is the local [nq, nk] ds, or its transpose [nk, nq]; b is rows s0..s0 + nk of
        // the [S, dh] K head, or rows t0..t0 + nq of the [T, dh] query head; c is dq_blk ([nq, dh]
        // of the local [T, dh] dq) or dk_blk ([nk, dh] of the local [S, dh] dk), this task's own
        // Vecs, which no operand points into.
        unsafe {
            tile::mm(nq, dh, nk, op(local(ds, nk), false), kb.p, kb.rs, dq_blk.as_mut_ptr(), dh, sc, 1.0, kupto);
            tile::mm(nk, dh, nq, op(local(ds, nk), true), qb.p, qb.rs, dk_blk.as_mut_ptr(), dh, sc, 1.0, kfrom);
        }
    }
}
