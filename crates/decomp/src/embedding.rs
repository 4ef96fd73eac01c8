//! Embedding lookup and its gradient: gather rows forward, scatter-add rows backward.

use crate::prims::Prims;
use anychip_port::{Result, View};

pub(crate) fn fwd(k: &Prims, table: &View, ids: &View, out: &View) -> Result<()> {
    k.0.gather_rows(table, ids, out)
}

/// dtable = 0, then dtable[ids[n]] += dout[n].
pub(crate) fn bwd(k: &Prims, ids: &View, dout: &View, dtable: &View) -> Result<()> {
    k.0.fill(dtable, 0.0)?;
    k.0.scatter_add_rows(dout, ids, dtable)
}
