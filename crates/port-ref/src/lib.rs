//! The reference port: naive, obviously correct, f64 accumulation; the oracle that defines the semantics.
//!
//! Every primitive loads its inputs in row-major order with [`anychip_port::Layout::indices`],
//! computes in f64, and rounds once to the output dtype (to f32, then to bf16 by the contract's
//! nearest-even rule). It is single-threaded, synchronous and slow on purpose: the conformance
//! suite compares every other port against it, so it must be easy to check by reading.
//! Composites are not overridden: on `ref` they run through the default decompositions.

mod elementwise;
mod matmul;
mod memory;
mod movement;
mod random;
mod reduce;
mod rows;

pub use memory::HostMemory;

use anychip_port::{
    BinaryOp, Buffer, Capabilities, CompareOp, DType, DeviceMemory, Distribution, Port, ReduceOp, Registry, Result,
    UnaryOp, View,
};
use memory::{check_range, host};
use std::sync::Arc;

/// Description shown by `anychip ports`.
pub const ABOUT: &str = "host, naive f64-accumulating oracle";

/// The reference port. Stateless: every call runs to completion before returning.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefPort;

/// A new reference port.
pub fn new() -> RefPort {
    RefPort
}

/// Register the reference port under the name `ref`.
pub fn register(reg: &mut Registry) {
    reg.register("ref", ABOUT, Box::new(|_opts| Ok(Arc::new(RefPort) as Arc<dyn Port>)));
}

impl Port for RefPort {
    fn name(&self) -> &str {
        "ref"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            device: ABOUT.into(),
            storage: vec![DType::F32, DType::BF16, DType::I32],
            arithmetic: vec![DType::F32, DType::BF16],
            fast_matmul: vec![],
            fused: vec![],
            max_alloc: isize::MAX as usize,
            memory: None,
            peak_flops_f32: None,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        Ok(Buffer(Arc::new(HostMemory::new(bytes)?)))
    }

    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let mem = host("write dst", dst)?;
        check_range("write", offset, src.len(), mem.bytes())?;
        mem.lock()[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = host("read src", src)?;
        check_range("read", offset, dst.len(), mem.bytes())?;
        dst.copy_from_slice(&mem.lock()[offset..offset + dst.len()]);
        Ok(())
    }

    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()> {
        let (s, d) = (host("copy src", src)?, host("copy dst", dst)?);
        check_range("copy src", src_offset, bytes, s.bytes())?;
        check_range("copy dst", dst_offset, bytes, d.bytes())?;
        // Through a temporary: overlapping ranges of one buffer behave like memmove, and the
        // two locks are never held together.
        let tmp = s.lock()[src_offset..src_offset + bytes].to_vec();
        d.lock()[dst_offset..dst_offset + bytes].copy_from_slice(&tmp);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // Every call is synchronous, so there is never outstanding work.
        Ok(())
    }

    fn fill(&self, out: &View, value: f64) -> Result<()> {
        movement::fill(out, value)
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        movement::cast(x, out)
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        movement::copy_strided(x, out)
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        elementwise::unary(op, x, out)
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::binary(op, a, b, out)
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::compare(op, a, b, out)
    }
    fn select(&self, cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
        elementwise::select(cond, a, b, out)
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        reduce::reduce(op, x, out)
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        matmul::matmul(a, b, out, alpha, beta)
    }
    fn gather_rows(&self, table: &View, idx: &View, out: &View) -> Result<()> {
        rows::gather_rows(table, idx, out)
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        rows::scatter_add_rows(src, idx, out)
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        random::random(dist, seed, offset, out)
    }
}
