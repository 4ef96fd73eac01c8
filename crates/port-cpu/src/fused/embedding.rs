//! Embedding lookup and its gradient: gather_rows, and zero + scatter_add_rows (ordered by
//! position, so repeated ids accumulate identically on any thread count).

use crate::prim::{movement, rows};
use anychip_port::{Handled, Result, View};

/// out = table[ids].
pub fn fwd(table: &View, ids: &View, out: &View) -> Result<Handled> {
    rows::gather_rows(table, ids, &flat(out, table))?;
    Ok(Handled::Yes)
}

/// dtable = 0; dtable[ids[n]] += dout[n].
pub fn bwd(ids: &View, dout: &View, dtable: &View) -> Result<Handled> {
    movement::fill(dtable, 0.0)?;
    rows::scatter_add_rows(&flat(dout, dtable), ids, dtable)?;
    Ok(Handled::Yes)
}

/// `v` seen as [rows, D] with D the table's width (the engine may pass [B, T, D]).
fn flat(v: &View, table: &View) -> View {
    let d = table.shape().last().copied().unwrap_or(1);
    if v.shape().len() == 2 || !v.layout.is_contiguous() || d == 0 {
        return v.clone();
    }
    let mut l = anychip_port::Layout::contiguous(&[v.numel() / d, d]);
    l.offset = v.layout.offset;
    View { layout: l, ..v.clone() }
}
