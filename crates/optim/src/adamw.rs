//! AdamW with decoupled weight decay, global-norm clipping on the device, and its state.

use anychip_core::{adamw_step, grad_norm, AdamWParams, Result, Tensor};
use anychip_port::DType;
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (PyTorch defaults except the learning rate).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (0 disables).
    pub grad_clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 }
    }
}

/// A parameter under optimisation and whether weight decay applies to it.
pub struct ParamGroup {
    pub name: String,
    pub param: Tensor,
    pub decay: bool,
}

/// AdamW state: first and second moments (F32) per parameter, and the step count.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub groups: Vec<ParamGroup>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Updates done so far.
    pub step: u64,
}

impl AdamW {
    /// Fresh state (zero moments) for `groups`.
    pub fn new(cfg: AdamWConfig, groups: Vec<ParamGroup>) -> Result<AdamW> {
        let m =
            groups.iter().map(|g| Tensor::zeros(g.param.port(), g.param.shape(), DType::F32)).collect::<Result<_>>()?;
        let v =
            groups.iter().map(|g| Tensor::zeros(g.param.port(), g.param.shape(), DType::F32)).collect::<Result<_>>()?;
        Ok(AdamW { cfg, groups, m, v, step: 0 })
    }

    /// One update with learning rate `lr` from `grads` (aligned with `groups`). Returns the
    /// pre-clipping global gradient norm as a device tensor (read it only when logging).
    pub fn step(&mut self, grads: &[Tensor], lr: f32) -> Result<Tensor> {
        let _g = anychip_core::no_grad();
        let refs: Vec<&Tensor> = grads.iter().collect();
        let norm = grad_norm(&refs)?;
        self.step_with_norm(grads, &norm, lr)?;
        Ok(norm)
    }

    /// [`step`](Self::step) with the global gradient norm already computed (`grad_norm` of
    /// `grads`), so a caller can look at it first, e.g. to skip a step whose norm is not finite.
    pub fn step_with_norm(&mut self, grads: &[Tensor], norm: &Tensor, lr: f32) -> Result<()> {
        let _g = anychip_core::no_grad();
        // scale = clip / max(norm, clip) = min(1, clip / norm), computed on the device so the
        // step never waits on a host read.
        let scale = if self.cfg.grad_clip > 0.0 {
            let clip = norm.scalar_like(self.cfg.grad_clip as f64)?;
            Some(clip.div(&norm.maximum(&clip)?)?)
        } else {
            None
        };
        self.step += 1;
        for (i, g) in self.groups.iter().enumerate() {
            let hp = AdamWParams {
                lr,
                beta1: self.cfg.beta1,
                beta2: self.cfg.beta2,
                eps: self.cfg.eps,
                weight_decay: if g.decay { self.cfg.weight_decay } else { 0.0 },
            };
            adamw_step(&g.param, &grads[i], &self.m[i], &self.v[i], scale.as_ref(), hp, self.step)?;
        }
        Ok(())
    }
}
