//! GFLOP/s of the matrix products GPT training produces, next to the measured FMA peak.
//!
//! `cargo run --release -p anychip-port-cpu --example matmul_bench -- [threads] [repeats] [f32|bf16] [gpt2|tiny]`
//! Each shape runs forward (y = x w^T), and the two backward products (dx = dy w, dw = dy^T x)
//! through the port's `matmul` with transposes as strides, exactly as the engine calls it.
//! With `bf16` the operands are bf16 and the outputs f32, as mixed precision calls it
//! (`ANYCHIP_CPU_BF16_KERNEL=0` measures the widening path instead of the native kernel).

use anychip_port::{DType, Layout, Port, View};
use std::time::Instant;

fn view(port: &dyn Port, shape: [usize; 3], strides: [usize; 3], dtype: DType) -> View {
    let n: usize = shape.iter().product();
    let buf = port.alloc(n * dtype.size()).expect("alloc");
    let vals = (0..n).map(|i| (i % 97) as f32 * 0.01 - 0.48);
    let data: Vec<u8> = match dtype {
        DType::BF16 => vals.flat_map(|v| anychip_port::f32_to_bf16(v).to_le_bytes()).collect(),
        _ => vals.flat_map(|v| v.to_le_bytes()).collect(),
    };
    port.write(&buf, 0, &data).expect("write");
    View { buf, dtype, layout: Layout { shape: shape.to_vec(), strides: strides.to_vec(), offset: 0 } }
}

/// [rows, cols] contiguous as [1, rows, cols], or its transpose [1, cols, rows] without a copy.
fn mat_of(port: &dyn Port, rows: usize, cols: usize, transpose: bool, dtype: DType) -> View {
    let v = view(port, [1, rows, cols], [0, cols, 1], dtype);
    if transpose {
        View { layout: Layout { shape: vec![1, cols, rows], strides: vec![0, 1, cols], offset: 0 }, ..v }
    } else {
        v
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|s| s.parse().ok());
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let dtype = args.get(3).and_then(|s| DType::parse(s)).unwrap_or(DType::F32);
    // Operands in `dtype`, outputs in f32.
    let mat = |port: &dyn Port, r: usize, c: usize, t: bool| mat_of(port, r, c, t, dtype);
    let out = |port: &dyn Port, r: usize, c: usize| mat_of(port, r, c, false, DType::F32);
    let port = anychip_port_cpu::new(threads);
    let peak = port.peak_flops_f32();
    // MATMUL_BENCH_COLD=evict: every timed product starts with its operands out of cache (a
    // 64 MiB fill on the port's threads, which stay awake); =sleep: after a 2 ms pause on the
    // calling thread, so the port's other threads have gone to sleep.
    let cold = std::env::var("MATMUL_BENCH_COLD").unwrap_or_default();
    let junk = (cold == "evict").then(|| view(&port, [1, 1, 16 << 20], [0, 0, 1], DType::F32));
    let evict = || {
        if let Some(junk) = &junk {
            port.fill(junk, 1.0).unwrap();
        } else if cold == "sleep" {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    println!("{}", port.capabilities().device);
    println!("measured fp32 FMA peak: {:.1} GFLOP/s on {} threads; operands {dtype}", peak / 1e9, port.threads());
    // (rows = B*T, in, out) of a GPT block's linears (d -> 3d, d -> d, d -> 4d, 4d -> d) and its
    // LM head: GPT-2 small's at B*T = 2048 (the head at 1024 rows), or with `tiny` the tiny
    // preset's at batch 16 x 128 (d 256, bytes); plus square references.
    let gpt = |rows: usize, d: usize, head_rows: usize, vocab: usize| {
        [
            (rows, d, 3 * d, "qkv"),
            (rows, d, d, "attn proj"),
            (rows, d, 4 * d, "mlp up"),
            (rows, 4 * d, d, "mlp down"),
            (head_rows, d, vocab, "lm head"),
        ]
    };
    let shapes = if args.get(4).map(String::as_str) == Some("tiny") {
        gpt(2048, 256, 2048, 256)
    } else {
        gpt(2048, 768, 1024, 50257)
    };
    println!(
        "{:<10} {:>20} {:>10} {:>10} {:>10} {:>7}",
        "layer", "[N,In]x[In,Out]", "fwd", "dx=dy w", "dw=dy^T x", "%peak"
    );
    for (n, din, dout, name) in shapes {
        let x = mat(&port, n, din, false);
        let wt = mat(&port, dout, din, true); // w [Out,In] seen as w^T [In,Out]
        let w = mat(&port, dout, din, false);
        let y = out(&port, n, dout);
        let dy = mat(&port, n, dout, false);
        let dyt = mat(&port, n, dout, true);
        let dx = out(&port, n, din);
        let dw = out(&port, dout, din);
        let flops = 2.0 * (n * din * dout) as f64;
        let time = |f: &dyn Fn()| {
            f();
            median(
                (0..repeats)
                    .map(|_| {
                        evict();
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let g = [
            flops / time(&|| port.matmul(&x, &wt, &y, 1.0, 0.0).unwrap()) / 1e9,
            flops / time(&|| port.matmul(&dy, &w, &dx, 1.0, 0.0).unwrap()) / 1e9,
            flops / time(&|| port.matmul(&dyt, &x, &dw, 1.0, 0.0).unwrap()) / 1e9,
        ];
        let mean = g.iter().sum::<f64>() / 3.0;
        println!(
            "{name:<10} {:>20} {:>10.1} {:>10.1} {:>10.1} {:>6.0}%",
            format!("[{n},{din}]x[{din},{dout}]"),
            g[0],
            g[1],
            g[2],
            100.0 * mean * 1e9 / peak
        );
    }
    for s in [512usize, 1024, 2048] {
        let (a, b, c) = (mat(&port, s, s, false), mat(&port, s, s, false), out(&port, s, s));
        let t = median(
            (0..repeats)
                .map(|_| {
                    let t = Instant::now();
                    port.matmul(&a, &b, &c, 1.0, 0.0).unwrap();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        println!("square n={s}: {:.1} GFLOP/s (median of {repeats})", 2.0 * (s * s * s) as f64 / t / 1e9);
    }
}
