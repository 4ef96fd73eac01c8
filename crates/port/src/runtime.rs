//! The runtime half of the contract (memory, transfers, ordering) and the [`Port`] trait itself.

use crate::{
    BinaryOp, Collectives, CompareOp, Composite, DType, Distribution, Handled, Layout, ReduceOp, Result, UnaryOp,
};
use std::any::Any;
use std::sync::Arc;

/// Port-owned device memory. Freed when the last [`Buffer`] handle to it is dropped.
pub trait DeviceMemory: Any + Send + Sync {
    /// For the owning port to downcast to its own buffer type.
    fn as_any(&self) -> &dyn Any;
    /// Size in bytes.
    fn bytes(&self) -> usize;
}

/// A shared handle to device memory; cloning does not copy.
#[derive(Clone)]
pub struct Buffer(pub Arc<dyn DeviceMemory>);

impl Buffer {
    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }
    /// Downcast to a port's own memory type; `None` if the buffer belongs to another port.
    pub fn downcast<T: DeviceMemory>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref::<T>()
    }
    /// Identity of the underlying memory (for aliasing checks).
    pub fn ptr_id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.bytes())
    }
}

/// A typed, strided window onto a buffer: what every primitive reads and writes.
#[derive(Clone, Debug)]
pub struct View {
    pub buf: Buffer,
    pub dtype: DType,
    pub layout: Layout,
}

impl View {
    /// A view of `buf` with a contiguous layout of `shape`.
    pub fn contiguous(buf: Buffer, dtype: DType, shape: &[usize]) -> View {
        View { buf, dtype, layout: Layout::contiguous(shape) }
    }
    /// Shape of the view.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// The sub-range `start..start + len` of axis `ax` (a layout change only: same buffer).
    pub fn narrow(&self, ax: usize, start: usize, len: usize) -> View {
        let mut layout = self.layout.clone();
        layout.offset += start * layout.strides[ax];
        layout.shape[ax] = len;
        View { layout, ..self.clone() }
    }
}

/// What a port can do, as reported by `anychip ports` and checked by the engine before use.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    /// Human description of the device (model, driver, threads...).
    pub device: String,
    /// Dtypes the port can hold in memory.
    pub storage: Vec<DType>,
    /// Dtypes the primitives accept as operands.
    pub arithmetic: Vec<DType>,
    /// Dtypes with a fast matmul path (e.g. bf16 on chips with bf16 matrix units).
    pub fast_matmul: Vec<DType>,
    /// Names of composites this port runs with its own fused kernels (see [`Composite::name`]).
    pub fused: Vec<&'static str>,
    /// Largest single allocation in bytes (`usize::MAX` when unbounded).
    pub max_alloc: usize,
    /// Total device memory in bytes, when known.
    pub memory: Option<usize>,
    /// Peak fp32 FLOP/s, when the port can measure or knows it (for MFU).
    pub peak_flops_f32: Option<f64>,
}

/// A chip, as anychip sees it: a runtime plus twelve primitives, plus optional fused composites.
///
/// Contract common to every primitive:
/// - `out` is written, inputs are only read; `out` may alias an input only when both have the
///   same layout (elementwise in place). Shapes are checked by the engine; a port may assume
///   `shape` agreements stated below and returns [`crate::PortError::Invalid`] if it checks and
///   finds otherwise.
/// - Float math is done in f32 (or wider) whatever the storage dtype; BF16 results are rounded
///   to nearest-even with [`crate::f32_to_bf16`]'s rule.
/// - Calls may run asynchronously; their effects are ordered as issued and visible to
///   [`Port::read`] (which waits as needed).
/// - Calls may come from several threads at once on disjoint buffers (data parallelism packs
///   gradients on a communication thread while backward runs); a call issued after another
///   thread's call, as the program's own synchronisation orders them, sees its effects.
pub trait Port: Send + Sync {
    /// Registered name, e.g. `cpu`.
    fn name(&self) -> &str;
    /// Capabilities of this instance.
    fn capabilities(&self) -> Capabilities;

    // ---- runtime ----
    /// Allocate `bytes` of device memory (contents unspecified).
    fn alloc(&self, bytes: usize) -> Result<Buffer>;
    /// Copy host bytes into `dst` at byte `offset`.
    fn write(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()>;
    /// Copy device bytes at byte `offset` into host memory; waits for prior work on `src`.
    fn read(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Device-to-device byte copy.
    fn copy(&self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, bytes: usize) -> Result<()>;
    /// Wait until every issued call has finished.
    fn synchronize(&self) -> Result<()>;

    // ---- primitives ----
    /// out[i] = value (rounded to out's dtype; I32 truncates).
    fn fill(&self, out: &View, value: f64) -> Result<()>;
    /// out[i] = x[i] converted; same shape. Float to I32 truncates toward zero.
    fn cast(&self, x: &View, out: &View) -> Result<()>;
    /// out[i] = x[i] for views of equal shape and dtype: the only data-movement primitive.
    fn copy_strided(&self, x: &View, out: &View) -> Result<()>;
    /// out[i] = op(x[i]); same shape, float dtype.
    fn unary(&self, op: UnaryOp, x: &View, out: &View) -> Result<()>;
    /// out[i] = op(a[i], b[i]); same shape (broadcast is a stride of 0), float dtype.
    fn binary(&self, op: BinaryOp, a: &View, b: &View, out: &View) -> Result<()>;
    /// out[i] = op(a[i], b[i]) ? 1 : 0; same shape, float dtype (NaN compares false).
    fn compare(&self, op: CompareOp, a: &View, b: &View, out: &View) -> Result<()>;
    /// out[i] = cond[i] != 0 ? a[i] : b[i]; same shape, float dtype.
    fn select(&self, cond: &View, a: &View, b: &View, out: &View) -> Result<()>;
    /// Reduce `x` over every axis where `out` has extent 1 and `x` does not; equal rank.
    fn reduce(&self, op: ReduceOp, x: &View, out: &View) -> Result<()>;
    /// out[b] = alpha * a[b] @ b[b] + beta * out[b] for a:[B,M,K], b:[B,K,N], out:[B,M,N].
    /// Transposes are strides; a batch stride of 0 broadcasts. f32 accumulation. With beta = 0
    /// `out` is not read (NaN in it does not propagate). Inputs share a dtype; out may be F32.
    fn matmul(&self, a: &View, b: &View, out: &View, alpha: f32, beta: f32) -> Result<()>;
    /// out[n, :] = table[idx[n], :] for table:[V,D], idx:[N] I32, out:[N,D].
    fn gather_rows(&self, table: &View, idx: &View, out: &View) -> Result<()>;
    /// out[idx[n], :] += src[n, :] for src:[N,D], idx:[N] I32, out:[V,D]; indices may repeat.
    fn scatter_add_rows(&self, src: &View, idx: &View, out: &View) -> Result<()>;
    /// out[i] = sample i of the counter-based stream (`seed`, `offset` + i): see [`crate::philox`].
    fn random(&self, dist: Distribution, seed: u64, offset: u64, out: &View) -> Result<()>;

    // ---- composites ----
    /// Run `call` with a fused kernel and return [`Handled::Yes`], or return [`Handled::No`]
    /// (the default) and the engine runs the default decomposition from `anychip-decomp`.
    fn composite(&self, call: &Composite) -> Result<Handled> {
        let _ = call;
        Ok(Handled::No)
    }

    // ---- host threading (optional) ----
    /// Run `f` on the host thread that this port's calls are cheapest to issue from, and return
    /// once it has run. The default runs it right here. A port whose kernels run on a pool of
    /// host threads (the CPU port) runs it on one of them, so every call inside runs inline
    /// instead of handing work to the pool and sleeping until it is done (20 to 50 us per call
    /// on a 2-core VM, for about a hundred calls a step). Engines wrap a whole training step.
    fn enter(&self, f: &mut (dyn FnMut() + Send)) {
        f()
    }

    // ---- simulated time (optional) ----
    /// For a port that models a chip instead of running on one (`sim`): the device seconds its
    /// cost model has charged for every call issued so far. Engines that time work (bench, the
    /// profiler) read this clock instead of the wall clock when it is `Some`. `None` (the
    /// default): a real chip, whose time is the wall clock.
    fn modelled_seconds(&self) -> Option<f64> {
        None
    }

    // ---- collectives (optional) ----
    /// This port's own collectives (a vendor library such as NCCL, HCCL or BKCL), or `None` (the
    /// default) to let the engine stage collectives through host memory. `bootstrap` is a
    /// working host-staged group of the same ranks over this port: use it to agree on a
    /// communicator id (e.g. rank 0 creates one and broadcasts it in a small buffer).
    fn collectives(&self, bootstrap: &Arc<dyn Collectives>) -> Result<Option<Arc<dyn Collectives>>> {
        let _ = bootstrap;
        Ok(None)
    }
}
