//! Host <-> port transfers through any layout. Every function returns the port's error, never
//! panics: the conformance suite reports a failed transfer as a failed check.

use anychip_port::{bf16_to_f32, f32_to_bf16, DType, Layout, Port, Result, View};

/// What [`filled`] outputs hold by default in tests: a value no op under test produces, so
/// that unwritten elements show.
pub const SENTINEL: f32 = -777.0;

/// `values` as little-endian bytes of `dtype` (bf16 rounded to nearest even, I32 truncated).
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
        DType::I32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
    }
}

/// The bits of every element in `bytes` (bf16 in the low half).
fn element_bits(bytes: &[u8], dtype: DType) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(dtype.size()).map(|c| match c {
        [a, b] => u16::from_le_bytes([*a, *b]) as u32,
        [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0, // no dtype has another size
    })
}

/// The value of one element's bits as f32 (exact for every dtype's finite values except I32
/// beyond 2^24).
fn bits_to_f32(bits: u32, dtype: DType) -> f32 {
    match dtype {
        DType::F32 => f32::from_bits(bits),
        DType::BF16 => bf16_to_f32(bits as u16),
        DType::I32 => bits as i32 as f32,
    }
}

fn bits_to_f64(bits: u32, dtype: DType) -> f64 {
    match dtype {
        DType::I32 => bits as i32 as f64,
        _ => bits_to_f32(bits, dtype) as f64,
    }
}

fn upload_bytes(p: &dyn Port, bytes: &[u8], dtype: DType, layout: Layout) -> Result<View> {
    // At least one element, so that a zero-size view still has a buffer to point at.
    let buf = p.alloc(bytes.len().max(dtype.size()))?;
    p.write(&buf, 0, bytes)?;
    Ok(View { buf, dtype, layout })
}

/// Upload `storage` as `dtype` and return the view of it through `layout`.
pub fn upload(p: &dyn Port, storage: &[f32], dtype: DType, layout: Layout) -> Result<View> {
    upload_bytes(p, &encode(storage, dtype), dtype, layout)
}

/// A contiguous `shape` holding `values` as `dtype`.
pub fn upload_contiguous(p: &dyn Port, values: &[f32], dtype: DType, shape: &[usize]) -> Result<View> {
    upload(p, values, dtype, Layout::contiguous(shape))
}

/// A contiguous I32 tensor.
pub fn upload_ints(p: &dyn Port, values: &[i32], shape: &[usize]) -> Result<View> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    upload_bytes(p, &bytes, DType::I32, Layout::contiguous(shape))
}

/// A contiguous BF16 tensor from raw bit patterns.
pub fn upload_bf16_bits(p: &dyn Port, bits: &[u16], shape: &[usize]) -> Result<View> {
    let bytes: Vec<u8> = bits.iter().flat_map(|v| v.to_le_bytes()).collect();
    upload_bytes(p, &bytes, DType::BF16, Layout::contiguous(shape))
}

/// A contiguous `shape` of `dtype` with every element `value`.
pub fn filled(p: &dyn Port, value: f32, dtype: DType, shape: &[usize]) -> Result<View> {
    let n = shape.iter().product();
    upload_contiguous(p, &vec![value; n], dtype, shape)
}

/// A contiguous `shape` of `dtype` holding zeros.
pub fn zeros(p: &dyn Port, dtype: DType, shape: &[usize]) -> Result<View> {
    filled(p, 0.0, dtype, shape)
}

fn whole_buffer(p: &dyn Port, v: &View) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    p.read(&v.buf, 0, &mut bytes)?;
    Ok(bytes)
}

/// The element bits of `v` in row-major order through its layout (bf16 in the low half).
pub fn download_bits(p: &dyn Port, v: &View) -> Result<Vec<u32>> {
    let all: Vec<u32> = element_bits(&whole_buffer(p, v)?, v.dtype).collect();
    v.layout
        .indices()
        .map(|i| {
            all.get(i).copied().ok_or_else(|| {
                anychip_port::PortError::Invalid(format!("view element {i} lies past its {} elements", all.len()))
            })
        })
        .collect()
}

/// The elements of `v` in row-major order as f32 (bits kept).
pub fn download_f32(p: &dyn Port, v: &View) -> Result<Vec<f32>> {
    Ok(download_bits(p, v)?.into_iter().map(|b| bits_to_f32(b, v.dtype)).collect())
}

/// The elements of `v` in row-major order as f64 (I32 exact).
pub fn download(p: &dyn Port, v: &View) -> Result<Vec<f64>> {
    Ok(download_bits(p, v)?.into_iter().map(|b| bits_to_f64(b, v.dtype)).collect())
}

/// Every element of the buffer behind `v`, whatever the layout, as f32.
pub fn download_storage(p: &dyn Port, v: &View) -> Result<Vec<f32>> {
    Ok(element_bits(&whole_buffer(p, v)?, v.dtype).map(|b| bits_to_f32(b, v.dtype)).collect())
}

/// The same storage and layout on another port.
pub fn mirror(from: &dyn Port, v: &View, to: &dyn Port) -> Result<View> {
    upload_bytes(to, &whole_buffer(from, v)?, v.dtype, v.layout.clone())
}
