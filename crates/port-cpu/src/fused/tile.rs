//! Small dense products for fused kernels (attention's 64 x 64 blocks): c = alpha a b + beta c
//! with `a` read through any strides, `b` and `c` row-major.
//!
//! Hand-written because a block on the causal diagonal needs only a triangle of its product
//! ([`Tri`]), which a general GEMM cannot be told; at this size the `gemm` crate also packs
//! both operands on every call. Here nothing is packed: a block of b (at most 64 columns,
//! 16 KiB at K = 64) stays in L1 across the rows of a. Against the gemm path, attention's
//! forward and backward alone ran as fast on T = 128 heads and about 9% faster on T = 256
//! (medians of 10 alternations, on a noisy 2-core VM).
//!
//! AVX-512 microkernel: 6 rows x 64 columns of c live in 24 zmm accumulators. Per k it loads
//! four vectors of b's row k and broadcasts a[i, k] for the six rows, then issues 24 FMAs:
//!   acc[r][v] += a[i0 + r, k] * b[k, 16 v .. 16 v + 16].
//! Columns past n are masked (loads return zero, stores skip them), and a block whose needed
//! columns fit in fewer vectors runs a narrower kernel (on the causal diagonal, scores of the
//! first queries need one of the four).
//!
//! AVX2+FMA microkernel: the same with 6 rows x 16 columns in 12 ymm accumulators (two loads of
//! b and six broadcasts per 12 FMAs; 15 of the 16 registers). Columns past n are read and
//! written through `vmaskmovps` only in blocks that need it.
//!
//! NEON microkernel (aarch64): 6 rows x 16 columns of c in 24 of the 32 q registers (four
//! 4-lane vectors per row), per k four loads of b's row, six `ld1r` broadcasts of a and 24
//! `vfmaq_f32`: acc[r][v] += a[i0 + r, k] * b[k, 4 v .. 4 v + 4]. NEON has no masked loads, so
//! a block whose columns end inside a vector moves that last vector through a 4-float buffer.
//!
//! Otherwise the portable loop runs (the compiler vectorises its inner axis); it is the
//! reference the tests hold every kernel to. [`crate::isa::level`] picks one, in [`mm`] alone.

/// Which part of a product a causal block needs, for output row i (offset `d`, in elements):
/// the rest is either never read (columns) or multiplies zeros (k), so it is skipped. The
/// kernel works on whole 6-row blocks and 16-column vectors, so a little more than the exact
/// triangle is computed; the caller masks what lies beyond it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    /// Everything.
    Full,
    /// Only columns j <= i + d of the output are used (scores of keys a query may see).
    Cols(isize),
    /// a[i, k] is zero for k > i + d (probabilities times V: hidden keys weigh nothing).
    KUpTo(isize),
    /// a[i, k] is zero for k < i + d (transposed probabilities: a key is seen from row i on).
    KFrom(isize),
}

impl Tri {
    /// (columns, k start, k end) to compute for output rows [i0, i1) of an m x n x k product.
    fn span(self, i0: usize, i1: usize, n: usize, k: usize) -> (usize, usize, usize) {
        let clamp = |x: isize, hi: usize| x.clamp(0, hi as isize) as usize;
        match self {
            Tri::Full => (n, 0, k),
            Tri::Cols(d) => (clamp(i1 as isize + d, n), 0, k),
            Tri::KUpTo(d) => (n, 0, clamp(i1 as isize + d, k)),
            Tri::KFrom(d) => (n, clamp(i0 as isize + d, k), k),
        }
    }
}

/// An f32 operand: base pointer, row and column strides in elements.
#[derive(Clone, Copy)]
pub struct A {
    pub p: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// c[m x n] (row stride ldc) = alpha a[m x k] b[k x n] (b row stride ldb) + beta c, over the
/// part `tri` says is needed (columns outside it are left as they were); beta = 0 never reads c.
///
/// # Safety
/// Every operand must be in bounds for its shape and strides, and c must not overlap a or b.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    a: A,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    tri: Tri,
) {
    if m == 0 || n == 0 {
        return;
    }
    kernel(crate::isa::level())(m, n, k, a, b, ldb, c, ldc, alpha, beta, tri)
}

/// The signature of [`mm`] and of each level's kernel.
type Mm = unsafe fn(usize, usize, usize, A, *const f32, usize, *mut f32, usize, f32, f32, Tri);

/// The product kernel of an instruction-set level (one the CPU supports).
fn kernel(level: crate::isa::Isa) -> Mm {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    use crate::isa::Isa;
    match level {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::mm,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::mm,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::mm,
        _ => portable,
    }
}

/// The reference loop: row i of c is a sum of b's rows scaled by a[i, k].
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    n: usize,
    k: usize,
    a: A,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    tri: Tri,
) {
    let mut acc = vec![0f32; n];
    for i in 0..m {
        let (n, k0, k1) = tri.span(i, i + 1, n, k);
        let acc = &mut acc[..n];
        acc.fill(0.0);
        for p in k0..k1 {
            let (x, row) = (*a.p.add(i * a.rs + p * a.cs), std::slice::from_raw_parts(b.add(p * ldb), n));
            acc.iter_mut().zip(row).for_each(|(s, &y)| *s += x * y);
        }
        let out = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
        for (o, &s) in out.iter_mut().zip(acc.iter()) {
            *o = if beta == 0.0 { alpha * s } else { alpha * s + beta * *o };
        }
    }
}

/// Transpose the `[rows, cols]` matrix at `src` (row stride `rs`, unit columns) into `dst` as
/// `[cols, rows]` with row stride `ld` (attention's K and V heads, so their blocks can be the
/// row-major `b` of [`mm`]).
///
/// # Safety
/// `src` must be in bounds for its shape and stride.
pub unsafe fn transpose(src: *const f32, rs: usize, rows: usize, cols: usize, dst: &mut [f32], ld: usize) {
    transpose_at(crate::isa::level(), src, rs, rows, cols, dst, ld)
}

/// [`transpose`] with the whole tiles moved by `level`'s kernel (one the CPU supports).
unsafe fn transpose_at(
    level: crate::isa::Isa,
    src: *const f32,
    rs: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    ld: usize,
) {
    use crate::isa::Isa;
    // Square tiles: each source row segment is read once while the tile's destination rows
    // stay in L1. Whole tiles go through registers where the CPU has AVX-512 (16 x 16), AVX2
    // (8 x 8) or NEON (4 x 4): a head's K was 7% of a profile of attention when moved one float
    // at a time.
    let t = match level {
        Isa::Avx2 => 8,
        Isa::Neon => 4,
        Isa::Avx512 | Isa::Portable => 16,
    };
    assert!(cols == 0 || rows == 0 || dst.len() >= (cols - 1) * ld + rows, "transpose destination too small");
    for r0 in (0..rows).step_by(t) {
        for c0 in (0..cols).step_by(t) {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            if r0 + t <= rows && c0 + t <= cols && level != Isa::Portable {
                let (s, d) = (src.add(r0 * rs + c0), dst.as_mut_ptr().add(c0 * ld + r0));
                match level {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => avx512::transpose16(s, rs, d, ld),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => avx2::transpose8(s, rs, d, ld),
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon => neon::transpose4(s, rs, d, ld),
                    _ => unreachable!("{level:?} is not a level of this CPU"),
                }
                continue;
            }
            for r in r0..(r0 + t).min(rows) {
                let row = std::slice::from_raw_parts(src.add(r * rs), cols);
                for cc in c0..(c0 + t).min(cols) {
                    dst[cc * ld + r] = row[cc];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tri, A};
    use std::arch::x86_64::*;

    /// Rows of c per microkernel.
    const MR: usize = 6;
    /// zmm vectors (16 columns each) per microkernel row.
    const NV: usize = 4;

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: A,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
        tri: Tri,
    ) {
        let mut i0 = 0;
        while i0 < m {
            let rows = (m - i0).min(MR);
            let (n, k0, k1) = tri.span(i0, i0 + rows, n, k);
            // Rows i0.. with the k range starting at k0. When the range is empty k0 may be k,
            // one column past a's end: wrapping arithmetic, since nothing is read there.
            let ai = A { p: a.p.wrapping_add(i0 * a.rs + k0 * a.cs), ..a };
            let (kk, bk) = (k1.saturating_sub(k0), b.wrapping_add(k0 * ldb));
            for j0 in (0..n).step_by(16 * NV) {
                let nn = (n - j0).min(16 * NV);
                let mut masks = [0u16; NV];
                for (v, mk) in masks.iter_mut().enumerate() {
                    let cols = nn.saturating_sub(16 * v).min(16);
                    *mk = if cols == 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 };
                }
                let (bj, ci) = (bk.wrapping_add(j0), c.add(i0 * ldc + j0));
                // Only the vectors holding a needed column: on the causal diagonal the first row
                // blocks need one or two of the four, and a masked-out vector still costs FMAs.
                let args = (kk, ai, bj, ldb, masks, ci, ldc, alpha, beta);
                match rows {
                    1 => by_width::<1>(nn.div_ceil(16), args),
                    2 => by_width::<2>(nn.div_ceil(16), args),
                    3 => by_width::<3>(nn.div_ceil(16), args),
                    4 => by_width::<4>(nn.div_ceil(16), args),
                    5 => by_width::<5>(nn.div_ceil(16), args),
                    _ => by_width::<MR>(nn.div_ceil(16), args),
                }
            }
            i0 += MR;
        }
    }

    /// Transpose the 16 x 16 tile at `src` (row stride `rs`) into `dst` (row stride `ld`), in
    /// registers.
    ///
    /// # Safety
    /// Both tiles must be in bounds; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(src: *const f32, rs: usize, dst: *mut f32, ld: usize) {
        let mut rows = [_mm512_setzero_si512(); 16];
        for (i, row) in rows.iter_mut().enumerate() {
            *row = _mm512_loadu_si512(src.add(i * rs) as *const _);
        }
        for (c, col) in crate::math_avx512::transpose16_words(&rows).iter().enumerate() {
            _mm512_storeu_si512(dst.add(c * ld) as *mut _, *col);
        }
    }

    /// The arguments of [`block`], as one tuple for the dispatch on shape.
    type Args = (usize, A, *const f32, usize, [u16; NV], *mut f32, usize, f32, f32);

    /// [`block`] with R rows and the given number of 16-column vectors (1 to [`NV`]).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn by_width<const R: usize>(vectors: usize, (k, a, b, ldb, masks, c, ldc, alpha, beta): Args) {
        match vectors {
            1 => block::<R, 1>(k, a, b, ldb, masks, c, ldc, alpha, beta),
            2 => block::<R, 2>(k, a, b, ldb, masks, c, ldc, alpha, beta),
            3 => block::<R, 3>(k, a, b, ldb, masks, c, ldc, alpha, beta),
            _ => block::<R, NV>(k, a, b, ldb, masks, c, ldc, alpha, beta),
        }
    }

    /// R rows x V vectors of 16 columns: see the module docs.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize, const V: usize>(
        k: usize,
        a: A,
        b: *const f32,
        ldb: usize,
        masks: [u16; NV],
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..k {
            let bp = b.add(p * ldb);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v));
            }
            let ap = a.p.add(p * a.cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(r * a.rs));
                for (s, y) in acc.iter_mut().zip(&bv) {
                    *s = _mm512_fmadd_ps(x, *y, *s);
                }
            }
        }
        let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        for (r, acc) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            for (v, &s) in acc.iter().enumerate() {
                if masks[v] == 0 {
                    continue;
                }
                let at = cr.add(16 * v);
                let mut y = _mm512_mul_ps(s, va);
                if beta != 0.0 {
                    y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(masks[v], at), vb, y);
                }
                _mm512_mask_storeu_ps(at, masks[v], y);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tri, A};
    use std::arch::x86_64::*;

    /// Rows of c per microkernel.
    const MR: usize = 6;
    /// ymm vectors (8 columns each) per microkernel row.
    const NV: usize = 2;
    /// Columns per vector.
    const W: usize = 8;

    /// The AVX2+FMA [`super::mm`]: see the module docs.
    ///
    /// # Safety
    /// As [`super::mm`]; the CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: A,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
        tri: Tri,
    ) {
        let mut i0 = 0;
        while i0 < m {
            let rows = (m - i0).min(MR);
            let (n, k0, k1) = tri.span(i0, i0 + rows, n, k);
            // As in the AVX-512 kernel: wrapping, since an empty k range reads nothing.
            let ai = A { p: a.p.wrapping_add(i0 * a.rs + k0 * a.cs), ..a };
            let (kk, bk) = (k1.saturating_sub(k0), b.wrapping_add(k0 * ldb));
            for j0 in (0..n).step_by(W * NV) {
                let nn = (n - j0).min(W * NV);
                let masks: [__m256i; NV] = std::array::from_fn(|v| {
                    let cols = nn.saturating_sub(W * v).min(W) as i32;
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
                });
                let (bj, ci) = (bk.wrapping_add(j0), c.add(i0 * ldc + j0));
                let args = (kk, ai, bj, ldb, masks, ci, ldc, alpha, beta);
                let (vectors, masked) = (nn.div_ceil(W), nn % W != 0);
                match rows {
                    1 => by_width::<1>(vectors, masked, args),
                    2 => by_width::<2>(vectors, masked, args),
                    3 => by_width::<3>(vectors, masked, args),
                    4 => by_width::<4>(vectors, masked, args),
                    5 => by_width::<5>(vectors, masked, args),
                    _ => by_width::<MR>(vectors, masked, args),
                }
            }
            i0 += MR;
        }
    }

    /// Transpose the 8 x 8 tile at `src` (row stride `rs`) into `dst` (row stride `ld`), in
    /// registers.
    ///
    /// # Safety
    /// Both tiles must be in bounds; the CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transpose8(src: *const f32, rs: usize, dst: *mut f32, ld: usize) {
        let rows: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * rs)));
        for (c, col) in crate::math_avx2::transpose8_words(&rows).iter().enumerate() {
            _mm256_storeu_ps(dst.add(c * ld), *col);
        }
    }

    /// The arguments of [`block`], as one tuple for the dispatch on shape.
    type Args = (usize, A, *const f32, usize, [__m256i; NV], *mut f32, usize, f32, f32);

    /// [`block`] with R rows, 1 or 2 vectors, masked loads and stores or plain ones.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn by_width<const R: usize>(vectors: usize, masked: bool, a: Args) {
        match (vectors, masked) {
            (1, false) => block::<R, 1, false>(a),
            (1, true) => block::<R, 1, true>(a),
            (_, false) => block::<R, NV, false>(a),
            (_, true) => block::<R, NV, true>(a),
        }
    }

    /// R rows x V vectors of 8 columns; with MASKED the vectors' columns past n are neither
    /// read nor written.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize, const V: usize, const MASKED: bool>(
        (k, a, b, ldb, masks, c, ldc, alpha, beta): Args,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for p in 0..k {
            let bp = b.add(p * ldb);
            let bv: [__m256; V] = std::array::from_fn(|v| {
                if MASKED {
                    _mm256_maskload_ps(bp.add(W * v), masks[v])
                } else {
                    _mm256_loadu_ps(bp.add(W * v))
                }
            });
            let ap = a.p.add(p * a.cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*ap.add(r * a.rs));
                for (s, y) in acc.iter_mut().zip(&bv) {
                    *s = _mm256_fmadd_ps(x, *y, *s);
                }
            }
        }
        let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
        for (r, acc) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            for (v, &s) in acc.iter().enumerate() {
                let at = cr.add(W * v);
                let mut y = _mm256_mul_ps(s, va);
                if MASKED {
                    if beta != 0.0 {
                        y = _mm256_fmadd_ps(_mm256_maskload_ps(at, masks[v]), vb, y);
                    }
                    _mm256_maskstore_ps(at, masks[v], y);
                } else {
                    if beta != 0.0 {
                        y = _mm256_fmadd_ps(_mm256_loadu_ps(at), vb, y);
                    }
                    _mm256_storeu_ps(at, y);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{Tri, A};
    use std::arch::aarch64::*;

    /// Rows of c per microkernel.
    const MR: usize = 6;
    /// q vectors (4 columns each) per microkernel row.
    const NV: usize = 4;
    /// Columns per vector.
    const W: usize = 4;

    /// The NEON [`super::mm`]: see the module docs.
    ///
    /// # Safety
    /// As [`super::mm`]; the CPU must have NEON (aarch64's baseline).
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mm(
        m: usize,
        n: usize,
        k: usize,
        a: A,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
        tri: Tri,
    ) {
        let mut i0 = 0;
        while i0 < m {
            let rows = (m - i0).min(MR);
            let (n, k0, k1) = tri.span(i0, i0 + rows, n, k);
            // As in the AVX-512 kernel: wrapping, since an empty k range reads nothing.
            let ai = A { p: a.p.wrapping_add(i0 * a.rs + k0 * a.cs), ..a };
            let (kk, bk) = (k1.saturating_sub(k0), b.wrapping_add(k0 * ldb));
            for j0 in (0..n).step_by(W * NV) {
                let nn = (n - j0).min(W * NV);
                let (bj, ci) = (bk.wrapping_add(j0), c.add(i0 * ldc + j0));
                let args = (kk, ai, bj, ldb, nn, ci, ldc, alpha, beta);
                match rows {
                    1 => by_width::<1>(args),
                    2 => by_width::<2>(args),
                    3 => by_width::<3>(args),
                    4 => by_width::<4>(args),
                    5 => by_width::<5>(args),
                    _ => by_width::<MR>(args),
                }
            }
            i0 += MR;
        }
    }

    /// Transpose the 4 x 4 tile at `src` (row stride `rs`) into `dst` (row stride `ld`), in
    /// registers.
    ///
    /// # Safety
    /// Both tiles must be in bounds; the CPU must have NEON.
    #[target_feature(enable = "neon")]
    pub unsafe fn transpose4(src: *const f32, rs: usize, dst: *mut f32, ld: usize) {
        let rows: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(src.add(i * rs)));
        for (c, col) in crate::math_neon::transpose4_words(&rows).iter().enumerate() {
            vst1q_f32(dst.add(c * ld), *col);
        }
    }

    /// The arguments of [`block`] (k, a, b, ldb, columns, c, ldc, alpha, beta), as one tuple for
    /// the dispatch on shape.
    type Args = (usize, A, *const f32, usize, usize, *mut f32, usize, f32, f32);

    /// [`block`] with R rows, as many vectors as the columns need, the last one partial or not.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn by_width<const R: usize>(a: Args) {
        match (a.4.div_ceil(W), a.4 % W != 0) {
            (1, false) => block::<R, 1, false>(a),
            (1, true) => block::<R, 1, true>(a),
            (2, false) => block::<R, 2, false>(a),
            (2, true) => block::<R, 2, true>(a),
            (3, false) => block::<R, 3, false>(a),
            (3, true) => block::<R, 3, true>(a),
            (_, false) => block::<R, NV, false>(a),
            (_, true) => block::<R, NV, true>(a),
        }
    }

    /// The first `cols` (< 4) floats at p, zero-filled to a vector.
    #[inline(always)]
    unsafe fn load_part(p: *const f32, cols: usize) -> float32x4_t {
        let mut t = [0f32; W];
        std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), cols);
        vld1q_f32(t.as_ptr())
    }

    /// Store the first `cols` (< 4) lanes of v at p.
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, cols: usize, v: float32x4_t) {
        let mut t = [0f32; W];
        vst1q_f32(t.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(t.as_ptr(), p, cols);
    }

    /// R rows x V vectors of 4 columns; with PART the last vector holds only the columns up
    /// to n, which alone are read and written.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn block<const R: usize, const V: usize, const PART: bool>((k, a, b, ldb, cols, c, ldc, alpha, beta): Args) {
        let last = cols - W * (V - 1);
        let load = |p: *const f32, v: usize| if PART && v == V - 1 { load_part(p, last) } else { vld1q_f32(p) };
        let mut acc = [[vdupq_n_f32(0.0); V]; R];
        for p in 0..k {
            let bp = b.add(p * ldb);
            let bv: [float32x4_t; V] = std::array::from_fn(|v| load(bp.add(W * v), v));
            let ap = a.p.add(p * a.cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = vld1q_dup_f32(ap.add(r * a.rs));
                for (s, y) in acc.iter_mut().zip(&bv) {
                    *s = vfmaq_f32(*s, x, *y);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            for (v, &s) in acc.iter().enumerate() {
                let at = cr.add(W * v);
                let mut y = vmulq_n_f32(s, alpha);
                if beta != 0.0 {
                    y = vfmaq_n_f32(y, load(at, v), beta);
                }
                if PART && v == V - 1 {
                    store_part(at, last, y);
                } else {
                    vst1q_f32(at, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level this CPU runs (the tests hold each to the portable loop and to f64 whatever
    /// `ANYCHIP_CPU_ISA` says).
    fn levels() -> Vec<crate::isa::Isa> {
        crate::isa::Isa::ALL.into_iter().filter(|l| l.supported()).collect()
    }

    /// Every level's kernel (AVX-512, AVX2, NEON, portable: those the CPU has) against an f64 product, on
    /// edge shapes (rows not a multiple of 6, columns not of 16, more than 64 columns), a
    /// transposed a, and beta on and off.
    #[test]
    fn matches_f64_product() {
        let mut seed = 7u64;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        };
        for (m, n, k, at, beta) in [
            (1, 1, 1, false, 0.0),
            (7, 17, 5, false, 0.5),
            (64, 64, 64, true, 1.0),
            (13, 100, 33, true, 0.0),
            (6, 48, 0, false, 2.0),
            (12, 8, 9, false, 1.0),
            (5, 24, 7, true, 0.0),
            (19, 3, 64, false, 0.5),
        ] {
            let (av, bv, cv) = (vals(m * k), vals(k * n), vals(m * n));
            let a = if at { A { p: av.as_ptr(), rs: 1, cs: m } } else { A { p: av.as_ptr(), rs: k, cs: 1 } };
            let want: Vec<f64> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let s: f64 = (0..k).map(|p| av[i * a.rs + p * a.cs] as f64 * bv[p * n + j] as f64).sum();
                    1.5 * s + beta as f64 * cv[idx] as f64
                })
                .collect();
            let mut runs = vec![cv.clone(); levels().len()];
            for (l, run) in levels().into_iter().zip(&mut runs) {
                // SAFETY: `levels` keeps the levels this CPU supports, which `kernel`'s AVX paths
                // need; a is [m, k] inside av in either stride order, b is bv = [k, n] (row stride
                // n), and c is this level's own m x n copy `run`, which overlaps neither.
                unsafe { kernel(l)(m, n, k, a, bv.as_ptr(), n, run.as_mut_ptr(), n, 1.5, beta, Tri::Full) };
            }
            for got in &runs {
                for (idx, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!((g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "[{m}x{k}]x[{k}x{n}] at {idx}: {g} vs {w}");
                }
            }
        }
    }

    /// The triangular cuts: with a zero where `tri` says it is (for the k cuts), every entry the
    /// cut promises (all of them for the k cuts, j <= i + d for `Cols`) equals the full product,
    /// on every level, for offsets that cut inside, before and past the block.
    #[test]
    fn triangular_cuts_keep_what_they_promise() {
        let (m, n, k) = (23, 37, 29);
        for d in [-30isize, -7, 0, 5, 40] {
            for tri in [Tri::Cols(d), Tri::KUpTo(d), Tri::KFrom(d)] {
                let mut av: Vec<f32> = (0..m * k).map(|x| ((x * 37) % 11) as f32 - 5.0).collect();
                let bv: Vec<f32> = (0..k * n).map(|x| ((x * 13) % 7) as f32 - 3.0).collect();
                for i in 0..m {
                    for p in 0..k {
                        let (i, p, zero) = (i as isize, p as isize, &mut av[i * k + p]);
                        match tri {
                            Tri::KUpTo(d) if p > i + d => *zero = 0.0,
                            Tri::KFrom(d) if p < i + d => *zero = 0.0,
                            _ => {}
                        }
                    }
                }
                let a = A { p: av.as_ptr(), rs: k, cs: 1 };
                let mut full = vec![0f32; m * n];
                // SAFETY: the portable loop needs no CPU feature; a is av = [m, k] (row stride k),
                // b is bv = [k, n] and c the separate full = [m, n] (row stride n).
                unsafe { portable(m, n, k, a, bv.as_ptr(), n, full.as_mut_ptr(), n, 1.0, 0.0, Tri::Full) };
                for path in levels() {
                    let mut got = vec![f32::NAN; m * n];
                    // SAFETY: as for `full` above, on a level `levels` found this CPU supports.
                    unsafe { kernel(path)(m, n, k, a, bv.as_ptr(), n, got.as_mut_ptr(), n, 1.0, 0.0, tri) };
                    for i in 0..m {
                        for j in 0..n {
                            let promised = !matches!(tri, Tri::Cols(d) if j as isize > i as isize + d);
                            if promised {
                                assert_eq!(got[i * n + j], full[i * n + j], "{tri:?} {path:?} at ({i}, {j})");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_round_trips() {
        // Whole 16 x 16 (8 x 8, 4 x 4) tiles (the register path) and edges, from a strided source (a head of
        // a fused QKV row) into a padded destination.
        for (rows, cols, rs, ld) in [(37, 21, 21, 40), (128, 64, 192, 130), (32, 48, 50, 32)] {
            let src: Vec<f32> = (0..rows * rs).map(|i| i as f32).collect();
            let mut t = vec![-1f32; cols * ld];
            for level in levels() {
                t.fill(-1.0);
                // SAFETY: `levels` keeps the levels this CPU supports; src holds rows x rs floats
                // with cols <= rs, so every row segment read is inside it (t is checked inside).
                unsafe { transpose_at(level, src.as_ptr(), rs, rows, cols, &mut t, ld) };
                for c in 0..cols {
                    for r in 0..ld {
                        let want = if r < rows { src[r * rs + c] } else { -1.0 };
                        assert_eq!(t[c * ld + r], want, "{level:?} {rows}x{cols} at ({c}, {r})");
                    }
                }
            }
        }
    }
}
