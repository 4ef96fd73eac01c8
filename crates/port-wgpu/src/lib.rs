//! A GPU port on wgpu: Vulkan, Metal and DX12 (AMD, Intel, Apple, Qualcomm, Nvidia) and, with
//! Mesa's lavapipe, a CPU that CI can run.
//!
//! Memory is device-only: [`GpuMemory`] owns a pooled `wgpu::Buffer`, the host sees bytes only
//! through [`Port::read`], the one call that waits for the GPU. Every other call records a
//! dispatch into a batched command buffer and returns. The twelve primitives are WGSL kernels
//! in `src/kernels/` (one op family per file); views of any strides are walked on the device.
//! Storage: f32 and i32 natively; bf16 emulated as two 16-bit halves of a u32 word (WGSL has
//! no 16-bit storage type), widened to f32 on load and rounded to nearest-even on store.
//! Composites run through the default decompositions of `anychip-decomp`.

mod gpu;
mod launch;
mod memory;
mod ops;
mod runtime;
mod shader;

pub use memory::GpuMemory;

use anychip_port::{
    BinaryOp, Buffer, Capabilities, CompareOp, DType, Distribution, Port, ReduceOp, Registry, Result, UnaryOp, View,
};
use gpu::Gpu;
use ops::{elementwise, matmul, random, reduce, rows};
use std::sync::Arc;

/// Description shown by `anychip ports`.
pub const ABOUT: &str = "GPU through wgpu (Vulkan / Metal / DX12), WGSL kernels";

/// The wgpu port: one adapter, its queue, a buffer pool and a kernel cache.
pub struct WgpuPort {
    gpu: Gpu,
}

impl WgpuPort {
    /// Open the best adapter wgpu finds; an error says how to get one when there is none.
    pub fn new() -> Result<WgpuPort> {
        Ok(WgpuPort { gpu: Gpu::open()? })
    }

    /// The adapter as wgpu reports it.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.gpu.info
    }
}

/// Register the wgpu port under the name `wgpu`.
pub fn register(reg: &mut Registry) {
    reg.register("wgpu", ABOUT, Box::new(|_opts| Ok(Arc::new(WgpuPort::new()?) as Arc<dyn Port>)));
}

impl Port for WgpuPort {
    fn name(&self) -> &str {
        "wgpu"
    }

    fn capabilities(&self) -> Capabilities {
        let i = &self.gpu.info;
        let l = &self.gpu.limits;
        Capabilities {
            device: format!(
                "{} ({:?}, {:?}, driver {} {}; max buffer {} MiB, binding {} MiB, workgroup {} threads)",
                i.name,
                i.device_type,
                i.backend,
                i.driver,
                i.driver_info,
                l.max_buffer_size >> 20,
                l.max_storage_buffer_binding_size >> 20,
                l.max_compute_invocations_per_workgroup
            ),
            storage: vec![DType::F32, DType::BF16, DType::I32],
            arithmetic: vec![DType::F32, DType::BF16],
            fast_matmul: vec![],
            fused: vec![],
            max_alloc: self.gpu.max_alloc() as usize,
            memory: None,
            peak_flops_f32: None,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        runtime::alloc(&self.gpu, bytes)
    }
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        runtime::write(&self.gpu, dst, offset, src)
    }
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        runtime::read(&self.gpu, src, offset, dst)
    }
    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()> {
        runtime::copy(&self.gpu, src, src_offset, dst, dst_offset, bytes)
    }
    fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize()
    }

    fn fill(&self, out: &View, value: f64) -> Result<()> {
        elementwise::fill(&self.gpu, out, value)
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        elementwise::cast(&self.gpu, x, out)
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        elementwise::copy_strided(&self.gpu, x, out)
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        elementwise::unary(&self.gpu, op, x, out)
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::binary(&self.gpu, op, a, b, out)
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::compare(&self.gpu, op, a, b, out)
    }
    fn select(&self, cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::select(&self.gpu, cond, a, b, out)
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        reduce::reduce(&self.gpu, op, x, out)
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        matmul::matmul(&self.gpu, a, b, out, alpha, beta)
    }
    fn gather_rows(&self, table: &View, idx: &View, out: &View) -> Result<()> {
        rows::gather_rows(&self.gpu, table, idx, out)
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        rows::scatter_add_rows(&self.gpu, src, idx, out)
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        random::random(&self.gpu, dist, seed, offset, out)
    }
}
