//! Packing for the native bf16 GEMM ([`super::matmul_bf16`]): A and B into the K-pair panels
//! its microkernels read (the layouts are described there).
//!
//! A pair is two consecutive k of one row of A or one column of B in a 32-bit word. Where the
//! pair is adjacent in memory (A row-major, B = W^T) a panel is a transpose of words, done 16 x
//! 16 at a time in registers; where it is not (A = dY^T, B row-major) two rows are interleaved.
//! Packing was about a tenth of a bf16 GEMM's time on Zen 4 when it went word by word.
//! These run only where [`super::matmul_bf16::engine`] found AVX-512F and BW.

use super::matmul_bf16::{BfMat, NR, PAR_WORK};
use crate::math_avx512::transpose16_words;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// The 14 low lanes: one AVX512-BF16 A panel row of words.
const ROWS14: __mmask16 = (1 << 14) - 1;

/// Pack `width` lanes (rows of A, or columns of B = W^T) whose K-pairs are adjacent in memory:
/// lane l's k run from `src(l)` with unit stride, and `dst[p * width + l]` is its pair p
/// (`src[2p] | src[2p+1] << 16`), zero for lanes from `valid` on and for an odd K's pad. 16 pairs
/// of 16 lanes at a time are one 16 x 16 word transpose in registers; the rest go word by word.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn adjacent_pairs(src: impl Fn(usize) -> *const u16, width: usize, valid: usize, kc: usize, dst: &mut [u32]) {
    let (kp, full) = (kc.div_ceil(2), kc / 2);
    let vec_pairs = full / 16 * 16;
    for p in (0..vec_pairs).step_by(16) {
        for l0 in (0..width).step_by(16) {
            let mut lanes = [_mm512_setzero_si512(); 16];
            for (l, lane) in lanes.iter_mut().enumerate().take(valid.saturating_sub(l0)) {
                *lane = _mm512_loadu_si512(src(l0 + l).add(2 * p) as *const _);
            }
            let mask: __mmask16 = if width - l0 >= 16 { 0xffff } else { (1 << (width - l0)) - 1 };
            for (q, words) in transpose16_words(&lanes).iter().enumerate() {
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add((p + q) * width + l0) as *mut i32, mask, *words);
            }
        }
    }
    for l in 0..width {
        if l >= valid {
            for p in vec_pairs..kp {
                dst[p * width + l] = 0;
            }
            continue;
        }
        let s = src(l);
        for p in vec_pairs..full {
            dst[p * width + l] = (s.add(2 * p) as *const u32).read_unaligned();
        }
        if kc % 2 == 1 {
            dst[full * width + l] = *s.add(kc - 1) as u32;
        }
    }
}

/// Pack `width` lanes of any strides word by word: `dst[p * width + l] = x(l, 2p) | x(l, 2p+1)
/// << 16`, zero for lanes from `valid` on and for an odd K's pad. Only for layouts training does
/// not produce (A and B have faster paths for every one it does).
fn strided_pairs(x: impl Fn(usize, usize) -> u16, width: usize, valid: usize, kc: usize, dst: &mut [u32]) {
    for p in 0..kc.div_ceil(2) {
        for l in 0..width {
            let at = |kk: usize| if l < valid && kk < kc { x(l, kk) as u32 } else { 0 };
            dst[p * width + l] = at(2 * p) | at(2 * p + 1) << 16;
        }
    }
}

/// Pack rows `i0..i0+rows`, columns `p0..p0+kc` of A into 14-row K-pair panels for
/// AVX512-BF16: `dst[panel][pair][r] = A[i, 2p] | A[i, 2p+1] << 16` (zero past the last row or
/// K; `kpp` pairs per panel).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack_a_pairs(a: BfMat, i0: usize, rows: usize, p0: usize, kc: usize, kpp: usize, dst: &mut [u32]) {
    const MR: usize = 14;
    let kp = kc.div_ceil(2);
    for (ip, panel) in dst.chunks_exact_mut(kpp * MR).enumerate().take(rows.div_ceil(MR)) {
        let r0 = ip * MR;
        let mr = MR.min(rows - r0);
        panel[kp * MR..].fill(0);
        if a.cs == 1 {
            // Row-major: the pair is one 32-bit word of the row.
            adjacent_pairs(|r| a.ptr.add((i0 + r0 + r) * a.rs + p0), MR, mr, kc, panel);
        } else if a.rs == 1 {
            // Column-major (A = dY^T): rows are contiguous along each k; interleave two of them,
            // widening each row's 14 values to words (masked loads: rows past `mr` read as 0).
            let m: __mmask32 = (1u32 << mr) - 1;
            for p in 0..kp {
                let lo = a.ptr.add(i0 + r0 + (p0 + 2 * p) * a.cs);
                let widen = |v: *const u16| {
                    _mm512_cvtepu16_epi32(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16(m, v as *const i16)))
                };
                let w = if 2 * p + 1 < kc {
                    _mm512_or_si512(widen(lo), _mm512_slli_epi32::<16>(widen(lo.add(a.cs))))
                } else {
                    widen(lo)
                };
                _mm512_mask_storeu_epi32(panel.as_mut_ptr().add(p * MR) as *mut i32, ROWS14, w);
            }
        } else {
            strided_pairs(|r, kk| *a.ptr.add((i0 + r0 + r) * a.rs + (p0 + kk) * a.cs), MR, mr, kc, panel);
        }
    }
}

/// Pack rows `i0..i0+rows`, columns `p0..p0+kc` of A into 32-row panels for AMX, in the order
/// the tiles are loaded: for each 16 pairs (32 k) q, the 32 rows' 16 words, so each 16-row A
/// tile is 1 KiB of consecutive memory and a panel is read front to back
/// (`dst[panel][q][r][w]` = the pair 16q + w of row r; zero past the last row or K).
pub(super) unsafe fn pack_a_rows(a: BfMat, i0: usize, rows: usize, p0: usize, kc: usize, kpp: usize, dst: &mut [u32]) {
    const MR: usize = 32;
    let chunks = kpp / 16;
    for (ip, panel) in dst.chunks_exact_mut(kpp * MR).enumerate().take(rows.div_ceil(MR)) {
        let r0 = ip * MR;
        let mr = MR.min(rows - r0);
        let base = panel.as_mut_ptr() as *mut u16;
        // Element (r, kk) of the panel, as u16 index.
        let at = |r: usize, kk: usize| (kk / 32) * (MR * 32) + r * 32 + kk % 32;
        if a.cs == 1 && mr == MR {
            // Row-major: 32 consecutive k of a row are 64 consecutive bytes.
            for r in 0..MR {
                let src = a.ptr.add((i0 + r0 + r) * a.rs + p0);
                for q in 0..chunks {
                    let (k0, n) = (q * 32, 32.min(kc.saturating_sub(q * 32)));
                    let d = base.add(at(r, k0));
                    if n == 32 {
                        // A fixed-size copy: two vector moves, not a call to memcpy.
                        (d as *mut [u16; 32]).write_unaligned((src.add(k0) as *const [u16; 32]).read_unaligned());
                    } else {
                        std::ptr::copy_nonoverlapping(src.add(k0), d, n);
                        std::ptr::write_bytes(d.add(n), 0, 32 - n);
                    }
                }
            }
        } else if a.rs == 1 {
            // Column-major (A = dY^T): a row of A is a column of dY. Walk dY's rows (contiguous
            // over A's rows) and scatter each into the panel's rows.
            panel.fill(0);
            for kk in 0..kc {
                let src = std::slice::from_raw_parts(a.ptr.add(i0 + r0 + (p0 + kk) * a.cs), mr);
                let d = base.add(at(0, kk));
                for (r, &v) in src.iter().enumerate() {
                    *d.add(r * 32) = v;
                }
            }
        } else {
            panel.fill(0);
            for r in 0..mr {
                for kk in 0..kc {
                    *base.add(at(r, kk)) = *a.ptr.add((i0 + r0 + r) * a.rs + (p0 + kk) * a.cs);
                }
            }
        }
    }
}

/// Pack rows `p0..p0+kc`, columns `j0..j0+nc` of B into NR-column K-pair panels of `kpp`
/// pairs: `dst[panel][pair][j] = B[2p, j] | B[2p+1, j] << 16` (zero past the last column or K).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_b_block(
    b: BfMat,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    kpp: usize,
    dst: &mut [u32],
    parallel: bool,
) {
    let npan = nc.div_ceil(NR);
    let one = |jp: usize, panel: &mut [u32]| {
        let c0 = jp * NR;
        pack_b_panel(b, p0, kc, j0 + c0, NR.min(nc - c0), panel);
    };
    let dst = &mut dst[..npan * kpp * NR];
    if parallel && npan > 1 && kc * nc >= PAR_WORK / 16 {
        dst.par_chunks_mut(kpp * NR).enumerate().for_each(|(jp, panel)| one(jp, panel));
    } else {
        dst.chunks_mut(kpp * NR).enumerate().for_each(|(jp, panel)| one(jp, panel));
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_b_panel(b: BfMat, p0: usize, kc: usize, j0: usize, nr: usize, panel: &mut [u32]) {
    let kp = kc.div_ceil(2);
    panel[kp * NR..].fill(0);
    if b.rs == 1 {
        // B = W^T: column j is row j of W, so the pair is one 32-bit word of it.
        adjacent_pairs(|j| b.ptr.add((j0 + j) * b.cs + p0), NR, nr, kc, panel);
    } else if b.cs == 1 {
        // Row-major: interleave rows 2p and 2p+1 (the compiler vectorises this loop).
        for p in 0..kp {
            let lo = std::slice::from_raw_parts(b.ptr.add((p0 + 2 * p) * b.rs + j0), nr);
            let out = &mut panel[p * NR..(p + 1) * NR];
            if 2 * p + 1 < kc {
                let hi = std::slice::from_raw_parts(b.ptr.add((p0 + 2 * p + 1) * b.rs + j0), nr);
                for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                    *o = l as u32 | (h as u32) << 16;
                }
            } else {
                for (o, &l) in out.iter_mut().zip(lo) {
                    *o = l as u32;
                }
            }
            out[nr..].fill(0);
        }
    } else {
        strided_pairs(|j, kk| *b.ptr.add((p0 + kk) * b.rs + (j0 + j) * b.cs), NR, nr, kc, panel);
    }
}
