//! matmul: out[b] = alpha * a[b] @ b[b] + beta * out[b], through the `gemm` crate.
//!
//! gemm takes row and column strides, so transposed operands (the backward pass's dW = dY^T X
//! and dX = dY W) run without a copy. Large products use gemm's own rayon parallelism inside
//! the port's pool; many small products (attention heads) run one per task instead. bf16
//! operands are widened to f32 panels first (a native AVX512-BF16 kernel is future work).

use super::dense_out;
use crate::elem::{load, raw, store, want_float, Ptr};
use anychip_port::{invalid, DType, Result, View};
use gemm::Parallelism;
use rayon::prelude::*;

/// Products with fewer multiply-adds than this run on one thread (threading costs ~10 us).
const PAR_FLOPS: usize = 1 << 18;

/// An f32 operand: base pointer plus (batch, row, column) strides in elements.
#[derive(Clone, Copy)]
pub struct Mat {
    pub ptr: Ptr,
    pub bs: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Check shapes and run the product; see the module docs.
pub fn matmul(a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
    for v in [a, b, out] {
        want_float(v, "matmul")?;
    }
    dense_out(out)?;
    let (sa, sb, so) = (a.shape(), b.shape(), out.shape());
    if sa.len() != 3 || sb.len() != 3 || so.len() != 3 {
        return invalid(format!("matmul wants rank-3 views [B,M,K] [B,K,N] [B,M,N], got {sa:?} {sb:?} {so:?}"));
    }
    let (bt, m, k, n) = (so[0], sa[1], sa[2], sb[2]);
    if sa[0] != bt || sb[0] != bt || sb[1] != k || so[1] != m || so[2] != n {
        return invalid(format!("matmul shapes do not chain: a {sa:?} @ b {sb:?} -> out {so:?}"));
    }
    if a.dtype != b.dtype || (out.dtype != DType::F32 && out.dtype != a.dtype) {
        return invalid(format!(
            "matmul dtypes {} @ {} -> {}: inputs must match and out must be f32 or theirs",
            a.dtype, b.dtype, out.dtype
        ));
    }
    let (ar, br, or) = (raw(a)?, raw(b)?, raw(out)?);
    if bt == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    // Widen bf16 operands to contiguous f32 (kept alive until the product is done).
    let (mut wa, mut wb, mut wo) = (Vec::new(), Vec::new(), Vec::new());
    let ma = operand(a, ar, &mut wa);
    let mb = operand(b, br, &mut wb);
    let mo = if or.dtype == DType::F32 {
        Mat { ptr: or.base, bs: out.layout.strides[0], rs: out.layout.strides[1], cs: out.layout.strides[2] }
            .offset(out.layout.offset)
    } else {
        wo.resize(bt * m * n, 0.0);
        if beta != 0.0 {
            widen(out, or, &mut wo);
        }
        Mat { ptr: Ptr(wo.as_mut_ptr() as *mut u8), bs: m * n, rs: n, cs: 1 }
    };
    // SAFETY: operands are in bounds (checked by `raw`) or our own vectors of the right size;
    // the output batches are disjoint (dense_out), so parallel batches never share memory.
    unsafe { gemm_batched(bt, m, n, k, ma, mb, mo, alpha, beta) };
    if or.dtype != DType::F32 {
        let ol = &out.layout;
        for (i, chunk) in wo.chunks(n).enumerate() {
            let (bi, r) = (i / m, i % m);
            // SAFETY: in bounds; written by this thread only.
            unsafe { store(or, ol.offset + bi * ol.strides[0] + r * ol.strides[1], ol.strides[2], chunk) };
        }
    }
    Ok(())
}

impl Mat {
    fn offset(self, elems: usize) -> Mat {
        Mat { ptr: Ptr(unsafe { (self.ptr.0 as *mut f32).add(elems) } as *mut u8), ..self }
    }
}

/// The f32 operand for `v`: itself when f32, else widened into `buf`.
fn operand(v: &View, r: crate::elem::Raw, buf: &mut Vec<f32>) -> Mat {
    let l = &v.layout;
    if r.dtype == DType::F32 {
        return Mat { ptr: r.base, bs: l.strides[0], rs: l.strides[1], cs: l.strides[2] }.offset(l.offset);
    }
    let (bt, m, k) = (l.shape[0], l.shape[1], l.shape[2]);
    // A broadcast batch (stride 0) is widened once.
    let bts = if l.strides[0] == 0 { 1 } else { bt };
    buf.resize(bts * m * k, 0.0);
    let one = View { layout: anychip_port::Layout { shape: vec![bts, m, k], ..l.clone() }, ..v.clone() };
    widen(&one, r, buf);
    Mat { ptr: Ptr(buf.as_mut_ptr() as *mut u8), bs: if bts == 1 { 0 } else { m * k }, rs: k, cs: 1 }
}

/// Load the rank-3 view `v` into contiguous f32 `dst`.
fn widen(v: &View, r: crate::elem::Raw, dst: &mut [f32]) {
    let l = &v.layout;
    let (m, k) = (l.shape[1], l.shape[2]);
    for (i, row) in dst.chunks_mut(k.max(1)).enumerate().take(l.shape[0] * m) {
        let (bi, ri) = (i / m, i % m);
        // SAFETY: in bounds (checked by `raw`).
        unsafe { load(r, l.offset + bi * l.strides[0] + ri * l.strides[1], l.strides[2], row) };
    }
}

/// c[i] = alpha a[i] b[i] + beta c[i] for i < batch, all f32 strided.
///
/// # Safety
/// Every matrix must be in bounds, and the batches of `c` must be pairwise disjoint.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_batched(bt: usize, m: usize, n: usize, k: usize, a: Mat, b: Mat, c: Mat, alpha: f32, beta: f32) {
    let work = m * n * k.max(1);
    let threads = rayon::current_num_threads();
    let one = |i: usize, par: Parallelism| {
        let at = |x: Mat| (x.ptr.0 as *mut f32).add(i * x.bs);
        gemm_one(m, n, k, at(a), a.rs, a.cs, at(b), b.rs, b.cs, at(c), c.rs, c.cs, alpha, beta, par);
    };
    if bt > 1 && work * bt >= PAR_FLOPS && (work < PAR_FLOPS * 8 || bt >= 4 * threads) {
        (0..bt).into_par_iter().for_each(|i| one(i, Parallelism::None));
    } else {
        let par = if work >= PAR_FLOPS && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        (0..bt).for_each(|i| one(i, par));
    }
}

/// One strided f32 product c = alpha a b + beta c (beta = 0 never reads c).
///
/// # Safety
/// Pointers and strides must describe in-bounds matrices of the stated shapes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_one(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    b: *const f32,
    brs: usize,
    bcs: usize,
    c: *mut f32,
    crs: usize,
    ccs: usize,
    alpha: f32,
    beta: f32,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: only the beta term remains (and beta = 0 must not read c).
        for i in 0..m {
            for j in 0..n {
                let p = c.add(i * crs + j * ccs);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
        return;
    }
    // gemm computes dst = alpha dst + beta lhs rhs: its alpha and beta are our beta and alpha.
    gemm::gemm(
        m,
        n,
        k,
        c,
        ccs as isize,
        crs as isize,
        beta != 0.0,
        a,
        acs as isize,
        ars as isize,
        b,
        bcs as isize,
        brs as isize,
        beta,
        alpha,
        false,
        false,
        false,
        par,
    );
}
