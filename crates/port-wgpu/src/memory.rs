//! Device buffers and the pool that recycles them.
//!
//! Every allocation is a `wgpu::Buffer` usable as storage and as a copy source/destination,
//! rounded up to a size class so that freed buffers are reused by the next allocation of a
//! similar size (training allocates the same shapes every step; creating Vulkan buffers is
//! far slower than a hash-map lookup). Reusing a buffer while earlier work on it is still
//! queued is safe because the queue runs everything in issue order.

use anychip_port::{Buffer, DeviceMemory, PortError, Result};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Buffers are cached only while the pool holds less than this many bytes.
const POOL_LIMIT: u64 = 4 << 30;
/// Host mirrors are kept only for buffers up to this size (index batches, not weights).
const MIRROR_LIMIT: usize = 1 << 20;

/// Storage | copy usage every port buffer has.
pub fn usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// Capacity actually allocated for `bytes`: a multiple of 4 (shaders address u32 words),
/// a power of two up to 4 KiB, then steps of 1/16 of the next power of two (<= 6.25% waste).
pub fn size_class(bytes: usize) -> u64 {
    let b = (bytes.max(4) as u64).div_ceil(4) * 4;
    if b <= 4096 {
        return b.next_power_of_two();
    }
    let step = b.next_power_of_two() / 16;
    b.div_ceil(step) * step
}

/// Freed buffers by size class.
#[derive(Default)]
pub struct Pool {
    free: Mutex<(HashMap<u64, Vec<wgpu::Buffer>>, u64)>,
}

impl Pool {
    fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let b = g.0.get_mut(&class)?.pop()?;
        g.1 -= class;
        Some(b)
    }
    fn put(&self, class: u64, buf: wgpu::Buffer) {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if g.1 + class <= POOL_LIMIT {
            g.1 += class;
            g.0.entry(class).or_default().push(buf);
        }
    }
    /// Drop every cached buffer (before reporting out-of-memory, so a retry can succeed).
    pub fn trim(&self) {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        g.0.clear();
        g.1 = 0;
    }
}

/// Device memory owned by the wgpu port.
pub struct GpuMemory {
    buf: Option<wgpu::Buffer>,
    bytes: usize,
    class: u64,
    pool: Arc<Pool>,
    /// The bytes as last written by the host, while no kernel has written the buffer since:
    /// lets gather/scatter reject a bad index at the call instead of at the next read.
    mirror: Mutex<Option<Vec<u8>>>,
}

impl GpuMemory {
    /// A buffer of `bytes` from the pool, or a new one.
    pub fn new(device: &wgpu::Device, pool: &Arc<Pool>, bytes: usize, max: u64) -> Result<GpuMemory> {
        let class = size_class(bytes);
        if class > max {
            return Err(PortError::OutOfMemory {
                bytes,
                detail: format!("the adapter binds at most {} MiB per buffer", max >> 20),
            });
        }
        let buf = match pool.take(class) {
            Some(b) => b,
            None => device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("anychip"),
                size: class,
                usage: usage(),
                mapped_at_creation: false,
            }),
        };
        Ok(GpuMemory { buf: Some(buf), bytes, class, pool: pool.clone(), mirror: Mutex::new(None) })
    }

    /// Adopt a buffer created elsewhere with [`usage`] (an upload), pooled when dropped.
    pub fn wrap(pool: &Arc<Pool>, buf: wgpu::Buffer, bytes: usize) -> GpuMemory {
        GpuMemory { class: buf.size(), buf: Some(buf), bytes, pool: pool.clone(), mirror: Mutex::new(None) }
    }

    /// Size in bytes as allocated by the user.
    pub fn bytes_len(&self) -> usize {
        self.bytes
    }

    /// The underlying wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("buffer is present until drop")
    }

    /// Size of the wgpu buffer (>= `bytes`, a multiple of 4).
    pub fn capacity(&self) -> u64 {
        self.class
    }

    /// Record a host write of `src` at `offset` in the mirror.
    pub fn mirror_write(&self, offset: usize, src: &[u8]) {
        let mut m = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        if offset == 0 && src.len() == self.bytes && self.bytes <= MIRROR_LIMIT {
            *m = Some(src.to_vec());
        } else if let Some(v) = m.as_mut() {
            v[offset..offset + src.len()].copy_from_slice(src);
        }
    }

    /// Forget the mirror: a kernel or device copy is about to write this buffer.
    pub fn mirror_clear(&self) {
        *self.mirror.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The host's copy of the bytes, when still valid.
    pub fn mirror(&self) -> Option<Vec<u8>> {
        self.mirror.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for GpuMemory {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.put(self.class, b);
        }
    }
}

impl DeviceMemory for GpuMemory {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The wgpu memory behind `buf`, or an error naming the argument when another port owns it.
pub fn gpu<'a>(what: &str, buf: &'a Buffer) -> Result<&'a GpuMemory> {
    buf.downcast::<GpuMemory>().ok_or_else(|| {
        PortError::Invalid(format!(
            "{what}: buffer was not allocated by the wgpu port; allocate it with this port's alloc"
        ))
    })
}

/// Check that `[offset, offset + len)` lies in a buffer of `size` bytes.
pub fn check_range(what: &str, offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(PortError::Invalid(format!(
            "{what}: bytes [{offset}, {offset}+{len}) are outside the {size}-byte buffer"
        ))),
    }
}
