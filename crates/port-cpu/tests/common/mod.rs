//! Shared test helpers: put values on a port in any layout, read them back, compare with
//! named tolerances that treat NaN as equal to NaN and infinities by sign.
#![allow(dead_code)]

use anychip_port::{bf16_to_f32, f32_to_bf16, DType, Layout, Port, View};

/// Relative and absolute tolerance: |got - want| <= atol + rtol |want|.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub atol: f64,
}

/// Exact (bit patterns may differ only in NaN payloads and the sign of zero).
pub const EXACT: Tol = Tol { rtol: 0.0, atol: 0.0 };
/// Elementwise f32 math: a few ulp between two libm implementations.
pub const F32_ELEM: Tol = Tol { rtol: 4e-6, atol: 1e-6 };
/// f32 sums of up to ~1000 terms against f64 accumulation.
pub const F32_SUM: Tol = Tol { rtol: 1e-5, atol: 1e-4 };
/// f32 matmul (gemm blocks the K sum differently from the oracle's f64 dot product).
pub const F32_MATMUL: Tol = Tol { rtol: 1e-4, atol: 1e-4 };
/// Composite kernels (exp polynomial, f32 row statistics) against f64 math.
pub const F32_FUSED: Tol = Tol { rtol: 1e-4, atol: 2e-5 };
/// bf16 outputs: one rounding step of 2^-8 may land either side of a tie.
pub const BF16: Tol = Tol { rtol: 8e-3, atol: 1e-5 };
/// bf16 results computed from bf16 inputs through sums.
pub const BF16_SUM: Tol = Tol { rtol: 2e-2, atol: 2e-2 };

/// A deterministic generator of test values (xorshift64*), so failures reproduce.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// n values in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

/// Special values sprinkled into inputs for the edge-case sweeps.
pub const SPECIALS: [f32; 6] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e30];

/// Encode f32 values as raw bytes of `dtype`.
pub fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
        DType::I32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
    }
}

/// Decode raw bytes of `dtype` to f32.
pub fn decode(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        DType::BF16 => bytes.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes(c.try_into().unwrap()))).collect(),
        DType::I32 => bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
    }
}

/// A buffer holding `storage` (as `dtype`) seen through `layout`.
pub fn put(port: &dyn Port, storage: &[f32], dtype: DType, layout: Layout) -> View {
    let buf = port.alloc(storage.len() * dtype.size()).unwrap();
    port.write(&buf, 0, &encode(storage, dtype)).unwrap();
    View { buf, dtype, layout }
}

/// A contiguous tensor of `shape` holding `values`.
pub fn tensor(port: &dyn Port, values: &[f32], dtype: DType, shape: &[usize]) -> View {
    assert_eq!(values.len(), shape.iter().product::<usize>());
    put(port, values, dtype, Layout::contiguous(shape))
}

/// An I32 tensor.
pub fn ints(port: &dyn Port, values: &[i32], shape: &[usize]) -> View {
    let buf = port.alloc(values.len() * 4).unwrap();
    port.write(&buf, 0, &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    View::contiguous(buf, DType::I32, shape)
}

/// An uninitialised-looking output: filled with a sentinel so unwritten elements show.
pub fn output(port: &dyn Port, dtype: DType, shape: &[usize]) -> View {
    let n: usize = shape.iter().product();
    tensor(port, &vec![-777.0; n], dtype, shape)
}

/// The logical values of `v` in row-major order.
pub fn get(port: &dyn Port, v: &View) -> Vec<f32> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    port.read(&v.buf, 0, &mut bytes).unwrap();
    let all = decode(&bytes, v.dtype);
    v.layout.indices().map(|i| all[i]).collect()
}

/// The whole buffer behind `v`, decoded (to check that nothing outside the view changed).
pub fn get_all(port: &dyn Port, v: &View) -> Vec<f32> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    port.read(&v.buf, 0, &mut bytes).unwrap();
    decode(&bytes, v.dtype)
}

/// Same storage and layout on another port.
pub fn mirror(from: &dyn Port, v: &View, to: &dyn Port) -> View {
    let mut bytes = vec![0u8; v.buf.bytes()];
    from.read(&v.buf, 0, &mut bytes).unwrap();
    let buf = to.alloc(bytes.len()).unwrap();
    to.write(&buf, 0, &bytes).unwrap();
    View { buf, dtype: v.dtype, layout: v.layout.clone() }
}

/// Panic with the first mismatch between `got` and `want` under `tol`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || g.is_infinite() || g.is_nan() {
            g == w
        } else {
            ((g - w).abs() as f64) <= tol.atol + tol.rtol * (w.abs() as f64)
        };
        assert!(ok, "{what}: element {i}: got {g:e}, want {w:e} (tolerance {tol:?})");
    }
}

/// Tolerance for an output of `dtype`: `f32` when it is F32, else the bf16 one.
pub fn tol_for(dtype: DType, f32_tol: Tol) -> Tol {
    if dtype == DType::BF16 {
        BF16
    } else {
        f32_tol
    }
}

/// Layout variants of a logical shape, each over a storage buffer of the returned length:
/// contiguous, offset by 3, and (rank >= 2) transposed storage of the last two axes.
pub fn layouts(shape: &[usize]) -> Vec<(&'static str, Layout, usize)> {
    let n: usize = shape.iter().product();
    let mut v = vec![("contiguous", Layout::contiguous(shape), n)];
    let mut off = Layout::contiguous(shape);
    off.offset = 3;
    v.push(("offset", off, n + 3));
    if shape.len() >= 2 {
        // Store the last two axes swapped, then view them back: strides (.., 1, rows).
        let r = shape.len();
        let mut st = shape.to_vec();
        st.swap(r - 1, r - 2);
        let base = Layout::contiguous(&st);
        let mut strides = base.strides.clone();
        strides.swap(r - 1, r - 2);
        v.push(("transposed", Layout { shape: shape.to_vec(), strides, offset: 0 }, n));
    }
    v
}
