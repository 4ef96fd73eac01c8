//! gather_rows and scatter_add_rows: indexed row access for embeddings and their gradients.
//!
//! Every index is checked before anything is written, so a bad index leaves `out` untouched.

use crate::memory::{check_float, check_view, decode, load, load_bits, store, store_bits};
use anychip_port::{invalid, DType, Layout, Result, View};

/// Validate an index view (`[N]` I32) and return its values, each in `0..rows`.
fn indices(what: &str, idx: &View, n: usize, rows: usize) -> Result<Vec<usize>> {
    check_view(what, idx)?;
    if idx.dtype != DType::I32 || idx.shape() != [n] {
        return invalid(format!("{what}: expected an i32 view of shape [{n}], got {} {:?}", idx.dtype, idx.shape()));
    }
    let bits = load_bits(what, idx)?;
    bits.iter()
        .enumerate()
        .map(|(i, &b)| {
            let r = decode(DType::I32, b) as i64;
            if r < 0 || r as usize >= rows {
                invalid(format!("{what}: index {r} at position {i} is outside the table's {rows} rows"))
            } else {
                Ok(r as usize)
            }
        })
        .collect()
}

/// Check a rank-2 view and return its (rows, cols).
fn matrix(what: &str, v: &View) -> Result<(usize, usize)> {
    check_view(what, v)?;
    match *v.shape() {
        [r, c] => Ok((r, c)),
        _ => invalid(format!("{what}: shape {:?} must have rank 2 [rows, cols]", v.shape())),
    }
}

/// The view of row `r` of a rank-2 view.
fn row(v: &View, r: usize) -> View {
    let l = &v.layout;
    View {
        buf: v.buf.clone(),
        dtype: v.dtype,
        layout: Layout { shape: vec![l.shape[1]], strides: vec![l.strides[1]], offset: l.offset + r * l.strides[0] },
    }
}

/// out[n, :] = table[idx[n], :], bit for bit.
pub fn gather_rows(table: &View, idx: &View, out: &View) -> Result<()> {
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
    let ids = indices("gather_rows idx", idx, n, v)?;
    let mut bits = Vec::with_capacity(n * d);
    for r in ids {
        bits.extend(load_bits("gather_rows table", &row(table, r))?);
    }
    store_bits("gather_rows out", out, &bits)
}

/// out[idx[n], :] += src[n, :], all additions in f64 and rounded once per output element.
pub fn scatter_add_rows(src: &View, idx: &View, out: &View) -> Result<()> {
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
    let ids = indices("scatter_add_rows idx", idx, n, v)?;
    let s = load("scatter_add_rows src", src)?;
    let mut acc = load("scatter_add_rows out", out)?;
    for (i, &r) in ids.iter().enumerate() {
        for c in 0..d {
            acc[r * d + c] += s[i * d + c];
        }
    }
    store("scatter_add_rows out", out, &acc)
}
