//! Measuring a real port for a sim profile: time each call, price the same call's roofline,
//! and keep their ratio as the efficiency of that op at that shape.
//!
//! [`Recorder`] wraps any port and records the wall time of every outermost call together with
//! the [`Work`] the sim port would charge for it; [`gemm_grid`] and [`attention_grid`] time
//! matrix products and attention cores over a grid of shapes; [`fit`] turns the samples into
//! `[[eff]]` entries (median per op, dtype and shape). Everything here runs on whatever port it
//! is handed: the same code measures a CPU today and a vendor's chip the day its port exists.

use crate::cost::{self, Work};
use crate::profile::Eff;
use anychip_port::{
    BinaryOp, Buffer, Capabilities, CompareOp, Composite, DType, Distribution, Handled, Port, ReduceOp, Result,
    UnaryOp, View,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One timed call.
#[derive(Clone, Debug)]
pub struct Sample {
    pub works: Vec<Work>,
    pub secs: f64,
}

/// A port that times every call of the port it wraps (outermost calls only: a composite the
/// inner port decomposes is timed as its primitives, as the engine issues them).
pub struct Recorder {
    inner: Arc<dyn Port>,
    samples: Mutex<Vec<Sample>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn Port>) -> Recorder {
        Recorder { inner, samples: Mutex::default() }
    }
    /// Take the samples recorded so far.
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Calls recorded so far.
    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn timed<R>(&self, works: Vec<Work>, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let t = Instant::now();
        let r = f()?;
        self.inner.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(Sample { works, secs });
        Ok(r)
    }
}

impl Port for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.inner.alloc(bytes)
    }
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.inner.write(dst, offset, src)
    }
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner.read(src, offset, dst)
    }
    fn copy(&self, src: &Buffer, so: usize, dst: &Buffer, d: usize, bytes: usize) -> Result<()> {
        self.inner.copy(src, so, dst, d, bytes)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn fill(&self, out: &View, value: f64) -> Result<()> {
        self.timed(vec![cost::elementwise("fill".into(), out, &[], 0.0)], || self.inner.fill(out, value))
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::elementwise("cast".into(), out, &[x], 1.0)], || self.inner.cast(x, out))
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::elementwise("copy_strided".into(), out, &[x], 0.0)], || self.inner.copy_strided(x, out))
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::unary(op, x, out)], || self.inner.unary(op, x, out))
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::binary(op, a, b, out)], || self.inner.binary(op, a, b, out))
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        let w = cost::elementwise(format!("compare_{}", cost::lower(op)), out, &[a, b], 1.0);
        self.timed(vec![w], || self.inner.compare(op, a, b, out))
    }
    fn select(&self, c: &View, a: &View, b: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::elementwise("select".into(), out, &[c, a, b], 1.0)], || self.inner.select(c, a, b, out))
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        self.timed(vec![cost::reduce(format!("reduce_{}", cost::lower(op)), x, out)], || self.inner.reduce(op, x, out))
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        self.timed(vec![cost::matmul(a, b, out, beta != 0.0)], || self.inner.matmul(a, b, out, alpha, beta))
    }
    fn gather_rows(&self, t: &View, idx: &View, out: &View) -> Result<()> {
        self.inner.gather_rows(t, idx, out)
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        self.inner.scatter_add_rows(src, idx, out)
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        self.inner.random(dist, seed, offset, out)
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        let t = Instant::now();
        let handled = self.inner.composite(call)?;
        if handled == Handled::Yes {
            self.inner.synchronize()?;
            let secs = t.elapsed().as_secs_f64();
            self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(Sample { works: cost::composite(call), secs });
        }
        Ok(handled)
    }
    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        self.inner.enter(f)
    }
}

/// Allocate a contiguous view of `shape` on `port` (contents left as the port leaves them,
/// then filled with small values so no kernel meets NaN or denormals).
fn view(port: &dyn Port, shape: &[usize], dtype: DType) -> Result<View> {
    let n: usize = shape.iter().product();
    let v = View::contiguous(port.alloc(n * dtype.size())?, dtype, shape);
    if dtype.is_float() {
        port.random(Distribution::Normal, 7, 0, &v)?;
    } else {
        port.fill(&v, 0.0)?;
    }
    Ok(v)
}

/// Time `reps` matmuls of every [m, n, k] in `shapes` (dtype operands, f32 accumulate) on the
/// recorder, alternating shapes between repeats so drift on a shared machine spreads evenly.
pub fn gemm_grid(rec: &Recorder, shapes: &[[usize; 3]], dtype: DType, reps: usize) -> Result<()> {
    let mut ops = Vec::new();
    for &[m, n, k] in shapes {
        let out_dtype = if dtype == DType::BF16 { DType::BF16 } else { DType::F32 };
        ops.push((view(rec, &[1, m, k], dtype)?, view(rec, &[1, k, n], dtype)?, view(rec, &[1, m, n], out_dtype)?));
    }
    for _ in 0..reps {
        for (a, b, c) in &ops {
            rec.matmul(a, b, c, 1.0, 0.0)?;
        }
    }
    Ok(())
}

/// Time causal attention forward and backward at every [t, head_dim] in `shapes`, with
/// `rows` = batch x heads chosen so each call does a comparable amount of work.
pub fn attention_grid(rec: &Recorder, shapes: &[[usize; 2]], dtype: DType, reps: usize) -> Result<()> {
    let mut calls = Vec::new();
    for &[t, dh] in shapes {
        let heads = (1usize << 22).div_ceil(t * t * dh / 8).clamp(1, 32);
        let qkv = [1, heads, t, dh];
        let mk = |dt: DType| view(rec, &qkv, dt);
        let (q, k, v, out) = (mk(dtype)?, mk(dtype)?, mk(dtype)?, mk(dtype)?);
        let lse = view(rec, &[1, heads, t], DType::F32)?;
        let (dout, dq, dk, dv) = (mk(dtype)?, mk(dtype)?, mk(dtype)?, mk(dtype)?);
        let scale = 1.0 / (dh as f32).sqrt();
        let fwd = Composite::AttentionFwd {
            q: q.clone(),
            k: k.clone(),
            v: v.clone(),
            scale,
            causal: true,
            out: out.clone(),
            lse: lse.clone(),
        };
        let bwd = Composite::AttentionBwd { q, k, v, out, lse, dout, scale, causal: true, dq, dk, dv };
        calls.push((fwd, bwd));
    }
    for _ in 0..reps {
        for (fwd, bwd) in &calls {
            anychip_decomp::dispatch(rec, fwd)?;
            anychip_decomp::dispatch(rec, bwd)?;
        }
    }
    Ok(())
}

/// Efficiency entries from samples: for each (op, dtype, shape), the median over its calls of
/// roofline / (time - fixed), where `fixed` is the measured cost of an empty call and
/// `roofline` prices one call's kernels at efficiency 1.
pub fn fit(
    samples: &[Sample],
    fixed_s: f64,
    roofline: &dyn Fn(&Work) -> anyhow::Result<f64>,
    source: &str,
) -> anyhow::Result<Vec<Eff>> {
    let mut groups: BTreeMap<(String, &'static str, Vec<usize>), Vec<f64>> = BTreeMap::new();
    // Each class's median too, for ops the measurement never issued (e.g. `random`).
    let mut classes: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for s in samples {
        let total: f64 = s.works.iter().map(roofline).sum::<anyhow::Result<f64>>()?;
        // Never credit a call with less than a fifth of its own time: timer noise on tiny calls.
        let busy = (s.secs - fixed_s).max(0.2 * s.secs);
        if total <= 0.0 || busy <= 0.0 {
            continue;
        }
        for w in &s.works {
            groups.entry((w.op.clone(), w.dtype.name(), w.shape.clone())).or_default().push(total / busy);
            classes.entry(w.class.name()).or_default().push(total / busy);
        }
    }
    let entry = |op: String, dtype: Option<String>, shape: Vec<usize>, mut effs: Vec<f64>| {
        effs.sort_by(f64::total_cmp);
        let eff = effs[effs.len() / 2].clamp(1e-4, 10.0);
        Eff {
            op,
            dtype,
            shape,
            eff: (eff * 1e4).round() / 1e4,
            source: format!("measured: median of {} calls, {source}", effs.len()),
        }
    };
    let mut out: Vec<Eff> =
        groups.into_iter().map(|((op, dtype, shape), effs)| entry(op, Some(dtype.to_string()), shape, effs)).collect();
    out.extend(classes.into_iter().map(|(class, effs)| entry(class.to_string(), None, vec![], effs)));
    Ok(out)
}

/// Median seconds of `n` calls of `f` (after one untimed call).
pub fn median_secs(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[n / 2])
}

/// Seconds of the cheapest real call: a one-element fill, median of `n`.
pub fn empty_call_secs(port: &dyn Port, n: usize) -> Result<f64> {
    let v = view(port, &[1], DType::F32)?;
    median_secs(n, || port.fill(&v, 1.0))
}

/// Streaming bandwidth in bytes/s: best of `reps` `out = a + b` over `elements` f32 (3 streams).
pub fn stream_bandwidth(port: &dyn Port, elements: usize, reps: usize) -> Result<f64> {
    let (a, b, c) = (
        view(port, &[elements], DType::F32)?,
        view(port, &[elements], DType::F32)?,
        view(port, &[elements], DType::F32)?,
    );
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let s = median_secs(1, || port.binary(BinaryOp::Add, &a, &b, &c))?;
        best = best.min(s);
    }
    Ok(3.0 * 4.0 * elements as f64 / best)
}
