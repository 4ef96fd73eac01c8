//! One optimizer step that a non-finite loss or gradient norm never gets through: the loss
//! and the global gradient norm are read before the update, and a step where either is NaN or
//! infinite is not applied. What then happens is the user's choice (`--on-nan`): stop (after
//! a checkpoint of the state before that step, which is still intact) or skip the step and go
//! on, counting skips. Under ZeRO-1 the update happens inside the gradient exchange, so there
//! the check can only come after it: the run stops and writes nothing.

use crate::config::TrainConfig;
use crate::fault;
use crate::trainer::{forward_backward, forward_backward_hooked, on_port};
use anychip_core::{grad_norm, no_grad, Tensor};
use anychip_data::Loader;
use anychip_dist::{DataParallel, ExpertParallel};
use anychip_nn::Transformer;
use anychip_optim::AdamW;
use anychip_port::Port;
use anyhow::{anyhow, Result};
use std::path::Path;

/// What to do when a step's loss or gradient norm is not finite (`--on-nan`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNan {
    /// Write a checkpoint of the state before the step and end with an error (exit 2).
    #[default]
    Stop,
    /// Leave the weights as they were, count the step as skipped and go on.
    Skip,
}

impl std::str::FromStr for OnNan {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OnNan, String> {
        match s {
            "stop" => Ok(OnNan::Stop),
            "skip" => Ok(OnNan::Skip),
            _ => Err(format!("'{s}' is not an --on-nan choice; use stop or skip")),
        }
    }
}

/// Skipped steps in a row after which `--on-nan skip` stops anyway: the run is not recovering.
pub const MAX_SKIPS_IN_A_ROW: u64 = 20;

/// One step's numbers and whether its update reached the weights.
pub struct StepOutcome {
    pub loss: f32,
    pub grad_norm: f32,
    pub applied: bool,
}

impl StepOutcome {
    pub fn finite(&self) -> bool {
        self.loss.is_finite() && self.grad_norm.is_finite()
    }
}

fn global_norm(grads: &[Tensor]) -> Result<Tensor> {
    let _g = no_grad();
    Ok(grad_norm(&grads.iter().collect::<Vec<_>>())?)
}

/// A gradient a diverging run could have produced, for the fault-injection tests.
fn inject_nan(grads: &mut [Tensor]) -> Result<()> {
    if fault::nan_grad() {
        let _g = no_grad();
        grads[0] = grads[0].mul_scalar(f64::NAN)?;
    }
    Ok(())
}

/// Forward, backward and (when the loss and the gradient norm are finite) the AdamW update,
/// on one process or as one rank of `dp`; the loss is the mean over ranks. Under expert
/// parallelism `ep` holds this rank's experts (`opt` the other parameters), and the norm that
/// clips and guards the step counts every expert of the job once.
#[allow(clippy::too_many_arguments)]
pub fn guarded_step(
    model: &Transformer,
    loader: &mut Loader,
    cfg: &TrainConfig,
    (opt, ep): (&mut AdamW, Option<&mut ExpertParallel>),
    dp: Option<&mut DataParallel>,
    lr: f32,
    port: &dyn Port,
) -> Result<StepOutcome> {
    let Some(dp) = dp else {
        return on_port(port, || {
            let (loss, mut grads) = forward_backward(model, loader, cfg)?;
            inject_nan(&mut grads)?;
            update_if_finite(opt, &grads, None, loss, lr)
        });
    };
    let world = dp.world() as f32;
    // Parameter i of the model is gradient slot[i].1 of the exchange (false) or of the experts.
    let shard = model.expert_shard();
    let slot: Vec<(bool, usize)> = shard
        .iter()
        .scan((0, 0), |(r, e), &is_expert| {
            let c = if is_expert { e } else { r };
            *c += 1;
            Some((is_expert, *c - 1))
        })
        .collect();
    let n_experts = shard.iter().filter(|&&e| e).count();
    // Each gradient goes to the exchange as soon as backward has finished it; the experts'
    // are kept and reduced over their replicas once backward is over.
    let experts = ep.as_deref();
    let fb = |ready: &mut dyn FnMut(usize, Tensor) -> anychip_core::Result<()>| -> Result<(f32, Option<Reduced>)> {
        let mut mine: Vec<Option<Tensor>> = vec![None; n_experts];
        let loss = forward_backward_hooked(model, loader, cfg, &mut |i, g| match slot[i] {
            (false, j) => ready(j, g),
            (true, j) => {
                mine[j] = Some(g);
                Ok(())
            }
        })?;
        Ok((loss, experts.map(|e| reduce_experts(e, mine)).transpose()?))
    };
    if dp.is_zero() {
        opt.step += 1;
        let extra = |r: &(f32, Option<Reduced>)| Ok(r.1.as_ref().map(|x| x.sq.clone()));
        let ((loss, reduced), norm) = dp.zero_step_during_with(lr, fb, extra)?;
        if let (Some(e), Some(r)) = (ep, reduced) {
            e.opt.step_with_norm(&r.grads, &norm, lr)?;
        }
        let loss = dp.sum(&[loss])?[0] / world;
        return Ok(StepOutcome { loss, grad_norm: norm.item()?, applied: true });
    }
    let ((loss, reduced), mut avg) = dp.average_grads_during(fb)?;
    inject_nan(&mut avg)?;
    // Every rank holds the same averaged gradients and summed loss, so all decide alike.
    let loss = dp.sum(&[loss])?[0] / world;
    let experts = ep.zip(reduced.as_ref());
    update_if_finite(opt, &avg, experts, loss, lr)
}

/// This rank's expert gradients reduced over their replicas, and every expert's squared norm.
struct Reduced {
    grads: Vec<Tensor>,
    sq: Tensor,
}

/// Reduce the expert gradients backward produced (zeros for experts no token reached).
fn reduce_experts(ep: &ExpertParallel, grads: Vec<Option<Tensor>>) -> Result<Reduced> {
    let grads: Vec<Tensor> = grads
        .into_iter()
        .zip(&ep.opt.groups)
        .map(|(g, p)| g.map_or_else(|| p.param.zeros_like(), Ok))
        .collect::<anychip_core::Result<_>>()?;
    let grads = ep.reduce_grads(&grads)?;
    let sq = ep.squared_norm(&grads)?;
    Ok(Reduced { grads, sq })
}

/// The AdamW update of `opt` (and of the experts' optimizer, with their reduced gradients and
/// squared norm) when the loss and the global gradient norm are finite.
fn update_if_finite(
    opt: &mut AdamW,
    grads: &[Tensor],
    experts: Option<(&mut ExpertParallel, &Reduced)>,
    loss: f32,
    lr: f32,
) -> Result<StepOutcome> {
    let norm = global_norm(grads)?;
    let norm = match &experts {
        Some((_, r)) => {
            let _g = no_grad();
            norm.mul(&norm)?.add(&r.sq)?.sqrt()?
        }
        None => norm,
    };
    let mut out = StepOutcome { loss, grad_norm: norm.item()?, applied: false };
    if out.finite() {
        opt.step_with_norm(grads, &norm, lr)?;
        if let Some((e, r)) = experts {
            e.opt.step_with_norm(&r.grads, &norm, lr)?;
        }
        out.applied = true;
    }
    Ok(out)
}

/// Where the run's last good checkpoint stands, said plainly for messages.
pub fn on_disk(out: &Path, last_ckpt: Option<u64>) -> String {
    match last_ckpt {
        Some(s) => format!("the last checkpoint, at step {s}, is in {}", crate::checkpoint::in_run(out).display()),
        None => format!("no checkpoint has been written to {} yet", out.display()),
    }
}

/// The error ending a run whose step `step` was not finite, telling what is on disk.
pub fn diverged(o: &StepOutcome, step: u64, cfg: &TrainConfig, out: &Path, last_ckpt: Option<u64>) -> anyhow::Error {
    let what = format!("step {step} had loss {} and gradient norm {}", o.loss, o.grad_norm);
    let how = match last_ckpt {
        Some(_) => format!("lower --lr (now {}) and --resume {}", cfg.lr, out.display()),
        None => format!("lower --lr (now {}) and start again", cfg.lr),
    };
    if o.applied {
        return anyhow!("{what}, and the update already reached the weights (ZeRO-1 updates during the exchange), so nothing more was written; {}: {how}", on_disk(out, last_ckpt));
    }
    anyhow!(
        "{what}; the update was not applied; {}: {how} (or pass --on-nan skip to skip such steps)",
        on_disk(out, last_ckpt)
    )
}
