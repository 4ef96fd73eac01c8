//! A MoE layer's expert products as one `grouped_linear` call against one `linear` call per
//! expert (what `moe_experts` ran before the composite), alternated call for call, medians and
//! minimums in milliseconds. The default sizes are moe-tiny's at 16 x 128 tokens, top-2: 4096
//! rows over 8 experts (uneven, 330 to 700 rows), d = 256, experts of width F = 340 (up
//! [680, 256], down [256, 340]).
//!
//! `cargo run --release -p anychip-port-cpu --example grouped_bench -- [threads] [repeats] [bf16] [rows,rows,...]`

use anychip_port::{Composite, DType, Handled, Layout, Port, View};
use std::time::Instant;

fn tensor(port: &dyn Port, shape: &[usize], dtype: DType) -> View {
    let n: usize = shape.iter().product();
    let v = View::contiguous(port.alloc(n * dtype.size()).expect("alloc"), dtype, shape);
    port.random(anychip_port::Distribution::Normal, n as u64, 0, &v).expect("random");
    v
}

fn rows(v: &View, start: usize, n: usize) -> View {
    let c = v.shape()[1];
    View { layout: Layout { shape: vec![n, c], strides: vec![c, 1], offset: v.layout.offset + start * c }, ..v.clone() }
}

fn run(port: &dyn Port, calls: &[Composite]) {
    for c in calls {
        assert_eq!(port.composite(c).unwrap(), Handled::Yes);
    }
}

/// The per-expert `linear` calls doing what a grouped call does.
fn per_group(call: &Composite) -> Vec<Composite> {
    let mut v = Vec::new();
    match call {
        Composite::GroupedLinearFwd { x, ws, offsets, y } => {
            for (e, w) in offsets.windows(2).enumerate().filter(|(_, w)| w[1] > w[0]) {
                let (s, n) = (w[0], w[1] - w[0]);
                v.push(Composite::LinearFwd { x: rows(x, s, n), w: ws[e].clone(), b: None, y: rows(y, s, n) });
            }
        }
        Composite::GroupedLinearBwd { x, ws, dy, offsets, dx, dws } => {
            for (e, w) in offsets.windows(2).enumerate().filter(|(_, w)| w[1] > w[0]) {
                let (s, n) = (w[0], w[1] - w[0]);
                v.push(Composite::LinearBwd {
                    x: rows(x, s, n),
                    w: ws[e].clone(),
                    dy: rows(dy, s, n),
                    dx: dx.as_ref().map(|d| rows(d, s, n)),
                    dw: dws[e].clone(),
                    db: None,
                });
            }
        }
        _ => unreachable!(),
    }
    v
}

fn stats(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|s| s.parse().ok());
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let dt = if args.get(3).map(String::as_str) == Some("bf16") { DType::BF16 } else { DType::F32 };
    let sizes: Vec<usize> = args
        .get(4)
        .map(|s| s.split(',').map(|x| x.parse().expect("rows")).collect())
        .unwrap_or(vec![380, 620, 510, 450, 540, 700, 330, 566]);
    let p = anychip_port_cpu::new(threads);
    let (d, f) = (256, 340);
    let s: usize = sizes.iter().sum();
    let mut offsets = vec![0];
    sizes.iter().for_each(|n| offsets.push(offsets.last().unwrap() + n));
    let e = sizes.len();
    let (x, h, a, y) =
        (tensor(&p, &[s, d], dt), tensor(&p, &[s, 2 * f], dt), tensor(&p, &[s, f], dt), tensor(&p, &[s, d], dt));
    let (dx, dh, da, dy) =
        (tensor(&p, &[s, d], dt), tensor(&p, &[s, 2 * f], dt), tensor(&p, &[s, f], dt), tensor(&p, &[s, d], dt));
    let up: Vec<View> = (0..e).map(|_| tensor(&p, &[2 * f, d], dt)).collect();
    let down: Vec<View> = (0..e).map(|_| tensor(&p, &[d, f], dt)).collect();
    let d_up: Vec<Option<View>> = (0..e).map(|_| Some(tensor(&p, &[2 * f, d], dt))).collect();
    let d_down: Vec<Option<View>> = (0..e).map(|_| Some(tensor(&p, &[d, f], dt))).collect();
    let o = offsets.clone();
    let cases = [
        ("up fwd", Composite::GroupedLinearFwd { x: x.clone(), ws: up.clone(), offsets: o.clone(), y: h.clone() }),
        ("down fwd", Composite::GroupedLinearFwd { x: a.clone(), ws: down.clone(), offsets: o.clone(), y }),
        ("down bwd", Composite::GroupedLinearBwd { x: a, ws: down, dy, offsets: o.clone(), dx: Some(da), dws: d_down }),
        ("up bwd", Composite::GroupedLinearBwd { x, ws: up, dy: dh, offsets: o, dx: Some(dx), dws: d_up }),
    ];
    println!(
        "{} threads, {dt}, {s} rows in groups {sizes:?}, {repeats} alternated repeats: median (min) ms",
        p.threads()
    );
    println!("{:10} {:>18} {:>18}", "product", "per-expert linear", "grouped_linear");
    let (mut tot_a, mut tot_b) = (0.0, 0.0);
    for (name, grouped) in &cases {
        let (one, each) = (std::slice::from_ref(grouped), per_group(grouped));
        run(&p, one);
        run(&p, &each);
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t = Instant::now();
            run(&p, &each);
            ta.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            run(&p, one);
            tb.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let ((ma, na), (mb, nb)) = (stats(ta), stats(tb));
        tot_a += ma;
        tot_b += mb;
        println!("{name:10} {ma:>10.2} ({na:5.2}) {mb:>10.2} ({nb:5.2})");
    }
    println!("{:10} {tot_a:>10.2} {:7} {tot_b:>10.2}", "sum", "");
}
