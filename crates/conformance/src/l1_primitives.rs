//! L1: every primitive against the `ref` oracle. Odd shapes (1, 3, 17, 783), broadcasting,
//! transposed and offset views, special values, f32 and bf16; integer ops and random streams
//! bit-exact.

use crate::harness::{compare_bounded, error_row, read, supports, HostView};
use crate::report::{Level, Row};
use crate::tolerance::{for_op, Bound, Tol};
use anychip_port::{
    bf16_to_f32, f32_to_bf16, BinaryOp, CompareOp, DType, Distribution, Layout, Port, PortError, ReduceOp, Result,
    UnaryOp, View,
};

type Call<'a> = &'a dyn Fn(&dyn Port, &[View], &View) -> Result<()>;

struct Ctx<'a> {
    p: &'a dyn Port,
    r: &'a dyn Port,
    rows: Vec<Row>,
}

impl Ctx<'_> {
    /// Run `f` on both ports with the same inputs and an output (`init` or zeros); compare.
    #[allow(clippy::too_many_arguments)]
    fn case(
        &mut self,
        op: &str,
        bound: impl Into<Bound>,
        dt: DType,
        case: &str,
        ins: &[HostView],
        out: &HostView,
        f: Call,
    ) {
        let bound = bound.into();
        let run = |port: &dyn Port, ins: &[HostView], out: &HostView| -> Result<Vec<f64>> {
            let views = ins.iter().map(|h| h.upload(port)).collect::<Result<Vec<_>>>()?;
            let o = out.upload(port)?;
            f(port, &views, &o)?;
            read(port, &o)
        };
        let oracle = |ins: &[HostView], out: &HostView| {
            run(self.r, ins, out).map_err(|e| PortError::Invalid(format!("ref rejected it: {e}")))
        };
        // An accumulation's bound scales with the same op over the inputs' absolute values.
        let magnitudes = match bound {
            Bound::Accumulation { .. } => oracle(&ins.iter().map(magnitude).collect::<Vec<_>>(), &magnitude(out)),
            // (No primitive rounds an operand the contract gives it: no L1 bound is Rounded.)
            Bound::Fixed(_) | Bound::Rounded { .. } => Ok(Vec::new()),
        };
        let row = match (run(self.p, ins, out), oracle(ins, out), magnitudes) {
            (Ok(got), Ok(want), Ok(m)) => compare_bounded(Level::L1, op, dt, case, &got, &want, bound, &m),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => error_row(Level::L1, op, dt, case, &e),
        };
        self.rows.push(row);
    }
}

/// `h` with every value replaced by the absolute value it has once stored, as F32 (I32
/// indices unchanged): the op applied to it gives each output's sum of absolute terms.
fn magnitude(h: &HostView) -> HostView {
    match h.dtype {
        DType::I32 => h.clone(),
        dt => HostView {
            storage: h.storage.iter().map(|&v| stored(v, dt).abs()).collect(),
            dtype: DType::F32,
            layout: h.layout.clone(),
        },
    }
}

/// `v` as `dt` stores it.
fn stored(v: f32, dt: DType) -> f32 {
    match dt {
        DType::BF16 => bf16_to_f32(f32_to_bf16(v)),
        _ => v,
    }
}

fn zeros(shape: &[usize], dt: DType) -> HostView {
    let l = Layout::contiguous(shape);
    HostView { storage: vec![0.0; l.numel()], dtype: dt, layout: l }
}

/// Views that exercise layouts: contiguous shapes, a transposed view, an offset slice.
fn layouts(dt: DType, seed: u64) -> Vec<(String, HostView)> {
    let mut v: Vec<(String, HostView)> = [&[1usize][..], &[3], &[17], &[783], &[17, 3]]
        .iter()
        .map(|s| (format!("{s:?}"), HostView::random(s, dt, seed, true)))
        .collect();
    let t = HostView::random(&[17, 3], dt, seed + 1, true);
    v.push(("[3,17] transposed".into(), t.with_layout(Layout { shape: vec![3, 17], strides: vec![1, 3], offset: 0 })));
    let s = HostView::random(&[20], dt, seed + 2, true);
    v.push(("[17] at offset 3".into(), s.with_layout(Layout { shape: vec![17], strides: vec![1], offset: 3 })));
    v
}

pub fn run(p: &dyn Port, r: &dyn Port) -> Vec<Row> {
    let mut c = Ctx { p, r, rows: Vec::new() };
    for dt in [DType::F32, DType::BF16] {
        if !supports(p, dt) {
            c.rows.push(error_row(
                Level::L1,
                "all primitives",
                dt,
                "-",
                &PortError::Unsupported(format!("{dt} not in capabilities")),
            ));
            continue;
        }
        elementwise(&mut c, dt);
        broadcasting(&mut c, dt);
        reductions(&mut c, dt);
        casts(&mut c, dt);
        matmuls(&mut c, dt);
        rows_ops(&mut c, dt);
        random(&mut c, dt);
    }
    c.rows
}

/// Fill, copy, every unary, binary and comparison op and select on every layout of [`layouts`].
fn elementwise(c: &mut Ctx, dt: DType) {
    for (name, x) in layouts(dt, 1) {
        let shape = x.layout.shape.clone();
        c.case("fill", for_op("fill", dt, 1), dt, &name, &[], &zeros(&shape, dt), &|p, _, o| p.fill(o, -1.25));
        c.case(
            "copy_strided",
            for_op("copy_strided", dt, 1),
            dt,
            &name,
            std::slice::from_ref(&x),
            &zeros(&shape, dt),
            &|p, i, o| p.copy_strided(&i[0], o),
        );
        for op in UnaryOp::ALL {
            let tag = format!("{op:?}").to_lowercase();
            c.case(
                &format!("unary {tag}"),
                for_op(&tag, dt, 1),
                dt,
                &name,
                std::slice::from_ref(&x),
                &zeros(&shape, dt),
                &move |p, i, o| p.unary(op, &i[0], o),
            );
        }
        let y = HostView::random(&shape, dt, 9, false);
        for op in BinaryOp::ALL {
            let tag = format!("{op:?}").to_lowercase();
            c.case(
                &format!("binary {tag}"),
                for_op(&tag, dt, 1),
                dt,
                &name,
                &[x.clone(), y.clone()],
                &zeros(&shape, dt),
                &move |p, i, o| p.binary(op, &i[0], &i[1], o),
            );
        }
        for op in [CompareOp::Eq, CompareOp::Lt] {
            let same = x.with_layout(x.layout.clone());
            c.case(
                &format!("compare {op:?}").to_lowercase(),
                Tol::EXACT,
                dt,
                &name,
                &[x.clone(), same, y.clone()],
                &zeros(&shape, dt),
                &move |p, i, o| {
                    p.compare(op, &i[0], &i[2], o)?;
                    if op == CompareOp::Eq {
                        p.compare(op, &i[0], &i[1], o)?; // x == x: NaN must compare false
                    }
                    Ok(())
                },
            );
        }
        c.case("select", Tol::EXACT, dt, &name, &[x.clone(), y.clone()], &zeros(&shape, dt), &|p, i, o| {
            p.select(&i[0], &i[0], &i[1], o)
        });
    }
}

/// Binary ops with a row vector (stride 0 across rows) and a column vector broadcast.
fn broadcasting(c: &mut Ctx, dt: DType) {
    // Broadcasting: b is [3] walked with stride 0 across 17 rows; a row vector against a column.
    let a = HostView::random(&[17, 3], dt, 3, true);
    let b =
        HostView::random(&[3], dt, 4, false).with_layout(Layout { shape: vec![17, 3], strides: vec![0, 1], offset: 0 });
    let col = HostView::random(&[17], dt, 5, false).with_layout(Layout {
        shape: vec![17, 3],
        strides: vec![1, 0],
        offset: 0,
    });
    for op in BinaryOp::ALL {
        let tag = format!("{op:?}").to_lowercase();
        c.case(
            &format!("binary {tag}"),
            for_op(&tag, dt, 1),
            dt,
            "[17,3] with [3] and [17,1] broadcast",
            &[a.clone(), b.clone(), col.clone()],
            &zeros(&[17, 3], dt),
            &move |p, i, o| {
                p.binary(op, &i[0], &i[1], o)?;
                p.binary(op, &i[2], o, o)
            },
        );
    }
}

/// Sums and maxima over the last, the first and both axes, and rows with NaN and infinities.
fn reductions(c: &mut Ctx, dt: DType) {
    // Reductions over the last, the first and both axes.
    let big = HostView::random(&[17, 783], dt, 6, false);
    let special = HostView::random(&[3, 17], dt, 7, true);
    for (op, tag) in [(ReduceOp::Sum, "reduce_sum"), (ReduceOp::Max, "reduce_max")] {
        for (x, out, k, case) in [
            (&big, vec![17, 1], 783, "[17,783] -> [17,1]"),
            (&big, vec![1, 783], 17, "[17,783] -> [1,783]"),
            (&big, vec![1, 1], 17 * 783, "[17,783] -> [1,1]"),
            (&special, vec![3, 1], 17, "[3,17] with NaN/inf -> [3,1]"),
        ] {
            c.case(tag, for_op(tag, dt, k), dt, case, std::slice::from_ref(x), &zeros(&out, dt), &move |p, i, o| {
                p.reduce(op, &i[0], o)
            });
        }
    }
}

/// Casts to every float dtype the port stores (specials included) and truncating casts to i32.
fn casts(c: &mut Ctx, dt: DType) {
    let p = c.p;
    // Casts between every pair of dtypes this port stores.
    let src = HostView::random(&[783], dt, 8, true);
    for to in [DType::F32, DType::BF16] {
        if supports(p, to) {
            c.case(
                &format!("cast to {to}"),
                for_op("cast", dt, 1),
                dt,
                "[783] with NaN/inf/-0",
                std::slice::from_ref(&src),
                &zeros(&[783], to),
                &|p, i, o| p.cast(&i[0], o),
            );
        }
    }
    let finite = HostView::random(&[783], dt, 9, false);
    c.case(
        "cast to i32",
        Tol::EXACT,
        dt,
        "[783] finite, truncating",
        &[finite],
        &zeros(&[783], DType::I32),
        &|p, i, o| p.cast(&i[0], o),
    );
}

/// Philox streams, bit-exact (uniform) or within the transcendental bound (normal).
fn random(c: &mut Ctx, dt: DType) {
    for dist in [Distribution::Uniform, Distribution::Normal] {
        let tag = if dist == Distribution::Uniform { "random_uniform" } else { "random_normal" };
        c.case(tag, for_op(tag, dt, 1), dt, "[783] seed 7 offset 1001", &[], &zeros(&[783], dt), &move |p, _, o| {
            p.random(dist, 7, 1001, o)
        });
    }
}

/// A `[batch, rows, cols]` matmul operand of random values, stored transposed (`[cols, rows]`
/// per batch) when `transposed`, and as one matrix with batch stride 0 when `broadcast`.
fn operand(
    dt: DType,
    seed: u64,
    (batch, rows, cols): (usize, usize, usize),
    transposed: bool,
    broadcast: bool,
) -> HostView {
    let stored_batches = if broadcast { 1 } else { batch };
    let batch_stride = if broadcast { 0 } else { rows * cols };
    let (stored, strides) = if transposed {
        ([stored_batches, cols, rows], vec![batch_stride, 1, rows])
    } else {
        ([stored_batches, rows, cols], vec![batch_stride, cols, 1])
    };
    HostView::random(&stored, dt, seed, false).with_layout(Layout {
        shape: vec![batch, rows, cols],
        strides,
        offset: 0,
    })
}

fn matmuls(c: &mut Ctx, dt: DType) {
    // (batch, m, k, n, transpose a, transpose b, broadcast b over the batch, alpha, beta)
    let cases = [
        (1, 1, 1, 1, false, false, false, 1.0, 0.0),
        (1, 3, 17, 5, false, false, false, 1.0, 0.0),
        (2, 17, 33, 9, true, false, false, 1.0, 0.0),
        (2, 17, 33, 9, false, true, false, 0.5, 0.0),
        (3, 17, 783, 3, false, false, true, 1.0, 0.0),
        (1, 17, 64, 17, true, true, false, 2.0, 0.25),
    ];
    for (b, m, k, n, ta, tb, bb, alpha, beta) in cases {
        let a = operand(dt, 11, (b, m, k), ta, false);
        let bm = operand(dt, 12, (b, k, n), tb, bb);
        let out = if beta != 0.0 { HostView::random(&[b, m, n], dt, 13, false) } else { zeros(&[b, m, n], dt) };
        let case = format!(
            "[{b},{m},{k}]x[{k},{n}]{}{}{} a{alpha} b{beta}",
            if ta { " aT" } else { "" },
            if tb { " bT" } else { "" },
            if bb { " bcast" } else { "" }
        );
        // alpha and beta are >= 0 in every case: the product over |inputs| is then the magnitude.
        c.case("matmul", for_op("matmul", dt, k + 2), dt, &case, &[a, bm], &out, &move |p, i, o| {
            p.matmul(&i[0], &i[1], o, alpha, beta)
        });
    }
    if dt == DType::BF16 {
        // bf16 x bf16 -> f32 (the mixed-precision product): large enough for a native kernel's
        // full register tiles, edges and several K blocks, on every operand layout.
        for (m, k, n, ta, tb, alpha, beta) in [
            (37, 300, 70, false, true, 1.0, 0.0),
            (37, 300, 70, false, false, 1.0, 0.0),
            (70, 37, 300, true, false, 0.5, 1.5),
            (15, 513, 33, true, true, 1.0, 0.0),
        ] {
            // A transposed operand with batch stride 0, as a broadcast weight arrives.
            let (a, bm) = (operand(dt, 31, (1, m, k), ta, ta), operand(dt, 32, (1, k, n), tb, tb));
            let out = if beta != 0.0 {
                HostView::random(&[1, m, n], DType::F32, 33, false)
            } else {
                zeros(&[1, m, n], DType::F32)
            };
            let case = format!(
                "[1,{m},{k}]x[{k},{n}]{}{} -> f32 a{alpha} b{beta}",
                if ta { " aT" } else { "" },
                if tb { " bT" } else { "" }
            );
            c.case("matmul", for_op("matmul_bf16_f32", dt, k), dt, &case, &[a, bm], &out, &move |p, i, o| {
                p.matmul(&i[0], &i[1], o, alpha, beta)
            });
        }
    }
    // beta = 0 must not read the output: NaN there must not leak through.
    let nan_out = HostView { storage: vec![f32::NAN; 9], dtype: dt, layout: Layout::contiguous(&[1, 3, 3]) };
    let (a, b) = (HostView::random(&[1, 3, 4], dt, 14, false), HostView::random(&[1, 4, 3], dt, 15, false));
    c.case("matmul", for_op("matmul", dt, 4), dt, "beta 0 ignores NaN in out", &[a, b], &nan_out, &|p, i, o| {
        p.matmul(&i[0], &i[1], o, 1.0, 0.0)
    });
}

fn rows_ops(c: &mut Ctx, dt: DType) {
    let table = HostView::random(&[17, 33], dt, 16, true);
    let idx = HostView::ints(&[16, 0, 3, 3, 16]);
    c.case(
        "gather_rows",
        Tol::EXACT,
        dt,
        "[17,33] by 5 ids with repeats",
        &[table, idx.clone()],
        &zeros(&[5, 33], dt),
        &|p, i, o| p.gather_rows(&i[0], &i[1], o),
    );
    let src = HostView::random(&[5, 33], dt, 17, false);
    let init = HostView::random(&[17, 33], dt, 18, false);
    c.case(
        "scatter_add_rows",
        for_op("scatter_add_rows", dt, 3),
        dt,
        "5 rows into [17,33], repeats accumulate",
        &[src, idx],
        &init,
        &|p, i, o| p.scatter_add_rows(&i[0], &i[1], o),
    );
    let bad = HostView::ints(&[17]);
    let table = HostView::random(&[17, 33], dt, 16, false);
    c.case(
        "gather_rows",
        Tol::EXACT,
        dt,
        "out-of-range id is an error",
        &[table, bad],
        &zeros(&[1, 33], dt),
        &|p, i, o| match p.gather_rows(&i[0], &i[1], o) {
            Err(_) => Ok(()),
            Ok(()) => Err(PortError::Invalid("accepted id 17 for a 17-row table".into())),
        },
    );
}
