//! Throughput of one bf16 product shape, by wall clock and by CPU time (for tuning on a shared,
//! noisy machine: CPU time counts only the time this process's threads were running).
//!
//! `cargo run --release -p anychip-port-cpu --example bf16_tune -- THREADS M K N fwd|dx|dw [REPEATS]`
//! fwd: [M,K] x W^T (W [N,K]); dx: [M,K] x [K,N] row-major; dw: X^T [M,K] (X [K,M]) x [K,N].

use anychip_port::{DType, Layout, Port, View};
use std::time::Instant;

fn cpu_ns() -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

fn view(port: &dyn Port, shape: [usize; 3], strides: [usize; 3], dtype: DType) -> View {
    let n: usize = shape.iter().product();
    let buf = port.alloc(n * dtype.size()).unwrap();
    let data: Vec<u8> = match dtype {
        DType::BF16 => {
            (0..n).flat_map(|i| anychip_port::f32_to_bf16((i % 97) as f32 * 0.01 - 0.48).to_le_bytes()).collect()
        }
        _ => (0..n).flat_map(|i| ((i % 97) as f32 * 0.01 - 0.48).to_le_bytes()).collect(),
    };
    port.write(&buf, 0, &data).unwrap();
    View { buf, dtype, layout: Layout { shape: shape.to_vec(), strides: strides.to_vec(), offset: 0 } }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let p = |i: usize| a[i].parse::<usize>().unwrap();
    let (threads, m, k, n, kind) = (p(1), p(2), p(3), p(4), a[5].as_str());
    let reps = a.get(6).and_then(|s| s.parse().ok()).unwrap_or(10);
    let dt = DType::parse(a.get(7).map(|s| s.as_str()).unwrap_or("bf16")).unwrap();
    let port = anychip_port_cpu::new(Some(threads));
    let (x, y) = match kind {
        "fwd" => (view(&port, [1, m, k], [0, k, 1], dt), view(&port, [1, k, n], [0, 1, k], dt)),
        "dx" => (view(&port, [1, m, k], [0, k, 1], dt), view(&port, [1, k, n], [0, n, 1], dt)),
        _ => (view(&port, [1, m, k], [0, 1, m], dt), view(&port, [1, k, n], [0, n, 1], dt)),
    };
    let out = view(&port, [1, m, n], [0, n, 1], DType::F32);
    port.matmul(&x, &y, &out, 1.0, 0.0).unwrap();
    let (c0, t0) = (cpu_ns(), Instant::now());
    for _ in 0..reps {
        port.matmul(&x, &y, &out, 1.0, 0.0).unwrap();
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), (cpu_ns() - c0) as f64 * 1e-9);
    let flop = 2.0 * (m * n * k) as f64 * reps as f64;
    println!(
        "{kind} [{m},{k}]x[{k},{n}] {dt} on {threads}: {:.1} GFLOP/s wall, {:.1} GFLOP/s per busy core",
        flop / wall / 1e9,
        flop / cpu / 1e9 * 1.0
    );
}
