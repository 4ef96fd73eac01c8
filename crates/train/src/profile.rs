//! `anychip bench --profile`: wall time per op kind, from a port that wraps the real one.
//!
//! [`Profiler`] is a [`Forward`] port: it passes each call to the inner port and times it, so
//! neither the engine nor any port needs profiling code. Only the outermost call is timed:
//! a composite that falls back to its default decomposition is charged, with every primitive
//! it issues, to the composite's kind, and a [`Profiler::scope`] (data loading, the optimizer
//! step) charges everything inside it to its own kind. Timed intervals therefore never overlap
//! and the kinds sum to at most the step time; the rest is host work (autograd bookkeeping,
//! allocation of host vectors), reported as the remainder.

use anychip_port::{Buffer, Composite, Forward, Handled, Port, Primitive, Result};
use serde::Serialize;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a span of time was spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `matmul` and the `linear` composite.
    Matmul,
    /// The `attention` and `softmax` composites.
    Attention,
    /// LayerNorm and RMSNorm.
    Norms,
    /// Elementwise primitives, reductions, activations, RoPE, dropout.
    Elementwise,
    /// `cross_entropy` and `log_softmax` (only the loss uses it).
    CrossEntropy,
    /// Embedding lookups and their scatter-add gradients.
    Embedding,
    /// Copies, strided copies, host reads and writes.
    Movement,
    /// The whole optimizer step (grad norm, clipping, AdamW), timed by its caller.
    Optimizer,
    /// Drawing a batch and uploading it, timed by its caller.
    Data,
    /// Allocation, random numbers, synchronisation.
    Other,
    /// A MoE layer's router: its linear, softmax, top-k read-back, weights, balancing loss.
    MoeRouter,
    /// A MoE layer's dispatch: sorting slots by expert and gathering their rows.
    MoeDispatch,
    /// A MoE layer's weighted combine back to token order.
    MoeCombine,
}

impl Kind {
    /// Every kind, in report order for ties.
    pub const ALL: [Kind; 13] = [
        Kind::Matmul,
        Kind::Attention,
        Kind::Norms,
        Kind::Elementwise,
        Kind::CrossEntropy,
        Kind::Embedding,
        Kind::Movement,
        Kind::Optimizer,
        Kind::Data,
        Kind::Other,
        Kind::MoeRouter,
        Kind::MoeDispatch,
        Kind::MoeCombine,
    ];

    /// Name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Matmul => "matmul",
            Kind::Attention => "attention",
            Kind::Norms => "norms",
            Kind::Elementwise => "elementwise",
            Kind::CrossEntropy => "cross_entropy",
            Kind::Embedding => "embedding",
            Kind::Movement => "movement",
            Kind::Optimizer => "optimizer",
            Kind::Data => "data",
            Kind::Other => "other",
            Kind::MoeRouter => "moe_router",
            Kind::MoeDispatch => "moe_dispatch",
            Kind::MoeCombine => "moe_combine",
        }
    }

    /// The kind a MoE region charges its calls to (see `anychip_core::in_region`).
    fn of_region(region: &str) -> Option<Kind> {
        use anychip_nn::moe_regions::{COMBINE, DISPATCH, ROUTER};
        [(ROUTER, Kind::MoeRouter), (DISPATCH, Kind::MoeDispatch), (COMBINE, Kind::MoeCombine)]
            .into_iter()
            .find_map(|(r, k)| (r == region).then_some(k))
    }

    /// The kind a composite family is charged to (forward and backward alike).
    pub fn of_composite(call: &Composite) -> Kind {
        match call.name() {
            "linear" | "grouped_linear" => Kind::Matmul,
            "attention" | "softmax" => Kind::Attention,
            "layer_norm" | "rms_norm" => Kind::Norms,
            "cross_entropy" | "log_softmax" => Kind::CrossEntropy,
            "embedding" => Kind::Embedding,
            "adamw" | "grad_norm" => Kind::Optimizer,
            _ => Kind::Elementwise,
        }
    }
}

/// Which half of the step a call belongs to; set by the caller with [`Profiler::set_phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Forward = 0,
    Backward = 1,
    /// Anything outside forward and backward (data, optimizer, loss read-back).
    Rest = 2,
}

#[derive(Clone, Copy, Default)]
struct Stat {
    secs: f64,
    calls: u64,
}

thread_local! {
    // Nesting depth of timed spans on this thread: only depth-0 spans are recorded.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// A port that times every call of the port it wraps, per [`Kind`] and [`Phase`].
pub struct Profiler {
    inner: Arc<dyn Port>,
    /// Origin of the wall clock, for ports that do not model their time.
    epoch: Instant,
    name: String,
    phase: AtomicUsize,
    stats: Mutex<[[Stat; 3]; Kind::ALL.len()]>,
    /// The same times per op name ("linear", "unary gelu", "reduce sum", ...), for the table of
    /// the costliest ops: a kind can hide which of its ops is slow.
    ops: Mutex<HashMap<String, (Kind, [Stat; 3])>>,
}

impl Profiler {
    /// Wrap `inner`; its buffers pass through unchanged.
    pub fn new(inner: Arc<dyn Port>) -> Profiler {
        let name = inner.name().to_string();
        Profiler {
            inner,
            epoch: Instant::now(),
            name,
            phase: AtomicUsize::new(Phase::Rest as usize),
            stats: Mutex::default(),
            ops: Mutex::default(),
        }
    }

    /// Charge the following calls to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as usize, Ordering::Relaxed);
    }

    /// Forget everything recorded so far (call after warm-up).
    pub fn reset(&self) {
        *self.stats.lock().expect("profiler stats poisoned") = Default::default();
        self.ops.lock().expect("profiler stats poisoned").clear();
    }

    /// Run `f`, charging its whole wall time (port calls inside included) to `kind`.
    pub fn scope<R>(&self, kind: Kind, f: impl FnOnce() -> R) -> R {
        self.timed(kind, kind.name(), false, f)
    }

    /// Seconds on the clock that times calls: the port's modelled time for a simulated chip
    /// ([`Port::modelled_seconds`]), else the wall clock.
    fn now(&self) -> f64 {
        self.inner.modelled_seconds().unwrap_or_else(|| self.epoch.elapsed().as_secs_f64())
    }

    fn timed<R>(&self, kind: Kind, op: &str, sync: bool, f: impl FnOnce() -> R) -> R {
        let region = anychip_core::current_region().and_then(Kind::of_region);
        let kind = region.unwrap_or(kind);
        // Inside a region an op is listed under it too ("moe_router: linear").
        let labelled;
        let op = match region {
            Some(r) => {
                labelled = format!("{}{REGION_SEP}{op}", r.name());
                labelled.as_str()
            }
            None => op,
        };
        let depth = DEPTH.with(|d| d.replace(d.get() + 1));
        let t = self.now();
        let r = f();
        // Synchronising is free on synchronous ports and is what makes an asynchronous port's
        // time land on the call that caused it.
        if depth == 0 && sync {
            let _ = self.inner.synchronize();
        }
        let secs = self.now() - t;
        DEPTH.with(|d| d.set(depth));
        if depth == 0 {
            let phase = self.phase.load(Ordering::Relaxed);
            let mut s = self.stats.lock().expect("profiler stats poisoned");
            let st = &mut s[kind as usize][phase];
            st.secs += secs;
            st.calls += 1;
            drop(s);
            let mut ops = self.ops.lock().expect("profiler stats poisoned");
            if !ops.contains_key(op) {
                ops.insert(op.to_string(), (kind, Default::default()));
            }
            let st = &mut ops.get_mut(op).expect("inserted above").1[phase];
            st.secs += secs;
            st.calls += 1;
        }
        r
    }

    fn op<R>(&self, kind: Kind, f: impl FnOnce() -> R) -> R {
        self.timed(kind, kind.name(), true, f)
    }

    /// [`Profiler::op`] for a call that the table of ops names on its own.
    fn named<R>(&self, kind: Kind, op: &str, f: impl FnOnce() -> R) -> R {
        self.timed(kind, op, true, f)
    }

    /// The recorded time as a table over `steps` steps that took `step_secs` in total.
    pub fn report(&self, steps: usize, step_secs: f64) -> Profile {
        let s = *self.stats.lock().expect("profiler stats poisoned");
        let n = steps.max(1) as f64;
        let step_ms = step_secs * 1e3 / n;
        let mut rows: Vec<ProfileRow> = Kind::ALL
            .iter()
            .map(|&k| {
                let st = &s[k as usize];
                let ms = st.iter().map(|x| x.secs).sum::<f64>() * 1e3 / n;
                ProfileRow {
                    kind: k.name(),
                    ms_per_step: ms,
                    pct_of_step: 100.0 * ms / step_ms,
                    calls_per_step: st.iter().map(|x| x.calls).sum::<u64>() as f64 / n,
                    fwd_ms: st[Phase::Forward as usize].secs * 1e3 / n,
                    bwd_ms: st[Phase::Backward as usize].secs * 1e3 / n,
                }
            })
            .filter(|r| r.calls_per_step > 0.0)
            .collect();
        rows.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step));
        let attributed: f64 = rows.iter().map(|r| r.ms_per_step).sum();
        let mut ops: Vec<OpRow> = self
            .ops
            .lock()
            .expect("profiler stats poisoned")
            .iter()
            .map(|(name, (kind, st))| OpRow {
                op: name.clone(),
                kind: kind.name(),
                ms_per_step: st.iter().map(|x| x.secs).sum::<f64>() * 1e3 / n,
                calls_per_step: st.iter().map(|x| x.calls).sum::<u64>() as f64 / n,
                fwd_ms: st[Phase::Forward as usize].secs * 1e3 / n,
                bwd_ms: st[Phase::Backward as usize].secs * 1e3 / n,
            })
            .collect();
        ops.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step).then_with(|| a.op.cmp(&b.op)));
        Profile { steps, step_ms, rows, unattributed_ms: step_ms - attributed, ops }
    }
}

/// Time per kind, averaged over the profiled steps.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub steps: usize,
    /// Mean step time of the profiled steps (the denominator of every percentage).
    pub step_ms: f64,
    /// Sorted by time, slowest first; kinds never called are left out.
    pub rows: Vec<ProfileRow>,
    /// Step time not inside any timed call: host-side autograd and bookkeeping.
    pub unattributed_ms: f64,
    /// The same time per op name, slowest first (every op; the printed table shows the top ones).
    pub ops: Vec<OpRow>,
}

/// One op's share of a step: a composite by family name, a primitive with its operation.
#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    /// e.g. "linear", "attention", "unary gelu", "reduce sum", "matmul"; inside a profiler
    /// region prefixed with it ("moe_router: linear", see [`OpRow::op_name`]).
    pub op: String,
    /// The kind it is charged to.
    pub kind: &'static str,
    pub ms_per_step: f64,
    pub calls_per_step: f64,
    pub fwd_ms: f64,
    pub bwd_ms: f64,
}

/// Between the region an op ran in and the op, in [`OpRow::op`] ("moe_router: linear").
const REGION_SEP: &str = ": ";

impl OpRow {
    /// The op without the region it ran in: "linear" for "moe_router: linear".
    pub fn op_name(&self) -> &str {
        self.op.split_once(REGION_SEP).map_or(self.op.as_str(), |(_, op)| op)
    }
}

/// Ops listed in the printed table (the JSON has all of them).
const TOP_OPS: usize = 12;

/// One kind's share of a step.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub kind: &'static str,
    pub ms_per_step: f64,
    pub pct_of_step: f64,
    pub calls_per_step: f64,
    /// Part of `ms_per_step` spent in the forward pass.
    pub fwd_ms: f64,
    /// Part of `ms_per_step` spent in the backward pass.
    pub bwd_ms: f64,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "profile: {:.1} ms per step (mean of {} steps)", self.step_ms, self.steps)?;
        writeln!(
            f,
            "{:<14} {:>10} {:>7} {:>11} {:>10} {:>10}",
            "kind", "ms/step", "%", "calls/step", "fwd ms", "bwd ms"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<14} {:>10.2} {:>6.1}% {:>11.1} {:>10.2} {:>10.2}",
                r.kind, r.ms_per_step, r.pct_of_step, r.calls_per_step, r.fwd_ms, r.bwd_ms
            )?;
        }
        let pct = 100.0 * self.unattributed_ms / self.step_ms;
        writeln!(
            f,
            "{:<14} {:>10.2} {:>6.1}%   (host: autograd, bookkeeping)",
            "unattributed", self.unattributed_ms, pct
        )?;
        write!(
            f,
            "costliest ops:\n{:<22} {:<13} {:>8} {:>7} {:>11} {:>8} {:>8}",
            "op", "kind", "ms/step", "%", "calls/step", "fwd ms", "bwd ms"
        )?;
        for r in self.ops.iter().take(TOP_OPS) {
            write!(
                f,
                "\n{:<22} {:<13} {:>8.2} {:>6.1}% {:>11.1} {:>8.2} {:>8.2}",
                r.op,
                r.kind,
                r.ms_per_step,
                100.0 * r.ms_per_step / self.step_ms,
                r.calls_per_step,
                r.fwd_ms,
                r.bwd_ms
            )?;
        }
        Ok(())
    }
}

/// An op enum's name as the table prints it: `Gelu` as "gelu".
fn lower(op: impl std::fmt::Debug) -> String {
    format!("{op:?}").to_lowercase()
}

/// A primitive's kind and its row in the op table ("unary gelu", "matmul"; the embedding
/// and random primitives are rows of their kind).
fn primitive_row(call: &Primitive) -> (Kind, String) {
    use Primitive::*;
    match call {
        Fill { .. } => (Kind::Elementwise, "fill".into()),
        Cast { x, out } => (Kind::Elementwise, format!("cast {}->{}", x.dtype, out.dtype)),
        CopyStrided { .. } => (Kind::Movement, "copy_strided".into()),
        Unary { op, .. } => (Kind::Elementwise, format!("unary {}", lower(op))),
        Binary { op, .. } => (Kind::Elementwise, format!("binary {}", lower(op))),
        Compare { op, .. } => (Kind::Elementwise, format!("compare {}", lower(op))),
        Select { .. } => (Kind::Elementwise, "select".into()),
        Reduce { op, .. } => (Kind::Elementwise, format!("reduce {}", lower(op))),
        Matmul { .. } => (Kind::Matmul, "matmul".into()),
        GatherRows { .. } | ScatterAddRows { .. } => (Kind::Embedding, Kind::Embedding.name().into()),
        Random { .. } => (Kind::Other, Kind::Other.name().into()),
    }
}

/// A composite's row in the op table: its family, and for `linear` the weight's [out x in],
/// since a model's linears differ mostly in shape (qkv, MLP, LM head); for `grouped_linear`
/// the groups' count before it ([groups x out x in]: a MoE layer's experts, up or down).
fn op_label(call: &Composite) -> String {
    match call {
        Composite::LinearFwd { w, .. } | Composite::LinearBwd { w, .. } if w.shape().len() == 2 => {
            format!("linear {}x{}", w.shape()[0], w.shape()[1])
        }
        Composite::GroupedLinearFwd { ws, .. } | Composite::GroupedLinearBwd { ws, .. }
            if ws.first().is_some_and(|w| w.shape().len() == 2) =>
        {
            format!("grouped_linear {}x{}x{}", ws.len(), ws[0].shape()[0], ws[0].shape()[1])
        }
        _ => call.name().to_string(),
    }
}

impl Forward for Profiler {
    fn inner(&self) -> &dyn Port {
        self.inner.as_ref()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.op(Kind::Other, || self.inner.alloc(bytes))
    }
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.op(Kind::Movement, || self.inner.write(dst, offset, src))
    }
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.op(Kind::Movement, || self.inner.read(src, offset, dst))
    }
    fn copy(&self, src: &Buffer, so: usize, dst: &Buffer, d: usize, bytes: usize) -> Result<()> {
        self.op(Kind::Movement, || self.inner.copy(src, so, dst, d, bytes))
    }
    fn synchronize(&self) -> Result<()> {
        self.op(Kind::Other, || self.inner.synchronize())
    }
    fn primitive(&self, call: &Primitive) -> Result<()> {
        let (kind, label) = primitive_row(call);
        self.named(kind, &label, || call.run_on(self.inner.as_ref()))
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        self.named(Kind::of_composite(call), &op_label(call), || match self.inner.composite(call)? {
            Handled::Yes => Ok(Handled::Yes),
            // Decompose here, inside the timed span, so the primitives are charged to the
            // composite's kind; the engine would otherwise run them after this call returned.
            Handled::No => anychip_decomp::run(self, call).map(|()| Handled::Yes),
        })
    }
}
