//! gather_rows and scatter_add_rows: indexed row movement (embeddings and their gradients).

use super::dense_out;
use crate::elem::{load, raw, store, Raw, BLOCK, PAR_MIN};
use anychip_port::{invalid, DType, Result, View};
use rayon::prelude::*;

/// Read and range-check the I32 index vector.
pub(crate) fn indices(idx: &View, rows: usize) -> Result<Vec<usize>> {
    if idx.dtype != DType::I32 || idx.shape().len() != 1 {
        return invalid(format!("row indices must be a rank-1 i32 tensor, got {} {:?}", idx.dtype, idx.shape()));
    }
    let r = raw(idx)?;
    let l = &idx.layout;
    (0..l.shape[0])
        .map(|n| {
            // SAFETY: in bounds (checked by `raw`).
            let i = unsafe { *r.ptr::<i32>().add(l.offset + n * l.strides[0]) };
            if i < 0 || i as usize >= rows {
                invalid(format!("row index {i} at position {n} is outside the table's {rows} rows; check token ids against the vocabulary"))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// The positions of `ids` grouped by target, each group in ascending position: target t's are
/// `order[starts[t]..starts[t + 1]]` (a stable counting sort over `targets` rows; every id is
/// below `targets`, as [`indices`] checks).
pub(crate) fn group_by_target(ids: &[usize], targets: usize) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0usize; targets + 1];
    ids.iter().for_each(|&t| starts[t + 1] += 1);
    (0..targets).for_each(|t| starts[t + 1] += starts[t]);
    let (mut next, mut order) = (starts.clone(), vec![0usize; ids.len()]);
    for (r, &t) in ids.iter().enumerate() {
        order[next[t]] = r;
        next[t] += 1;
    }
    (starts, order)
}

fn check2(v: &View, what: &str) -> Result<(usize, usize)> {
    match v.shape() {
        [a, b] => Ok((*a, *b)),
        s => invalid(format!("{what} must be rank 2, got {s:?}")),
    }
}

/// Element index of (r, c0) and the column stride of a rank-2 view.
fn at(v: &View, r: usize, c0: usize) -> (usize, usize) {
    let l = &v.layout;
    (l.offset + r * l.strides[0] + c0 * l.strides[1], l.strides[1])
}

/// Copy `w` columns starting at c0 of row `from` in `src` to row `to` of `dst`: byte for byte
/// when both are unit-stride rows of one dtype, otherwise through `t` as f32.
#[allow(clippy::too_many_arguments)]
unsafe fn move_row(src: &View, s: Raw, from: usize, dst: &View, d: Raw, to: usize, c0: usize, w: usize, t: &mut [f32]) {
    let (a, sa) = at(src, from, c0);
    let (b, sb) = at(dst, to, c0);
    if s.dtype == d.dtype && sa == 1 && sb == 1 {
        let size = s.dtype.size();
        std::ptr::copy_nonoverlapping(s.ptr::<u8>().add(a * size), d.ptr::<u8>().add(b * size), w * size);
        return;
    }
    load(s, a, sa, &mut t[..w]);
    store(d, b, sb, &t[..w]);
}

/// out[n, :] = table[idx[n], :].
pub fn gather_rows(table: &View, idx: &View, out: &View) -> Result<()> {
    dense_out(out)?;
    let (v, d) = check2(table, "gather_rows table")?;
    let (n, d2) = check2(out, "gather_rows out")?;
    let ids = indices(idx, v)?;
    if d != d2 || ids.len() != n {
        return invalid(format!("gather_rows: table [{v},{d}], {} indices, out [{n},{d2}] do not match", ids.len()));
    }
    let (t, o) = (raw(table)?, raw(out)?);
    // One conversion buffer per task, not per row: zeroing a BLOCK-wide buffer for every row
    // cost more than moving a short row.
    let one = |buf: &mut [f32; BLOCK], r: usize| {
        for c0 in (0..d).step_by(BLOCK) {
            // SAFETY: in bounds; each output row belongs to one task.
            unsafe { move_row(table, t, ids[r], out, o, r, c0, BLOCK.min(d - c0), buf) };
        }
    };
    if n * d < PAR_MIN {
        let mut buf = [0f32; BLOCK];
        (0..n).for_each(|r| one(&mut buf, r));
    } else {
        (0..n).into_par_iter().for_each_init(|| [0f32; BLOCK], |buf, r| one(buf, r));
    }
    Ok(())
}

/// out[idx[n], :] += src[n, :], repeated indices accumulating in index order.
///
/// Positions are grouped by target row ([`group_by_target`], ascending within a group) and
/// the target rows shared out between tasks, so every output row is owned by one task, loaded
/// and rounded once (bf16 tables must not round per add), and summed in ascending position
/// whatever the thread count. (Tasks over 64-column slices, as before, walked every position
/// once per slice: a quarter of a 256-wide row per visit, 0.8 ms for the 4,096 rows of a MoE
/// layer's dispatch gradient on the Intel Xeon model 207.)
pub fn scatter_add_rows(src: &View, idx: &View, out: &View) -> Result<()> {
    dense_out(out)?;
    let (n, d) = check2(src, "scatter_add_rows src")?;
    let (v, d2) = check2(out, "scatter_add_rows out")?;
    let ids = indices(idx, v)?;
    if d != d2 || ids.len() != n {
        return invalid(format!("scatter_add_rows: src [{n},{d}], {} indices, out [{v},{d2}] do not match", ids.len()));
    }
    let (s, o) = (raw(src)?, raw(out)?);
    let (starts, order) = group_by_target(&ids, v);
    // (sum, row) buffers of one task.
    let one = |(y, x): &mut (Vec<f32>, Vec<f32>), t: usize| {
        let group = &order[starts[t]..starts[t + 1]];
        if group.is_empty() {
            return;
        }
        for c0 in (0..d).step_by(BLOCK) {
            let w = BLOCK.min(d - c0);
            let (y, x) = (&mut y[..w], &mut x[..w]);
            let (b, sb) = at(out, t, c0);
            // SAFETY: in bounds; row t of `out` belongs to this task.
            unsafe { load(o, b, sb, y) };
            for &p in group {
                let (a, sa) = at(src, p, c0);
                // SAFETY: in bounds; src is only read.
                unsafe { load(s, a, sa, x) };
                y.iter_mut().zip(x.iter()).for_each(|(y, x)| *y += x);
            }
            // SAFETY: as above.
            unsafe { store(o, b, sb, y) };
        }
    };
    let buffers = || (vec![0f32; BLOCK.min(d)], vec![0f32; BLOCK.min(d)]);
    if n * d < PAR_MIN {
        let mut buf = buffers();
        (0..v).for_each(|t| one(&mut buf, t));
    } else {
        (0..v).into_par_iter().for_each_init(buffers, one);
    }
    Ok(())
}
