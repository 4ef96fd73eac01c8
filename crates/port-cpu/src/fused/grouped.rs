//! grouped_linear: every product of one call (each group's y = x w^T forward; dx = dy w and
//! dw = dy^T x backward) scheduled together on the pool, instead of one pool-wide product after
//! another.
//!
//! A lone `linear` cuts its product into one slice of the output per worker
//! (`prim::matmul::split`): right for one large product, wasteful for many small ones. The
//! experts of a MoE layer are many small products (moe-tiny: 8 experts of 300-700 rows a
//! layer, [680, 256] and [256, 340] weights); split per call, each product pays a fork-join of
//! the pool, each slice packs the operand it shares with the other slice again, and the slices
//! are half as wide. So here each product is one task that runs whole on one thread, and the
//! tasks run at once, the largest first, each free worker taking the largest left (greedy list
//! scheduling). A product above a worker's fair share of the call (total work / threads) would
//! leave the other workers idle at the end, so it runs first, alone, split across the pool as
//! a lone `linear` is; so does every product when fewer are left than there are workers (they
//! could not keep the pool busy side by side), when the whole call is below the size at which
//! a lone product starts to use the pool ([`PAR_FLOPS`]), or when the pool has one thread.
//!
//! Measured (`examples/grouped_bench`, 2 threads, Intel Xeon family 6 model 207 with AVX-512,
//! alternated calls, medians): one moe-tiny layer's four calls (up and down, forward and
//! backward; 4096 rows over 8 experts of 330-700 rows) take 22.5 ms in f32 against 26.8 ms as
//! one `linear` per expert, where one thread takes 42-44 ms either way (1.9x on two threads
//! instead of 1.6x); bf16 42.1 against 48.6 ms; 64 experts of 64 rows 29.7 against 47.1 ms;
//! two experts of 2048 rows, or 3500 and 596 (the big one split), within 3% of each other.
//! In `bench --preset moe-tiny --profile` (16 x 128, 2 threads, five alternated pairs) the
//! experts' products went from 82.1 to 72.5 ms a step, what dense's MLPs of the same FLOPs take
//! (docs/moe.md).
//!
//! Thread-count independence: each product computes every output element with the same sum
//! whether it runs whole on one thread or split in slices (a slice takes the same path through
//! gemm as the whole product, and the native bf16 kernel sums each element over K in an order
//! its blocking does not change; see `prim::matmul::matmul_serial`), and no two products write
//! the same element; so which products run split, and on which thread, changes no bit. (With a
//! vendor BLAS, `ANYCHIP_BLAS`, the bits are the library's, as for any product.)

use super::linear::{dw_product, dx_product, y_product};
use crate::prim::{matmul::PAR_FLOPS, movement::fill};
use anychip_port::{check, Handled, PortError, Result, View};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which product of a group.
#[derive(Clone, Copy)]
enum Which {
    Y,
    Dx,
    Dw,
}

/// One product of the call: its multiply-adds, its group, and which product it is.
struct Product {
    work: usize,
    group: usize,
    which: Which,
}

/// y_e = x_e ws[e]^T for every non-empty group.
pub fn fwd(x: &View, ws: &[View], offsets: &[usize], y: &View) -> Result<Handled> {
    let (_, inp, out) = check::grouped_linear(x, ws, offsets, y, None, None)?;
    let products: Vec<Product> =
        check::groups(offsets).map(|(e, _, n)| Product { work: n * inp * out, group: e, which: Which::Y }).collect();
    schedule(products, |p, parallel| {
        let (start, n) = (offsets[p.group], offsets[p.group + 1] - offsets[p.group]);
        y_product(&x.narrow(0, start, n), &ws[p.group], &y.narrow(0, start, n), parallel)
    })?;
    Ok(Handled::Yes)
}

/// dx_e = dy_e ws[e] and dws[e] = dy_e^T x_e, each where asked for (an empty group's dws[e]
/// zeroed).
pub fn bwd(
    x: &View,
    ws: &[View],
    dy: &View,
    offsets: &[usize],
    dx: Option<&View>,
    dws: &[Option<View>],
) -> Result<Handled> {
    let (_, inp, out) = check::grouped_linear(x, ws, offsets, dy, dx, Some(dws))?;
    for dw in check::empty_group_grads(offsets, dws) {
        fill(dw, 0.0)?;
    }
    let mut products = Vec::new();
    for (e, _, n) in check::groups(offsets) {
        if dx.is_some() {
            products.push(Product { work: n * inp * out, group: e, which: Which::Dx });
        }
        if dws[e].is_some() {
            products.push(Product { work: n * inp * out, group: e, which: Which::Dw });
        }
    }
    schedule(products, |p, parallel| {
        let e = p.group;
        let (start, n) = (offsets[e], offsets[e + 1] - offsets[e]);
        let dye = dy.narrow(0, start, n);
        match (p.which, dx, &dws[e]) {
            (Which::Dx, Some(dx), _) => dx_product(&dye, &ws[e], &dx.narrow(0, start, n), parallel),
            (Which::Dw, _, Some(dw)) => dw_product(&dye, &x.narrow(0, start, n), dw, parallel),
            _ => Ok(()), // listed only where its output is present
        }
    })?;
    Ok(Handled::Yes)
}

/// Run every product (`run(product, parallel)`): see the module docs for the order.
fn schedule(mut products: Vec<Product>, run: impl Fn(&Product, bool) -> Result<()> + Sync) -> Result<()> {
    let threads = rayon::current_num_threads();
    let total: usize = products.iter().map(|p| p.work).sum();
    if threads == 1 || total < PAR_FLOPS {
        return products.iter().try_for_each(|p| run(p, true));
    }
    // Largest first (ties in call order, so the order is the data's alone).
    products.sort_by_key(|p| std::cmp::Reverse(p.work));
    let share = total / threads;
    let whole = products.partition_point(|p| p.work > share);
    products[..whole].iter().try_for_each(|p| run(p, true))?;
    let rest = &products[whole..];
    if rest.len() < threads {
        // Too few to keep every worker busy side by side: split each, as a lone linear is.
        return rest.iter().try_for_each(|p| run(p, true));
    }
    let (next, failed) = (AtomicUsize::new(0), Mutex::new(None::<PortError>));
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(p) = rest.get(i) else { break };
        if let Err(e) = run(p, false) {
            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            break;
        }
    };
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| worker());
        }
        worker();
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
