//! The machine's fp32 FMA peak, measured rather than looked up (for MFU reports).
//!
//! Each thread runs independent fused multiply-adds on as many accumulators as hide the FMA
//! latency on current cores (12 chains x 4-cycle latency x 2 pipes with room to spare).
//! Hand-written because no maintained crate measures this; the widest unit detected at run
//! time is used (AVX-512, else AVX2+FMA, else a scalar loop).

use std::time::{Duration, Instant};

/// Independent accumulator chains per thread.
const CHAINS: usize = 12;
/// Inner iterations per timing slice.
const ITERS: u64 = 1 << 20;
/// The fewest FLOPs one timing slice does (the scalar loop's): a measured peak times the wall
/// time of its measurement is at least this, however slow the machine or emulator.
pub const MIN_SLICE_FLOPS: u64 = ITERS / 16 * (CHAINS * 2) as u64;

/// Measured fp32 FLOP/s (2 per FMA lane) of `threads` threads running FMAs concurrently.
pub fn measure_fma_peak(threads: usize) -> f64 {
    let threads = threads.max(1);
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(thread_peak)).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    per_thread.iter().sum()
}

/// Best FLOP/s of one thread over a few ~50 ms slices.
fn thread_peak() -> f64 {
    let mut best = 0f64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        let t = Instant::now();
        let (flops, sink) = fma_slice();
        std::hint::black_box(sink);
        best = best.max(flops as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Run one slice on the widest unit; returns (FLOPs done, a value to keep the work alive).
fn fma_slice() -> (u64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return (ITERS * (CHAINS * 16 * 2) as u64, unsafe { x86::avx512(ITERS) });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return (ITERS * (CHAINS * 8 * 2) as u64, unsafe { x86::avx2(ITERS) });
        }
    }
    (MIN_SLICE_FLOPS, scalar(ITERS / 16))
}

fn scalar(iters: u64) -> f32 {
    let mut acc = [0f32; CHAINS];
    let (a, b) = (std::hint::black_box(0.999_99f32), std::hint::black_box(1e-7f32));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(0.999_99));
        let b = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in acc {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(0.999_99));
        let b = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for x in acc {
            s = _mm256_add_ps(s, x);
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}
