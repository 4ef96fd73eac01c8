//! alloc, write, read, copy: byte-addressed transfers on word-addressed GPU buffers.
//!
//! wgpu copies and writes need 4-byte alignment; anything else goes through the byte-copy
//! kernel, which owns whole destination words and keeps the bytes outside the range.

use crate::gpu::Gpu;
use crate::launch::{grid, run, Params};
use crate::memory::{check_range, gpu, GpuMemory};
use crate::shader::{Slot, BYTES};
use anychip_port::{Buffer, DType, PortError, Result};
use std::sync::Arc;

/// Allocate `bytes` (contents unspecified), from the pool when one of its class is free.
pub fn alloc(g: &Gpu, bytes: usize) -> Result<Buffer> {
    Ok(Buffer(Arc::new(GpuMemory::new(&g.device, &g.pool, bytes, g.max_alloc())?)))
}

fn words(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| PortError::Unsupported(format!("{what}: byte offsets past 4 GiB")))
}

/// Byte copy between wgpu buffers through the kernel (any alignment, distinct buffers).
fn copy_bytes(g: &Gpu, src: &GpuMemory, so: usize, dst: &GpuMemory, d0: usize, len: usize) -> Result<()> {
    let (w0, w1) = (d0 / 4, (d0 + len).div_ceil(4));
    let mut p = Params::new(w1 - w0);
    p.set(2, words("copy", w0)?).set(3, words("copy", so)?).set(4, words("copy", d0)?).set(5, words("copy", len)?);
    let slots = [Slot::write("out", DType::I32), Slot::read("a", DType::I32)];
    run(g, "bytes", BYTES, "main", &slots, &[], &[dst, src], false, &p, grid(w1 - w0)?)
}

/// Copy host bytes into `dst` at `offset`, ordered after every call issued before.
pub fn write(g: &Gpu, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
    let mem = gpu("write dst", dst)?;
    check_range("write", offset, src.len(), mem.bytes_len())?;
    if src.is_empty() {
        return Ok(());
    }
    let staging = g.upload(src)?;
    if offset.is_multiple_of(4) && src.len().is_multiple_of(4) {
        g.copy_aligned(&staging, 0, mem, offset as u64, src.len() as u64);
    } else {
        let tmp = GpuMemory::wrap(&g.pool, staging, src.len());
        copy_bytes(g, &tmp, 0, mem, offset, src.len())?;
    }
    mem.mirror_write(offset, src);
    Ok(())
}

/// Copy device bytes at `offset` into `dst`: waits for the work that precedes it.
pub fn read(g: &Gpu, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
    let mem = gpu("read src", src)?;
    check_range("read", offset, dst.len(), mem.bytes_len())?;
    if dst.is_empty() {
        return Ok(());
    }
    let (w0, w1) = (offset / 4 * 4, (offset + dst.len()).div_ceil(4) * 4);
    let bytes = g.download(mem.raw(), w0 as u64, (w1 - w0) as u64)?;
    dst.copy_from_slice(&bytes[offset - w0..offset - w0 + dst.len()]);
    Ok(())
}

/// Device-to-device byte copy; overlapping ranges of one buffer behave like memmove.
pub fn copy(g: &Gpu, src: &Buffer, so: usize, dst: &Buffer, d0: usize, len: usize) -> Result<()> {
    let (s, d) = (gpu("copy src", src)?, gpu("copy dst", dst)?);
    check_range("copy src", so, len, s.bytes_len())?;
    check_range("copy dst", d0, len, d.bytes_len())?;
    if len == 0 {
        return Ok(());
    }
    if std::ptr::eq(s, d) {
        // Through a temporary: wgpu forbids copies within one buffer, and a kernel reading and
        // writing overlapping words would race.
        let tmp = Buffer(Arc::new(GpuMemory::new(&g.device, &g.pool, len, g.max_alloc())?));
        copy(g, src, so, &tmp, 0, len)?;
        return copy(g, &tmp, 0, dst, d0, len);
    }
    if so.is_multiple_of(4) && d0.is_multiple_of(4) && len.is_multiple_of(4) {
        g.copy_aligned(s.raw(), so as u64, d, d0 as u64, len as u64);
        Ok(())
    } else {
        d.mirror_clear();
        copy_bytes(g, s, so, d, d0, len)
    }
}
