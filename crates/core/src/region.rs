//! Named regions of a step (a MoE layer's router, dispatch and combine), so a profiler wrapping
//! the port can charge the port calls made inside one to it. A region entered during the forward
//! is re-entered by autograd around the backward of every op recorded in it, so both halves of
//! the step are charged alike. Regions do not nest: the innermost one wins.

use std::cell::Cell;

thread_local! {
    static REGION: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Run `f` inside region `name` (None: outside any region) on this thread.
pub fn in_region<R>(name: Option<&'static str>, f: impl FnOnce() -> R) -> R {
    let prev = REGION.with(|r| r.replace(name.or(r.get())));
    let out = f();
    REGION.with(|r| r.set(prev));
    out
}

/// The region this thread is in, if any.
pub fn current_region() -> Option<&'static str> {
    REGION.with(|r| r.get())
}
