//! gather_rows and scatter_add_rows: indexed row access for embeddings and their gradients.
//!
//! An index the host wrote itself (the usual case: token ids) is checked before anything
//! runs, so a bad one is reported by the call; an index computed on the device is checked by
//! the kernel and reported at the next read or synchronize.

use crate::gpu::Gpu;
use crate::launch::{check_float, check_view, grid, run, Params};
use crate::memory::GpuMemory;
use crate::shader::{Slot, ROWS};
use anychip_port::{invalid, DType, Layout, Result, View};

/// Check a rank-2 view and return its (rows, cols).
fn matrix(what: &str, v: &View) -> Result<(usize, usize)> {
    match *v.shape() {
        [r, c] => Ok((r, c)),
        _ => invalid(format!("{what}: shape {:?} must have rank 2 [rows, cols]", v.shape())),
    }
}

/// Validate an index view (`[N]` I32) and, when its bytes are known on the host, every index.
fn indices<'a>(what: &str, idx: &'a View, n: usize, rows: usize) -> Result<&'a GpuMemory> {
    let mem = check_view(what, idx)?;
    if idx.dtype != DType::I32 || idx.shape() != [n] {
        return invalid(format!("{what}: expected an i32 view of shape [{n}], got {} {:?}", idx.dtype, idx.shape()));
    }
    if let Some(bytes) = mem.mirror() {
        for (i, e) in idx.layout.indices().enumerate() {
            let r = i32::from_le_bytes([bytes[4 * e], bytes[4 * e + 1], bytes[4 * e + 2], bytes[4 * e + 3]]);
            if r < 0 || r as usize >= rows {
                return invalid(format!("{what}: index {r} at position {i} is outside the table's {rows} rows"));
            }
        }
    }
    Ok(mem)
}

fn params(out: &View, src: &View, idx: &View, d: usize, v: usize, n: usize, threads: usize) -> Params {
    let mut p = Params::new(threads);
    p.walk(
        &[],
        &[
            (out.layout.offset, &out.layout.strides),
            (src.layout.offset, &src.layout.strides),
            (idx.layout.offset, &idx.layout.strides),
        ],
    );
    p.set(2, d as u32).set(3, v as u32).set(4, n as u32);
    p
}

/// out[n, :] = table[idx[n], :], bit for bit.
pub fn gather_rows(g: &Gpu, table: &View, idx: &View, out: &View) -> Result<()> {
    let tm = check_view("gather_rows table", table)?;
    let om = check_view("gather_rows out", out)?;
    let (v, d) = matrix("gather_rows table", table)?;
    let (n, od) = matrix("gather_rows out", out)?;
    if od != d || out.dtype != table.dtype {
        return invalid(format!(
            "gather_rows: out {} {:?} must be {} [N, {d}] like table {:?}",
            out.dtype,
            out.shape(),
            table.dtype,
            table.shape()
        ));
    }
    let im = indices("gather_rows idx", idx, n, v)?;
    if n * d == 0 {
        return Ok(());
    }
    let slots = [Slot::write("out", out.dtype), Slot::read("a", table.dtype), Slot::read("b", DType::I32)];
    let p = params(out, table, idx, d, v, n, n * d);
    run(g, "gather", ROWS, "gather", &slots, &[], &[om, tm, im], true, &p, grid(n * d)?)
}

/// out[idx[n], :] += src[n, :], each column accumulated in index order in f32 and rounded
/// once per output element.
pub fn scatter_add_rows(g: &Gpu, src: &View, idx: &View, out: &View) -> Result<()> {
    let sm = check_view("scatter_add_rows src", src)?;
    let om = check_view("scatter_add_rows out", out)?;
    let (n, d) = matrix("scatter_add_rows src", src)?;
    let (v, od) = matrix("scatter_add_rows out", out)?;
    check_float("scatter_add_rows src", src)?;
    check_float("scatter_add_rows out", out)?;
    if od != d {
        return invalid(format!(
            "scatter_add_rows: src {:?} and out {:?} differ in row length",
            src.shape(),
            out.shape()
        ));
    }
    let im = indices("scatter_add_rows idx", idx, n, v)?;
    if n * d == 0 {
        return Ok(());
    }
    if out.dtype == DType::BF16 {
        // The kernel adds into `out` in place, so a repeated index would round the running sum
        // to bf16 after every addition (a token seen 1,000 times in a batch would stop
        // accumulating). Sum in an f32 copy instead and round once, as f32 accumulation asks.
        let acc = View {
            buf: crate::runtime::alloc(g, out.numel() * DType::F32.size())?,
            dtype: DType::F32,
            layout: Layout::contiguous(out.shape()),
        };
        super::elementwise::cast(g, out, &acc)?;
        scatter_add_rows(g, src, idx, &acc)?;
        return super::elementwise::cast(g, &acc, out);
    }
    let slots = [Slot::write("out", out.dtype), Slot::read("a", src.dtype), Slot::read("b", DType::I32)];
    // Consecutive dispatches over ranges of indices: the queue keeps them in order.
    const RANGE: usize = 4096;
    for start in (0..n).step_by(RANGE) {
        let mut p = params(out, src, idx, d, v, n, d);
        p.set(5, start as u32).set(6, (start + RANGE).min(n) as u32);
        run(g, "scatter", ROWS, "scatter_add", &slots, &[], &[om, sm, im], true, &p, grid(d)?)?;
    }
    Ok(())
}
