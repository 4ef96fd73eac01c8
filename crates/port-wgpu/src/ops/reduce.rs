//! reduce: sum or max over the axes where `out` has extent 1 and `x` does not.

use crate::gpu::Gpu;
use crate::launch::{check_view, grid, merge, run, Params, MAX_RANK, WG};
use crate::memory::{gpu, GpuMemory};
use crate::shader::{Slot, REDUCE};
use anychip_port::{Buffer, DType, Layout, PortError, ReduceOp, Result, View};
use std::sync::Arc;

/// Reduce `x` into `out` (equal rank; each out extent equals x's or is 1).
pub fn reduce(g: &Gpu, op: ReduceOp, x: &View, out: &View) -> Result<()> {
    let xm = check_view("reduce x", x)?;
    let om = check_view("reduce out", out)?;
    anychip_port::check::reduce(x, out)?;
    let (xs, os) = (x.shape(), out.shape());
    let nout = out.numel();
    if nout == 0 {
        return Ok(());
    }
    // Kept axes are walked jointly by out and x; reduced axes only by x.
    let kept: Vec<usize> = (0..xs.len()).filter(|&d| os[d] == xs[d]).collect();
    let red: Vec<usize> = (0..xs.len()).filter(|&d| os[d] != xs[d]).collect();
    let pick = |v: &[usize], ax: &[usize]| ax.iter().map(|&d| v[d]).collect::<Vec<_>>();
    let (kshape, kst) = merge(&pick(xs, &kept), &[&pick(&out.layout.strides, &kept), &pick(&x.layout.strides, &kept)])?;
    let (rshape, rst) = merge(&pick(xs, &red), &[&pick(&x.layout.strides, &red)])?;
    if rshape.len() > MAX_RANK {
        return Err(PortError::Unsupported("reduce: too many reduced axes".into()));
    }
    let count: usize = rshape.iter().product();
    // Reduced elements per workgroup: 64 per thread.
    const CHUNK: usize = 64 * WG;
    let chunks = count.div_ceil(CHUNK).max(1);
    let (init, combine) = match op {
        ReduceOp::Sum => ("0.0", "add_f32"),
        ReduceOp::Max => ("-inf_f32()", "maximum"),
    };
    let fills = [("INIT", init), ("COMBINE", combine)];
    let groups = grid(nout * chunks * WG)?;
    let mut p = Params::new(nout);
    p.set(2, rshape.len() as u32).set(3, count as u32).set(4, CHUNK as u32).set(5, chunks as u32);
    for (d, (&n, &s)) in rshape.iter().zip(&rst[0]).enumerate() {
        p.set(41 + d, n as u32).set(53 + d, s as u32);
    }
    if chunks == 1 {
        p.walk(&kshape, &[(out.layout.offset, &kst[0]), (x.layout.offset, &kst[1])]);
        let slots = [Slot::write("out", out.dtype), Slot::read("x", x.dtype)];
        return run(g, "reduce", REDUCE, "main", &slots, &fills, &[om, xm], false, &p, groups);
    }
    // Pass 1: f32 partials laid out [chunks, kept...]; pass 2 reduces them over the chunks.
    let tmp = Buffer(Arc::new(GpuMemory::new(&g.device, &g.pool, 4 * nout * chunks, g.max_alloc())?));
    let tm = gpu("reduce partials", &tmp)?;
    let tstrides = Layout::contiguous(&kshape).strides;
    p.walk(&kshape, &[(0, &tstrides), (x.layout.offset, &kst[1])]);
    p.set(6, nout as u32);
    let slots = [Slot::write("out", DType::F32), Slot::read("x", x.dtype)];
    run(g, "reduce", REDUCE, "main", &slots, &fills, &[tm, xm], false, &p, groups)?;
    // The partials as a view of x's rank: kept axes contiguous as in pass 1, the chunk axis
    // in place of the first reduced axis (stride nout), other reduced axes of extent 1.
    let mut shape = vec![1; xs.len()];
    let mut strides = vec![0; xs.len()];
    let mut s = 1;
    for d in (0..xs.len()).rev() {
        if os[d] == xs[d] {
            shape[d] = xs[d];
            strides[d] = s;
            s *= xs[d];
        }
    }
    shape[red[0]] = chunks;
    strides[red[0]] = nout;
    let partials = View { buf: tmp.clone(), dtype: DType::F32, layout: Layout { shape, strides, offset: 0 } };
    reduce(g, op, &partials, out)
}
