//! Every primitive on `cpu` against the `ref` oracle: odd shapes, strided and broadcast views,
//! special values, f32 and bf16, and the parallel paths (inputs above the threading threshold).

use anychip_port::{BinaryOp, CompareOp, DType, Distribution, Layout, Port, ReduceOp, Result, UnaryOp, View};
use anychip_port_cpu::CpuPort;
use anychip_port_ref::RefPort;
use anychip_test_support::*;

fn ports() -> (CpuPort, RefPort) {
    (anychip_port_cpu::new(Some(2)), anychip_port_ref::new())
}

/// Run `f` on both ports over mirrored inputs and output; compare the outputs under `tol`.
fn check(
    what: &str,
    cpu: &CpuPort,
    rf: &RefPort,
    ins: &[View],
    out: &View,
    tol: Tol,
    f: impl Fn(&dyn Port, &[View], &View) -> Result<()>,
) {
    let rins: Vec<View> = ins.iter().map(|v| mirror(cpu, v, rf)).collect();
    let rout = mirror(cpu, out, rf);
    let (a, b) = (f(cpu, ins, out), f(rf, &rins, &rout));
    assert_eq!(a.is_ok(), b.is_ok(), "{what}: cpu {a:?} but ref {b:?}");
    a.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_close(what, &get_all(cpu, out), &get_all(rf, &rout), tol);
}

const SHAPES: [&[usize]; 6] = [&[1], &[3], &[17], &[783], &[17, 3], &[64, 783]];

/// Storage for a layout: random values with the special values at the front.
fn storage(g: &mut Gen, n: usize, specials: bool) -> Vec<f32> {
    let mut v = g.vec(n, 3.0);
    if specials {
        for (x, s) in v.iter_mut().zip(SPECIALS) {
            *x = s;
        }
    }
    v
}

#[test]
fn unary_every_op_shape_layout_dtype() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(1);
    for shape in SHAPES {
        for (lname, layout, n) in layouts(shape) {
            for dtype in [DType::F32, DType::BF16] {
                let x = put(&cpu, &storage(&mut g, n, true), dtype, layout.clone());
                for op in UnaryOp::ALL {
                    let out = output(&cpu, dtype, shape);
                    let what = format!("unary {op:?} {shape:?} {lname} {dtype}");
                    check(
                        &what,
                        &cpu,
                        &rf,
                        std::slice::from_ref(&x),
                        &out,
                        tol_for(dtype, Tol::F32_ELEM),
                        |p, i, o| p.unary(op, &i[0], o),
                    );
                }
            }
        }
    }
}

/// Broadcast variants of b for a [r, c] a: full, row vector, column vector, scalar.
fn broadcasts(g: &mut Gen, cpu: &CpuPort, r: usize, c: usize, dtype: DType) -> Vec<(&'static str, View)> {
    let l =
        |shape: [usize; 2], strides: [usize; 2]| Layout { shape: shape.to_vec(), strides: strides.to_vec(), offset: 0 };
    vec![
        ("full", put(cpu, &storage(g, r * c, true), dtype, l([r, c], [c, 1]))),
        ("row", put(cpu, &storage(g, c, false), dtype, l([r, c], [0, 1]))),
        ("column", put(cpu, &storage(g, r, false), dtype, l([r, c], [1, 0]))),
        ("scalar", put(cpu, &storage(g, 1, false), dtype, l([r, c], [0, 0]))),
        ("transposed", put(cpu, &storage(g, r * c, false), dtype, l([r, c], [1, r]))),
    ]
}

#[test]
fn binary_compare_select_with_broadcasting() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(2);
    for (r, c) in [(1, 1), (3, 17), (17, 783), (64, 783)] {
        for dtype in [DType::F32, DType::BF16] {
            let a = tensor(&cpu, &storage(&mut g, r * c, true), dtype, &[r, c]);
            for (bname, b) in broadcasts(&mut g, &cpu, r, c, dtype) {
                for op in BinaryOp::ALL {
                    let what = format!("binary {op:?} [{r},{c}] b={bname} {dtype}");
                    let out = output(&cpu, dtype, &[r, c]);
                    check(&what, &cpu, &rf, &[a.clone(), b.clone()], &out, tol_for(dtype, Tol::F32_ELEM), |p, i, o| {
                        p.binary(op, &i[0], &i[1], o)
                    });
                }
                for op in [CompareOp::Eq, CompareOp::Lt] {
                    let what = format!("compare {op:?} [{r},{c}] b={bname} {dtype}");
                    let out = output(&cpu, dtype, &[r, c]);
                    check(&what, &cpu, &rf, &[a.clone(), b.clone()], &out, Tol::EXACT, |p, i, o| {
                        p.compare(op, &i[0], &i[1], o)
                    });
                }
                let mut cond: Vec<f32> = (0..r * c).map(|i| (i % 3) as f32 - 1.0).collect();
                cond[0] = f32::NAN;
                let cond = tensor(&cpu, &cond, dtype, &[r, c]);
                let out = output(&cpu, dtype, &[r, c]);
                let what = format!("select [{r},{c}] b={bname} {dtype}");
                check(&what, &cpu, &rf, &[cond, a.clone(), b.clone()], &out, Tol::EXACT, |p, i, o| {
                    p.select(&i[0], &i[1], &i[2], o)
                });
            }
        }
    }
}

#[test]
fn binary_in_place_and_mixed_output_dtype() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(3);
    for dtype in [DType::F32, DType::BF16] {
        let a = tensor(&cpu, &g.vec(17 * 783, 2.0), dtype, &[17, 783]);
        let b = tensor(&cpu, &g.vec(17 * 783, 2.0), dtype, &[17, 783]);
        // out aliases a with the same layout: the elementwise in-place case the contract allows.
        check(&format!("in-place add {dtype}"), &cpu, &rf, &[b], &a, tol_for(dtype, Tol::F32_ELEM), |p, i, o| {
            p.binary(BinaryOp::Mul, o, &i[0], o)
        });
    }
    let a = tensor(&cpu, &g.vec(783, 2.0), DType::BF16, &[783]);
    let out = output(&cpu, DType::F32, &[783]);
    check("unary bf16 -> f32", &cpu, &rf, &[a], &out, Tol::F32_ELEM, |p, i, o| p.unary(UnaryOp::Exp, &i[0], o));
}

#[test]
fn reduce_rows_columns_and_strided() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(4);
    // (shape, out shape): last axis, leading axis (bias gradient; the last two span several
    // row and column blocks, in parallel), all, middle, both outer.
    let cases: [(&[usize], &[usize]); 11] = [
        (&[600, 300], &[1, 300]),
        (&[3, 300, 130], &[1, 1, 130]),
        (&[1], &[1]),
        (&[783], &[1]),
        (&[17, 783], &[17, 1]),
        (&[17, 783], &[1, 783]),
        (&[64, 783], &[1, 783]),
        (&[64, 783], &[64, 1]),
        (&[3, 17, 5], &[3, 1, 5]),
        (&[3, 17, 5], &[1, 1, 1]),
        (&[3, 17, 5], &[1, 17, 1]),
    ];
    for (shape, oshape) in cases {
        for (lname, layout, n) in layouts(shape) {
            for dtype in [DType::F32, DType::BF16] {
                for specials in [false, true] {
                    let x = put(&cpu, &storage(&mut g, n, specials), dtype, layout.clone());
                    for op in [ReduceOp::Sum, ReduceOp::Max] {
                        let out = output(&cpu, dtype, oshape);
                        let tol = if dtype == DType::BF16 { Tol::BF16 } else { Tol::F32_SUM };
                        let what = format!("reduce {op:?} {shape:?}->{oshape:?} {lname} {dtype} specials={specials}");
                        check(&what, &cpu, &rf, std::slice::from_ref(&x), &out, tol, |p, i, o| p.reduce(op, &i[0], o));
                    }
                }
            }
        }
    }
}

#[test]
fn fill_cast_copy_strided() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(5);
    let dtypes = [DType::F32, DType::BF16, DType::I32];
    for shape in SHAPES {
        for (lname, layout, n) in layouts(shape) {
            for &from in &dtypes {
                let mut vals = storage(&mut g, n, from != DType::I32);
                if from == DType::I32 {
                    vals.iter_mut().for_each(|v| *v = (*v * 1000.0).trunc());
                }
                let x = put(&cpu, &vals, from, layout.clone());
                for &to in &dtypes {
                    let out = output(&cpu, to, shape);
                    let what = format!("cast {from}->{to} {shape:?} {lname}");
                    check(&what, &cpu, &rf, std::slice::from_ref(&x), &out, Tol::EXACT, |p, i, o| p.cast(&i[0], o));
                }
                let out = output(&cpu, from, shape);
                check(
                    &format!("copy_strided {from} {shape:?} {lname}"),
                    &cpu,
                    &rf,
                    std::slice::from_ref(&x),
                    &out,
                    Tol::EXACT,
                    |p, i, o| p.copy_strided(&i[0], o),
                );
                // Fill through a strided view: elements outside the view must keep their values.
                let target = put(&cpu, &vec![5.0; n], from, layout.clone());
                check(&format!("fill {from} {shape:?} {lname}"), &cpu, &rf, &[], &target, Tol::EXACT, |p, _, o| {
                    p.fill(o, -2.75)
                });
            }
        }
    }
}

/// A [bt, r, c] operand stored either row-major or transposed, optionally batch-broadcast.
fn operand(
    g: &mut Gen,
    cpu: &CpuPort,
    bt: usize,
    r: usize,
    c: usize,
    transposed: bool,
    broadcast: bool,
    dtype: DType,
) -> View {
    let nb = if broadcast { 1 } else { bt };
    let bs = if broadcast { 0 } else { r * c };
    let (rs, cs) = if transposed { (1, r) } else { (c, 1) };
    put(cpu, &g.vec(nb * r * c, 1.0), dtype, Layout { shape: vec![bt, r, c], strides: vec![bs, rs, cs], offset: 0 })
}

#[test]
fn matmul_transposes_batches_alpha_beta() {
    let (cpu, rf) = ports();
    matmul_cases(&cpu, &rf, false);
}

/// The same products on a vendor BLAS (`ANYCHIP_BLAS`), plus column-major outputs (which it
/// computes as the transposed product). Skipped where none is installed, unless
/// `ANYCHIP_TEST_BLAS` names one (CI installs MKL and sets it, so there this cannot skip).
#[test]
fn matmul_on_a_vendor_blas() {
    use anychip_port_cpu::blas::Choice;
    let want = std::env::var("ANYCHIP_TEST_BLAS").ok();
    let choice = want.as_deref().map_or(Choice::Auto, |w| Choice::parse(Some(w)));
    let cpu = CpuPort::with_blas(Some(2), &choice).unwrap_or_else(|e| panic!("{e}"));
    if cpu.vendor_blas().is_none() {
        assert!(want.is_none(), "ANYCHIP_TEST_BLAS={want:?} but the port multiplies on {}", cpu.f32_matmul());
        eprintln!("skipped: no vendor BLAS found (pip install mkl)");
        return;
    }
    eprintln!("vendor BLAS: {}", cpu.f32_matmul());
    let rf = anychip_port_ref::new();
    matmul_cases(&cpu, &rf, false);
    matmul_cases(&cpu, &rf, true);
}

fn matmul_cases(cpu: &CpuPort, rf: &RefPort, out_transposed: bool) {
    let mut g = Gen::new(6);
    let shapes = [
        (1, 1, 1, 1),
        (1, 3, 17, 5),
        (2, 17, 783, 3),
        (3, 33, 64, 65),
        (1, 128, 256, 300),
        (24, 64, 64, 64),
        (2, 5, 0, 7),
    ];
    for (bt, m, k, n) in shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (dtype, odtype) in [(DType::F32, DType::F32), (DType::BF16, DType::F32), (DType::BF16, DType::BF16)] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.5)] {
                    let a = operand(&mut g, cpu, bt, m, k, ta, false, dtype);
                    let b = operand(&mut g, cpu, bt, k, n, tb, bt > 1 && ta, dtype);
                    // beta = 0 must not read out: NaN there must not leak into the result.
                    let init = if beta == 0.0 { vec![f32::NAN; bt * m * n] } else { g.vec(bt * m * n, 1.0) };
                    let out = if out_transposed {
                        let l = Layout { shape: vec![bt, m, n], strides: vec![m * n, 1, m], offset: 0 };
                        put(cpu, &init, odtype, l)
                    } else {
                        tensor(cpu, &init, odtype, &[bt, m, n])
                    };
                    let tol = if odtype == DType::BF16 {
                        Tol::BF16_SUM
                    } else if dtype == DType::BF16 {
                        Tol::F32_SUM
                    } else {
                        Tol::F32_MATMUL
                    };
                    let what = format!(
                        "matmul [{bt},{m},{k}]x[{k},{n}] ta={ta} tb={tb} {dtype}->{odtype} alpha={alpha} beta={beta}"
                    );
                    check(&what, cpu, rf, &[a, b], &out, tol, |p, i, o| p.matmul(&i[0], &i[1], o, alpha, beta));
                }
            }
        }
    }
}

/// out may alias an input (the contract allows the same layout): the product must be that of
/// the inputs as they were, as on the oracle, never a race of reads and writes of one buffer.
#[test]
fn matmul_into_one_of_its_inputs() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(9);
    for m in [7, 64, 150] {
        for dtype in [DType::F32, DType::BF16] {
            for into_a in [true, false] {
                let a = tensor(&cpu, &g.vec(m * m, 1.0), dtype, &[1, m, m]);
                let b = tensor(&cpu, &g.vec(m * m, 1.0), dtype, &[1, m, m]);
                let out = if into_a { a.clone() } else { b.clone() };
                let tol = if dtype == DType::BF16 { Tol::BF16_SUM } else { Tol::F32_MATMUL };
                let what = format!("matmul [{m}x{m}] {dtype} into {}", if into_a { "a" } else { "b" });
                check(&what, &cpu, &rf, &[a, b], &out, tol, |p, i, o| p.matmul(&i[0], &i[1], o, 0.5, 1.5));
            }
        }
    }
}

#[test]
fn gather_and_scatter_rows() {
    let (cpu, rf) = ports();
    let mut g = Gen::new(7);
    for (v, d, n) in [(1, 1, 1), (17, 3, 5), (17, 783, 40), (50, 783, 64)] {
        for dtype in [DType::F32, DType::BF16] {
            let table = tensor(&cpu, &g.vec(v * d, 1.0), dtype, &[v, d]);
            let ids: Vec<i32> = (0..n).map(|i| ((i * 7 + 3) % v) as i32).collect(); // repeats when n > v
            let idx = ints(&cpu, &ids, &[n]);
            let out = output(&cpu, dtype, &[n, d]);
            check(
                &format!("gather [{v},{d}] n={n} {dtype}"),
                &cpu,
                &rf,
                &[table.clone(), idx.clone()],
                &out,
                Tol::EXACT,
                |p, i, o| p.gather_rows(&i[0], &i[1], o),
            );
            let src = tensor(&cpu, &g.vec(n * d, 1.0), dtype, &[n, d]);
            let acc = tensor(&cpu, &g.vec(v * d, 1.0), dtype, &[v, d]);
            check(
                &format!("scatter_add [{v},{d}] n={n} {dtype}"),
                &cpu,
                &rf,
                &[src, idx],
                &acc,
                tol_for(dtype, Tol::F32_SUM),
                |p, i, o| p.scatter_add_rows(&i[0], &i[1], o),
            );
        }
    }
    // An index outside the table is an error, not a panic or a wild write.
    let table = tensor(&cpu, &[1.0; 6], DType::F32, &[2, 3]);
    let out = output(&cpu, DType::F32, &[1, 3]);
    let err = cpu.gather_rows(&table, &ints(&cpu, &[2], &[1]), &out).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    assert!(cpu.scatter_add_rows(&out, &ints(&cpu, &[-1], &[1]), &table).is_err());
}

#[test]
fn random_streams_match_the_oracle() {
    let (cpu, rf) = ports();
    for shape in [&[1usize][..], &[17], &[3, 783], &[64, 783]] {
        for (lname, layout, n) in layouts(shape) {
            for dtype in [DType::F32, DType::BF16] {
                let out = put(&cpu, &vec![0.0; n], dtype, layout.clone());
                let what = format!("uniform {shape:?} {lname} {dtype}");
                check(&what, &cpu, &rf, &[], &out, Tol::EXACT, |p, _, o| p.random(Distribution::Uniform, 42, 5, o));
                let what = format!("normal {shape:?} {lname} {dtype}");
                check(&what, &cpu, &rf, &[], &out, tol_for(dtype, Tol::F32_ELEM), |p, _, o| {
                    p.random(Distribution::Normal, 7, 1 << 33, o)
                });
            }
        }
    }
}

#[test]
fn random_does_not_depend_on_thread_count() {
    let one = anychip_port_cpu::new(Some(1));
    let two = anychip_port_cpu::new(Some(2));
    let a = output(&one, DType::F32, &[300, 301]);
    let b = output(&two, DType::F32, &[300, 301]);
    one.random(Distribution::Uniform, 9, 0, &a).unwrap();
    two.random(Distribution::Uniform, 9, 0, &b).unwrap();
    let (x, y) = (get(&one, &a), get(&two, &b));
    assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()));
    assert!(x.iter().any(|&v| v != x[0]), "stream is constant");
}

#[test]
fn bad_views_are_errors_not_panics() {
    let cpu = anychip_port_cpu::new(Some(1));
    let x = tensor(&cpu, &[1.0; 6], DType::F32, &[2, 3]);
    // A layout reaching past the end of its buffer.
    let past = View { layout: Layout { shape: vec![2, 3], strides: vec![3, 1], offset: 4 }, ..x.clone() };
    assert!(cpu.unary(UnaryOp::Exp, &past, &x).is_err());
    // A layout whose reach overflows usize: refused, not wrapped to a small reach that passes
    // the bounds check every kernel's unsafe access relies on.
    let wraps = View { layout: Layout { shape: vec![2, 3], strides: vec![usize::MAX, 1], offset: 0 }, ..x.clone() };
    let err = cpu.unary(UnaryOp::Exp, &wraps, &x).unwrap_err();
    assert!(err.to_string().contains("past the address space"), "{err}");
    // A broadcast output.
    let bout = View { layout: Layout { shape: vec![2, 3], strides: vec![0, 1], offset: 0 }, ..x.clone() };
    assert!(cpu.binary(BinaryOp::Add, &x, &x, &bout).is_err());
    // Mismatched shapes and dtypes.
    let y = output(&cpu, DType::F32, &[3, 2]);
    assert!(cpu.binary(BinaryOp::Add, &x, &x, &y).is_err());
    let i = ints(&cpu, &[1, 2, 3, 4, 5, 6], &[2, 3]);
    assert!(cpu.unary(UnaryOp::Exp, &i, &x).is_err());
    assert!(cpu.matmul(&x, &x, &y, 1.0, 0.0).is_err());
    // A buffer from another port.
    let rf = anychip_port_ref::new();
    let foreign = tensor(&rf, &[1.0; 6], DType::F32, &[2, 3]);
    let err = cpu.unary(UnaryOp::Exp, &foreign, &x).unwrap_err();
    assert!(err.to_string().contains("another port"), "{err}");
}
