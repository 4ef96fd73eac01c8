//! Host memory, view validation, and element load/store: the only code that touches bytes.
//!
//! Every primitive is written as load (inputs to `Vec<f64>` in row-major order), compute,
//! store (round once to the output dtype). Inputs are fully read before the output is
//! written, so an `out` that aliases an input, with any layout, still sees the old values.

use anychip_port::{bf16_to_f32, f32_to_bf16, Buffer, DType, DeviceMemory, PortError, Result, View};
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// A host allocation owned by the `ref` port.
///
/// Interior mutability comes from a `Mutex`, so there is no `unsafe` here at all. The engine
/// never issues overlapping writes concurrently, and `out` aliases an input only with an
/// identical layout; the lock therefore never contends in practice, and every primitive takes
/// it at most once at a time (load, then store), so it cannot deadlock even when `out` is an
/// input. A poisoned lock (a panic elsewhere while held) is recovered: bytes are always valid.
pub struct HostMemory {
    bytes: Mutex<Vec<u8>>,
    len: usize,
}

impl HostMemory {
    /// Zeroed memory of `bytes` bytes, or `OutOfMemory` instead of aborting the process.
    pub fn new(bytes: usize) -> Result<HostMemory> {
        let mut v = Vec::new();
        v.try_reserve_exact(bytes)
            .map_err(|e| PortError::OutOfMemory { bytes, detail: format!("ref port host allocation failed: {e}") })?;
        v.resize(bytes, 0);
        Ok(HostMemory { bytes: Mutex::new(v), len: bytes })
    }

    /// Lock the bytes for reading or writing.
    pub fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DeviceMemory for HostMemory {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn bytes(&self) -> usize {
        self.len
    }
}

/// The `ref` memory behind `buf`, or an error naming the argument when another port owns it.
pub fn host<'a>(what: &str, buf: &'a Buffer) -> Result<&'a HostMemory> {
    buf.downcast::<HostMemory>().ok_or_else(|| {
        PortError::Invalid(format!(
            "{what}: buffer was not allocated by the ref port; allocate it with this port's alloc"
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

/// Validate a view: rank of strides, ownership, and every element inside its buffer.
pub fn check_view(what: &str, v: &View) -> Result<()> {
    let l = &v.layout;
    if l.strides.len() != l.shape.len() {
        return Err(PortError::Invalid(format!(
            "{what}: shape {:?} has rank {} but strides {:?} have {} entries",
            l.shape,
            l.shape.len(),
            l.strides,
            l.strides.len()
        )));
    }
    let mem = host(what, &v.buf)?;
    anychip_port::check::in_bounds(what, v, mem.bytes() / v.dtype.size())
}

pub use anychip_port::check::{float as check_float, shape as check_shape};

/// Raw bits of element `e` (bf16 in the low 16 bits).
fn get_bits(bytes: &[u8], dtype: DType, e: usize) -> u32 {
    let s = dtype.size();
    let b = &bytes[e * s..(e + 1) * s];
    match dtype {
        DType::BF16 => u16::from_ne_bytes([b[0], b[1]]) as u32,
        DType::F32 | DType::I32 => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
    }
}

fn set_bits(bytes: &mut [u8], dtype: DType, e: usize, bits: u32) {
    let s = dtype.size();
    let b = &mut bytes[e * s..(e + 1) * s];
    match dtype {
        DType::BF16 => b.copy_from_slice(&(bits as u16).to_ne_bytes()),
        DType::F32 | DType::I32 => b.copy_from_slice(&bits.to_ne_bytes()),
    }
}

/// Exact value of stored bits (every f32, bf16 and i32 is representable in f64).
pub fn decode(dtype: DType, bits: u32) -> f64 {
    match dtype {
        DType::F32 => f32::from_bits(bits) as f64,
        DType::BF16 => bf16_to_f32(bits as u16) as f64,
        DType::I32 => bits as i32 as f64,
    }
}

/// Round `x` to `dtype`: to f32 first (nearest-even), then bf16 by the contract's rule;
/// to i32 by truncation toward zero (out of range saturates, NaN gives 0, as Rust's `as`).
pub fn encode(dtype: DType, x: f64) -> u32 {
    match dtype {
        DType::F32 => (x as f32).to_bits(),
        DType::BF16 => f32_to_bf16(x as f32) as u32,
        DType::I32 => x as i32 as u32,
    }
}

/// Element bits of a validated view in row-major order.
pub fn load_bits(what: &str, v: &View) -> Result<Vec<u32>> {
    check_view(what, v)?;
    let mem = host(what, &v.buf)?.lock();
    Ok(v.layout.indices().map(|e| get_bits(&mem, v.dtype, e)).collect())
}

/// Element values of a validated view in row-major order, exactly, as f64.
pub fn load(what: &str, v: &View) -> Result<Vec<f64>> {
    Ok(load_bits(what, v)?.into_iter().map(|b| decode(v.dtype, b)).collect())
}

/// Write element bits in row-major order (a broadcast `out` keeps the last write).
pub fn store_bits(what: &str, v: &View, bits: &[u32]) -> Result<()> {
    check_view(what, v)?;
    if bits.len() != v.numel() {
        return Err(PortError::Invalid(format!("{what}: {} values for a view of {} elements", bits.len(), v.numel())));
    }
    let mut mem = host(what, &v.buf)?.lock();
    for (e, &b) in v.layout.indices().zip(bits) {
        set_bits(&mut mem, v.dtype, e, b);
    }
    Ok(())
}

/// Round f64 values to the view's dtype and write them in row-major order.
pub fn store(what: &str, v: &View, vals: &[f64]) -> Result<()> {
    let bits: Vec<u32> = vals.iter().map(|&x| encode(v.dtype, x)).collect();
    store_bits(what, v, &bits)
}
