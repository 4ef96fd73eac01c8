//! The fast CPU port: threads, SIMD, gemm matmul and fused composites. The default port.
//!
//! Every call runs synchronously inside the port's own rayon pool (sized by
//! `PortOptions::threads`), so two ports in one process never fight over threads and a
//! one-thread port is bit-for-bit reproducible. Memory is 64-byte aligned host memory
//! (see [`buffer`] for why sharing it between threads is sound).

pub mod blas;
pub mod block_allocator;
pub mod buffer;
mod caps;
mod elem;
mod fused;
pub mod isa;
mod math;
#[cfg(target_arch = "x86_64")]
mod math_avx2;
#[cfg(target_arch = "x86_64")]
mod math_avx512;
#[cfg(target_arch = "aarch64")]
mod math_neon;
mod peak;
mod prim;

pub use peak::{measure_fma_peak, MIN_SLICE_FLOPS};

use anychip_port::{
    invalid, BinaryOp, Buffer, Capabilities, CompareOp, Composite, DType, Distribution, Handled, Port, PortError,
    PortOptions, ReduceOp, Registry, Result, UnaryOp, View,
};
use std::sync::{Arc, OnceLock};

/// The CPU port: a thread pool plus the kernels in this crate.
pub struct CpuPort {
    pool: rayon::ThreadPool,
    threads: usize,
    peak: OnceLock<f64>,
    blas: Option<&'static blas::Blas>,
}

/// A CPU port with `threads` workers (None: all available cores).
pub fn new(threads: Option<usize>) -> CpuPort {
    CpuPort::new(threads).expect("the OS refused to start the CPU port's worker threads")
}

/// Register the `cpu` port.
pub fn register(reg: &mut Registry) {
    reg.register(
        "cpu",
        "fast CPU port: threads, SIMD, gemm matmul, fused composites (default)",
        Box::new(|o: &PortOptions| Ok(Arc::new(CpuPort::new(o.threads)?) as Arc<dyn Port>)),
    );
}

impl CpuPort {
    /// A CPU port with `threads` workers (None: all available cores), or why threads failed.
    pub fn new(threads: Option<usize>) -> Result<CpuPort> {
        CpuPort::with_blas(threads, &blas::Choice::from_env())
    }

    /// [`CpuPort::new`] with its f32 GEMM chosen by `blas` rather than by `ANYCHIP_BLAS`.
    pub fn with_blas(threads: Option<usize>, blas: &blas::Choice) -> Result<CpuPort> {
        isa::check_env().map_err(PortError::Invalid)?;
        let blas = blas::resolve(blas)?;
        let threads = threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("anychip-cpu-{i}"))
            .start_handler(move |_| blas::set_current(blas))
            .build()
            .map_err(|e| PortError::Device(format!("cannot start {threads} worker threads: {e}; try --threads 1")))?;
        Ok(CpuPort { pool, threads, peak: OnceLock::new(), blas })
    }

    /// Worker threads in this port's pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The vendor BLAS this port multiplies f32 on, if `ANYCHIP_BLAS` (or `with_blas`) chose one.
    pub fn vendor_blas(&self) -> Option<&'static blas::Blas> {
        self.blas
    }

    /// What multiplies f32 here: the vendor BLAS (name, version, file) or "gemm crate" (naming its
    /// kernel set when `ANYCHIP_CPU_ISA` caps it below its own choice).
    pub fn f32_matmul(&self) -> String {
        let gemm = match isa::gemm_kernels() {
            isa::GemmKernels::Own => "gemm crate",
            isa::GemmKernels::Fma => "gemm crate (its avx2 kernels)",
        };
        self.blas.map_or_else(|| gemm.to_string(), |b| b.about.clone())
    }

    /// Measured fp32 FMA peak of this port's thread count (measured once, then cached).
    pub fn peak_flops_f32(&self) -> f64 {
        *self.peak.get_or_init(|| measure_fma_peak(self.threads))
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        self.pool.install(f)
    }
}

/// Composite families with a fused kernel in this port.
pub const FUSED: [&str; 18] = Composite::NAMES;

impl Port for CpuPort {
    fn name(&self) -> &str {
        "cpu"
    }

    fn capabilities(&self) -> Capabilities {
        let simd = caps::simd();
        let bf16 = prim::bf16_matmul_engine();
        Capabilities {
            device: format!(
                "{}, {} thread{}, simd: {}, kernels: {}, f32 matmul: {}, bf16 matmul: {}",
                caps::cpu_model(),
                self.threads,
                if self.threads == 1 { "" } else { "s" },
                if simd.is_empty() { "none".to_string() } else { simd.join(" ") },
                isa::about(),
                self.f32_matmul(),
                bf16.unwrap_or("widened to f32")
            ),
            storage: vec![DType::F32, DType::BF16, DType::I32],
            arithmetic: vec![DType::F32, DType::BF16],
            fast_matmul: if bf16.is_some() { vec![DType::F32, DType::BF16] } else { vec![DType::F32] },
            fused: FUSED.to_vec(),
            max_alloc: isize::MAX as usize,
            memory: None,
            peak_flops_f32: Some(self.peak_flops_f32()),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        buffer::alloc(bytes)
    }

    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        // On a worker of this pool every `run` below is inline: no handoff per call.
        self.pool.install(f)
    }

    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let h = buffer::host(dst)?;
        if offset.checked_add(src.len()).is_none_or(|e| e > h.bytes_len()) {
            return invalid(format!(
                "write of {} bytes at {offset} overruns a {}-byte buffer",
                src.len(),
                h.bytes_len()
            ));
        }
        // SAFETY: in bounds; the caller's host slice cannot alias port memory it does not own.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), h.ptr().add(offset), src.len()) };
        Ok(())
    }

    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let h = buffer::host(src)?;
        if offset.checked_add(dst.len()).is_none_or(|e| e > h.bytes_len()) {
            return invalid(format!(
                "read of {} bytes at {offset} overruns a {}-byte buffer",
                dst.len(),
                h.bytes_len()
            ));
        }
        // SAFETY: in bounds; `dst` is a distinct host slice.
        unsafe { std::ptr::copy_nonoverlapping(h.ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()> {
        let (s, d) = (buffer::host(src)?, buffer::host(dst)?);
        let fits = |o: usize, len: usize| o.checked_add(bytes).is_some_and(|e| e <= len);
        if !fits(src_offset, s.bytes_len()) || !fits(dst_offset, d.bytes_len()) {
            return invalid(format!("copy of {bytes} bytes overruns its source or destination buffer"));
        }
        // SAFETY: in bounds; `ptr::copy` allows overlap within one buffer.
        unsafe { std::ptr::copy(s.ptr().add(src_offset), d.ptr().add(dst_offset), bytes) };
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // Every call finishes before it returns.
        Ok(())
    }

    fn fill(&self, out: &View, value: f64) -> Result<()> {
        self.run(|| prim::movement::fill(out, value))
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        self.run(|| prim::movement::cast(x, out))
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        self.run(|| prim::movement::copy_strided(x, out))
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        self.run(|| prim::elementwise::unary(op, x, out))
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.run(|| prim::elementwise::binary(op, a, b, out))
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.run(|| prim::elementwise::compare(op, a, b, out))
    }
    fn select(&self, cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
        self.run(|| prim::elementwise::select(cond, a, b, out))
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        self.run(|| prim::reduce::reduce(op, x, out))
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        self.run(|| prim::matmul::matmul(a, b, out, alpha, beta))
    }
    fn gather_rows(&self, table: &View, idx: &View, out: &View) -> Result<()> {
        self.run(|| prim::rows::gather_rows(table, idx, out))
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        self.run(|| prim::rows::scatter_add_rows(src, idx, out))
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        self.run(|| prim::random::random(dist, seed, offset, out))
    }

    fn composite(&self, call: &Composite) -> Result<Handled> {
        self.run(|| fused::run(call))
    }
}
