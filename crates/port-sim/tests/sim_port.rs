//! The sim port's contract: values through the values port in debug mode, nothing held in
//! shapes-only mode, every allocation tracked, and the clock advanced by the cost model.

use anychip_port::{Composite, DType, Handled, Port, View};
use anychip_port_sim::{open, Fused, SimOptions};
use std::sync::Arc;

fn sim(values: bool, fused: Fused) -> Arc<anychip_port_sim::SimPort> {
    let values = values.then(|| Arc::new(anychip_port_ref::new()) as Arc<dyn Port>);
    open("h100", &SimOptions { fused, values, ..Default::default() }).unwrap()
}

fn upload(p: &dyn Port, data: &[f32], shape: &[usize]) -> View {
    let buf = p.alloc(data.len() * 4).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    p.write(&buf, 0, &bytes).unwrap();
    View::contiguous(buf, DType::F32, shape)
}

fn download(p: &dyn Port, v: &View) -> Vec<f32> {
    let mut bytes = vec![0u8; v.numel() * 4];
    p.read(&v.buf, 0, &mut bytes).unwrap();
    bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn debug_mode_computes_what_the_values_port_computes() {
    let s = sim(true, Fused::Profile);
    let r = anychip_port_ref::new();
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let b: Vec<f32> = (0..8).map(|i| 0.5 - i as f32 * 0.125).collect();
    let run = |p: &dyn Port| {
        let (x, w) = (upload(p, &a, &[3, 4]), upload(p, &b, &[2, 4]));
        let y = View::contiguous(p.alloc(6 * 4).unwrap(), DType::F32, &[3, 2]);
        anychip_decomp::dispatch(p, &Composite::LinearFwd { x, w, b: None, y: y.clone() }).unwrap();
        download(p, &y)
    };
    assert_eq!(run(&*s), run(&r));
    assert!(s.modelled_seconds().unwrap() > 0.0);
}

#[test]
fn shapes_only_holds_no_values_but_counts_every_byte() {
    let s = sim(false, Fused::Profile);
    let big = s.alloc(40 << 30).unwrap(); // 40 GiB: no memory behind it
    let small = s.alloc(1 << 20).unwrap();
    assert_eq!(s.live_bytes(), (40 << 30) + (1 << 20));
    drop(big);
    assert_eq!(s.live_bytes(), 1 << 20);
    assert_eq!(s.peak_bytes(), (40 << 30) + (1 << 20));
    let err = s.read(&small, 0, &mut [0u8; 4]).unwrap_err().to_string();
    assert!(err.contains("shapes only") && err.contains("sim:h100+cpu"), "{err}");
}

#[test]
fn a_fused_composite_is_one_kernel_and_an_unfused_one_is_left_to_its_decomposition() {
    let x = |p: &dyn Port| View::contiguous(p.alloc(4096 * 1024 * 4).unwrap(), DType::F32, &[4096, 1024]);
    let fused = sim(false, Fused::All);
    let call = Composite::GeluFwd { kind: anychip_port::GeluKind::Tanh, x: x(&*fused), y: x(&*fused) };
    assert_eq!(fused.composite(&call).unwrap(), Handled::Yes);
    // One streaming kernel: 32 MiB read and written at 3.35 TB/s x 0.85, plus one 5 us launch.
    let want = 2.0 * 4096.0 * 1024.0 * 4.0 / (3.35e12 * 0.85) + 5e-6;
    let got = fused.modelled_seconds().unwrap();
    assert!((got / want - 1.0).abs() < 1e-6, "{got} vs {want}");
    let none = sim(false, Fused::None);
    let call = Composite::GeluFwd { kind: anychip_port::GeluKind::Tanh, x: x(&*none), y: x(&*none) };
    assert_eq!(none.composite(&call).unwrap(), Handled::No);
    anychip_decomp::dispatch(&*none, &call).unwrap();
    // The decomposition makes several passes over the data, each with its own launch.
    assert!(none.modelled_seconds().unwrap() > 3.0 * got, "{} vs {got}", none.modelled_seconds().unwrap());
}

/// The matrix dtypes the sim reports as fast, for h100 with `overrides`.
fn fast_matmul_with(overrides: &[&str]) -> Vec<DType> {
    let opts = SimOptions { overrides: overrides.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    open("h100", &opts).unwrap().capabilities().fast_matmul
}

#[test]
fn bf16_is_a_fast_matmul_dtype_only_when_its_peak_is_above_fp32() {
    // The datasheet H100: 989 bf16 against 67 fp32 TFLOP/s.
    assert_eq!(fast_matmul_with(&[]), vec![DType::F32, DType::BF16]);
    // A CPU-like chip whose bf16 products only widen to f32: bf16 is not faster, so the engine
    // must run bf16 products in f32 on the sim as the measured port does.
    assert_eq!(fast_matmul_with(&["h100.bf16_tflops=0.15", "h100.fp32_tflops=0.2"]), vec![DType::F32]);
    assert_eq!(fast_matmul_with(&["h100.bf16_tflops=0.2", "h100.fp32_tflops=0.2"]), vec![DType::F32]);
    // Just above fp32 it is fast again.
    assert_eq!(fast_matmul_with(&["h100.bf16_tflops=0.21", "h100.fp32_tflops=0.2"]), vec![DType::F32, DType::BF16]);
}
