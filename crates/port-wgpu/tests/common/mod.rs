//! Shared test plumbing: open the port or skip, upload and read views on any port.
#![allow(dead_code)]

use anychip_port::{bf16_to_f32, f32_to_bf16, philox, DType, Layout, Port, View};
use anychip_port_wgpu::WgpuPort;

/// The wgpu port, or `None` with a printed reason when this machine has no adapter.
pub fn port() -> Option<WgpuPort> {
    match WgpuPort::new() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIPPED: no wgpu adapter on this machine ({e})");
            None
        }
    }
}

/// `n` values in [-scale, scale) from Philox stream `seed`, with specials first if asked.
pub fn data(n: usize, seed: u64, scale: f32, specials: bool) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (philox::uniform(seed, i as u64) * 2.0 - 1.0) * scale).collect();
    if specials {
        for (x, s) in v.iter_mut().zip([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0]) {
            *x = s;
        }
    }
    v
}

/// Encode values as `dt` bytes (little-endian).
pub fn encode(v: &[f32], dt: DType) -> Vec<u8> {
    match dt {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BF16 => v.iter().flat_map(|&x| f32_to_bf16(x).to_le_bytes()).collect(),
        DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
    }
}

/// Upload `storage` as `dt` and return a view with `layout`.
pub fn upload(p: &dyn Port, storage: &[f32], dt: DType, layout: Layout) -> View {
    let bytes = encode(storage, dt);
    let buf = p.alloc(bytes.len().max(4)).unwrap();
    p.write(&buf, 0, &bytes).unwrap();
    View { buf, dtype: dt, layout }
}

/// Elements of `v` in row-major order as f64 (bits decoded exactly).
pub fn read(p: &dyn Port, v: &View) -> Vec<f64> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    p.read(&v.buf, 0, &mut bytes).unwrap();
    let s = v.dtype.size();
    v.layout
        .indices()
        .map(|i| {
            let c = &bytes[i * s..i * s + s];
            match v.dtype {
                DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::BF16 => bf16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64,
                DType::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            }
        })
        .collect()
}

/// Raw bits of the elements of `v` in row-major order.
pub fn read_bits(p: &dyn Port, v: &View) -> Vec<u32> {
    let mut bytes = vec![0u8; v.buf.bytes()];
    p.read(&v.buf, 0, &mut bytes).unwrap();
    let s = v.dtype.size();
    v.layout
        .indices()
        .map(|i| {
            let c = &bytes[i * s..i * s + s];
            if s == 2 {
                u16::from_le_bytes([c[0], c[1]]) as u32
            } else {
                u32::from_le_bytes([c[0], c[1], c[2], c[3]])
            }
        })
        .collect()
}

/// Assert |got - want| <= abs + rel |want| elementwise (NaN matches NaN, infinities exactly).
pub fn assert_close(what: &str, got: &[f64], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = g == w
            || (g.is_nan() && w.is_nan())
            || (g.is_finite() && w.is_finite() && (g - w).abs() <= abs + rel * w.abs());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}
