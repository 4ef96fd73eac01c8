//! reduce: sum or max over the axes where `out` has extent 1 and `x` does not.

use crate::gpu::Gpu;
use crate::launch::{check_float, check_view, grid, merge, run, Params, MAX_RANK, WG};
use crate::shader::{Slot, REDUCE};
use anychip_port::{invalid, PortError, ReduceOp, Result, View};

/// Reduce `x` into `out` (equal rank; each out extent equals x's or is 1).
pub fn reduce(g: &Gpu, op: ReduceOp, x: &View, out: &View) -> Result<()> {
    let xm = check_view("reduce x", x)?;
    let om = check_view("reduce out", out)?;
    check_float("reduce x", x)?;
    check_float("reduce out", out)?;
    let (xs, os) = (x.shape(), out.shape());
    if xs.len() != os.len() {
        return invalid(format!(
            "reduce: x has shape {xs:?} but out has shape {os:?}; ranks must be equal (keep reduced axes as 1)"
        ));
    }
    if let Some(d) = (0..xs.len()).find(|&d| os[d] != xs[d] && os[d] != 1) {
        return invalid(format!(
            "reduce: out extent {} on axis {d} is neither x's extent {} nor 1 (x {xs:?}, out {os:?})",
            os[d], xs[d]
        ));
    }
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
    let mut p = Params::new(nout);
    p.walk(&kshape, &[(out.layout.offset, &kst[0]), (x.layout.offset, &kst[1])]);
    p.set(2, rshape.len() as u32).set(3, count as u32);
    for (d, (&n, &s)) in rshape.iter().zip(&rst[0]).enumerate() {
        p.set(41 + d, n as u32).set(53 + d, s as u32);
    }
    let (init, combine) = match op {
        ReduceOp::Sum => ("0.0", "add_f32"),
        ReduceOp::Max => ("-inf_f32()", "maximum"),
    };
    let mut groups = grid(nout * WG)?;
    groups[2] = 1;
    let slots = [Slot::write("out", out.dtype), Slot::read("x", x.dtype)];
    run(g, "reduce", REDUCE, "main", &slots, &[("INIT", init), ("COMBINE", combine)], &[om, xm], false, &p, groups)
}
