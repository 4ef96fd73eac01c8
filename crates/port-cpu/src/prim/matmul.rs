//! matmul: out[b] = alpha * a[b] @ b[b] + beta * out[b], through the `gemm` crate.
//!
//! gemm takes row and column strides, so transposed operands (the backward pass's dW = dY^T X
//! and dX = dY W) run without a copy. A large product is cut into one slice of the output per
//! worker, each a single-threaded gemm call (see [`split`] for why not gemm's own threading);
//! many small products (attention heads) run one per task instead. Where the port was created
//! with a vendor BLAS (`ANYCHIP_BLAS`, see [`crate::blas`]), the slices go to its
//! single-threaded sgemm instead. bf16
//! operands run on the native bf16 kernel ([`super::matmul_bf16`], AMX or AVX512-BF16) where
//! the CPU has one, and are otherwise widened to f32 panels first. Both give the same products (a bf16
//! product is exact in f32) summed in f32, so they differ only in summation order.

use super::dense_out;
use crate::elem::{load, raw, store, want_float, Ptr};
use anychip_port::{invalid, DType, Result, View};
use gemm::Parallelism;
use rayon::prelude::*;

/// Products with fewer multiply-adds than this run on one thread (threading costs ~10 us).
pub(crate) const PAR_FLOPS: usize = 1 << 18;

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
    matmul_on(a, b, out, alpha, beta, true, true)
}

/// [`matmul`] on the calling thread alone, for a caller that runs several products at once
/// on the pool (`grouped_linear`). Every output element is the same sum as [`matmul`]'s, bit
/// for bit: a split product's slices take the same path through gemm as the whole product (see
/// [`split`]), and the native bf16 kernel sums each element over K in an order its blocking
/// does not change.
pub fn matmul_serial(a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
    matmul_on(a, b, out, alpha, beta, true, false)
}

/// [`matmul`], with `native` = false forcing the widening path for bf16 operands (for tests
/// that hold the native kernel against it), and `parallel` = false keeping it on this thread.
fn matmul_on(a: &View, b: &View, out: &View, alpha: f32, beta: f32, native: bool, parallel: bool) -> Result<()> {
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
    // An input in out's buffer (the contract lets out alias an input of the same layout) is
    // read from a copy: a product reads each input element many times while it writes out, so
    // reading it in place would see new values, and race with the writes across threads.
    let (a_copy, b_copy) = (ar.id == or.id, br.id == or.id);
    #[cfg(anychip_avx512bf16)]
    if native && !(a_copy || b_copy) && a.dtype == DType::BF16 && super::matmul_bf16::available() {
        native_bf16(a, b, out, (ar, br, or), (bt, m, k, n), alpha, beta, parallel);
        return Ok(());
    }
    let _ = native;
    // Widen bf16 operands to contiguous f32 (kept alive until the product is done).
    let (mut wa, mut wb, mut wo) = (Vec::new(), Vec::new(), Vec::new());
    let ma = operand(a, ar, a_copy, &mut wa);
    let mb = operand(b, br, b_copy, &mut wb);
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
    // the output batches are disjoint (dense_out), so parallel batches never share memory; an
    // input read in place is in another buffer than out (else it was copied above), so no
    // element is read while it is written.
    unsafe { gemm_batched(bt, m, n, k, ma, mb, mo, alpha, beta, parallel) };
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

/// The product on the native bf16 kernel: straight into `out` when it is f32 with unit column
/// stride, else through an f32 scratch (loaded first when beta reads it) stored back at the end.
/// On the pool when `parallel`, else on this thread.
#[cfg(anychip_avx512bf16)]
#[allow(clippy::too_many_arguments)]
fn native_bf16(
    a: &View,
    b: &View,
    out: &View,
    (ar, br, or): (crate::elem::Raw, crate::elem::Raw, crate::elem::Raw),
    (bt, m, k, n): (usize, usize, usize, usize),
    alpha: f32,
    beta: f32,
    parallel: bool,
) {
    use super::matmul_bf16::{gemm, BfMat, OutMat};
    let (al, bl, ol) = (&a.layout, &b.layout, &out.layout);
    let direct = or.dtype == DType::F32 && (ol.strides[2] == 1 || n == 1);
    let mut wo = Vec::new();
    let (cbase, cbs, crs) = if direct {
        // SAFETY: in bounds (checked by `raw`).
        (unsafe { or.ptr::<f32>().add(ol.offset) }, ol.strides[0], ol.strides[1])
    } else {
        wo.resize(bt * m * n, 0.0);
        if beta != 0.0 {
            widen(out, or, &mut wo);
        }
        (wo.as_mut_ptr(), m * n, n)
    };
    let (cbase, ap, bp) = (crate::elem::Ptr(cbase as *mut u8), ar.base, br.base);
    let one = |i: usize, parallel: bool| {
        // Wrapping for the reason in `Mat::offset`: with k = 0 a and b are empty, unchecked and
        // never read.
        let am = BfMat {
            ptr: ap.get::<u16>().wrapping_add(al.offset + i * al.strides[0]),
            rs: al.strides[1],
            cs: al.strides[2],
        };
        let bm = BfMat {
            ptr: bp.get::<u16>().wrapping_add(bl.offset + i * bl.strides[0]),
            rs: bl.strides[1],
            cs: bl.strides[2],
        };
        // SAFETY: batch i of c is in bounds (out is non-empty here and checked by `raw`, or it is
        // our `wo` of bt m n floats) and the output batches are disjoint (dense_out), so the
        // parallel batches never share memory; a and b are in bounds (checked by `raw`) and only
        // read, and c overlaps neither (an input in out's buffer takes the widening path, see
        // `matmul_on`, and `wo` is our own); our caller ran this only after `available()` found
        // a bf16 engine on this CPU.
        unsafe {
            gemm(m, n, k, am, bm, OutMat { ptr: cbase.get::<f32>().add(i * cbs), rs: crs }, alpha, beta, parallel)
        };
    };
    let work = m * n * k.max(1);
    let threads = rayon::current_num_threads();
    if parallel && bt > 1 && work * bt >= PAR_FLOPS && (work < PAR_FLOPS * 8 || bt >= 4 * threads) {
        (0..bt).into_par_iter().for_each(|i| one(i, false));
    } else {
        (0..bt).for_each(|i| one(i, parallel));
    }
    if !direct {
        for (i, chunk) in wo.chunks(n).enumerate() {
            let (bi, r) = (i / m, i % m);
            // SAFETY: in bounds; written by this thread only.
            unsafe { store(or, ol.offset + bi * ol.strides[0] + r * ol.strides[1], ol.strides[2], chunk) };
        }
    }
}

impl Mat {
    /// The matrix `elems` elements further on. Wrapping arithmetic, not `add`: the offset of an
    /// empty operand (k = 0) is not bounds-checked (`raw` checks views with elements only), so
    /// the address may lie outside its buffer, where `add` is undefined behaviour even unread;
    /// such an operand is never read ([`gemm_one`] with k = 0 touches c alone).
    fn offset(self, elems: usize) -> Mat {
        Mat { ptr: Ptr((self.ptr.0 as *mut f32).wrapping_add(elems) as *mut u8), ..self }
    }
}

/// The f32 operand for `v`: itself when f32 (and not to be copied), else widened into `buf`.
fn operand(v: &View, r: crate::elem::Raw, copy: bool, buf: &mut Vec<f32>) -> Mat {
    let l = &v.layout;
    if r.dtype == DType::F32 && !copy {
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

/// c[i] = alpha a[i] b[i] + beta c[i] for i < batch, all f32 strided; on the pool when
/// `parallel`, else on this thread.
///
/// # Safety
/// Every matrix must be in bounds, and the batches of `c` must be pairwise disjoint.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_batched(
    bt: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: Mat,
    alpha: f32,
    beta: f32,
    parallel: bool,
) {
    let work = m * n * k.max(1);
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let one = |i: usize, par: Parallelism| {
        // Wrapping for the reason in `Mat::offset`: an empty operand's batch stride is unchecked.
        let at = |x: Mat| (x.ptr.0 as *mut f32).wrapping_add(i * x.bs);
        gemm_one(m, n, k, at(a), a.rs, a.cs, at(b), b.rs, b.cs, at(c), c.rs, c.cs, alpha, beta, par);
    };
    if parallel && bt > 1 && work * bt >= PAR_FLOPS && (work < PAR_FLOPS * 8 || bt >= 4 * threads) {
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
    let parts = match par {
        Parallelism::Rayon(t) => t.max(1),
        _ => 1,
    };
    let vendor = crate::blas::current();
    split(parts, (m, n, k), (a, ars, acs), (b, brs, bcs), (c, crs, ccs), |dims, a, b, c| {
        // A slice whose strides CBLAS cannot take runs on the gemm crate instead.
        if !vendor.is_some_and(|bl| bl.sgemm(dims, a, b, c, alpha, beta)) {
            builtin(dims, a, b, c, alpha, beta, Parallelism::None);
        }
    });
}

/// The product on the gemm crate (k > 0), on the kernel set [`crate::isa::gemm_kernels`] names.
///
/// # Safety
/// As [`gemm_one`].
#[allow(clippy::too_many_arguments)]
unsafe fn builtin(
    (m, n, k): (usize, usize, usize),
    (a, ars, acs): (*const f32, usize, usize),
    (b, brs, bcs): (*const f32, usize, usize),
    (c, crs, ccs): (*mut f32, usize, usize),
    alpha: f32,
    beta: f32,
    par: Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::gemm_kernels() == crate::isa::GemmKernels::Fma {
        return gemm_avx2((m, n, k), (a, ars, acs), (b, brs, bcs), (c, crs, ccs), alpha, beta, par);
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

/// [`builtin`] on gemm's AVX2+FMA kernel set whatever the CPU has above it: what `gemm::gemm`
/// does for f32 (0.19), with the set named instead of detected. gemm's kernels prefer a
/// column-major output, so a row-major c is computed as c^T = b^T a^T; then the set's tables go
/// to gemm's generic driver.
///
/// # Safety
/// As [`gemm_one`]; the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx2(
    (m, n, k): (usize, usize, usize),
    a: (*const f32, usize, usize),
    b: (*const f32, usize, usize),
    (c, crs, ccs): (*mut f32, usize, usize),
    alpha: f32,
    beta: f32,
    par: Parallelism,
) {
    use gemm_f32::microkernel::fma::f32 as set;
    // (rows, cols, lhs, rhs, c strides) of the product gemm's driver sees, strides as (row, column).
    let ((m, n), (l, lrs, lcs), (r, rrs, rcs), (crs, ccs)) =
        if ccs < crs { ((n, m), (b.0, b.2, b.1), (a.0, a.2, a.1), (ccs, crs)) } else { ((m, n), a, b, (crs, ccs)) };
    let [crs, ccs, lrs, lcs, rrs, rcs] = [crs, ccs, lrs, lcs, rrs, rcs].map(|x| x as isize);
    let simd = gemm_common::simd::V3::try_new().expect("the CPU has AVX2 and FMA");
    // As gemm: dst = alpha dst + beta lhs rhs, so its alpha and beta are our beta and alpha.
    gemm_common::gemm::gemm_basic_generic::<
        _,
        f32,
        8,
        { set::MR_DIV_N * 8 },
        { set::NR },
        { set::MR_DIV_N },
        { set::H_M },
        { set::H_N },
    >(
        simd,
        m,
        n,
        k,
        c,
        ccs,
        crs,
        beta != 0.0,
        l,
        lcs,
        lrs,
        r,
        rcs,
        rrs,
        beta,
        alpha,
        false,
        false,
        false,
        |x, y, z| x * y + z,
        &set::UKR,
        &set::H_UKR,
        false,
        par,
    )
}

/// Rows or columns of c per slice below which a product is not split further.
const SLICE_MIN: usize = 128;

/// An f32 operand of one slice: base pointer, row and column strides.
type Operand<T> = (T, usize, usize);

/// Run the product as `parts` independent single-threaded products, one slice of c along its
/// longer side each, on the port's workers (`piece(dims, a, b, c)` computes one slice).
///
/// Why not the gemm crate's own threading (`Parallelism::Rayon`): it packs each depth block of
/// b on all threads, waits for all of them, then shares out the micro-tiles, a barrier per
/// block; independent slices never wait (each packs the operand it shares with the other
/// slices itself, an O(k (m + n)) copy against O(m n k / parts) arithmetic). Slices are whole
/// 16-wide register blocks and at least [`SLICE_MIN`] long, so that a slice takes the same
/// path through gemm as the whole product (gemm's blocking of k depends on k alone there) and
/// the result does not depend on the thread count.
///
/// # Safety
/// As [`gemm_one`]; `piece` must compute exactly the slice it is given.
unsafe fn split(
    parts: usize,
    (m, n, k): (usize, usize, usize),
    (a, ars, acs): Operand<*const f32>,
    (b, brs, bcs): Operand<*const f32>,
    (c, crs, ccs): Operand<*mut f32>,
    piece: impl Fn((usize, usize, usize), Operand<*const f32>, Operand<*const f32>, Operand<*mut f32>) + Sync,
) {
    let (ap, bp, cp) = (a as usize, b as usize, c as usize);
    let run = |i0: usize, i1: usize, j0: usize, j1: usize| {
        // A slice of c with the rows of a and the columns of b it reads: all in bounds.
        let a = (ap as *const f32).wrapping_add(i0 * ars);
        let b = (bp as *const f32).wrapping_add(j0 * bcs);
        let c = (cp as *mut f32).wrapping_add(i0 * crs + j0 * ccs);
        piece((i1 - i0, j1 - j0, k), (a, ars, acs), (b, brs, bcs), (c, crs, ccs));
    };
    let rows = m >= n;
    let len = if rows { m } else { n };
    let parts = parts.min(len / SLICE_MIN).max(1);
    if parts == 1 {
        return run(0, m, 0, n);
    }
    // Boundaries at multiples of 16, evenly spread: every slice is at least SLICE_MIN - 16 long.
    let edge = |p: usize| if p == parts { len } else { (p * len / parts) / 16 * 16 };
    (0..parts).into_par_iter().for_each(|p| {
        let (s, e) = (edge(p), edge(p + 1));
        if rows {
            run(s, e, 0, n)
        } else {
            run(0, m, s, e)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::{bf16_to_f32, f32_to_bf16, Layout, Port};

    /// gemm's AVX2+FMA set run by name (what `avx2` runs on an AVX-512 CPU) against an f64
    /// product within the summation bound, on row- and column-major outputs, transposed operands
    /// and beta on and off (beta = 0 must not read c, which holds NaN then); and bit for bit
    /// against `gemm::gemm` where that set is gemm's own choice (an AVX2 CPU without AVX-512):
    /// the call by name is gemm's own call.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gemm_avx2_set_matches_f64_and_gemm_itself() {
        use crate::isa::{detected, Isa};
        if !Isa::Avx2.supported() {
            eprintln!("skipped: no AVX2+FMA");
            return;
        }
        let mut seed = 11u64;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        for (m, n, k) in [(1, 1, 1), (7, 33, 5), (70, 19, 130), (64, 64, 64), (3, 200, 17)] {
            for layout in 0..8 {
                let (ta, tb, tc) = (layout & 1 == 1, layout & 2 == 2, layout & 4 == 4);
                let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                let (crs, ccs) = if tc { (1, m) } else { (n, 1) };
                for beta in [0.0f32, 0.75] {
                    let (a, b) = (vals(m * k), vals(k * n));
                    let c0 = if beta == 0.0 { vec![f32::NAN; m * n] } else { vals(m * n) };
                    {
                        let mut c = c0.clone();
                        // SAFETY: a, b and c hold [m, k], [k, n] and [m, n] in the strides given;
                        // the CPU has AVX2 and FMA (checked above).
                        unsafe {
                            let (ap, bp, cp) =
                                ((a.as_ptr(), ars, acs), (b.as_ptr(), brs, bcs), (c.as_mut_ptr(), crs, ccs));
                            gemm_avx2((m, n, k), ap, bp, cp, 1.5, beta, Parallelism::None);
                        }
                        for i in 0..m {
                            for j in 0..n {
                                let terms = (0..k).map(|p| a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64);
                                let (s, sa) = terms.fold((0.0, 0.0), |(s, sa), t| (s + t, sa + t.abs()));
                                let cb = if beta == 0.0 { 0.0 } else { beta as f64 * c0[i * crs + j * ccs] as f64 };
                                let want = 1.5 * s + cb;
                                let bound = (k + 3) as f64 * 6e-8 * (1.5 * sa + cb.abs()) + 1e-30;
                                let got = c[i * crs + j * ccs] as f64;
                                assert!(
                                    (got - want).abs() <= bound,
                                    "[{m}x{k}]x[{k}x{n}] layout {layout} beta {beta} at ({i}, {j}): {got} vs {want}"
                                );
                            }
                        }
                        if detected() == Isa::Avx2 {
                            let mut own = c0.clone();
                            // SAFETY: as above; gemm's own call with the strides `builtin` gives it.
                            unsafe {
                                gemm::gemm(
                                    m,
                                    n,
                                    k,
                                    own.as_mut_ptr(),
                                    ccs as isize,
                                    crs as isize,
                                    beta != 0.0,
                                    a.as_ptr(),
                                    acs as isize,
                                    ars as isize,
                                    b.as_ptr(),
                                    bcs as isize,
                                    brs as isize,
                                    beta,
                                    1.5,
                                    false,
                                    false,
                                    false,
                                    Parallelism::None,
                                )
                            };
                            let same = own.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(
                                same,
                                "[{m}x{k}]x[{k}x{n}] layout {layout} beta {beta}: the AVX2 set differs from gemm's own"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The native bf16 kernel against the widening path, through the primitive's own entry
    /// point: odd shapes, transposed operands, a batch-broadcast B (stride 0), a strided and a
    /// bf16 output, alpha and beta. Both compute the same exact products and sum them in f32
    /// in different orders, so each is within (k + 3) u (|alpha| sum |a b| + |beta c|) of the
    /// exact result (u = 2^-24) and they are within twice that of each other; a bf16 output
    /// adds one rounding of the same value on both sides, which may land either side of a tie
    /// (one bf16 ulp).
    #[test]
    fn native_bf16_matches_the_widening_path() {
        if crate::prim::bf16_matmul_engine().is_none() {
            eprintln!("skipped: no native bf16 kernel on this CPU");
            return;
        }
        let port = crate::new(Some(2));
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    bf16_to_f32(f32_to_bf16((seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0))
                })
                .collect()
        };
        let put = |v: &[f32], dt: DType, layout: Layout| -> View {
            let bytes: Vec<u8> = match dt {
                DType::BF16 => v.iter().flat_map(|&x| f32_to_bf16(x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            let buf = port.alloc(bytes.len()).unwrap();
            port.write(&buf, 0, &bytes).unwrap();
            View { buf, dtype: dt, layout }
        };
        let get = |v: &View| -> Vec<f32> {
            let mut bytes = vec![0u8; v.buf.bytes()];
            port.read(&v.buf, 0, &mut bytes).unwrap();
            let all: Vec<f32> = match v.dtype {
                DType::BF16 => bytes.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
                _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            };
            v.layout.indices().map(|i| all[i]).collect()
        };
        // (batch, m, k, n, a transposed, b transposed, b broadcast, out dtype, out transposed, alpha, beta,
        // gapped: a and b with no unit stride, every other element of a row-major matrix)
        let cases = [
            (1, 1, 1, 1, false, false, false, DType::F32, false, 1.0, 0.0, false),
            (1, 37, 300, 70, false, true, false, DType::F32, false, 1.0, 0.0, false),
            (1, 70, 37, 300, true, false, false, DType::F32, false, 1.0, 1.0, false),
            (3, 33, 129, 65, false, false, true, DType::F32, false, 0.5, 1.5, false),
            (2, 45, 64, 17, true, true, true, DType::F32, true, -1.0, 0.25, false),
            (2, 31, 257, 40, false, true, false, DType::BF16, false, 1.0, 0.5, false),
            (1, 64, 1031, 96, true, false, false, DType::F32, false, 1.0, 0.0, false),
            (2, 19, 37, 50, false, false, false, DType::F32, false, 1.0, 0.5, true),
        ];
        for (bt, m, k, n, ta, tb, bb, odt, ot, alpha, beta, gapped) in cases {
            let (av, bv, cv) = (vals(bt * m * k), vals(bt * k * n), vals(bt * m * n));
            // Gapped operands take the packers' word-by-word fallback.
            let (av, bv) = if gapped { (vals(2 * bt * m * k), vals(2 * bt * k * n)) } else { (av, bv) };
            let a_l = if gapped {
                Layout { shape: vec![bt, m, k], strides: vec![2 * m * k, 2 * k, 2], offset: 0 }
            } else if ta {
                Layout { shape: vec![bt, m, k], strides: vec![m * k, 1, m], offset: 0 }
            } else {
                Layout { shape: vec![bt, m, k], strides: vec![m * k, k, 1], offset: 0 }
            };
            let bs = if bb { 0 } else { k * n };
            let b_l = if gapped {
                Layout { shape: vec![bt, k, n], strides: vec![2 * bs, 2 * n, 2], offset: 0 }
            } else if tb {
                Layout { shape: vec![bt, k, n], strides: vec![bs, 1, k], offset: 0 }
            } else {
                Layout { shape: vec![bt, k, n], strides: vec![bs, n, 1], offset: 0 }
            };
            let o_l = if ot {
                Layout { shape: vec![bt, m, n], strides: vec![m * n, 1, m], offset: 0 }
            } else {
                Layout::contiguous(&[bt, m, n])
            };
            let (a, b) = (put(&av, DType::BF16, a_l.clone()), put(&bv, DType::BF16, b_l.clone()));
            let run = |native: bool| {
                let init = if beta == 0.0 { vec![f32::NAN; bt * m * n] } else { cv.clone() };
                let o = put(&init, odt, o_l.clone());
                port.run(|| matmul_on(&a, &b, &o, alpha, beta, native, true)).unwrap();
                get(&o)
            };
            let (native, widened) = (run(true), run(false));
            // The bound, from the operands as stored (row-major logical order of every view).
            let at = |v: &[f32], l: &Layout, i: usize, r: usize, c: usize| {
                v[i * l.strides[0] + r * l.strides[1] + c * l.strides[2]] as f64
            };
            let c_in: Vec<f32> =
                if odt == DType::BF16 { cv.iter().map(|&x| bf16_to_f32(f32_to_bf16(x))).collect() } else { cv.clone() };
            for bi in 0..bt {
                for i in 0..m {
                    for j in 0..n {
                        let sa: f64 = (0..k).map(|l| (at(&av, &a_l, bi, i, l) * at(&bv, &b_l, bi, l, j)).abs()).sum();
                        let cb = if beta == 0.0 { 0.0 } else { (beta as f64 * at(&c_in, &o_l, bi, i, j)).abs() };
                        let mut tol = 2.0 * (k + 3) as f64 * 2f64.powi(-24) * (alpha.abs() as f64 * sa + cb);
                        let idx = (bi * m + i) * n + j;
                        if odt == DType::BF16 {
                            tol += native[idx].abs().max(widened[idx].abs()) as f64 / 128.0;
                        }
                        let d = (native[idx] as f64 - widened[idx] as f64).abs();
                        assert!(
                            d <= tol,
                            "[{bt},{m},{k}]x[{k},{n}] ta={ta} tb={tb} bb={bb} {odt} ot={ot}: [{bi},{i},{j}] native {} widened {} (tol {tol:e})",
                            native[idx],
                            widened[idx]
                        );
                    }
                }
            }
        }
    }
}
