//! Primitives against the `ref` oracle on what the conformance suite does not reach: bf16
//! outputs whose neighbouring halves belong to different threads, in-place calls, rank-5
//! permuted views, reductions over middle axes and over millions of elements, Philox counters
//! that carry into the high word, unaligned and overlapping runtime copies, and index errors
//! raised on the device.

use anychip_port::{philox, BinaryOp, DType, Distribution, Layout, Port, ReduceOp, UnaryOp, View};
use anychip_port_wgpu::WgpuPort;
use anychip_test_support::{assert_close, get_bits, get_f64, philox_values, port_or_skip, put, with_specials, Tol};

/// The wgpu port, or None (SKIPPED) where this machine has no adapter; a failure instead with
/// ANYCHIP_TEST_WGPU=1.
fn port() -> Option<WgpuPort> {
    port_or_skip("wgpu", WgpuPort::new())
}

/// A call on prepared input views writing `out`.
type Call<'a> = &'a dyn Fn(&dyn Port, &[View], &View);

/// The same call on wgpu and ref with the same inputs; returns (wgpu, ref) row-major values.
fn both(ins: &[(Vec<f32>, DType, Layout)], out: (Vec<f32>, DType, Layout), f: Call) -> Option<(Vec<f64>, Vec<f64>)> {
    let w = port()?;
    let r = anychip_port_ref::new();
    let run = |p: &dyn Port| {
        let views: Vec<View> = ins.iter().map(|(s, d, l)| put(p, s, *d, l.clone())).collect();
        let o = put(p, &out.0, out.1, out.2.clone());
        f(p, &views, &o);
        get_f64(p, &o)
    };
    Some((run(&w), run(&r)))
}

fn lay(shape: &[usize], strides: &[usize], offset: usize) -> Layout {
    Layout { shape: shape.to_vec(), strides: strides.to_vec(), offset }
}

#[test]
fn bf16_outputs_with_stride_two_and_odd_offset_keep_neighbours() {
    // out writes every other bf16 at an odd offset: each u32 word is shared with an element
    // this call must not touch (it holds 7.0 and must survive).
    let x = with_specials(philox_values(783, 1, 3.0));
    let out_init = vec![7.0f32; 2 * 783 + 1];
    let Some((got, want)) = both(
        &[(x, DType::BF16, Layout::contiguous(&[783]))],
        (out_init, DType::BF16, lay(&[783], &[2], 1)),
        &|p, i, o| {
            p.unary(UnaryOp::Exp, &i[0], o).unwrap();
            // Read back the whole buffer through a contiguous view: the untouched halves too.
        },
    ) else {
        return;
    };
    assert_close("exp into strided bf16", &got, &want, Tol { abs: 0.0, rel: 1.0 / 128.0 });
    let w = port().unwrap();
    let o = put(&w, &vec![7.0f32; 2 * 783 + 1], DType::BF16, lay(&[783], &[2], 1));
    let x = put(&w, &philox_values(783, 1, 3.0), DType::BF16, Layout::contiguous(&[783]));
    w.unary(UnaryOp::Neg, &x, &o).unwrap();
    let all = get_f64(&w, &View { layout: Layout::contiguous(&[2 * 783 + 1]), ..o });
    for (i, v) in all.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(*v, 7.0, "element {i} next to a written one was clobbered");
        }
    }
}

#[test]
fn in_place_binary_on_bf16_and_f32() {
    for dt in [DType::F32, DType::BF16] {
        let Some(w) = port() else { return };
        let r = anychip_port_ref::new();
        let run = |p: &dyn Port| {
            let a = put(p, &with_specials(philox_values(1001, 2, 2.0)), dt, Layout::contiguous(&[7, 143]));
            let b = put(p, &philox_values(143, 3, 2.0), dt, lay(&[7, 143], &[0, 1], 0));
            p.binary(BinaryOp::Mul, &a, &b, &a).unwrap();
            p.unary(UnaryOp::Tanh, &a, &a).unwrap();
            get_f64(p, &a)
        };
        assert_close(
            &format!("in place {dt}"),
            &run(&w),
            &run(&r),
            Tol { abs: 1e-6, rel: 2e-6 + (dt == DType::BF16) as u8 as f64 / 128.0 },
        );
    }
}

#[test]
fn rank5_permuted_copy_and_cast() {
    // A [2,3,4,5,6] tensor read through the permutation (4,2,0,3,1) at offset 11.
    let shape = [2usize, 3, 4, 5, 6];
    let cs = Layout::contiguous(&shape).strides;
    let perm = [4usize, 2, 0, 3, 1];
    let pshape: Vec<usize> = perm.iter().map(|&d| shape[d]).collect();
    let pstrides: Vec<usize> = perm.iter().map(|&d| cs[d]).collect();
    let n = 720 + 11;
    for (from, to) in [(DType::F32, DType::F32), (DType::F32, DType::BF16), (DType::BF16, DType::I32)] {
        let Some((got, want)) = both(
            &[(
                if from != DType::BF16 {
                    with_specials(philox_values(n, 4, 100.0))
                } else {
                    philox_values(n, 4, 100.0)
                },
                from,
                lay(&pshape, &pstrides, 11),
            )],
            (vec![0.0; 720], to, Layout::contiguous(&pshape)),
            &|p, i, o| p.cast(&i[0], o).unwrap(),
        ) else {
            return;
        };
        assert_close(&format!("cast {from} -> {to}"), &got, &want, Tol { abs: 0.0, rel: 0.0 });
    }
}

#[test]
fn reduce_middle_axes_of_a_permuted_view() {
    let shape = [3usize, 5, 7, 9];
    let t = lay(&shape, &[1, 3, 15, 105], 0); // column-major storage
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        let Some((got, want)) = both(
            &[(with_specials(philox_values(945, 5, 3.0)), DType::F32, t.clone())],
            (vec![0.0; 27], DType::F32, Layout::contiguous(&[3, 1, 1, 9])),
            &|p, i, o| p.reduce(op, &i[0], o).unwrap(),
        ) else {
            return;
        };
        assert_close(&format!("{op:?} over axes 1, 2"), &got, &want, Tol { abs: 1e-5, rel: 1e-5 });
    }
}

#[test]
fn reduce_of_millions_and_the_two_dimensional_grid() {
    // 2^24 + 3 elements: more than 65535 workgroups of 256, so the grid is two-dimensional.
    let Some(w) = port() else { return };
    let n = (1 << 24) + 3;
    let buf = w.alloc(4 * n).unwrap();
    let x = View::contiguous(buf, DType::F32, &[n]);
    w.fill(&x, 0.5).unwrap();
    w.unary(UnaryOp::Sqrt, &x, &x).unwrap();
    let s = View::contiguous(w.alloc(4).unwrap(), DType::F32, &[1]);
    w.reduce(ReduceOp::Sum, &x, &s).unwrap();
    let want = n as f64 * 0.5f64.sqrt();
    let got = get_f64(&w, &s)[0];
    assert!((got - want).abs() < 1e-4 * want, "sum {got}, want {want}");
    let last = View { layout: lay(&[1], &[1], n - 1), ..x.clone() };
    assert_eq!(get_f64(&w, &last)[0], 0.5f32.sqrt() as f64);
}

#[test]
fn random_is_bit_exact_across_the_32_bit_counter_carry() {
    let Some(w) = port() else { return };
    let seed = 0xdead_beef_0123_4567u64;
    let offset = (1u64 << 32) - 5;
    for dist in [Distribution::Uniform, Distribution::Normal] {
        let o = View::contiguous(w.alloc(4 * 37).unwrap(), DType::F32, &[37]);
        w.random(dist, seed, offset, &o).unwrap();
        let got = get_bits(&w, &o);
        for (i, g) in got.iter().enumerate() {
            let s = offset + i as u64;
            let want = match dist {
                Distribution::Uniform => philox::uniform(seed, s),
                Distribution::Normal => philox::normal(seed, s),
            };
            let g = f32::from_bits(*g);
            if dist == Distribution::Uniform {
                assert_eq!(g.to_bits(), want.to_bits(), "uniform sample {s}");
            } else {
                assert!((g - want).abs() <= 4e-6 * want.abs().max(1.0), "normal sample {s}: {g} vs {want}");
            }
        }
    }
}

#[test]
fn unaligned_and_overlapping_runtime_copies_match_ref() {
    let Some(w) = port() else { return };
    let r = anychip_port_ref::new();
    let run = |p: &dyn Port| {
        let b = p.alloc(103).unwrap();
        let bytes: Vec<u8> = (0..103).map(|i| (i * 37 % 251) as u8).collect();
        p.write(&b, 0, &bytes).unwrap();
        p.write(&b, 5, &[1, 2, 3]).unwrap();
        p.copy(&b, 3, &b, 6, 50).unwrap(); // overlapping, forwards
        p.copy(&b, 60, &b, 57, 41).unwrap(); // overlapping, backwards
        let mut back = vec![0u8; 101];
        p.read(&b, 1, &mut back).unwrap();
        back
    };
    assert_eq!(run(&w), run(&r));
}

#[test]
fn bad_indices_are_errors_at_the_call_or_at_the_next_read() {
    let Some(w) = port() else { return };
    let table = put(&w, &philox_values(12, 6, 1.0), DType::F32, Layout::contiguous(&[4, 3]));
    let out = View::contiguous(w.alloc(4 * 6).unwrap(), DType::F32, &[2, 3]);
    // Written by the host: checked before anything runs.
    let host_ids = put(&w, &[1.0, 4.0], DType::I32, Layout::contiguous(&[2]));
    let e = w.gather_rows(&table, &host_ids, &out).unwrap_err();
    assert!(e.to_string().contains("index 4"), "{e}");
    // Computed on the device (a cast): found by the kernel, reported at synchronize.
    let f = put(&w, &[2.0, -1.0], DType::F32, Layout::contiguous(&[2]));
    let dev_ids = View::contiguous(w.alloc(8).unwrap(), DType::I32, &[2]);
    w.cast(&f, &dev_ids).unwrap();
    w.gather_rows(&table, &dev_ids, &out).unwrap();
    let e = w.synchronize().unwrap_err();
    assert!(e.to_string().contains("index -1"), "{e}");
    // The error is reported once; the port keeps working.
    w.synchronize().unwrap();
    let good = put(&w, &[3.0, 0.0], DType::I32, Layout::contiguous(&[2]));
    w.gather_rows(&table, &good, &out).unwrap();
    assert_eq!(get_f64(&w, &out)[..3], get_f64(&w, &View { layout: lay(&[3], &[1], 9), ..table.clone() })[..]);
}

#[test]
fn matmul_on_tile_edges_with_bf16_inputs_and_f32_out() {
    // M, N, K just past the 64 x 64 x 16 tiles; b broadcast over the batch and transposed.
    let (bt, m, k, n) = (2usize, 65, 33, 130);
    for (din, dout, beta) in
        [(DType::F32, DType::F32, 0.0f32), (DType::BF16, DType::F32, 1.5), (DType::BF16, DType::BF16, 0.0)]
    {
        let Some((got, want)) = both(
            &[
                (philox_values(bt * m * k, 7, 1.0), din, Layout::contiguous(&[bt, m, k])),
                (philox_values(k * n, 8, 1.0), din, lay(&[bt, k, n], &[0, 1, k], 0)),
            ],
            (philox_values(bt * m * n, 9, 1.0), dout, Layout::contiguous(&[bt, m, n])),
            &|p, i, o| p.matmul(&i[0], &i[1], o, 0.75, beta).unwrap(),
        ) else {
            return;
        };
        let tol = if dout == DType::BF16 { 1.0 / 128.0 } else { 2e-5 };
        assert_close(&format!("matmul {din} -> {dout} beta {beta}"), &got, &want, Tol { abs: tol, rel: tol });
    }
}

#[test]
fn scatter_add_rows_accumulates_repeats_in_bf16() {
    let ids = [3.0f32, 0.0, 3.0, 3.0, 1.0];
    let Some((got, want)) = both(
        &[
            (philox_values(5 * 17, 10, 1.0), DType::BF16, Layout::contiguous(&[5, 17])),
            (ids.to_vec(), DType::I32, Layout::contiguous(&[5])),
        ],
        (philox_values(4 * 17, 11, 1.0), DType::BF16, Layout::contiguous(&[4, 17])),
        &|p, i, o| p.scatter_add_rows(&i[0], &i[1], o).unwrap(),
    ) else {
        return;
    };
    // Each repeated add rounds to bf16 here (ref rounds once): within a few bf16 ulps.
    assert_close("scatter bf16", &got, &want, Tol { abs: 3.0 / 128.0, rel: 3.0 / 128.0 });
}

#[test]
fn scatter_add_rows_over_more_indices_than_one_dispatch_takes() {
    // 9000 indices: the port splits them into ordered dispatches of 4096.
    let n = 9000;
    let ids: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32).collect();
    let Some((got, want)) = both(
        &[
            (philox_values(n * 3, 12, 1.0), DType::F32, Layout::contiguous(&[n, 3])),
            (ids, DType::I32, Layout::contiguous(&[n])),
        ],
        (vec![0.0; 15], DType::F32, Layout::contiguous(&[5, 3])),
        &|p, i, o| p.scatter_add_rows(&i[0], &i[1], o).unwrap(),
    ) else {
        return;
    };
    assert_close("scatter 9000 rows", &got, &want, Tol { abs: 1e-4, rel: 1e-5 });
}

#[test]
fn foreign_buffers_and_bad_views_are_errors_not_crashes() {
    let Some(w) = port() else { return };
    let r = anychip_port_ref::new();
    let foreign = View::contiguous(r.alloc(16).unwrap(), DType::F32, &[4]);
    let mine = View::contiguous(w.alloc(16).unwrap(), DType::F32, &[4]);
    assert!(w.unary(UnaryOp::Exp, &foreign, &mine).unwrap_err().to_string().contains("not allocated by the wgpu port"));
    let past = View { layout: lay(&[4], &[2], 0), ..mine.clone() };
    assert!(w.fill(&past, 1.0).unwrap_err().to_string().contains("past the end"));
}
