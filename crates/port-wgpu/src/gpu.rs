//! The device, its queue, and batched submission: the only place that talks to wgpu's queue.
//!
//! Dispatches are recorded into one open `CommandEncoder`; it is submitted when the user
//! reads (the only host synchronisation), synchronises, or when [`BATCH`] dispatches are
//! pending. Each dispatch's parameters are a 256-byte slice of a per-batch uniform arena,
//! uploaded with `queue.write_buffer` just before the batch is submitted (wgpu runs such
//! writes before the command buffers of the same submission).

use crate::memory::{usage, GpuMemory, Pool};
use anychip_port::{PortError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Dispatches per submitted command buffer (and parameter slices per arena).
const BATCH: usize = 256;
/// Bytes of parameters per dispatch (the largest min_uniform_buffer_offset_alignment).
pub const PARAMS: usize = 256;

/// A compiled kernel and the bind-group layout wgpu derived from its WGSL.
pub struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// The work recorded since the last submission.
struct Batch {
    encoder: wgpu::CommandEncoder,
    arena: wgpu::Buffer,
    params: Vec<u8>,
    /// Whether a kernel that reports bad indices ran in this batch.
    checks_status: bool,
}

/// An opened adapter with everything the port keeps per device.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub pool: Arc<Pool>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    batch: Mutex<Option<Batch>>,
    /// Validation or device errors wgpu reported asynchronously, surfaced at the next sync.
    errors: Arc<Mutex<Vec<String>>>,
    /// status[0] != 0: a gather/scatter index was out of range; status[1]: the largest such.
    status: wgpu::Buffer,
    /// Whether status may be set and has not been checked yet.
    status_pending: Mutex<bool>,
}

impl Gpu {
    /// Open the first adapter wgpu finds (hardware preferred), or say how to get one.
    pub fn open() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| {
            PortError::Device(format!("no GPU adapter found (install mesa-vulkan-drivers for a software one): {e}"))
        })?;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("anychip"),
            required_features: wgpu::Features::empty(),
            // Everything the adapter offers: the defaults cap storage bindings at 128 MiB.
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| PortError::Device(format!("could not open the GPU adapter {}: {e}", adapter.get_info().name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        let status = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("anychip status"),
            size: 16,
            usage: usage(),
            mapped_at_creation: false,
        });
        Ok(Gpu {
            device,
            queue,
            info: adapter.get_info(),
            limits,
            pool: Arc::default(),
            kernels: Mutex::default(),
            batch: Mutex::new(None),
            errors,
            status,
            status_pending: Mutex::new(false),
        })
    }

    /// Largest buffer the port hands out: it must fit one storage binding.
    pub fn max_alloc(&self) -> u64 {
        self.limits.max_buffer_size.min(self.limits.max_storage_buffer_binding_size) & !3
    }

    /// The kernel for `key`, compiling `source()` (entry point `entry`) on first use.
    pub fn kernel(&self, key: &str, entry: &str, source: impl FnOnce() -> String) -> Result<Arc<Kernel>> {
        if let Some(k) = self.kernels.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(k.clone());
        }
        let src = source();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(PortError::Device(format!("kernel {key} failed to compile (a bug in the wgpu port): {e}")));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let k = Arc::new(Kernel { pipeline, layout });
        self.kernels.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), k.clone());
        Ok(k)
    }

    fn with_batch<T>(&self, f: impl FnOnce(&mut Batch) -> T) -> T {
        let mut g = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let b = g.get_or_insert_with(|| Batch {
            encoder: self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("anychip") }),
            arena: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("anychip params"),
                size: (BATCH * PARAMS) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            params: Vec::with_capacity(BATCH * PARAMS),
            checks_status: false,
        });
        let out = f(b);
        if b.params.len() >= BATCH * PARAMS {
            let full = g.take().expect("batch present");
            drop(g);
            self.submit(full);
        }
        out
    }

    fn submit(&self, b: Batch) {
        if !b.params.is_empty() {
            self.queue.write_buffer(&b.arena, 0, &b.params);
        }
        if b.checks_status {
            *self.status_pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        }
        self.queue.submit([b.encoder.finish()]);
    }

    /// Submit whatever is recorded (without waiting).
    pub fn flush(&self) {
        let b = self.batch.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(b) = b {
            self.submit(b);
        }
    }

    /// Record one dispatch of `kernel` over `groups` workgroups. `bufs` are bound at 1, 2, ...
    /// in order, with `true` for those the kernel writes; `status` binds the index-error word
    /// after them.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u32; PARAMS / 4],
        bufs: &[(&GpuMemory, bool)],
        status: bool,
        groups: [u32; 3],
    ) {
        for (m, writes) in bufs {
            if *writes {
                m.mirror_clear();
            }
        }
        self.with_batch(|b| {
            let offset = b.params.len() as u64;
            b.params.extend(params.iter().flat_map(|w| w.to_le_bytes()));
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.arena,
                    offset,
                    size: wgpu::BufferSize::new(PARAMS as u64),
                }),
            }];
            for (i, (m, _)) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: m.raw().as_entire_binding() });
            }
            if status {
                entries.push(wgpu::BindGroupEntry {
                    binding: bufs.len() as u32 + 1,
                    resource: self.status.as_entire_binding(),
                });
                b.checks_status = true;
            }
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &kernel.layout,
                entries: &entries,
            });
            let mut pass = b.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        });
    }

    /// Record a word-aligned buffer-to-buffer copy (distinct buffers).
    pub fn copy_aligned(&self, src: &wgpu::Buffer, src_off: u64, dst: &GpuMemory, dst_off: u64, bytes: u64) {
        dst.mirror_clear();
        self.with_batch(|b| b.encoder.copy_buffer_to_buffer(src, src_off, dst.raw(), dst_off, bytes));
    }

    /// A word-aligned copy into a buffer the port does not hand out (staging for reads).
    fn copy_raw(&self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, bytes: u64) {
        self.with_batch(|b| b.encoder.copy_buffer_to_buffer(src, src_off, dst, 0, bytes));
    }

    /// A buffer holding `data` (padded to 4 bytes), usable as a copy or shader source.
    pub fn upload(&self, data: &[u8]) -> Result<wgpu::Buffer> {
        let size = (data.len().max(4) as u64).div_ceil(4) * 4;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("anychip upload"),
            size,
            usage: usage(),
            mapped_at_creation: true,
        });
        let mut padded = data.to_vec();
        padded.resize(size as usize, 0);
        buf.slice(..)
            .get_mapped_range_mut()
            .map_err(|e| PortError::Device(format!("writing an upload buffer failed: {e}")))?
            .copy_from_slice(&padded);
        buf.unmap();
        Ok(buf)
    }

    /// Copy `len` bytes at word-aligned `offset` of `src` to the host, after all prior work.
    pub fn download(&self, src: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("anychip read"),
            size: len + 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy_raw(src, offset, &staging, len);
        let check = std::mem::take(&mut *self.status_pending.lock().unwrap_or_else(|p| p.into_inner()))
            || self.batch.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|b| b.checks_status);
        if check {
            self.with_batch(|b| {
                b.encoder.copy_buffer_to_buffer(&self.status, 0, &staging, len, 16);
                b.encoder.clear_buffer(&self.status, 0, None);
                b.checks_status = false;
            });
        }
        self.flush();
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| PortError::Device(format!("waiting for the GPU failed: {e}")))?;
        rx.recv()
            .map_err(|_| PortError::Device("the GPU never finished mapping a read-back buffer".into()))?
            .map_err(|e| PortError::Device(format!("mapping a read-back buffer failed: {e}")))?;
        let bytes = slice
            .get_mapped_range()
            .map_err(|e| PortError::Device(format!("reading a mapped buffer failed: {e}")))?
            .to_vec();
        staging.unmap();
        self.take_errors()?;
        let (data, st) = bytes.split_at(len as usize);
        if check {
            let w = |i: usize| u32::from_le_bytes([st[4 * i], st[4 * i + 1], st[4 * i + 2], st[4 * i + 3]]);
            if w(0) != 0 {
                return Err(PortError::Invalid(format!(
                    "gather_rows/scatter_add_rows: index {} is outside the table (found on the GPU after the call); \
                     check the token ids against the vocabulary size",
                    w(1) as i32
                )));
            }
        }
        Ok(data.to_vec())
    }

    /// Wait for all recorded work and report any error the device raised meanwhile.
    pub fn synchronize(&self) -> Result<()> {
        // A 4-byte read-back waits for everything and checks the index-error status.
        self.download(&self.status, 0, 4).map(|_| ())
    }

    fn take_errors(&self) -> Result<()> {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_empty() {
            return Ok(());
        }
        let msg = e.join("; ");
        e.clear();
        Err(PortError::Device(format!("wgpu reported: {msg}")))
    }
}
