//! `anychip bench --profile`: wall time per op kind, from a port that wraps the real one.
//!
//! [`Profiler`] implements [`Port`] by delegating to the inner port and timing each call, so
//! neither the engine nor any port needs profiling code. Only the outermost call is timed:
//! a composite that falls back to its default decomposition is charged, with every primitive
//! it issues, to the composite's kind, and a [`Profiler::scope`] (data loading, the optimizer
//! step) charges everything inside it to its own kind. Timed intervals therefore never overlap
//! and the kinds sum to at most the step time; the rest is host work (autograd bookkeeping,
//! allocation of host vectors), reported as the remainder.

use anychip_port::{
    BinaryOp, Buffer, Capabilities, Collectives, CompareOp, Composite, Distribution, Handled, Port, ReduceOp, Result,
    UnaryOp, View,
};
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
            "linear" => Kind::Matmul,
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

    fn timed<R>(&self, kind: Kind, op: &str, sync: bool, f: impl FnOnce() -> R) -> R {
        let region = anychip_core::current_region().and_then(Kind::of_region);
        let kind = region.unwrap_or(kind);
        // Inside a region an op is listed under it too ("moe_router: linear").
        let labelled;
        let op = match region {
            Some(r) => {
                labelled = format!("{}: {op}", r.name());
                labelled.as_str()
            }
            None => op,
        };
        let depth = DEPTH.with(|d| d.replace(d.get() + 1));
        let t = Instant::now();
        let r = f();
        // Synchronising is free on synchronous ports and is what makes an asynchronous port's
        // time land on the call that caused it.
        if depth == 0 && sync {
            let _ = self.inner.synchronize();
        }
        let secs = t.elapsed().as_secs_f64();
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
    /// e.g. "linear", "attention", "unary gelu", "reduce sum", "matmul".
    pub op: String,
    /// The kind it is charged to.
    pub kind: &'static str,
    pub ms_per_step: f64,
    pub calls_per_step: f64,
    pub fwd_ms: f64,
    pub bwd_ms: f64,
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

/// A composite's row in the op table: its family, and for `linear` the weight's [out x in],
/// since a model's linears differ mostly in shape (qkv, MLP, LM head).
fn op_label(call: &Composite) -> String {
    match call {
        Composite::LinearFwd { w, .. } | Composite::LinearBwd { w, .. } if w.shape().len() == 2 => {
            format!("linear {}x{}", w.shape()[0], w.shape()[1])
        }
        _ => call.name().to_string(),
    }
}

impl Port for Profiler {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
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
    fn fill(&self, out: &View, value: f64) -> Result<()> {
        self.named(Kind::Elementwise, "fill", || self.inner.fill(out, value))
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, &format!("cast {}->{}", x.dtype, out.dtype), || self.inner.cast(x, out))
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        self.named(Kind::Movement, "copy_strided", || self.inner.copy_strided(x, out))
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, &format!("unary {}", lower(op)), || self.inner.unary(op, x, out))
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, &format!("binary {}", lower(op)), || self.inner.binary(op, a, b, out))
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, &format!("compare {}", lower(op)), || self.inner.compare(op, a, b, out))
    }
    fn select(&self, c: &View, a: &View, b: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, "select", || self.inner.select(c, a, b, out))
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        self.named(Kind::Elementwise, &format!("reduce {}", lower(op)), || self.inner.reduce(op, x, out))
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        self.named(Kind::Matmul, "matmul", || self.inner.matmul(a, b, out, alpha, beta))
    }
    fn gather_rows(&self, t: &View, idx: &View, out: &View) -> Result<()> {
        self.op(Kind::Embedding, || self.inner.gather_rows(t, idx, out))
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        self.op(Kind::Embedding, || self.inner.scatter_add_rows(src, idx, out))
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        self.op(Kind::Other, || self.inner.random(dist, seed, offset, out))
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        self.named(Kind::of_composite(call), &op_label(call), || match self.inner.composite(call)? {
            Handled::Yes => Ok(Handled::Yes),
            // Decompose here, inside the timed span, so the primitives are charged to the
            // composite's kind; the engine would otherwise run them after this call returned.
            Handled::No => anychip_decomp::run(self, call).map(|()| Handled::Yes),
        })
    }
    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        self.inner.enter(f)
    }
    fn collectives(&self, bootstrap: &Arc<dyn Collectives>) -> Result<Option<Arc<dyn Collectives>>> {
        self.inner.collectives(bootstrap)
    }
}

#[cfg(test)]
mod tests {
    use crate::bench::bench;
    use crate::TrainConfig;
    use anychip_models::ModelConfig;

    fn profiled(port: &str) -> super::Profile {
        let mut cfg = TrainConfig::default_for("gpt2-tiny", ModelConfig::preset("gpt2-tiny").unwrap());
        (cfg.batch, cfg.ctx, cfg.lr, cfg.port, cfg.threads) = (2, 32, 1e-4, port.into(), Some(1));
        let r = bench(&cfg, 1, 2, true).unwrap();
        assert!(r.step_ms_median > 0.0);
        r.profile.expect("--profile gives a profile")
    }

    fn ms(p: &super::Profile, kind: &str) -> f64 {
        p.rows.iter().find(|r| r.kind == kind).map_or(0.0, |r| r.ms_per_step)
    }

    fn check(p: &super::Profile) {
        for kind in ["matmul", "optimizer", "attention", "data"] {
            assert!(ms(p, kind) > 0.0, "{kind} took no time:\n{p}");
        }
        let sum: f64 = p.rows.iter().map(|r| r.ms_per_step).sum();
        assert!(sum <= p.step_ms * (1.0 + 1e-9), "kinds sum to {sum} ms, more than the {} ms step:\n{p}", p.step_ms);
        assert!(p.rows.windows(2).all(|w| w[0].ms_per_step >= w[1].ms_per_step), "not sorted:\n{p}");
        // The op table splits the same spans by name: per kind, its ops add up to the kind.
        for r in &p.rows {
            let ops: f64 = p.ops.iter().filter(|o| o.kind == r.kind).map(|o| o.ms_per_step).sum();
            assert!((ops - r.ms_per_step).abs() <= 1e-9 * r.ms_per_step.max(1.0), "{} ops sum to {ops}:\n{p}", r.kind);
        }
        assert!(p.ops.iter().any(|o| o.op == "attention" && o.fwd_ms > 0.0 && o.bwd_ms > 0.0), "{p}");
        assert!(p.ops.windows(2).all(|w| w[0].ms_per_step >= w[1].ms_per_step), "ops not sorted:\n{p}");
        assert!(p.to_string().contains("costliest ops:"), "{p}");
        let m = p.rows.iter().find(|r| r.kind == "matmul").unwrap();
        assert!(m.fwd_ms > 0.0 && m.bwd_ms > 0.0 && m.fwd_ms + m.bwd_ms <= m.ms_per_step * (1.0 + 1e-9), "{p}");
    }

    #[test]
    fn fused_port_profile_is_disjoint_and_sorted() {
        check(&profiled("cpu"));
    }

    #[test]
    fn decomposed_composites_are_charged_to_their_kind() {
        // ref fuses nothing: every composite runs its decomposition inside the profiler, and
        // attention must not leak into elementwise/matmul.
        let p = profiled("ref");
        check(&p);
        let att = p.rows.iter().find(|r| r.kind == "attention").unwrap();
        assert_eq!(att.calls_per_step, (4 * 2) as f64, "one forward and one backward per layer:\n{p}");
    }
}
