//! Native bf16 GEMM: C = alpha A B + beta C with bf16 A, B and f32 C, on AVX512-BF16 or AMX.
//!
//! # The instructions
//! `vdpbf16ps acc, a, b` (AVX512-BF16, `_mm512_dpbf16_ps`) treats each 32-bit lane of `a` and
//! `b` as a pair of bf16 values and does, for each of the 16 f32 lanes i,
//! `acc[i] += a[2i] b[2i] + a[2i+1] b[2i+1]`. `tdpbf16ps` (AMX-BF16) does the same pairwise
//! dot product for a whole 16 x 16 f32 tile of C from a 16 x 32 bf16 tile of A and a 16 x 16
//! tile of B pairs: 8192 multiply-adds per instruction.
//!
//! A product of two bf16 values (8-bit significands) has at most 16 significant bits, so it is
//! exact in f32: the only roundings are the f32 additions, the same kind of rounding as the
//! widening path (widen to f32, multiply exactly, add in f32). Both paths see the same products
//! and differ only in the order of the sum, which is what the tests' tolerance is built from.
//! Both instructions treat bf16 denormals (below 2^-126) as zero and flush denormal results;
//! nothing a training run sees.
//!
//! Which unit is fast depends on the chip: on AMD Zen 4 `vdpbf16ps` issues like an f32 FMA,
//! so it doubles the FLOP rate; on Intel Sapphire Rapids it issues about once per 2-3 cycles
//! (slower than f32 FMA: measured 60 against 116 GFLOP/s per core) and AMX is the bf16 engine
//! (800+ GFLOP/s per core on tiles in registers). [`engine`] picks AMX where the CPU and the OS
//! allow it, else AVX512-BF16.
//!
//! # Packing: K in pairs
//! Both instructions want two consecutive k of the same row or column in one 32-bit word
//! `lo | hi << 16` (lo the even k; a zero pads an odd K, and zero times zero adds nothing, so
//! the pad never turns an infinity into NaN):
//! - B (K x N) goes into panels of [`NR`] = 32 columns: for each pair p, 32 words
//!   `(B[2p, j], B[2p+1, j])` across the panel. That is two zmm loads per pair for
//!   AVX512-BF16, and for AMX two 16-column tiles of 16 pairs (row stride 128 bytes): the
//!   "VNNI" layout `tdpbf16ps` wants for B.
//! - A (M x K), for AVX512-BF16, into panels of 14 rows: for each pair p, 14 words
//!   `(A[i, 2p], A[i, 2p+1])`, each broadcast to all 16 lanes (`vpbroadcastd`). For AMX, into
//!   panels of 32 rows, each row its K pairs in order (plain row-major bf16, K padded to a
//!   multiple of 32): two 16-row A tiles per 32 k.
//!
//! Packing reads any strides, so the backward products run on transposed views without a copy:
//! when a pair is adjacent in memory (A row-major, or B = W^T read along W's rows) a word is
//! one unaligned 32-bit load; when it is not (A = dY^T, or row-major B) two rows are
//! interleaved; any other layout takes the element-by-element path.
//!
//! # The microkernels
//! AVX512-BF16: 14 rows x 32 columns of C live in 28 zmm accumulators; per K-pair it loads two
//! B vectors and issues 28 `vdpbf16ps` (one broadcast A word feeds two of them), so the loop is
//! bound by the dot-product unit, not by loads, and 28 independent chains hide its latency.
//! AMX: 32 x 32 of C in four tiles (tmm0-3); per 32 k it loads two A tiles and two B tiles
//! (tmm4-7) and issues four `tdpbf16ps`. C tiles start from zero or are loaded from C and are
//! stored straight back when the tile is whole and alpha = 1 (the linear layers' case), else
//! through a 32 x 32 scratch tile and a scalar epilogue.
//!
//! # Blocking and threads
//! BLIS order: columns in blocks of NC, then K in blocks of KC, then M blocks of at most MC
//! rows (the packed A block); inside a block, each 32-column B panel is swept by the
//! microkernel down every A panel of the block. For each (column block, K block) B is packed
//! once, shared by all threads; then the M blocks (and, when there are fewer M blocks than
//! threads, slices of the column panels) run as tasks on the port's rayon pool, each packing
//! its own A block. The first K block writes `alpha acc + beta C` (C not read when beta = 0),
//! later ones add `alpha acc` to C: f32 accumulation throughout.
//!
//! Both engines take the whole K, up to 4096, in one block: the C tile leaves the registers
//! once per K block, and reloading rows of C that lie far apart (and, for widths like 3072,
//! 12 KiB apart, so on the same L1 sets) costs more than streaming the A and B panels from L2.
//! Measured with interleaved runs and medians (`bf16_tune`): AMX on Sapphire Rapids lost about a
//! fifth of its time at KC = 256; AVX512-BF16 on Zen 4 went from 160-178 to 207-210 GFLOP/s on
//! one core (GPT-2 shapes, forward, dx and dw), about 91% of the `vdpbf16ps` peak, where a 32 x
//! 256 B panel kept in L1 had been the Sapphire Rapids choice. The AMX C rows of the next call
//! are prefetched as well.

use super::matmul_bf16_pack::{pack_a_pairs, pack_a_rows, pack_b_block};
use rayon::prelude::*;
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Columns of C per microkernel (two zmm vectors, or two AMX tiles, of 16 f32).
pub const NR: usize = 32;
/// K per block, both engines (even, so pairs never straddle blocks); see the module docs.
const KC: usize = 4096;
/// Columns per packed B block, both engines (a multiple of NR). With K whole in one block, the
/// packed B block is up to 1536 x 4096 bf16 (12 MiB); Zen 4 ran 96 panels no faster.
const NC: usize = NR * 48;
/// AMX: 16-pair chunks (32 k) per microkernel call; see the loop in [`gemm_on`].
const AMX_KB: usize = 8;
/// Products with fewer multiply-adds than this run on the calling thread.
pub(super) const PAR_WORK: usize = 1 << 18;

/// The unit a bf16 product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// AMX tiles (`tdpbf16ps`): Intel Sapphire Rapids and later.
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`): AMD Zen 4 and later, Intel Cooper Lake and later.
    Avx512,
}

impl Engine {
    /// Rows of C per microkernel.
    pub fn mr(self) -> usize {
        match self {
            Engine::Amx => 32,
            Engine::Avx512 => 14,
        }
    }
    /// Most rows in one packed A block (a multiple of MR).
    fn mc_max(self) -> usize {
        self.mr()
            * match self {
                Engine::Amx => 8,
                Engine::Avx512 => 24,
            }
    }
    /// Pairs per packed panel row group: AMX tiles take 16 pairs (32 k) at a time.
    fn pair_align(self) -> usize {
        match self {
            Engine::Amx => 16,
            Engine::Avx512 => 1,
        }
    }
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Amx => "amx-bf16",
            Engine::Avx512 => "avx512bf16",
        }
    }
}

/// The bf16 engine of this CPU, checked once: AMX where the CPU has it and the OS grants the
/// tile state, else AVX512-BF16, else none (the widening path runs; also whenever the dispatch
/// level, [`crate::isa::level`], is below AVX-512). `ANYCHIP_CPU_BF16_KERNEL`
/// = `amx`, `avx512` or `0` restricts the choice, for A/B measurements.
pub fn engine() -> Option<Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    *ENGINE.get_or_init(|| {
        let want = std::env::var("ANYCHIP_CPU_BF16_KERNEL").unwrap_or_default();
        let avx512 = crate::isa::level() == crate::isa::Isa::Avx512
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512bw");
        match want.as_str() {
            "0" | "off" | "widen" => None,
            "avx512" => avx512.then_some(Engine::Avx512),
            "amx" => (avx512 && amx_usable()).then_some(Engine::Amx),
            _ if avx512 && amx_usable() => Some(Engine::Amx),
            _ => avx512.then_some(Engine::Avx512),
        }
    })
}

/// Whether a native bf16 kernel runs on this CPU.
pub fn available() -> bool {
    engine().is_some()
}

/// AMX-TILE and AMX-BF16 in CPUID, and Linux's permission to use the tile data state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, granted to the whole process).
fn amx_usable() -> bool {
    // `__cpuid_count` is a safe function from Rust 1.94 on; the workspace builds with older.
    #[allow(unused_unsafe)]
    // SAFETY: every x86_64 CPU has the CPUID instruction (this module is x86_64 only), and it
    // only reads identification registers; leaf 7 exists wherever AVX-512 was detected (our
    // callers check that first), and a leaf past the CPU's maximum would return other bits,
    // never fault.
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let (bf16, tile) = ((leaf7.edx >> 22) & 1 == 1, (leaf7.edx >> 24) & 1 == 1);
    if !(bf16 && tile) {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain system call; it changes only which state this process may use.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// A bf16 matrix: base pointer and row and column strides, in elements.
#[derive(Clone, Copy)]
pub struct BfMat {
    pub ptr: *const u16,
    pub rs: usize,
    pub cs: usize,
}

/// An f32 output matrix with unit column stride: base pointer and row stride.
#[derive(Clone, Copy)]
pub struct OutMat {
    pub ptr: *mut f32,
    pub rs: usize,
}

impl OutMat {
    /// Address of element (r, c) (a method, so closures capture the whole `OutMat`).
    #[inline]
    unsafe fn at(self, r: usize, c: usize) -> *mut f32 {
        self.ptr.add(r * self.rs + c)
    }
}

// SAFETY: a BfMat is a copyable address and strides, owning nothing, so it may move to another
// thread; it is only ever read through (`*const u16`, in the `unsafe` packing functions), and
// `gemm_on`'s contract keeps A unwritten while the product runs.
unsafe impl Send for BfMat {}
// SAFETY: `&BfMat` gives only copies of the address and strides; as for Send, every access is
// a read inside `gemm_on`, whose contract bars concurrent writes to A.
unsafe impl Sync for BfMat {}
// SAFETY: an OutMat is a copyable address and row stride, owning nothing; its writes happen in
// `gemm_on` only, whose contract gives it C alone for the call.
unsafe impl Send for OutMat {}
// SAFETY: `gemm_on`'s tasks share one OutMat, and task (bi, si) writes only the C rectangle of
// rows [p0 mr, p1 mr) of M block bi by column panels [j0, j1) of slice si: the M blocks
// partition the rows and the slices partition the panels, so no two threads write (or read
// for beta) one element.
unsafe impl Sync for OutMat {}

thread_local! {
    /// Packing scratch per thread, reused across calls (a fresh multi-megabyte allocation per
    /// call would cost page faults each time).
    static PACK_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on a scratch slice of `n` words from `key` (a fresh one if it is in use, which only
/// happens when a thread blocked in a join picks up another product's task).
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u32>>>,
    n: usize,
    f: impl FnOnce(&mut [u32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < n {
                v.resize(n, 0);
            }
            f(&mut v[..n])
        }
        Err(_) => f(&mut vec![0u32; n]),
    })
}

/// C = alpha A B + beta C on [`engine`]; see [`gemm_on`].
///
/// # Safety
/// As [`gemm_on`], and [`available`] must be true.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(m: usize, n: usize, k: usize, a: BfMat, b: BfMat, c: OutMat, alpha: f32, beta: f32, parallel: bool) {
    let e = engine().expect("matmul_bf16::gemm called on a CPU without a bf16 engine");
    gemm_on(e, m, n, k, a, b, c, alpha, beta, parallel)
}

/// C = alpha A B + beta C for A: m x k, B: k x n (bf16, any strides), C: m x n f32 with unit
/// column stride, on engine `e`; beta = 0 never reads C. `parallel` lets it use the current
/// rayon pool.
///
/// # Safety
/// `e` must be usable on this CPU (as [`engine`] found it); the three matrices must be in
/// bounds for their shapes and C must not overlap A or B or be written by anyone else during
/// the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_on(
    e: Engine,
    m: usize,
    n: usize,
    k: usize,
    a: BfMat,
    b: BfMat,
    c: OutMat,
    alpha: f32,
    beta: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: only the beta term remains (and beta = 0 must not read C).
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(c.ptr.add(i * c.rs), n);
            for v in row {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    let mr = e.mr();
    let threads = if parallel && m * n * k >= PAR_WORK { rayon::current_num_threads().max(1) } else { 1 };
    let mpan = m.div_ceil(mr);
    // M blocks: at most MC rows each, a multiple of the thread count where there are rows
    // enough, and panels dealt out evenly so no thread is left with a short last block.
    let mut mblocks = mpan.div_ceil(e.mc_max() / mr);
    if threads > 1 {
        mblocks = mblocks.div_ceil(threads) * threads;
    }
    let mblocks = mblocks.clamp(1, mpan);
    let block_panels = |bi: usize| (bi * mpan / mblocks, (bi + 1) * mpan / mblocks);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let npan = nc.div_ceil(NR);
        // Fewer M blocks than threads (a short, wide product): split the columns as well.
        let nsplit = if mblocks < threads { threads.div_ceil(mblocks).min(npan) } else { 1 };
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Pairs per packed row, padded to what the engine consumes at once.
            let kpp = kc.div_ceil(2).next_multiple_of(e.pair_align());
            let first = pc == 0;
            with_scratch(&PACK_B, npan * kpp * NR, |bp| {
                pack_b_block(b, pc, kc, jc, nc, kpp, bp, threads > 1);
                let bp: &[u32] = bp;
                let task = |t: usize| {
                    let (bi, si) = (t / nsplit, t % nsplit);
                    let (p0, p1) = block_panels(bi);
                    let (i0, rows) = (p0 * mr, ((p1 * mr).min(m)).saturating_sub(p0 * mr));
                    let (j0, j1) = (si * npan / nsplit, (si + 1) * npan / nsplit);
                    with_scratch(&PACK_A, (p1 - p0) * kpp * mr, |ap| {
                        let np = p1 - p0;
                        let apan = |ap: &[u32], ip: usize| ap.as_ptr().add(ip * kpp * mr);
                        match e {
                            Engine::Avx512 => {
                                pack_a_pairs(a, i0, rows, pc, kc, kpp, ap);
                                for jp in j0..j1 {
                                    let bpan = bp.as_ptr().add(jp * kpp * NR);
                                    let col = jc + jp * NR;
                                    let nr = NR.min(n - col);
                                    for ip in 0..np {
                                        let row = i0 + ip * mr;
                                        let cp = c.at(row, col);
                                        avx512_kernel(
                                            kpp,
                                            apan(ap, ip),
                                            bpan,
                                            cp,
                                            c.rs,
                                            mr.min(m - row),
                                            nr,
                                            alpha,
                                            beta,
                                            first,
                                        )
                                    }
                                }
                            }
                            Engine::Amx => {
                                pack_a_rows(a, i0, rows, pc, kc, kpp, ap);
                                amx_begin();
                                // K in steps of AMX_KB: the B panel's slice (16 KiB) stays in L1
                                // while it meets every A panel, and the 32-column strip of C
                                // (at most 32 KiB) stays in L2 between steps.
                                let qn = kpp / 16;
                                for jp in j0..j1 {
                                    let bpan = bp.as_ptr().add(jp * kpp * NR);
                                    let col = jc + jp * NR;
                                    let nr = NR.min(n - col);
                                    for q0 in (0..qn).step_by(AMX_KB) {
                                        let nq = AMX_KB.min(qn - q0);
                                        let first = first && q0 == 0;
                                        for ip in 0..np {
                                            let row = i0 + ip * mr;
                                            let cp = c.at(row, col);
                                            // The next call's C tile, to prefetch.
                                            let next = (ip + 1 < np).then(|| c.at(row + mr, col) as *const f32);
                                            let (a0, b0) = (apan(ap, ip).add(q0 * 16 * mr), bpan.add(q0 * 16 * NR));
                                            let mrr = mr.min(m - row);
                                            amx_kernel(nq * 16, a0, b0, cp, c.rs, mrr, nr, alpha, beta, first, next);
                                        }
                                    }
                                }
                                amx_end();
                            }
                        }
                    });
                };
                let tasks = mblocks * nsplit;
                if threads > 1 && tasks > 1 {
                    (0..tasks).into_par_iter().with_max_len(1).for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            });
        }
    }
}

/// The AVX512-BF16 14 x 32 microkernel over `kp` K-pairs of packed A (`a`, 14 words per pair)
/// and packed B (`b`, 32 words per pair), then the epilogue on the top-left `mr` x `nr` corner
/// of C at `c` (row stride `ldc`): the first K block stores `alpha acc + beta C` (C unread when
/// beta = 0), later blocks store `C + alpha acc`.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_kernel(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
    first: bool,
) {
    const MR: usize = 14;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const _));
        // Constant bounds: fully unrolled, the accumulators stay in registers.
        for (r, acc) in acc.iter_mut().enumerate() {
            let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], w, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], w, b1);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    let update = |p: *mut f32, mask: __mmask16, acc: __m512| {
        let v = _mm512_mul_ps(acc, va);
        let v = if first {
            if beta == 0.0 {
                v
            } else {
                _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, p), vb, v)
            }
        } else {
            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), v)
        };
        _mm512_mask_storeu_ps(p, mask, v);
    };
    if mr == MR && nr == NR {
        for (r, acc) in acc.iter().enumerate() {
            let p = c.add(r * ldc);
            update(p, 0xffff, acc[0]);
            update(p.add(16), 0xffff, acc[1]);
        }
    } else {
        // Edge tile: go through memory (a runtime row count would stop the compiler from
        // keeping `acc` in registers in the loop above).
        let mut tile = [[_mm512_setzero_ps(); 2]; MR];
        for (t, acc) in tile.iter_mut().zip(&acc) {
            *t = *acc;
        }
        let tile = std::hint::black_box(&tile);
        let m0 = if nr >= 16 { 0xffff } else { (1u32 << nr) as u16 - 1 };
        let m1 = if nr >= 32 {
            0xffff
        } else if nr > 16 {
            (1u32 << (nr - 16)) as u16 - 1
        } else {
            0
        };
        for (r, acc) in tile.iter().enumerate().take(mr) {
            let p = c.add(r * ldc);
            update(p, m0, acc[0]);
            if m1 != 0 {
                update(p.add(16), m1, acc[1]);
            }
        }
    }
}

/// The AMX tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (little-endian u16)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Load the tile configuration on this thread (before any tile instruction).
unsafe fn amx_begin() {
    asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly));
}

/// Release the tiles (so a context switch need not save them).
unsafe fn amx_end() {
    asm!("tilerelease", options(nostack, nomem));
}

/// A 32 x 32 f32 scratch tile for AMX edge cases.
#[repr(C, align(64))]
struct Scratch([f32; 32 * 32]);

/// The AMX 32 x 32 microkernel over `kpp` (a multiple of 16) K-pairs of a packed A panel
/// (`a`, see [`pack_a_rows`]) and a packed B panel (`b`, 32 words per pair); C as in
/// [`avx512_kernel`]. Whole tiles with alpha = 1 go straight between C and the tile registers;
/// anything else goes through a scratch tile. `next` is the C tile of the next call (rows of
/// stride `ldc`), prefetched while this one computes: C rows lie far apart, and waiting for
/// them was a fifth of the time. The tile configuration must be loaded.
#[allow(clippy::too_many_arguments)]
unsafe fn amx_kernel(
    kpp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
    first: bool,
    next: Option<*const f32>,
) {
    let direct = mr == 32 && nr == NR && alpha == 1.0 && (!first || beta == 0.0 || beta == 1.0);
    let mut scratch = std::mem::MaybeUninit::<Scratch>::uninit();
    let (cp, cld) = if direct { (c, ldc) } else { (scratch.as_mut_ptr() as *mut f32, 32) };
    let cstride = cld * 4;
    // C tiles: tmm0 rows 0-15 x cols 0-15, tmm1 rows 0-15 x cols 16-31, tmm2 and tmm3 rows 16-31.
    let (c0, c1, c2, c3) = (cp, cp.add(16), cp.add(16 * cld), cp.add(16 * cld + 16));
    if direct && !(first && beta == 0.0) {
        asm!(
            "tileloadd tmm0, [{c0} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) cstride,
            options(nostack, readonly)
        );
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    if let Some(n) = next {
        for r in 0..32 {
            // A prefetch never faults; wrapping arithmetic keeps rows past C's end defined.
            _mm_prefetch::<_MM_HINT_T0>(n.wrapping_add(r * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(n.wrapping_add(r * ldc + 16) as *const i8);
        }
    }
    let (sa, sb) = (64usize, NR * 4);
    for q in 0..kpp / 16 {
        // A tiles: rows 0-15 and 16-31 of pairs 16q..16q+15, 1 KiB each.
        let a0 = a.add(q * 32 * 16);
        let a1 = a0.add(16 * 16);
        // B tiles: pairs 16q..16q+15 (rows of 128 bytes), columns 0-15 and 16-31.
        let b0 = b.add(q * 16 * NR);
        let b1 = b0.add(16);
        asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1, sa = in(reg) sa, sb = in(reg) sb,
            options(nostack, readonly)
        );
    }
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) cstride,
        options(nostack)
    );
    if !direct {
        let t = scratch.assume_init_ref();
        for r in 0..mr {
            let row = c.add(r * ldc);
            for j in 0..nr {
                let v = alpha * t.0[r * 32 + j];
                let p = row.add(j);
                *p = if first {
                    if beta == 0.0 {
                        v
                    } else {
                        beta.mul_add(*p, v)
                    }
                } else {
                    *p + v
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::{bf16_to_f32, f32_to_bf16};

    /// xorshift values in [-1, 1) rounded to bf16, some exactly zero.
    fn values(n: usize, seed: u64) -> Vec<u16> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                let v = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                f32_to_bf16(if i % 11 == 0 { 0.0 } else { v })
            })
            .collect()
    }

    /// Exact result in f64 and the bound on |f32 result - exact| for any summation order:
    /// (k + 3) u (|alpha| sum |a b| + |beta c|), u = 2^-24. The products are exact in f32, so
    /// every error comes from the k additions and the alpha and beta steps, each of which rounds
    /// once, by at most u of a running magnitude no larger than that sum.
    #[allow(clippy::too_many_arguments)]
    fn oracle(
        m: usize,
        n: usize,
        k: usize,
        a: &[u16],
        (ars, acs): (usize, usize),
        b: &[u16],
        (brs, bcs): (usize, usize),
        c0: &[f32],
        alpha: f32,
        beta: f32,
    ) -> (Vec<f64>, Vec<f64>) {
        let u = 2f64.powi(-24);
        let (mut exact, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut sa) = (0.0f64, 0.0f64);
                for l in 0..k {
                    let p = bf16_to_f32(a[i * ars + l * acs]) as f64 * bf16_to_f32(b[l * brs + j * bcs]) as f64;
                    s += p;
                    sa += p.abs();
                }
                let cb = if beta == 0.0 { 0.0 } else { beta as f64 * c0[i * n + j] as f64 };
                exact[i * n + j] = alpha as f64 * s + cb;
                bound[i * n + j] = (k + 3) as f64 * u * (alpha.abs() as f64 * sa + cb.abs()) + 1e-30;
            }
        }
        (exact, bound)
    }

    /// The engines this CPU runs (both on Sapphire Rapids, AVX512-BF16 alone on Zen 4).
    fn engines() -> Vec<Engine> {
        let mut v = Vec::new();
        let level = crate::isa::level() == crate::isa::Isa::Avx512;
        if level && is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw") {
            v.push(Engine::Avx512);
            if amx_usable() {
                v.push(Engine::Amx);
            }
        }
        if v.is_empty() {
            eprintln!("skipped: this CPU has no bf16 engine");
        }
        v
    }

    #[test]
    fn every_engine_is_within_the_summation_bound_on_odd_shapes_strides_and_scales() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let shapes = [
            (1, 1, 1),
            (13, 31, 3),
            (14, 32, 2),
            (33, 33, 33),
            (32, 64, 1030),
            (15, 33, 257),
            (29, 65, 300),
            (70, 100, 513),
            (3, 200, 40),
            // More than one K block (KC = 4096), with an odd K.
            (9, 40, 4101),
        ];
        for e in engines() {
            for (si, &(m, n, k)) in shapes.iter().enumerate() {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    for (alpha, beta) in [(1.0f32, 0.0f32), (1.0, 1.0), (0.5, 1.5), (-2.0, 1.0)] {
                        let seed = si as u64 * 16 + ta as u64 * 2 + tb as u64;
                        let (a, b) = (values(m * k, seed), values(k * n, seed + 100));
                        let sa = if ta { (1, m) } else { (k, 1) };
                        let sb = if tb { (1, k) } else { (n, 1) };
                        let c0: Vec<f32> = values(m * n, seed + 200).iter().map(|&v| bf16_to_f32(v)).collect();
                        let (exact, bound) = oracle(m, n, k, &a, sa, &b, sb, &c0, alpha, beta);
                        for parallel in [false, true] {
                            let mut c = if beta == 0.0 { vec![f32::NAN; m * n] } else { c0.clone() };
                            let am = BfMat { ptr: a.as_ptr(), rs: sa.0, cs: sa.1 };
                            let bm = BfMat { ptr: b.as_ptr(), rs: sb.0, cs: sb.1 };
                            let cm = OutMat { ptr: c.as_mut_ptr(), rs: n };
                            // SAFETY: `engines` lists only engines this CPU and OS allow; a is
                            // m x k and b is k x n in either stride order inside their Vecs, and
                            // c is its own m x n Vec (row stride n), overlapping neither.
                            pool.install(|| unsafe { gemm_on(e, m, n, k, am, bm, cm, alpha, beta, parallel) });
                            for idx in 0..m * n {
                                let err = (c[idx] as f64 - exact[idx]).abs();
                                assert!(
                                    err <= bound[idx],
                                    "{e:?} [{m},{k}]x[{k},{n}] ta={ta} tb={tb} a={alpha} b={beta} par={parallel}: \
                                     C[{idx}] = {} but exact {} (bound {:e})",
                                    c[idx],
                                    exact[idx],
                                    bound[idx]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_stride_wider_than_the_row_and_infinities_in_the_data() {
        // C is a window of a wider matrix (row stride 50 > n): columns beyond n stay untouched.
        // An infinity in A gives inf (or NaN against a zero of B) exactly where f32 math does.
        for e in engines() {
            let (m, n, k) = (33, 40, 70);
            let mut a = values(m * k, 1);
            let b = values(k * n, 2);
            a[5 * k + 3] = f32_to_bf16(f32::INFINITY);
            let mut c = vec![7.0f32; m * 50];
            let (am, bm) = (BfMat { ptr: a.as_ptr(), rs: k, cs: 1 }, BfMat { ptr: b.as_ptr(), rs: n, cs: 1 });
            // SAFETY: `engines` lists only engines this CPU and OS allow; a is m x k and b k x n,
            // row-major in their Vecs; c is its own m x 50 Vec, row stride 50 >= n.
            unsafe { gemm_on(e, m, n, k, am, bm, OutMat { ptr: c.as_mut_ptr(), rs: 50 }, 1.0, 0.0, false) };
            for i in 0..m {
                assert!(c[i * 50 + n..(i + 1) * 50].iter().all(|&v| v == 7.0), "{e:?}: row {i} overrun");
            }
            for j in 0..n {
                let bj = bf16_to_f32(b[3 * n + j]);
                let got = c[5 * 50 + j];
                if bj == 0.0 {
                    assert!(got.is_nan(), "{e:?}: inf * 0 must be NaN, got {got}");
                } else {
                    assert_eq!(got, if bj > 0.0 { f32::INFINITY } else { f32::NEG_INFINITY }, "{e:?} col {j}");
                }
            }
        }
    }
}
