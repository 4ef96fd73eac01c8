//! Helpers shared by the ref port's tests: upload host data, read views back, build layouts.
#![allow(dead_code)]

use anychip_port::{Buffer, DType, Layout, Port, View};
use anychip_port_ref::RefPort;

pub fn port() -> RefPort {
    anychip_port_ref::new()
}

fn upload(p: &RefPort, bytes: Vec<u8>, dtype: DType, shape: &[usize]) -> View {
    let buf = p.alloc(bytes.len()).unwrap();
    p.write(&buf, 0, &bytes).unwrap();
    View::contiguous(buf, dtype, shape)
}

pub fn f32s(p: &RefPort, x: &[f32], shape: &[usize]) -> View {
    upload(p, x.iter().flat_map(|v| v.to_ne_bytes()).collect(), DType::F32, shape)
}

/// Upload bf16 bit patterns.
pub fn bf16s(p: &RefPort, bits: &[u16], shape: &[usize]) -> View {
    upload(p, bits.iter().flat_map(|v| v.to_ne_bytes()).collect(), DType::BF16, shape)
}

pub fn i32s(p: &RefPort, x: &[i32], shape: &[usize]) -> View {
    upload(p, x.iter().flat_map(|v| v.to_ne_bytes()).collect(), DType::I32, shape)
}

/// A fresh contiguous buffer of `shape` filled with a sentinel (so untouched outputs show).
pub fn empty(p: &RefPort, dtype: DType, shape: &[usize]) -> View {
    let n: usize = shape.iter().product();
    let buf = p.alloc(n * dtype.size()).unwrap();
    p.write(&buf, 0, &vec![0x7f; n * dtype.size()]).unwrap();
    View::contiguous(buf, dtype, shape)
}

/// The same buffer seen through another layout.
pub fn restride(v: &View, shape: &[usize], strides: &[usize], offset: usize) -> View {
    View { buf: v.buf.clone(), dtype: v.dtype, layout: Layout { shape: shape.into(), strides: strides.into(), offset } }
}

fn raw(p: &RefPort, buf: &Buffer) -> Vec<u8> {
    let mut b = vec![0u8; buf.bytes()];
    p.read(buf, 0, &mut b).unwrap();
    b
}

/// Element bits of a view in row-major order (bf16 in the low half).
pub fn bits(p: &RefPort, v: &View) -> Vec<u32> {
    let b = raw(p, &v.buf);
    let s = v.dtype.size();
    v.layout
        .indices()
        .map(|e| {
            let c = &b[e * s..(e + 1) * s];
            if s == 2 {
                u16::from_ne_bytes([c[0], c[1]]) as u32
            } else {
                u32::from_ne_bytes([c[0], c[1], c[2], c[3]])
            }
        })
        .collect()
}

/// Values of a float view as f32 (bf16 widened exactly).
pub fn read_f32(p: &RefPort, v: &View) -> Vec<f32> {
    bits(p, v)
        .into_iter()
        .map(|b| if v.dtype == DType::BF16 { f32::from_bits(b << 16) } else { f32::from_bits(b) })
        .collect()
}

pub fn read_i32(p: &RefPort, v: &View) -> Vec<i32> {
    bits(p, v).into_iter().map(|b| b as i32).collect()
}

/// Bit-exact comparison that also distinguishes -0 from +0 and treats NaN as equal to NaN.
pub fn assert_same(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length: got {got:?} want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(same, "element {i}: got {g:?} want {w:?} (all: got {got:?} want {want:?})");
    }
}

/// Assert an `Invalid` error whose message mentions `needle`.
pub fn assert_invalid<T: std::fmt::Debug>(r: anychip_port::Result<T>, needle: &str) {
    match r {
        Err(anychip_port::PortError::Invalid(m)) => {
            assert!(m.contains(needle), "message {m:?} lacks {needle:?}")
        }
        other => panic!("expected Invalid mentioning {needle:?}, got {other:?}"),
    }
}
