//! A caching allocator for host buffers: freed blocks are kept by exact size and handed out again.
//!
//! Why: a training step allocates the same buffers, of the same sizes, in the same order, every
//! step. Returning them to the system allocator makes each step pay for fresh pages (a page
//! fault, a zeroed page and a memcg charge per 4 KiB) on the engine thread while the workers
//! idle; profiling gpt2-tiny showed this at about an eighth of the step. Kept blocks make the
//! steady state allocation-free.
//!
//! Memory stays bounded: cached blocks are never allowed to push the bytes held by this port
//! (live plus cached) more than half above the largest number of live bytes ever reached,
//! which any allocator must have held at that moment. A miss that would break this evicts the
//! blocks released longest ago first. Fresh blocks are zeroed (so memory nobody wrote reads as zeros
//! rather than undefined bytes); reused blocks keep their old contents, which the contract
//! allows ("contents unspecified"). Debug builds poison reused blocks with 0xFF bytes (NaN in
//! f32 and bf16, -1 in i32) so a kernel that relies on fresh zeros fails its tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// Alignment of every block: one cache line, and a full AVX-512 register.
pub const ALIGN: usize = 64;

/// Blocks held (live plus cached) may exceed the peak of live bytes by 1/SLACK of it. Exact-size
/// reuse needs some room: the footprint of a repeating step is the sum over sizes of the most
/// blocks of that size live at once, 8% above the live peak for gpt2-tiny and 15% for
/// gpt2-small-30m (its two 400 MB logit-sized buffers). With no slack the pool kept evicting
/// blocks it needed a moment later and half the allocations missed. A quarter was enough while
/// every activation lived until backward; once the graph stopped holding activations that no
/// backward reads (core's `Tensor::edge`), the live peak fell and a quarter made a bf16
/// gpt2-124m step 20% slower (blocks evicted and taken again as fresh pages every step). Half
/// keeps the step's speed and still holds less than before: 3366 against 3657 MiB peak RSS.
pub const SLACK: usize = 2;

/// A free block and when it was released (a counter, for oldest-first eviction).
struct Free {
    ptr: NonNull<u8>,
    stamp: u64,
}

// SAFETY: a cached block is plain memory owned by the pool alone.
unsafe impl Send for Free {}

#[derive(Default)]
struct Pool {
    /// Free blocks by exact size; each list is a stack (the most recently released on top).
    free: HashMap<usize, Vec<Free>>,
    stats: CacheStats,
    clock: u64,
}

/// Counters of the caching allocator (bytes are the sizes callers asked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes in blocks handed out and not yet released.
    pub live: usize,
    /// Bytes in released blocks kept for reuse.
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

/// A block of `bytes > 0` bytes: a cached one of exactly that size, else fresh zeroed memory.
/// `None` when the system allocator refuses.
pub fn take(bytes: usize) -> Option<NonNull<u8>> {
    let lay = layout(bytes)?;
    let mut evicted = Vec::new();
    {
        let mut g = pool();
        let p = g.get_or_insert_with(Pool::default);
        if let Some(f) = p.free.get_mut(&bytes).and_then(|v| v.pop()) {
            p.stats.cached -= bytes;
            p.stats.hits += 1;
            p.grow_live(bytes);
            drop(g);
            if cfg!(debug_assertions) {
                // SAFETY: the block has `bytes` bytes and is ours alone.
                unsafe { std::ptr::write_bytes(f.ptr.as_ptr(), 0xFF, bytes) };
            }
            return Some(f.ptr);
        }
        p.stats.misses += 1;
        // Keep live + cached within the peak (plus slack) that the new live total sets.
        let peak = p.stats.peak_live.max(p.stats.live + bytes);
        let bound = peak + peak / SLACK;
        while p.stats.cached > 0 && p.stats.live + bytes + p.stats.cached > bound {
            evicted.push(p.evict_oldest());
        }
        p.grow_live(bytes);
    }
    for (ptr, n) in evicted {
        // SAFETY: allocated by `take` with `layout(n)`, and no longer in the pool.
        unsafe { dealloc(ptr.as_ptr(), layout(n).expect("layout was valid at allocation")) };
    }
    // SAFETY: `lay` has a non-zero size.
    let ptr = NonNull::new(unsafe { alloc_zeroed(lay) });
    if ptr.is_none() {
        pool().as_mut().expect("pool exists").stats.live -= bytes;
    }
    ptr
}

/// Give back a block from [`take`] of the same `bytes`, for reuse.
///
/// # Safety
/// `ptr` must come from `take(bytes)` and not be used afterwards.
pub unsafe fn release(ptr: NonNull<u8>, bytes: usize) {
    let mut g = pool();
    let p = g.get_or_insert_with(Pool::default);
    p.stats.live -= bytes;
    p.stats.cached += bytes;
    p.clock += 1;
    p.free.entry(bytes).or_default().push(Free { ptr, stamp: p.clock });
}

/// Return every cached block to the system allocator (live blocks are untouched).
pub fn trim() {
    let blocks: Vec<(NonNull<u8>, usize)> = {
        let mut g = pool();
        let Some(p) = g.as_mut() else { return };
        p.stats.cached = 0;
        p.free.drain().flat_map(|(n, v)| v.into_iter().map(move |f| (f.ptr, n))).collect()
    };
    for (ptr, n) in blocks {
        // SAFETY: allocated by `take` with `layout(n)`, and no longer in the pool.
        unsafe { dealloc(ptr.as_ptr(), layout(n).expect("layout was valid at allocation")) };
    }
}

/// Current counters (shared by every CPU port in the process).
pub fn stats() -> CacheStats {
    pool().as_ref().map(|p| p.stats).unwrap_or_default()
}

impl Pool {
    fn grow_live(&mut self, bytes: usize) {
        self.stats.live += bytes;
        self.stats.peak_live = self.stats.peak_live.max(self.stats.live);
    }

    /// Remove the block released longest ago (the bottom of some stack).
    fn evict_oldest(&mut self) -> (NonNull<u8>, usize) {
        let (&n, _) = self
            .free
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .min_by_key(|(_, v)| v[0].stamp)
            .expect("cached bytes are non-zero, so some list is non-empty");
        let list = self.free.get_mut(&n).expect("key just found");
        let f = list.remove(0);
        if list.is_empty() {
            self.free.remove(&n);
        }
        self.stats.cached -= n;
        (f.ptr, n)
    }
}
