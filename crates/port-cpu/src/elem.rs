//! Element access: typed loads and stores through raw host pointers, strided walks in blocks.
//!
//! Every kernel reads operands as f32 blocks and writes f32 blocks back; bf16 is converted
//! block by block (round to nearest even on store, the contract's rule) so arithmetic is always
//! f32 and the hot loops see plain slices the compiler vectorises.

use crate::buffer::host;
use anychip_port::{bf16_to_f32, f32_to_bf16, invalid, DType, Layout, Result, View};
use rayon::prelude::*;

/// Elements per block of a strided walk: 4 KiB of f32 scratch per operand, resident in L1.
pub const BLOCK: usize = 1024;

/// Work (in elements) below which a kernel runs on the calling thread.
pub const PAR_MIN: usize = 1 << 15;

/// A raw base pointer that may cross threads (see `buffer` for the safety argument).
#[derive(Clone, Copy, Debug)]
pub struct Ptr(pub *mut u8);
// SAFETY: a Ptr is only an address (Copy, no ownership, no Drop), so moving it to another
// thread moves no resource; it points into a HostBuffer (itself Send + Sync) or a kernel's own
// scratch that outlives the parallel section, and it is dereferenced only inside `unsafe`
// blocks whose callers keep each task's writes disjoint (see `buffer`).
unsafe impl Send for Ptr {}
// SAFETY: `&Ptr` yields nothing but a copy of the address, so sharing it is the same as
// sending copies (above); no access goes through it without an `unsafe` dereference.
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The pointer typed as `T` (a method, so closures capture the whole `Ptr`).
    #[inline]
    pub fn get<T>(&self) -> *mut T {
        self.0 as *mut T
    }
}

/// A view resolved to host memory, bounds-checked once.
#[derive(Clone, Copy, Debug)]
pub struct Raw {
    pub base: Ptr,
    pub dtype: DType,
    /// Identity of the buffer, to detect aliasing with the output.
    pub id: usize,
}

impl Raw {
    /// The base pointer typed as `T` (a method, so closures capture the whole `Raw`).
    #[inline]
    pub fn ptr<T>(&self) -> *mut T {
        self.base.0 as *mut T
    }
}

/// Resolve `v` to host memory, checking that its layout stays inside the buffer.
///
/// Every kernel's `unsafe` access rests on this check, so the reach is computed with checked
/// arithmetic: a shape or stride so large that the product overflows `usize` is refused here
/// rather than wrapping (in release builds) to a small number that would pass.
pub fn raw(v: &View) -> Result<Raw> {
    let h = host(&v.buf)?;
    let l = &v.layout;
    if l.strides.len() != l.shape.len() {
        return invalid("layout has a different number of strides than dimensions");
    }
    let empty = l.shape.contains(&0);
    match anychip_port::check::span(l).and_then(|s| s.checked_mul(v.dtype.size())) {
        Some(need) if empty || need <= h.bytes_len() => {}
        need => {
            let need = need.map_or_else(|| "past the address space".to_string(), |n| format!("byte {n}"));
            return invalid(format!(
                "view of shape {:?} strides {:?} offset {} reaches {need} of a {}-byte buffer; check the view's offset and strides",
                l.shape,
                l.strides,
                l.offset,
                h.bytes_len()
            ));
        }
    }
    Ok(Raw { base: Ptr(h.ptr()), dtype: v.dtype, id: v.buf.ptr_id() })
}

/// Read `dst.len()` elements at element index `at`, stride `s`, converting to f32.
///
/// # Safety
/// The elements must lie inside the buffer (checked by [`raw`]) and not be written concurrently.
#[inline]
pub unsafe fn load(r: Raw, at: usize, s: usize, dst: &mut [f32]) {
    match r.dtype {
        DType::F32 => {
            let p = r.ptr::<f32>().add(at);
            if s == 1 {
                dst.copy_from_slice(std::slice::from_raw_parts(p, dst.len()));
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = *p.add(i * s);
                }
            }
        }
        DType::BF16 => {
            let p = r.ptr::<u16>().add(at);
            if s == 1 {
                let n = dst.len();
                for (d, &b) in dst.iter_mut().zip(std::slice::from_raw_parts(p, n)) {
                    *d = bf16_to_f32(b);
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = bf16_to_f32(*p.add(i * s));
                }
            }
        }
        DType::I32 => {
            let p = r.ptr::<i32>().add(at);
            for (i, d) in dst.iter_mut().enumerate() {
                *d = *p.add(i * s) as f32;
            }
        }
    }
}

/// Write `src` to element index `at`, stride `s`, converting from f32 (I32 truncates).
///
/// # Safety
/// As [`load`], and no other thread touches these elements.
#[inline]
pub unsafe fn store(r: Raw, at: usize, s: usize, src: &[f32]) {
    match r.dtype {
        DType::F32 => {
            let p = r.ptr::<f32>().add(at);
            if s == 1 {
                std::slice::from_raw_parts_mut(p, src.len()).copy_from_slice(src);
            } else {
                for (i, &v) in src.iter().enumerate() {
                    *p.add(i * s) = v;
                }
            }
        }
        DType::BF16 => {
            let p = r.ptr::<u16>().add(at);
            if s == 1 {
                crate::math::f32_to_bf16_slice(src, std::slice::from_raw_parts_mut(p, src.len()));
            } else {
                for (i, &v) in src.iter().enumerate() {
                    *p.add(i * s) = f32_to_bf16(v);
                }
            }
        }
        DType::I32 => {
            let p = r.ptr::<i32>().add(at);
            for (i, &v) in src.iter().enumerate() {
                *p.add(i * s) = v as i32;
            }
        }
    }
}

/// Up to this many operands (inputs plus output) take part in one walk.
pub const MAX_OPS: usize = 4;

/// Shapes and strides of several equally shaped views, collapsed to the fewest dimensions.
///
/// Size-1 axes are dropped and neighbouring axes merged wherever every operand is contiguous
/// across them, so a contiguous tensor becomes one long row and a bias broadcast `[N, D]` with
/// strides `(0, 1)` stays two axes with a unit-stride inner row.
pub struct Walk {
    shape: Vec<usize>,
    strides: Vec<[usize; MAX_OPS]>,
    offsets: [usize; MAX_OPS],
    chunks: usize,
}

/// One block of a walk: element indices of its first element per operand, its length, the
/// inner strides, and its row-major position in the whole walk (for counter-based streams).
pub struct Block {
    pub at: [usize; MAX_OPS],
    pub stride: [usize; MAX_OPS],
    pub len: usize,
    pub linear: usize,
}

impl Walk {
    /// Walk `layouts` (all of the same shape) together.
    pub fn new(layouts: &[&Layout]) -> Result<Walk> {
        assert!(layouts.len() <= MAX_OPS && !layouts.is_empty());
        let shape0 = &layouts[0].shape;
        for l in layouts {
            if &l.shape != shape0 {
                return invalid(format!(
                    "operand shapes differ: {:?} vs {:?}; broadcast in the engine with stride-0 views",
                    shape0, l.shape
                ));
            }
        }
        let mut offsets = [0; MAX_OPS];
        for (o, l) in offsets.iter_mut().zip(layouts) {
            *o = l.offset;
        }
        let mut shape: Vec<usize> = Vec::new();
        let mut strides: Vec<[usize; MAX_OPS]> = Vec::new();
        for (d, &n) in shape0.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let mut st = [0; MAX_OPS];
            for (s, l) in st.iter_mut().zip(layouts) {
                *s = l.strides[d];
            }
            if let (Some(pn), Some(ps)) = (shape.last_mut(), strides.last_mut()) {
                if (0..layouts.len()).all(|i| ps[i] == st[i] * n) {
                    *pn *= n;
                    *ps = st;
                    continue;
                }
            }
            shape.push(n);
            strides.push(st);
        }
        if shape0.contains(&0) {
            shape = vec![0];
            strides = vec![[0; MAX_OPS]];
        } else if shape.is_empty() {
            shape.push(1);
            strides.push([0; MAX_OPS]);
        }
        let inner = *shape.last().unwrap();
        Ok(Walk { chunks: inner.div_ceil(BLOCK).max(1), shape, strides, offsets })
    }

    /// Total elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.numel() / self.shape.last().unwrap() * self.chunks
    }

    /// The `b`-th block in row-major order.
    pub fn block(&self, b: usize) -> Block {
        let inner = *self.shape.last().unwrap();
        let (mut row, chunk) = (b / self.chunks, b % self.chunks);
        let c0 = chunk * BLOCK;
        let r = self.shape.len() - 1;
        let mut at = self.offsets;
        for d in (0..r).rev() {
            let i = row % self.shape[d];
            row /= self.shape[d];
            for (a, s) in at.iter_mut().zip(&self.strides[d]) {
                *a += i * s;
            }
        }
        let stride = self.strides[r];
        for (a, s) in at.iter_mut().zip(&stride) {
            *a += c0 * s;
        }
        Block { at, stride, len: BLOCK.min(inner - c0), linear: (b / self.chunks) * inner + c0 }
    }

    /// Run `f` on every block, in parallel when the walk is large enough to pay for it.
    pub fn for_each(&self, f: impl Fn(Block) + Sync + Send) {
        self.for_each_init(|| (), |_, b| f(b));
    }

    /// [`Walk::for_each`] with a scratch value made by `init` once per task (once in all when
    /// the walk runs serially) and lent to every block the task runs: a block's scratch made
    /// afresh cost more than the block itself where the last axis is short (a [N, 2] walk is N
    /// blocks of 2 elements, each zeroing its BLOCK-wide buffers).
    pub fn for_each_init<S>(&self, init: impl Fn() -> S + Sync + Send, f: impl Fn(&mut S, Block) + Sync + Send) {
        let n = self.blocks();
        if self.numel() < PAR_MIN {
            let mut s = init();
            (0..n).for_each(|b| f(&mut s, self.block(b)));
        } else {
            let per = (PAR_MIN / BLOCK.min(*self.shape.last().unwrap()).max(1)).max(1);
            (0..n).into_par_iter().with_min_len(per).for_each_init(init, |s, b| f(s, self.block(b)));
        }
    }
}

/// Require a float dtype for arithmetic.
pub fn want_float(v: &View, what: &str) -> Result<()> {
    if v.dtype.is_float() {
        Ok(())
    } else {
        invalid(format!("{what} needs a float tensor (f32 or bf16), got {}; cast it first", v.dtype))
    }
}

/// out = f(inputs) elementwise over equally shaped views, with f working on f32 blocks.
///
/// Inputs are borrowed straight from memory when they are unit-stride f32 in another buffer
/// than `out`; otherwise (bf16, strided, broadcast, or aliasing `out`) they are copied to a
/// block of scratch first, which also makes in-place updates sound.
pub fn map<const N: usize>(
    ins: [&View; N],
    out: &View,
    f: impl Fn([&[f32]; N], &mut [f32]) + Sync + Send,
) -> Result<()> {
    let mut layouts: Vec<&Layout> = ins.iter().map(|v| &v.layout).collect();
    layouts.push(&out.layout);
    let walk = Walk::new(&layouts)?;
    let mut raws = [None; N];
    for (r, v) in raws.iter_mut().zip(ins) {
        *r = Some(raw(v)?);
    }
    let raws = raws.map(|r| r.unwrap());
    let o = raw(out)?;
    walk.for_each_init(
        || ([[0f32; BLOCK]; N], [0f32; BLOCK]),
        |(scratch, oscr), b| {
            let n = b.len;
            let mut slices: [&[f32]; N] = [&[]; N];
            // Split scratch so each input may borrow its own block.
            let mut rest: &mut [[f32; BLOCK]] = scratch;
            for i in 0..N {
                let (head, tail) = rest.split_first_mut().unwrap();
                rest = tail;
                let r = raws[i];
                slices[i] = if r.dtype == anychip_port::DType::F32 && b.stride[i] == 1 && r.id != o.id {
                    // SAFETY: in bounds (checked by `raw`), and not the output buffer.
                    unsafe { std::slice::from_raw_parts(r.ptr::<f32>().add(b.at[i]), n) }
                } else {
                    // SAFETY: in bounds; read before this block's elements are written.
                    unsafe { load(r, b.at[i], b.stride[i], &mut head[..n]) };
                    &head[..n]
                };
            }
            let os = b.stride[N];
            if o.dtype == anychip_port::DType::F32 && os == 1 {
                // SAFETY: blocks are disjoint in the output, so this slice is ours alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(o.ptr::<f32>().add(b.at[N]), n) };
                f(slices, dst);
            } else {
                f(slices, &mut oscr[..n]);
                // SAFETY: as above.
                unsafe { store(o, b.at[N], os, &oscr[..n]) };
            }
        },
    );
    Ok(())
}

/// Call `f` on the contiguous elements `[at, at + len)` of `r` as f32 pieces, in order:
/// one borrowed slice for f32, blocks of converted scratch otherwise.
///
/// # Safety
/// The range must be in bounds and not written concurrently.
pub unsafe fn for_chunks(r: Raw, at: usize, len: usize, mut f: impl FnMut(&[f32])) {
    if r.dtype == DType::F32 {
        f(std::slice::from_raw_parts(r.ptr::<f32>().add(at), len));
        return;
    }
    let mut t = [0f32; BLOCK];
    let mut i = 0;
    while i < len {
        let n = BLOCK.min(len - i);
        load(r, at + i, 1, &mut t[..n]);
        f(&t[..n]);
        i += n;
    }
}

/// Contiguous elements `[at, at + len)` of `r` as an f32 slice: borrowed for f32, converted
/// into `scratch` otherwise.
///
/// # Safety
/// As [`for_chunks`]; the returned slice must not outlive concurrent writes to the range.
pub unsafe fn row(r: Raw, at: usize, len: usize, scratch: &mut Vec<f32>) -> &[f32] {
    if r.dtype == DType::F32 {
        return std::slice::from_raw_parts(r.ptr::<f32>().add(at), len);
    }
    scratch.resize(len, 0.0);
    load(r, at, 1, scratch);
    scratch
}

/// A writable f32 row for `[at, at + len)` of `r`: the memory itself for f32, `scratch`
/// otherwise (then [`finish_row`] stores it).
///
/// # Safety
/// The range must be in bounds and owned by the calling task.
pub unsafe fn row_mut(r: Raw, at: usize, len: usize, scratch: &mut Vec<f32>) -> &mut [f32] {
    if r.dtype == DType::F32 {
        return std::slice::from_raw_parts_mut(r.ptr::<f32>().add(at), len);
    }
    scratch.resize(len, 0.0);
    scratch
}

/// Store a row produced through [`row_mut`] (a no-op for f32, which was written in place).
///
/// # Safety
/// As [`row_mut`].
pub unsafe fn finish_row(r: Raw, at: usize, row: &[f32]) {
    if r.dtype != DType::F32 {
        store(r, at, 1, row);
    }
}

/// Sum of a slice with 16 independent f32 lanes (vectorises, and is more accurate than a chain).
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Dot product with 16 independent f32 lanes.
#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (mut a, mut b) = (x.chunks_exact(16), y.chunks_exact(16));
    for (c, d) in (&mut a).zip(&mut b) {
        for i in 0..16 {
            acc[i] += c[i] * d[i];
        }
    }
    acc.iter().sum::<f32>() + a.remainder().iter().zip(b.remainder()).map(|(p, q)| p * q).sum::<f32>()
}

/// Maximum of a slice; NaN anywhere gives NaN, empty gives -inf.
#[inline]
pub fn max(x: &[f32]) -> f32 {
    crate::math::max_slice(x)
}
