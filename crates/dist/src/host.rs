//! Device collectives for any port, staged through host memory: read the view, run the host
//! collective, write the result back. This is what ports without a collective library get.

use crate::Comm;
use anychip_port::{bf16_to_f32, f32_to_bf16, invalid, Collectives, DType, Port, PortError, Result, View};
use std::sync::{Arc, Mutex};

/// [`Collectives`] over `port` through host buffers and a host [`Comm`] (e.g. MPI).
pub struct HostStaged {
    port: Arc<dyn Port>,
    comm: Arc<dyn Comm>,
    /// Host buffers kept between calls: a fresh multi-MiB vector is fresh pages from the
    /// kernel, and faulting them in every bucket of every step cost more than the copy.
    scratch: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl HostStaged {
    /// Collectives for `port`'s buffers over `comm`'s ranks.
    pub fn new(port: Arc<dyn Port>, comm: Arc<dyn Comm>) -> HostStaged {
        HostStaged { port, comm, scratch: Mutex::new((Vec::new(), Vec::new())) }
    }

    /// Read contiguous `v` into a host vector of `T` (its element type, or bytes).
    fn read_into<T: bytemuck::Pod + Default>(&self, what: &str, v: &View) -> Result<Vec<T>> {
        contiguous(what, v)?;
        let bytes = v.numel() * v.dtype.size();
        let mut host = vec![T::default(); bytes / std::mem::size_of::<T>()];
        self.port.read(&v.buf, v.layout.offset * v.dtype.size(), bytemuck::cast_slice_mut(&mut host))?;
        Ok(host)
    }

    fn write_bytes(&self, what: &str, v: &View, bytes: &[u8]) -> Result<()> {
        contiguous(what, v)?;
        self.port.write(&v.buf, v.layout.offset * v.dtype.size(), bytes)
    }

    fn read_f32(&self, what: &str, v: &View) -> Result<Vec<f32>> {
        Ok(match v.dtype {
            DType::F32 => self.read_into::<f32>(what, v)?,
            DType::BF16 => self.read_into::<u16>(what, v)?.into_iter().map(bf16_to_f32).collect(),
            DType::I32 => return Err(unsupported_sum(what)),
        })
    }

    fn write_f32(&self, what: &str, v: &View, data: &[f32]) -> Result<()> {
        match v.dtype {
            DType::F32 => self.write_bytes(what, v, bytemuck::cast_slice(data)),
            DType::BF16 => {
                let halves: Vec<u16> = data.iter().map(|&x| f32_to_bf16(x)).collect();
                self.write_bytes(what, v, bytemuck::cast_slice(&halves))
            }
            DType::I32 => Err(unsupported_sum(what)),
        }
    }
}

impl Collectives for HostStaged {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world(&self) -> usize {
        self.comm.world()
    }

    fn all_reduce(&self, buf: &View) -> Result<()> {
        // A reduce-scatter then an all-gather (the ring all-reduce's two halves): each block is
        // summed once, by its owner, so every rank ends with the same bits, which MPI_Allreduce
        // does not promise.
        let world = self.world();
        let mut data = self.read_f32("all_reduce", buf)?;
        let n = data.len();
        let block = n.div_ceil(world);
        data.resize(block * world, 0.0);
        let mut mine = vec![0.0f32; block];
        self.comm.reduce_scatter_f32(&data, &mut mine)?;
        self.comm.all_gather_bytes(bytemuck::cast_slice(&mine), bytemuck::cast_slice_mut(&mut data))?;
        self.write_f32("all_reduce", buf, &data[..n])
    }

    fn reduce_scatter(&self, input: &View, out: &View) -> Result<()> {
        blocks("reduce_scatter", out, input, self.world())?;
        if input.dtype == DType::F32 {
            contiguous("reduce_scatter input", input)?;
            let mut guard = self.scratch.lock().map_err(|_| PortError::Device("host scratch poisoned".into()))?;
            let (send, recv) = &mut *guard;
            // f32-aligned host memory: whole f32s, reinterpreted as bytes for the port.
            let (send, recv) = (f32_scratch(send, input.numel()), f32_scratch(recv, out.numel()));
            self.port.read(&input.buf, input.layout.offset * 4, bytemuck::cast_slice_mut(send))?;
            self.comm.reduce_scatter_f32(send, recv)?;
            return self.write_bytes("reduce_scatter out", out, bytemuck::cast_slice(recv));
        }
        let data = self.read_f32("reduce_scatter input", input)?;
        let mut mine = vec![0.0f32; out.numel()];
        self.comm.reduce_scatter_f32(&data, &mut mine)?;
        self.write_f32("reduce_scatter out", out, &mine)
    }

    fn all_gather(&self, input: &View, out: &View) -> Result<()> {
        blocks("all_gather", input, out, self.world())?;
        contiguous("all_gather input", input)?;
        let mut guard = self.scratch.lock().map_err(|_| PortError::Device("host scratch poisoned".into()))?;
        let (send, recv) = &mut *guard;
        let size = input.dtype.size();
        send.resize(input.numel() * size, 0);
        recv.resize(out.numel() * size, 0);
        self.port.read(&input.buf, input.layout.offset * size, send)?;
        self.comm.all_gather_bytes(send, recv)?;
        self.write_bytes("all_gather out", out, recv)
    }

    fn broadcast(&self, buf: &View, root: usize) -> Result<()> {
        if root >= self.world() {
            return invalid(format!("broadcast: root {root} is not a rank of this {}-rank group", self.world()));
        }
        let mut bytes = self.read_into::<u8>("broadcast", buf)?;
        self.comm.broadcast_bytes(&mut bytes, root)?;
        self.write_bytes("broadcast", buf, &bytes)
    }

    fn barrier(&self) -> Result<()> {
        self.comm.barrier()
    }

    fn all_to_all_v(&self, send: &View, send_counts: &[usize], recv: &View, recv_counts: &[usize]) -> Result<()> {
        if send.dtype != recv.dtype {
            return invalid(format!("all_to_all_v: send is {} but recv is {}", send.dtype, recv.dtype));
        }
        let size = send.dtype.size();
        let bytes = |counts: &[usize]| counts.iter().map(|c| c * size).collect::<Vec<usize>>();
        let (sb, rb) = (bytes(send_counts), bytes(recv_counts));
        let data = self.read_into::<u8>("all_to_all_v send", send)?;
        let mut out = vec![0u8; recv.numel() * size];
        self.comm.all_to_all_v_bytes(&data, &sb, &mut out, &rb)?;
        self.write_bytes("all_to_all_v recv", recv, &out)
    }

    fn any_thread(&self) -> bool {
        // The port side is any-thread by the port contract; the host side depends on the Comm.
        self.comm.any_thread()
    }
}

/// `n` f32s of `buf`'s memory, grown as needed; kept as u32 words so the slice is aligned.
fn f32_scratch(buf: &mut Vec<u8>, n: usize) -> &mut [f32] {
    // A Vec<u8> is only byte-aligned; round its start up to 4 bytes inside one extra word.
    buf.resize(n * 4 + 4, 0);
    let pad = buf.as_ptr().align_offset(4);
    bytemuck::cast_slice_mut(&mut buf[pad..pad + n * 4])
}

fn contiguous(what: &str, v: &View) -> Result<()> {
    if v.layout.is_contiguous() {
        Ok(())
    } else {
        invalid(format!(
            "{what}: host-staged collectives take contiguous views, got shape {:?} strides {:?}; copy to a contiguous tensor first",
            v.layout.shape, v.layout.strides
        ))
    }
}

/// `whole` holds `world` blocks the size of `block`, of the same dtype.
fn blocks(what: &str, block: &View, whole: &View, world: usize) -> Result<()> {
    if block.dtype != whole.dtype {
        return invalid(format!(
            "{what}: dtypes {} and {} differ; both views need one dtype",
            block.dtype, whole.dtype
        ));
    }
    if whole.numel() != block.numel() * world {
        return invalid(format!(
            "{what}: the whole view has {} elements but {world} ranks x {} per rank = {}",
            whole.numel(),
            block.numel(),
            block.numel() * world
        ));
    }
    Ok(())
}

fn unsupported_sum(what: &str) -> PortError {
    PortError::Unsupported(format!("{what}: host-staged sums are defined for f32 and bf16, not i32"))
}

/// A port's own collectives, with the optional calls they do not provide (answering
/// `Unsupported`) staged through host memory instead.
pub(crate) struct WithHostFallback {
    pub(crate) own: Arc<dyn Collectives>,
    pub(crate) host: Arc<dyn Collectives>,
}

impl Collectives for WithHostFallback {
    fn rank(&self) -> usize {
        self.own.rank()
    }
    fn world(&self) -> usize {
        self.own.world()
    }
    fn all_reduce(&self, buf: &View) -> Result<()> {
        self.own.all_reduce(buf)
    }
    fn reduce_scatter(&self, input: &View, out: &View) -> Result<()> {
        self.own.reduce_scatter(input, out)
    }
    fn all_gather(&self, input: &View, out: &View) -> Result<()> {
        self.own.all_gather(input, out)
    }
    fn broadcast(&self, buf: &View, root: usize) -> Result<()> {
        self.own.broadcast(buf, root)
    }
    fn barrier(&self) -> Result<()> {
        self.own.barrier()
    }
    fn all_to_all_v(&self, send: &View, send_counts: &[usize], recv: &View, recv_counts: &[usize]) -> Result<()> {
        // Every rank runs the same port, so all take the same branch.
        match self.own.all_to_all_v(send, send_counts, recv, recv_counts) {
            Err(PortError::Unsupported(_)) => self.host.all_to_all_v(send, send_counts, recv, recv_counts),
            r => r,
        }
    }
    fn any_thread(&self) -> bool {
        self.own.any_thread() && self.host.any_thread()
    }
}
