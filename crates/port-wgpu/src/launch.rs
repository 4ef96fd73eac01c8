//! From views to a dispatch: validation, axis merging, the parameter block, and grid sizes.

use crate::gpu::{Gpu, PARAMS};
use crate::memory::{gpu, GpuMemory};
use crate::shader::{self, Slot};
use anychip_port::{PortError, Result, View};

/// Most axes a kernel walks after merging (the parameter block has room for eight).
pub const MAX_RANK: usize = 8;
/// Threads per 1-D workgroup (matches `WG` in the prelude).
pub const WG: usize = 256;

/// The 64-word parameter block of one dispatch (layout in `kernels/prelude.wgsl`).
pub struct Params(pub [u32; PARAMS / 4]);

impl Params {
    /// A block for `n` units of work.
    pub fn new(n: usize) -> Params {
        let mut p = Params([0; PARAMS / 4]);
        p.0[0] = n as u32;
        p
    }
    /// Set word `i`.
    pub fn set(&mut self, i: usize, v: u32) -> &mut Params {
        self.0[i] = v;
        self
    }
    /// Set word `i` to the bits of `f`.
    pub fn setf(&mut self, i: usize, f: f32) -> &mut Params {
        self.set(i, f.to_bits())
    }
    /// Walk `shape` with one (offset, strides) per view, in view slots 0, 1, ...
    pub fn walk(&mut self, shape: &[usize], views: &[(usize, &[usize])]) -> &mut Params {
        self.0[1] = shape.len() as u32;
        for (d, &n) in shape.iter().enumerate() {
            self.0[8 + d] = n as u32;
        }
        for (v, (off, strides)) in views.iter().enumerate() {
            self.0[16 + 12 * v] = *off as u32;
            for (d, &s) in strides.iter().enumerate() {
                self.0[17 + 12 * v + d] = s as u32;
            }
        }
        self
    }
}

/// Merge axes for a joint walk of views of one shape: drop extent-1 axes and fuse axis d into
/// d + 1 wherever every view has stride[d] = stride[d + 1] * extent[d + 1]. A contiguous
/// elementwise op becomes rank 1, so the index walk is one division per element.
pub fn merge(shape: &[usize], strides: &[&[usize]]) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    let mut sh: Vec<usize> = Vec::new();
    let mut st: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let fuse = !sh.is_empty() && strides.iter().zip(&st).all(|(s, m)| m.last().copied() == Some(s[d] * shape[d]));
        if fuse {
            *sh.last_mut().expect("non-empty") *= shape[d];
            for (v, s) in strides.iter().enumerate() {
                *st[v].last_mut().expect("non-empty") = s[d];
            }
        } else {
            sh.push(shape[d]);
            for (v, s) in strides.iter().enumerate() {
                st[v].push(s[d]);
            }
        }
    }
    if sh.len() > MAX_RANK {
        return Err(PortError::Unsupported(format!(
            "wgpu port walks at most {MAX_RANK} non-contiguous axes; shape {shape:?} needs {}",
            sh.len()
        )));
    }
    Ok((sh, st))
}

/// Validate a view (strides rank, ownership, in bounds) and return its memory.
pub fn check_view<'a>(what: &str, v: &'a View) -> Result<&'a GpuMemory> {
    let l = &v.layout;
    if l.strides.len() != l.shape.len() {
        return Err(PortError::Invalid(format!(
            "{what}: shape {:?} has rank {} but strides {:?} have {} entries",
            l.shape,
            l.shape.len(),
            l.strides,
            l.strides.len()
        )));
    }
    let mem = gpu(what, &v.buf)?;
    let held = mem.capacity() as usize / v.dtype.size();
    let within = v.buf.bytes() / v.dtype.size();
    anychip_port::check::in_bounds(what, v, within.min(held))?;
    Ok(mem)
}

pub use anychip_port::check::{float as check_float, shape as check_shape};

/// A 2-D grid of 1-D workgroups covering `n` threads (one grid axis holds <= 65535 groups).
pub fn grid(n: usize) -> Result<[u32; 3]> {
    let groups = n.div_ceil(WG).max(1);
    let x = groups.min(65_535);
    let y = groups.div_ceil(x);
    if y > 65_535 {
        return Err(PortError::Unsupported(format!("wgpu port: {n} elements in one call exceed 2^32")));
    }
    Ok([x as u32, y as u32, 1])
}

/// Compile (once) and record a kernel: `family` WGSL with `slots` bound to `mems` in order.
#[allow(clippy::too_many_arguments)]
pub fn run(
    g: &Gpu,
    tag: &str,
    family: &str,
    entry: &str,
    slots: &[Slot],
    fills: &[(&str, &str)],
    mems: &[&GpuMemory],
    status: bool,
    params: &Params,
    groups: [u32; 3],
) -> Result<()> {
    let key = shader::key(tag, slots, fills);
    let kernel = g.kernel(&key, entry, || shader::source(family, slots, fills))?;
    let bufs: Vec<(&GpuMemory, bool)> = mems.iter().zip(slots).map(|(m, s)| (*m, s.writes)).collect();
    g.dispatch(&kernel, &params.0, &bufs, status, groups);
    Ok(())
}
