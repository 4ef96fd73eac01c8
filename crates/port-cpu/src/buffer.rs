//! Host memory for the CPU port: 64-byte aligned, shared between threads, recycled through
//! [`crate::block_allocator`] so the steady state of a training loop allocates nothing.
//!
//! Safety argument for the interior mutability. A [`HostBuffer`] hands out raw pointers from
//! `&self`, so several port calls could in principle write the same bytes at once. The port
//! contract rules this out: calls are issued in order by one engine thread and each call returns
//! only after its kernels finished (this port is synchronous), a call writes only its `out`
//! views, and `out` may alias an input only with the same layout (elementwise in place). Inside a
//! call every kernel partitions the output into disjoint regions, one per task, and reads an
//! aliased input element only before writing the same element. Under those rules no byte is
//! written by one thread while another thread reads or writes it.

use crate::block_allocator;
use anychip_port::{Buffer, DeviceMemory, PortError, Result};
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

pub use crate::block_allocator::ALIGN;

/// A type with the buffer alignment, whose dangling pointer stands in for empty buffers.
#[repr(align(64))]
struct CacheLine;

/// A 64-byte aligned block of host memory owned by the CPU port.
pub struct HostBuffer {
    ptr: NonNull<u8>,
    bytes: usize,
}

// SAFETY: a HostBuffer uniquely owns its block (from `block_allocator::take`, or a dangling
// pointer for 0 bytes) and frees it once, in `Drop`, through the allocator's mutex-guarded pool,
// so dropping it on another thread than the one that made it is fine; the bytes are plain
// memory with no thread affinity.
unsafe impl Send for HostBuffer {}
// SAFETY: `&HostBuffer` gives only the base address and the size, never a reference into the
// bytes; every read or write through the address is an `unsafe` access in a kernel, and the
// port contract in the module docs keeps those from racing (calls ordered by the engine, each
// call's tasks writing disjoint parts of its outputs, aliased inputs read before written).
unsafe impl Sync for HostBuffer {}

impl HostBuffer {
    /// Allocate `bytes` bytes: a recycled block, or fresh zeroed memory (never undefined bytes).
    pub fn new(bytes: usize) -> Result<HostBuffer> {
        if bytes == 0 {
            return Ok(HostBuffer { ptr: NonNull::<CacheLine>::dangling().cast(), bytes: 0 });
        }
        block_allocator::take(bytes).map(|ptr| HostBuffer { ptr, bytes }).ok_or(PortError::OutOfMemory {
            bytes,
            detail: "host allocator refused (or size exceeds the address space)".into(),
        })
    }
    /// Base pointer; see the module docs for when writing through it is sound.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // SAFETY: taken from the cache in `new` with this size, and dropped only once.
            unsafe { block_allocator::release(self.ptr, self.bytes) }
        }
    }
}

impl DeviceMemory for HostBuffer {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Wrap a fresh host buffer as a port [`Buffer`].
pub fn alloc(bytes: usize) -> Result<Buffer> {
    Ok(Buffer(Arc::new(HostBuffer::new(bytes)?)))
}

/// The host memory behind `buf`, or an error naming the mix-up.
pub fn host(buf: &Buffer) -> Result<&HostBuffer> {
    buf.downcast::<HostBuffer>().ok_or_else(|| {
        PortError::Invalid("buffer belongs to another port; move it with the engine's `to_port` first".into())
    })
}

impl HostBuffer {
    /// Size in bytes.
    pub fn bytes_len(&self) -> usize {
        self.bytes
    }
}
