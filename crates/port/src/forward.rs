//! Ports that wrap another port: the one way to write a profiler, a shadow checker or a
//! deliberately broken test port without hand-forwarding every method of [`Port`].
//!
//! Implement [`Forward`] (at least [`Forward::inner`]); every [`Port`] method you do not
//! override passes to the inner port unchanged. The twelve primitives all arrive at one method,
//! [`Forward::primitive`], as a [`Primitive`] value that can be described, have its views
//! remapped, and be run on any port: a wrapper that changes what happens around *every* op
//! (time it, mirror it) overrides that one method instead of twelve.

use crate::{
    BinaryOp, Buffer, Capabilities, Collectives, CompareOp, Composite, Distribution, Handled, Port, ReduceOp, Result,
    UnaryOp, View,
};
use std::sync::Arc;

/// One call of a primitive, with its arguments (the [`Port`] method of the same name).
#[derive(Clone, Debug)]
pub enum Primitive {
    Fill { out: View, value: f64 },
    Cast { x: View, out: View },
    CopyStrided { x: View, out: View },
    Unary { op: UnaryOp, x: View, out: View },
    Binary { op: BinaryOp, a: View, b: View, out: View },
    Compare { op: CompareOp, a: View, b: View, out: View },
    Select { cond: View, a: View, b: View, out: View },
    Reduce { op: ReduceOp, x: View, out: View },
    Matmul { a: View, b: View, out: View, alpha: f32, beta: f32 },
    GatherRows { table: View, idx: View, out: View },
    ScatterAddRows { src: View, idx: View, out: View },
    Random { dist: Distribution, seed: u64, offset: u64, out: View },
}

impl Primitive {
    /// Run this call on `port`.
    pub fn run_on(&self, port: &dyn Port) -> Result<()> {
        use Primitive::*;
        match self {
            Fill { out, value } => port.fill(out, *value),
            Cast { x, out } => port.cast(x, out),
            CopyStrided { x, out } => port.copy_strided(x, out),
            Unary { op, x, out } => port.unary(*op, x, out),
            Binary { op, a, b, out } => port.binary(*op, a, b, out),
            Compare { op, a, b, out } => port.compare(*op, a, b, out),
            Select { cond, a, b, out } => port.select(cond, a, b, out),
            Reduce { op, x, out } => port.reduce(*op, x, out),
            Matmul { a, b, out, alpha, beta } => port.matmul(a, b, out, *alpha, *beta),
            GatherRows { table, idx, out } => port.gather_rows(table, idx, out),
            ScatterAddRows { src, idx, out } => port.scatter_add_rows(src, idx, out),
            Random { dist, seed, offset, out } => port.random(*dist, *seed, *offset, out),
        }
    }

    /// The same call with every view replaced by `f(view)` (e.g. the other side of a mirror).
    pub fn map_views(&self, f: &dyn Fn(&View) -> View) -> Primitive {
        use Primitive::*;
        match self {
            Fill { out, value } => Fill { out: f(out), value: *value },
            Cast { x, out } => Cast { x: f(x), out: f(out) },
            CopyStrided { x, out } => CopyStrided { x: f(x), out: f(out) },
            Unary { op, x, out } => Unary { op: *op, x: f(x), out: f(out) },
            Binary { op, a, b, out } => Binary { op: *op, a: f(a), b: f(b), out: f(out) },
            Compare { op, a, b, out } => Compare { op: *op, a: f(a), b: f(b), out: f(out) },
            Select { cond, a, b, out } => Select { cond: f(cond), a: f(a), b: f(b), out: f(out) },
            Reduce { op, x, out } => Reduce { op: *op, x: f(x), out: f(out) },
            Matmul { a, b, out, alpha, beta } => Matmul { a: f(a), b: f(b), out: f(out), alpha: *alpha, beta: *beta },
            GatherRows { table, idx, out } => GatherRows { table: f(table), idx: f(idx), out: f(out) },
            ScatterAddRows { src, idx, out } => ScatterAddRows { src: f(src), idx: f(idx), out: f(out) },
            Random { dist, seed, offset, out } => Random { dist: *dist, seed: *seed, offset: *offset, out: f(out) },
        }
    }

    /// The view this call writes (every primitive has exactly one).
    pub fn output(&self) -> &View {
        use Primitive::*;
        match self {
            Fill { out, .. }
            | Cast { out, .. }
            | CopyStrided { out, .. }
            | Unary { out, .. }
            | Binary { out, .. }
            | Compare { out, .. }
            | Select { out, .. }
            | Reduce { out, .. }
            | Matmul { out, .. }
            | GatherRows { out, .. }
            | ScatterAddRows { out, .. }
            | Random { out, .. } => out,
        }
    }

    /// The [`Port`] method's name, with its op for the enum-driven ones: `unary(Exp)`.
    pub fn name(&self) -> String {
        use Primitive::*;
        match self {
            Fill { .. } => "fill".into(),
            Cast { .. } => "cast".into(),
            CopyStrided { .. } => "copy_strided".into(),
            Unary { op, .. } => format!("unary({op:?})"),
            Binary { op, .. } => format!("binary({op:?})"),
            Compare { op, .. } => format!("compare({op:?})"),
            Select { .. } => "select".into(),
            Reduce { op, .. } => format!("reduce({op:?})"),
            Matmul { .. } => "matmul".into(),
            GatherRows { .. } => "gather_rows".into(),
            ScatterAddRows { .. } => "scatter_add_rows".into(),
            Random { dist, .. } => format!("random({dist:?})"),
        }
    }
}

/// A port built around an inner port. Every method has a default that forwards to
/// [`Forward::inner`]; the twelve primitives forward through [`Forward::primitive`]. Every
/// `T: Forward` is a [`Port`].
///
/// The method names are [`Port`]'s: with both traits in scope, call them on a wrapper through
/// `&dyn Port` (or `Port::alloc(&w, ..)`) to say which one is meant.
pub trait Forward: Send + Sync {
    /// The port calls are forwarded to.
    fn inner(&self) -> &dyn Port;

    /// [`Port::name`]; default: the inner port's.
    fn name(&self) -> &str {
        self.inner().name()
    }
    /// [`Port::capabilities`]; default: the inner port's.
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    /// [`Port::alloc`].
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.inner().alloc(bytes)
    }
    /// [`Port::write`].
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.inner().write(dst, offset, src)
    }
    /// [`Port::read`].
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner().read(src, offset, dst)
    }
    /// [`Port::copy`].
    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()> {
        self.inner().copy(src, src_offset, dst, dst_offset, bytes)
    }
    /// [`Port::synchronize`].
    fn synchronize(&self) -> Result<()> {
        self.inner().synchronize()
    }
    /// Every primitive ([`Port::fill`] to [`Port::random`]); default: run it on the inner port.
    fn primitive(&self, call: &Primitive) -> Result<()> {
        call.run_on(self.inner())
    }
    /// [`Port::composite`]; default: offer it to the inner port.
    fn composite(&self, call: &Composite) -> Result<Handled> {
        self.inner().composite(call)
    }
    /// [`Port::enter`].
    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        self.inner().enter(f)
    }
    /// [`Port::collectives`].
    fn collectives(&self, bootstrap: &Arc<dyn Collectives>) -> Result<Option<Arc<dyn Collectives>>> {
        self.inner().collectives(bootstrap)
    }
    /// [`Port::modelled_seconds`]: a wrapper around a modelled chip keeps its clock.
    fn modelled_seconds(&self) -> Option<f64> {
        self.inner().modelled_seconds()
    }
}

impl<T: Forward> Port for T {
    fn name(&self) -> &str {
        Forward::name(self)
    }
    fn capabilities(&self) -> Capabilities {
        Forward::capabilities(self)
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        Forward::alloc(self, bytes)
    }
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        Forward::write(self, dst, offset, src)
    }
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        Forward::read(self, src, offset, dst)
    }
    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()> {
        Forward::copy(self, src, src_offset, dst, dst_offset, bytes)
    }
    fn synchronize(&self) -> Result<()> {
        Forward::synchronize(self)
    }
    fn fill(&self, out: &View, value: f64) -> Result<()> {
        self.primitive(&Primitive::Fill { out: out.clone(), value })
    }
    fn cast(&self, x: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Cast { x: x.clone(), out: out.clone() })
    }
    fn copy_strided(&self, x: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::CopyStrided { x: x.clone(), out: out.clone() })
    }
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Unary { op, x: x.clone(), out: out.clone() })
    }
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Binary { op, a: a.clone(), b: b.clone(), out: out.clone() })
    }
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Compare { op, a: a.clone(), b: b.clone(), out: out.clone() })
    }
    fn select(&self, cond: &View, a: &View, b: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Select { cond: cond.clone(), a: a.clone(), b: b.clone(), out: out.clone() })
    }
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::Reduce { op, x: x.clone(), out: out.clone() })
    }
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()> {
        self.primitive(&Primitive::Matmul { a: a.clone(), b: b.clone(), out: out.clone(), alpha, beta })
    }
    fn gather_rows(&self, table: &View, idx: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::GatherRows { table: table.clone(), idx: idx.clone(), out: out.clone() })
    }
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()> {
        self.primitive(&Primitive::ScatterAddRows { src: src.clone(), idx: idx.clone(), out: out.clone() })
    }
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()> {
        self.primitive(&Primitive::Random { dist, seed, offset, out: out.clone() })
    }
    fn composite(&self, call: &Composite) -> Result<Handled> {
        Forward::composite(self, call)
    }
    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        Forward::enter(self, f)
    }
    fn collectives(&self, bootstrap: &Arc<dyn Collectives>) -> Result<Option<Arc<dyn Collectives>>> {
        Forward::collectives(self, bootstrap)
    }
    fn modelled_seconds(&self) -> Option<f64> {
        Forward::modelled_seconds(self)
    }
}
