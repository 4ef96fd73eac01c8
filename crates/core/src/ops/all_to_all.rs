//! The row exchange of expert parallelism as one autograd node.
//!
//! Forward, for x `[S, d]` whose rows are laid out by destination rank (`send[r]` rows for rank
//! r, in rank order): y `[R, d]` holds the `recv[r]` rows each rank r sent here, in rank order
//! (`R = sum recv`). This is [`Collectives::all_to_all_v`] on whole rows.
//! Backward: row i of x went to one place on one rank, so dx is dy sent back the way it came:
//! the same all-to-all with the counts swapped, `dx = all_to_all_v(dy; recv -> send)`.
//!
//! Both passes are collectives: every rank of the group must run the same exchanges in the same
//! order. The model's graph is the same on every rank, so its backward order is too.

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use anychip_port::Collectives;
use std::sync::Arc;

/// Send `send[r]` rows of x `[S, d]` (laid out by destination) to each rank r of `coll` and
/// receive `recv[r]` rows from each: `[sum recv, d]`, differentiable in x.
pub fn all_to_all_rows(x: &Tensor, coll: &Arc<dyn Collectives>, send: &[usize], recv: &[usize]) -> Result<Tensor> {
    let world = coll.world();
    if x.rank() != 2 || send.len() != world || recv.len() != world || send.iter().sum::<usize>() != x.dim(0) {
        return shape_err(
            "all_to_all_rows",
            format!("x {:?} with {} send and {} recv counts over {world} ranks", x.shape(), send.len(), recv.len()),
        );
    }
    let d = x.dim(1);
    let y = exchange(&x.contiguous()?, coll, send, recv, d)?;
    let (c, s, r) = (coll.clone(), send.to_vec(), recv.to_vec());
    Ok(y.record("all_to_all_rows", &[x], move |g, _| Ok(vec![Some(exchange(&g.contiguous()?, &c, &r, &s, d)?)])))
}

/// The all-to-all of contiguous `x` in rows of `d` elements.
fn exchange(x: &Tensor, coll: &Arc<dyn Collectives>, send: &[usize], recv: &[usize], d: usize) -> Result<Tensor> {
    let rows: usize = recv.iter().sum();
    let y = x.empty_on(&[rows, d], x.dtype())?;
    let elems = |c: &[usize]| c.iter().map(|n| n * d).collect::<Vec<usize>>();
    coll.all_to_all_v(&x.view(), &elems(send), &y.view(), &elems(recv))?;
    Ok(y)
}
