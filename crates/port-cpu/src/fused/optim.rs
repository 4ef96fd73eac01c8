//! The optimizer step and the global gradient norm, each one pass over memory.
//!
//! AdamW exactly as `torch.optim.AdamW` (step t >= 1), per element:
//!   g = grad * scale; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//!   p = p (1 - lr wd); p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
//! The bias corrections are computed in f64 once, as PyTorch does on the host.

use super::is_f32;
use crate::elem::{finish_row, load, raw, row, row_mut, store, BLOCK, PAR_MIN};
use anychip_port::{invalid, Handled, Result, View};
use rayon::prelude::*;

/// AdamW hyper-parameters for one step.
pub struct Hyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
}

/// One in-place AdamW update of `param`, `m` and `v`.
pub fn adamw(param: &View, grad: &View, m: &View, v: &View, grad_scale: Option<&View>, h: Hyper) -> Result<Handled> {
    if !param.dtype.is_float() || !grad.dtype.is_float() || !is_f32(m) || !is_f32(v) {
        return Ok(Handled::No);
    }
    let n = param.numel();
    if grad.numel() != n || m.numel() != n || v.numel() != n {
        return invalid(format!("adamw: grad, m and v must have the parameter's {n} elements"));
    }
    if h.step == 0 {
        return invalid("adamw step counts from 1 (bias correction divides by 1 - beta^t)");
    }
    let scale = match grad_scale {
        Some(s) => {
            let mut t = [0f32];
            // SAFETY: in bounds (checked by `raw`).
            unsafe { load(raw(s)?, s.layout.offset, 1, &mut t) };
            t[0]
        }
        None => 1.0,
    };
    let t = h.step.min(i32::MAX as u64) as i32;
    let step_size = (h.lr as f64 / (1.0 - (h.beta1 as f64).powi(t))) as f32;
    let bc2_sqrt = (1.0 - (h.beta2 as f64).powi(t)).sqrt() as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    let (b1, b2, eps) = (h.beta1, h.beta2, h.eps);
    let (pr, gr, mr, vr) = (raw(param)?, raw(grad)?, raw(m)?, raw(v)?);
    let (p0, g0, m0, v0) = (param.layout.offset, grad.layout.offset, m.layout.offset, v.layout.offset);
    let block = |b: usize| {
        let (at, len) = (b * BLOCK, BLOCK.min(n - b * BLOCK));
        let (mut sp, mut sg) = (Vec::new(), Vec::new());
        // SAFETY: in bounds; block b of param, m and v belongs to this task; m and v are f32
        // (so borrowed in place), grad is only read and is a different tensor.
        unsafe {
            let gs = row(gr, g0 + at, len, &mut sg);
            let ms = std::slice::from_raw_parts_mut(mr.ptr::<f32>().add(m0 + at), len);
            let vs = std::slice::from_raw_parts_mut(vr.ptr::<f32>().add(v0 + at), len);
            let ps = row_mut(pr, p0 + at, len, &mut sp);
            if pr.dtype != anychip_port::DType::F32 {
                // bf16 parameters: row_mut gave scratch, fill it with the current values.
                load(pr, p0 + at, 1, ps);
            }
            for i in 0..len {
                let g = gs[i] * scale;
                let mi = b1 * ms[i] + (1.0 - b1) * g;
                let vi = b2 * vs[i] + (1.0 - b2) * g * g;
                ms[i] = mi;
                vs[i] = vi;
                let p = ps[i] * decay;
                ps[i] = p - step_size * mi / (vi.sqrt() / bc2_sqrt + eps);
            }
            finish_row(pr, p0 + at, ps);
        }
    };
    let blocks = n.div_ceil(BLOCK);
    if n < PAR_MIN {
        (0..blocks).for_each(block);
    } else {
        (0..blocks).into_par_iter().for_each(block);
    }
    Ok(Handled::Yes)
}

/// out = sqrt(sum of g^2 over every element of every gradient), accumulated in f64.
pub fn grad_norm(grads: &[View], out: &View) -> Result<Handled> {
    if !is_f32(out) || grads.iter().any(|g| !g.dtype.is_float()) {
        return Ok(Handled::No);
    }
    if out.numel() != 1 {
        return invalid("grad_norm writes a [1] tensor");
    }
    let mut total = 0f64;
    for g in grads {
        let r = raw(g)?;
        let (n, g0) = (g.numel(), g.layout.offset);
        let block = |b: usize| -> f64 {
            let (at, len) = (b * BLOCK, BLOCK.min(n - b * BLOCK));
            let mut s = Vec::new();
            // SAFETY: in bounds; read only.
            let xs = unsafe { row(r, g0 + at, len, &mut s) };
            crate::math::sum_squares_f64(xs)
        };
        let blocks = n.div_ceil(BLOCK);
        // Block sums are added in block order either way, so the result is thread-independent.
        let sums: Vec<f64> = if n < PAR_MIN {
            (0..blocks).map(block).collect()
        } else {
            (0..blocks).into_par_iter().map(block).collect()
        };
        total += sums.iter().sum::<f64>();
    }
    // SAFETY: in bounds; written by this thread only.
    unsafe { store(raw(out)?, out.layout.offset, 1, &[total.sqrt() as f32]) };
    Ok(Handled::Yes)
}
