//! The tensor handle: a typed, strided view of a port buffer plus its autograd link.

use crate::autograd::{self, Node};
use crate::error::{Error, Result};
use anychip_port::{bf16_to_f32, f32_to_bf16, Buffer, DType, DeviceMemory, Distribution, Layout, Port, View};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) port: Arc<dyn Port>,
    pub(crate) buf: Buffer,
    pub(crate) dtype: DType,
    pub(crate) layout: Layout,
    pub(crate) requires_grad: bool,
    pub(crate) node: Option<Arc<Node>>,
}

/// A tensor: cheap to clone (shares storage and graph).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}, port {})", self.shape(), self.dtype(), self.port().name())
    }
}

impl Tensor {
    pub(crate) fn from_parts(port: Arc<dyn Port>, buf: Buffer, dtype: DType, layout: Layout) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            port,
            buf,
            dtype,
            layout,
            requires_grad: false,
            node: None,
        }))
    }

    /// Uninitialised contiguous tensor on `port`.
    pub fn empty(port: &Arc<dyn Port>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let buf = port.alloc(n * dtype.size())?;
        Ok(Tensor::from_parts(port.clone(), buf, dtype, Layout::contiguous(shape)))
    }

    /// Tensor filled with `value`.
    pub fn full(port: &Arc<dyn Port>, shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let t = Tensor::empty(port, shape, dtype)?;
        port.fill(&t.view(), value)?;
        Ok(t)
    }

    /// Tensor of zeros.
    pub fn zeros(port: &Arc<dyn Port>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(port, shape, 0.0, dtype)
    }

    /// Upload f32 data, stored as `dtype` (F32 or BF16).
    pub fn from_f32(port: &Arc<dyn Port>, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = match dtype {
            DType::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::BF16 => data.iter().flat_map(|&x| f32_to_bf16(x).to_le_bytes()).collect(),
            DType::I32 => return Err(dtype_err("from_f32", "use from_i32 for integer data")),
        };
        Tensor::from_bytes(port, &bytes, shape, dtype)
    }

    /// Upload i32 data (token ids, indices).
    pub fn from_i32(port: &Arc<dyn Port>, data: &[i32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_bytes(port, &bytes, shape, DType::I32)
    }

    /// Upload raw little-endian bytes of a contiguous tensor.
    pub fn from_bytes(port: &Arc<dyn Port>, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = Tensor::empty(port, shape, dtype)?;
        if bytes.len() != t.numel() * dtype.size() {
            return Err(Error::Shape {
                op: "from_bytes",
                detail: format!("{} bytes for shape {:?} of {}", bytes.len(), shape, dtype),
            });
        }
        port.write(&t.0.buf, 0, bytes)?;
        Ok(t)
    }

    /// Samples from the port's counter-based stream: `N(0, std^2)` or `U[lo, lo + std)`.
    pub fn random(
        port: &Arc<dyn Port>,
        shape: &[usize],
        dist: Distribution,
        seed: u64,
        offset: u64,
        dtype: DType,
    ) -> Result<Tensor> {
        let t = Tensor::empty(port, shape, dtype)?;
        port.random(dist, seed, offset, &t.view())?;
        Ok(t)
    }

    /// Unique id of this tensor handle's node in the graph.
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// The port this tensor lives on.
    pub fn port(&self) -> &Arc<dyn Port> {
        &self.0.port
    }
    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }
    /// Size of one axis (negative counts from the end).
    pub fn dim(&self, axis: isize) -> usize {
        self.shape()[self.axis(axis)]
    }
    pub(crate) fn axis(&self, axis: isize) -> usize {
        if axis < 0 {
            (self.rank() as isize + axis) as usize
        } else {
            axis as usize
        }
    }
    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// Layout in the buffer.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// The underlying buffer (shared with views).
    pub fn buffer(&self) -> &Buffer {
        &self.0.buf
    }
    /// The port-level view (for ports, optimizers and kernels).
    pub fn view(&self) -> View {
        View { buf: self.0.buf.clone(), dtype: self.0.dtype, layout: self.0.layout.clone() }
    }
    /// Whether gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// A leaf that collects gradients (a parameter). Shares storage with `self`.
    pub fn with_requires_grad(&self) -> Tensor {
        self.rewrap(true, None)
    }
    /// Same storage, cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.rewrap(false, None)
    }
    pub(crate) fn rewrap(&self, requires_grad: bool, node: Option<Arc<Node>>) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            port: self.0.port.clone(),
            buf: self.0.buf.clone(),
            dtype: self.0.dtype,
            layout: self.0.layout.clone(),
            requires_grad,
            node,
        }))
    }
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.port.clone(), self.0.buf.clone(), self.0.dtype, layout)
    }
    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }

    /// This tensor as an input edge of a recorded op: its id, node, shape, dtype and
    /// requires_grad, without its storage. A backward keeps whatever data it needs in its own
    /// closure, so an activation that no backward reads (a norm's output that only feeds a bf16
    /// cast, a reshape's source) is freed after the forward instead of living until the graph
    /// goes. Leaves stay whole: backward hands them to hooks and keys their gradients.
    pub(crate) fn edge(&self) -> Tensor {
        if self.0.node.is_none() {
            return self.clone();
        }
        Tensor(Arc::new(Inner {
            id: self.0.id,
            port: self.0.port.clone(),
            buf: Buffer(Arc::new(NoStorage)),
            dtype: self.0.dtype,
            layout: self.0.layout.clone(),
            requires_grad: self.0.requires_grad,
            node: self.0.node.clone(),
        }))
    }

    /// A new uninitialised contiguous tensor with this tensor's port.
    pub fn empty_on(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty(&self.0.port, shape, dtype)
    }
    /// A new uninitialised contiguous tensor like this one.
    pub fn empty_like(&self) -> Result<Tensor> {
        self.empty_on(self.shape(), self.dtype())
    }
    /// Zeros like this one.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(&self.0.port, self.shape(), self.dtype())
    }

    /// Read back as f32, in row-major order (waits for the device).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        let t = self.contiguous_detached()?;
        let mut bytes = vec![0u8; t.numel() * t.dtype().size()];
        let off = t.layout().offset * t.dtype().size();
        t.port().read(t.buffer(), off, &mut bytes)?;
        Ok(match t.dtype() {
            DType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::BF16 => {
                bytes.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes(c.try_into().unwrap()))).collect()
            }
            DType::I32 => bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        })
    }

    /// Read back an I32 tensor.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        if self.dtype() != DType::I32 {
            return Err(dtype_err("to_vec_i32", format!("tensor is {}", self.dtype())));
        }
        let t = self.contiguous_detached()?;
        let mut bytes = vec![0u8; t.numel() * 4];
        t.port().read(t.buffer(), t.layout().offset * 4, &mut bytes)?;
        Ok(bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    /// Raw little-endian bytes of the contiguous data (for checkpoints).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let t = self.contiguous_detached()?;
        let mut bytes = vec![0u8; t.numel() * t.dtype().size()];
        t.port().read(t.buffer(), t.layout().offset * t.dtype().size(), &mut bytes)?;
        Ok(bytes)
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::Shape {
                op: "item",
                detail: format!("tensor has shape {:?}, not one element", self.shape()),
            });
        }
        Ok(self.to_vec_f32()?[0])
    }

    /// Overwrite this tensor's elements in place with `src` (same shape; no autograd).
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::Shape { op: "assign", detail: format!("{:?} into {:?}", src.shape(), self.shape()) });
        }
        if src.dtype() == self.dtype() {
            self.port().copy_strided(&src.view(), &self.view())?;
        } else {
            self.port().cast(&src.view(), &self.view())?;
        }
        Ok(())
    }

    /// Copy to another port (through host memory), detached.
    pub fn to_port(&self, port: &Arc<dyn Port>) -> Result<Tensor> {
        let bytes = self.to_bytes()?;
        Tensor::from_bytes(port, &bytes, self.shape(), self.dtype())
    }

    pub(crate) fn contiguous_detached(&self) -> Result<Tensor> {
        if self.layout().is_contiguous() {
            return Ok(self.detach());
        }
        let out = self.empty_like()?;
        self.port().copy_strided(&self.view(), &out.view())?;
        Ok(out)
    }

    /// Attach an autograd node to a freshly computed `self` if any input needs a gradient.
    pub(crate) fn record(
        self,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let node = Node::new(op, inputs.iter().map(|t| t.edge()).collect(), Box::new(backward));
        let t = self.rewrap(true, Some(Arc::new(node)));
        drop(self);
        t
    }
}

/// The memory of a graph edge ([`Tensor::edge`]): none. A port handed it refuses it as
/// another port's buffer, so reading an edge is an error, never a read of freed memory.
struct NoStorage;

impl DeviceMemory for NoStorage {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn bytes(&self) -> usize {
        0
    }
}

fn check_len(n: usize, shape: &[usize]) -> Result<()> {
    let want: usize = shape.iter().product();
    if n != want {
        return Err(Error::Shape { op: "upload", detail: format!("{n} values for shape {shape:?} ({want} elements)") });
    }
    Ok(())
}

pub(crate) fn dtype_err(op: &'static str, detail: impl Into<String>) -> Error {
    Error::DType { op, detail: detail.into() }
}
