//! matmul: out[b] = alpha * a[b] @ b[b] + beta * out[b] with a tiled WGSL kernel.

use crate::gpu::Gpu;
use crate::launch::{check_view, run, Params};
use crate::shader::{Slot, MATMUL};
use anychip_port::{PortError, Result, View};

/// Batched matrix multiply; a:[B,M,K], b:[B,K,N], out:[B,M,N].
pub fn matmul(g: &Gpu, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
    let mut mems = Vec::new();
    for (name, v) in [("out", out), ("a", a), ("b", b)] {
        mems.push(check_view(&format!("matmul {name}"), v)?);
    }
    let (bt, m, k, n) = anychip_port::check::matmul(a, b, out)?;
    if out.numel() == 0 {
        return Ok(());
    }
    if bt > 65_535 {
        return Err(PortError::Unsupported(format!(
            "matmul: batch {bt} exceeds the 65535 workgroups of one grid axis"
        )));
    }
    let mut p = Params::new(out.numel());
    p.walk(
        &[],
        &[
            (out.layout.offset, &out.layout.strides),
            (a.layout.offset, &a.layout.strides),
            (b.layout.offset, &b.layout.strides),
        ],
    );
    p.set(2, m as u32).set(3, n as u32).set(4, k as u32).setf(5, alpha).setf(6, beta);
    let groups = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, bt as u32];
    if groups[0] > 65_535 || groups[1] > 65_535 {
        return Err(PortError::Unsupported(format!("matmul: {m}x{n} output exceeds the dispatch grid")));
    }
    let slots = [Slot::write("out", out.dtype), Slot::read("a", a.dtype), Slot::read("b", b.dtype)];
    run(g, "matmul", MATMUL, "main", &slots, &[], &mems, false, &p, groups)
}
