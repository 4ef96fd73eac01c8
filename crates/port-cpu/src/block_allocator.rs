//! The port's block allocator: a caching allocator for host buffers (freed memory is kept and
//! handed out again).
//!
//! Why: a training step allocates the same buffers, of the same sizes, in the same order, every
//! step. Returning them to the system allocator makes each step pay for fresh pages (a page
//! fault, a zeroed page and a memcg charge per 4 KiB) on the engine thread while the workers
//! idle; profiling gpt2-tiny showed this at about an eighth of the step. Kept memory makes the
//! steady state allocation-free.
//!
//! Two pools, as PyTorch's CUDA allocator has:
//! - **Small blocks** (under [`LARGE`]) are kept by exact size and reused for that size only.
//! - **Large blocks** live in segments (one system allocation each). A request takes the
//!   smallest free range that fits (best fit) and splits off the rest; a release merges the range
//!   with free neighbours of its segment. So a step's weight gradients can be cut from the
//!   activations the backward pass has just freed, and the activations of the next forward from
//!   the gradients the optimizer has freed. With exact sizes only, each kind kept its own blocks:
//!   a gpt2-124m step held 1.29 times its live peak (3091 MiB for 2399 MiB live).
//!
//! Memory stays bounded: the bytes held by this port (live plus cached) may not pass the largest
//! number of live bytes ever reached by more than 1/[`SLACK`] of it, which any allocator must have
//! held at that moment. A miss that would break this first evicts small blocks (released longest
//! ago first), then segments that are wholly free. A free range inside a segment that still holds
//! a live block cannot be given back, so such ranges can carry the total past the bound; they are
//! the first to serve any request they fit, and a step that repeats stops missing after its
//! first run (gpt2-124m: no miss after step one, held bytes 1.06 times the live peak). Fresh memory is zeroed (so memory nobody wrote
//! reads as zeros rather than undefined bytes); reused memory keeps its old contents, which the
//! contract allows ("contents unspecified"). Debug builds poison reused memory with 0xFF bytes
//! (NaN in f32 and bf16, -1 in i32) so a kernel that relies on fresh zeros fails its tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// Alignment of every block: one cache line, and a full AVX-512 register.
pub const ALIGN: usize = 64;

/// Requests of at least this many bytes are cut from segments; smaller ones are cached by size.
/// Small blocks cut from segments would pin them (a bias vector kept for the whole run inside a
/// freed activation), and they are too few bytes for exact sizes to waste much.
pub const LARGE: usize = 1 << 20;

/// Blocks held (live plus cached) may exceed the peak of live bytes by 1/SLACK of it. With exact
/// sizes only, a quarter made a bf16 gpt2-124m step 20% slower (blocks evicted and taken again
/// as fresh pages every step) and a half was needed; splitting segments keeps the held bytes
/// near the live peak, so the bound rarely binds.
pub const SLACK: usize = 2;

/// A free small block and when it was released (a counter, for oldest-first eviction).
struct Free {
    ptr: NonNull<u8>,
    stamp: u64,
}

// SAFETY: a cached block is plain memory owned by the pool alone.
unsafe impl Send for Free {}

/// A range of a segment, keyed by its address in [`Large::ranges`].
#[derive(Clone, Copy)]
struct Range {
    len: usize,
    free: bool,
    /// Address of the segment the range belongs to (ranges merge only within one segment).
    seg: usize,
}

/// The large pool: segments split into ranges, by address, and the free ranges by size.
#[derive(Default)]
struct Large {
    /// Every range of every segment (used or free), by address.
    ranges: BTreeMap<usize, Range>,
    /// Free ranges as (length, address): the first at or above a length is the best fit.
    free: BTreeSet<(usize, usize)>,
    /// Segment lengths by address.
    segs: HashMap<usize, usize>,
}

#[derive(Default)]
struct Pool {
    /// Free small blocks by exact size; each list is a stack (the most recently released on top).
    small: HashMap<usize, Vec<Free>>,
    large: Large,
    stats: AllocatorStats,
    clock: u64,
}

/// Counters of the caching allocator (bytes are the sizes callers asked for, large ones rounded
/// up to whole pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in blocks handed out and not yet released.
    pub live: usize,
    /// Bytes kept for reuse: released small blocks and free ranges of segments.
    pub cached: usize,
    /// Largest `live` ever reached: `live + cached` stays within 1 + 1/[`SLACK`] of it.
    pub peak_live: usize,
    /// Allocations served from the cache.
    pub hits: u64,
    /// Allocations that took fresh memory from the system.
    pub misses: u64,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn pool() -> MutexGuard<'static, Option<Pool>> {
    // A panic while holding the lock cannot leave the pool inconsistent in a way that matters
    // (at worst a counter is off), so a poisoned lock is taken over.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes, ALIGN).ok()
}

/// A huge page on x86-64 Linux: segments of at least this size are backed by huge pages.
const HUGE: usize = 2 << 20;

/// Fresh zeroed memory from the system: segments of a huge page or more are mapped directly,
/// aligned to a huge page and marked `MADV_HUGEPAGE`, because Linux's transparent huge pages are
/// often `madvise`-only and the allocator's memory otherwise gets 4 KiB pages. A training step
/// walks hundreds of MiB of activations; with 4 KiB pages each 8 MiB operand needs 2048 TLB
/// entries, more than the second-level TLB of many cores holds for all operands together.
/// `ANYCHIP_NO_HUGEPAGES` set: plain allocation (for A/B runs).
fn sys_alloc(n: usize) -> Option<NonNull<u8>> {
    #[cfg(target_os = "linux")]
    if n >= HUGE && std::env::var_os("ANYCHIP_NO_HUGEPAGES").is_none() {
        return huge::map(n);
    }
    // SAFETY: `n` is non-zero (callers never ask for empty blocks).
    NonNull::new(unsafe { alloc_zeroed(layout(n)?) })
}

/// Give memory from [`sys_alloc`] of the same `n` back to the system.
///
/// # Safety
/// `ptr` must come from `sys_alloc(n)` and not be used afterwards.
unsafe fn sys_free(ptr: NonNull<u8>, n: usize) {
    #[cfg(target_os = "linux")]
    if huge::owns(ptr) {
        return huge::unmap(ptr, n);
    }
    dealloc(ptr.as_ptr(), layout(n).expect("layout was valid at allocation"))
}

#[cfg(target_os = "linux")]
mod huge {
    use super::HUGE;
    use std::collections::HashSet;
    use std::ptr::NonNull;
    use std::sync::Mutex;

    /// Addresses of live mappings, so `sys_free` knows which way a block was allocated even if
    /// `ANYCHIP_NO_HUGEPAGES` changed in between.
    static MAPPED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

    /// `n` bytes of zeroed memory on a huge-page boundary, advised to use huge pages.
    pub fn map(n: usize) -> Option<NonNull<u8>> {
        // Map a huge page more than asked and trim both ends to the aligned part.
        let len = n + HUGE;
        // SAFETY: an anonymous private mapping touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE);
        // SAFETY: both trimmed pieces lie inside the mapping just made, on page boundaries
        // (n is a multiple of the page size: large footprints are).
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            let end = aligned + n;
            if start + len > end {
                libc::munmap(end as *mut libc::c_void, start + len - end);
            }
            // A hint: without huge pages the memory is still valid.
            libc::madvise(aligned as *mut libc::c_void, n, libc::MADV_HUGEPAGE);
        }
        MAPPED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).insert(aligned);
        NonNull::new(aligned as *mut u8)
    }

    /// Whether `ptr` is a mapping of ours (and forget it when it is, for `unmap`).
    pub fn owns(ptr: NonNull<u8>) -> bool {
        MAPPED.lock().unwrap_or_else(|e| e.into_inner()).as_mut().is_some_and(|m| m.remove(&(ptr.as_ptr() as usize)))
    }

    /// Unmap a block from [`map`] of `n` bytes.
    ///
    /// # Safety
    /// As `sys_free`.
    pub unsafe fn unmap(ptr: NonNull<u8>, n: usize) {
        libc::munmap(ptr.as_ptr() as *mut libc::c_void, n);
    }
}

/// Large ranges start on page boundaries, as a fresh allocation of their size would.
const PAGE: usize = 4096;

/// The bytes a request of `bytes` occupies: large ones are rounded up to whole pages.
fn footprint(bytes: usize) -> usize {
    if bytes >= LARGE {
        bytes.next_multiple_of(PAGE)
    } else {
        bytes
    }
}

/// A block of `bytes > 0` bytes: cached memory if some fits, else fresh zeroed memory. `None`
/// when the system allocator refuses.
pub fn take(bytes: usize) -> Option<NonNull<u8>> {
    let n = footprint(bytes);
    // A size no allocation could have (past isize::MAX) is refused before any bookkeeping.
    layout(n)?;
    let mut evicted = Vec::new();
    {
        let mut g = pool();
        let p = g.get_or_insert_with(Pool::default);
        if let Some(ptr) = p.reuse(n) {
            p.stats.cached -= n;
            p.stats.hits += 1;
            p.grow_live(n);
            drop(g);
            if cfg!(debug_assertions) {
                // SAFETY: the block has `n` bytes and is ours alone.
                unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xFF, n) };
            }
            return Some(ptr);
        }
        p.stats.misses += 1;
        // Keep live + cached within the peak (plus slack) that the new live total sets.
        let peak = p.stats.peak_live.max(p.stats.live + n);
        let bound = peak + peak / SLACK;
        while p.stats.live + n + p.stats.cached > bound {
            match p.evict() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        p.grow_live(n);
    }
    for (ptr, len) in evicted {
        // SAFETY: allocated below by `sys_alloc(len)`, and no longer in the pool.
        unsafe { sys_free(ptr, len) };
    }
    let Some(ptr) = sys_alloc(n) else {
        pool().as_mut().expect("pool exists").stats.live -= n;
        return None;
    };
    if n >= LARGE {
        pool().as_mut().expect("pool exists").large.add_segment(ptr.as_ptr() as usize, n);
    }
    Some(ptr)
}

/// Give back a block from [`take`] of the same `bytes`, for reuse.
///
/// # Safety
/// `ptr` must come from `take(bytes)` and not be used afterwards.
pub unsafe fn release(ptr: NonNull<u8>, bytes: usize) {
    let n = footprint(bytes);
    let mut g = pool();
    let p = g.get_or_insert_with(Pool::default);
    p.stats.live -= n;
    p.stats.cached += n;
    p.clock += 1;
    if n >= LARGE {
        p.large.release(ptr.as_ptr() as usize);
    } else {
        p.small.entry(n).or_default().push(Free { ptr, stamp: p.clock });
    }
}

/// Return every cached small block and every wholly free segment to the system allocator
/// (live blocks, and segments that hold one, are untouched).
pub fn trim() {
    let blocks: Vec<(NonNull<u8>, usize)> = {
        let mut g = pool();
        let Some(p) = g.as_mut() else { return };
        let mut out: Vec<(NonNull<u8>, usize)> =
            p.small.drain().flat_map(|(n, v)| v.into_iter().map(move |f| (f.ptr, n))).collect();
        while let Some(seg) = p.large.take_free_segment() {
            out.push(seg);
        }
        p.stats.cached -= out.iter().map(|&(_, n)| n).sum::<usize>();
        out
    };
    for (ptr, n) in blocks {
        // SAFETY: allocated by `take` through `sys_alloc(n)`, and no longer in the pool.
        unsafe { sys_free(ptr, n) };
    }
}

/// Current counters (shared by every CPU port in the process).
pub fn stats() -> AllocatorStats {
    pool().as_ref().map(|p| p.stats).unwrap_or_default()
}

impl Pool {
    fn grow_live(&mut self, bytes: usize) {
        self.stats.live += bytes;
        self.stats.peak_live = self.stats.peak_live.max(self.stats.live);
    }

    /// Cached memory for `n` bytes, if some fits.
    fn reuse(&mut self, n: usize) -> Option<NonNull<u8>> {
        if n >= LARGE {
            return self.large.best_fit(n).map(|a| NonNull::new(a as *mut u8).expect("segments are not null"));
        }
        self.small.get_mut(&n).and_then(|v| v.pop()).map(|f| f.ptr)
    }

    /// Give one cached allocation back to the system, updating `cached`: the small block
    /// released longest ago, else the largest wholly free segment. None when nothing can go.
    fn evict(&mut self) -> Option<(NonNull<u8>, usize)> {
        let oldest = self.small.iter().filter(|(_, v)| !v.is_empty()).min_by_key(|(_, v)| v[0].stamp).map(|(&n, _)| n);
        let out = match oldest {
            Some(n) => {
                let list = self.small.get_mut(&n).expect("key just found");
                let f = list.remove(0);
                if list.is_empty() {
                    self.small.remove(&n);
                }
                Some((f.ptr, n))
            }
            None => self.large.take_free_segment(),
        }?;
        self.stats.cached -= out.1;
        Some(out)
    }
}

impl Large {
    fn add_segment(&mut self, addr: usize, len: usize) {
        self.segs.insert(addr, len);
        self.ranges.insert(addr, Range { len, free: false, seg: addr });
    }

    /// The smallest free range of at least `n` bytes, marked used; the rest stays free.
    fn best_fit(&mut self, n: usize) -> Option<usize> {
        let &(len, addr) = self.free.range((n, 0)..).next()?;
        self.free.remove(&(len, addr));
        let r = self.ranges.get_mut(&addr).expect("a free range is in the address map");
        r.free = false;
        r.len = n;
        if len > n {
            let seg = r.seg;
            self.ranges.insert(addr + n, Range { len: len - n, free: true, seg });
            self.free.insert((len - n, addr + n));
        }
        Some(addr)
    }

    /// Mark the range at `addr` free and merge it with free neighbours of its segment.
    fn release(&mut self, addr: usize) {
        let r = *self.ranges.get(&addr).expect("released range was handed out by this pool");
        debug_assert!(!r.free, "range at {addr:#x} released twice");
        let (mut start, mut len) = (addr, r.len);
        if let Some((&next, &nr)) = self.ranges.range(addr + 1..).next() {
            if next == addr + len && nr.free && nr.seg == r.seg {
                self.free.remove(&(nr.len, next));
                self.ranges.remove(&next);
                len += nr.len;
            }
        }
        if let Some((&prev, &pr)) = self.ranges.range(..addr).next_back() {
            if prev + pr.len == addr && pr.free && pr.seg == r.seg {
                self.free.remove(&(pr.len, prev));
                self.ranges.remove(&addr);
                start = prev;
                len += pr.len;
            }
        }
        self.ranges.insert(start, Range { len, free: true, seg: r.seg });
        self.free.insert((len, start));
    }

    /// Remove the largest segment that is wholly free, for the caller to deallocate.
    fn take_free_segment(&mut self) -> Option<(NonNull<u8>, usize)> {
        let &(len, addr) = self.free.iter().rev().find(|&&(len, addr)| self.segs.get(&addr) == Some(&len))?;
        self.free.remove(&(len, addr));
        self.ranges.remove(&addr);
        self.segs.remove(&addr);
        Some((NonNull::new(addr as *mut u8).expect("segments are not null"), len))
    }
}
