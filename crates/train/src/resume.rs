//! What a `--resume` may change: the flags the user passed again, applied over the checkpoint's
//! config. The learning rate, data, step budget, cadences and optimizer numbers may change (a
//! line says which did); what fixes the model, the batch or the data order may not (one line
//! naming the flag, exit 2), since the checkpoint's weights and data position depend on it.

use crate::config::TrainConfig;
use anychip_nn::Precision;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The flags given on the command line (None: not given).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub preset: Option<String>,
    pub init: Option<PathBuf>,
    pub tokenizer: Option<String>,
    pub batch: Option<usize>,
    pub ctx: Option<usize>,
    pub accum: Option<usize>,
    pub seed: Option<u64>,
    pub data: Option<PathBuf>,
    pub steps: Option<u64>,
    pub lr: Option<f32>,
    pub constant_lr: bool,
    pub warmup: Option<u64>,
    pub weight_decay: Option<f32>,
    pub beta1: Option<f32>,
    pub beta2: Option<f32>,
    pub eps: Option<f32>,
    pub grad_clip: Option<f32>,
    pub eval_every: Option<u64>,
    pub eval_batches: Option<usize>,
    pub ckpt_every: Option<u64>,
    pub precision: Option<Precision>,
    /// `--capacity-factor` (0: uncapped).
    pub capacity_factor: Option<f32>,
}

fn refuse<T: PartialEq + std::fmt::Debug>(flag: &str, given: Option<T>, saved: T) -> Result<()> {
    match given {
        Some(g) if g != saved => bail!(
            "{flag} {g:?} differs from the checkpoint's {saved:?}, and it cannot change on --resume (the weights and data position depend on it); leave {flag} out, or start a new run"
        ),
        _ => Ok(()),
    }
}

fn change<T: PartialEq + std::fmt::Display + Copy>(
    changes: &mut Vec<String>,
    name: &str,
    given: Option<T>,
    slot: &mut T,
) {
    if let Some(g) = given {
        if g != *slot {
            changes.push(format!("{name} {} -> {g}", *slot));
            *slot = g;
        }
    }
}

/// The checkpoint's config with the flags that may change applied, and a note per change;
/// an error naming the first flag that may not change but differs.
pub fn apply(saved: &TrainConfig, f: &Flags) -> Result<(TrainConfig, Vec<String>)> {
    refuse("--preset", f.preset.as_deref(), saved.preset.as_str())?;
    refuse("--init", f.init.as_ref(), saved.init.as_ref().unwrap_or(&PathBuf::new()))?;
    refuse("--tokenizer", f.tokenizer.as_deref(), saved.tokenizer.as_str())?;
    refuse("--batch", f.batch, saved.batch)?;
    refuse("--ctx", f.ctx, saved.ctx)?;
    refuse("--accum", f.accum, saved.accum)?;
    refuse("--seed", f.seed, saved.seed)?;
    let mut c = saved.clone();
    let mut changes = Vec::new();
    if let Some(d) = &f.data {
        let d = absolute(d);
        if Some(&d) != c.data.as_ref() {
            let was = c.data.as_ref().map_or("the default corpus".into(), |p| p.display().to_string());
            changes.push(format!("data {was} -> {}", d.display()));
            c.data = Some(d);
        }
    }
    let constant = c.min_lr == c.lr;
    change(&mut changes, "steps", f.steps, &mut c.steps);
    change(&mut changes, "lr", f.lr, &mut c.lr);
    if f.lr.is_some() || f.constant_lr {
        // As on a new run: decay to a tenth of the peak, or hold it with --constant-lr.
        c.min_lr = if constant || f.constant_lr { c.lr } else { c.lr / 10.0 };
    }
    change(&mut changes, "warmup", f.warmup, &mut c.warmup);
    change(&mut changes, "weight decay", f.weight_decay, &mut c.adamw.weight_decay);
    change(&mut changes, "beta1", f.beta1, &mut c.adamw.beta1);
    change(&mut changes, "beta2", f.beta2, &mut c.adamw.beta2);
    change(&mut changes, "eps", f.eps, &mut c.adamw.eps);
    change(&mut changes, "grad clip", f.grad_clip, &mut c.adamw.grad_clip);
    change(&mut changes, "eval every", f.eval_every, &mut c.eval_every);
    change(&mut changes, "eval batches", f.eval_batches, &mut c.eval_batches);
    change(&mut changes, "checkpoint every", f.ckpt_every, &mut c.ckpt_every);
    change(&mut changes, "precision", f.precision, &mut c.precision);
    let was = c.model.moe.as_ref().and_then(|m| m.capacity_factor);
    set_capacity_factor(&mut c, f.capacity_factor)?;
    let now = c.model.moe.as_ref().and_then(|m| m.capacity_factor);
    if now != was {
        let show = |f: Option<f32>| f.map_or("uncapped".to_string(), |f| f.to_string());
        changes.push(format!("capacity factor {} -> {}", show(was), show(now)));
    }
    Ok((c, changes))
}

/// Applies `--capacity-factor` (0: uncapped) to the run's MoE model; an error for a dense model
/// or a factor below 1. Routing capacity shapes no weight, so a resumed run may change it.
pub fn set_capacity_factor(c: &mut TrainConfig, given: Option<f32>) -> Result<()> {
    let Some(f) = given else { return Ok(()) };
    let Some(moe) = c.model.moe.as_mut() else {
        bail!("--capacity-factor applies to mixture-of-experts models, and {} has no experts; leave it out", c.preset)
    };
    moe.capacity_factor = (f != 0.0).then_some(f);
    moe.validate().map_err(|e| anyhow::anyhow!("--capacity-factor {f}: {e}"))
}

/// `p` made absolute against the current directory, so a checkpoint's paths hold from anywhere.
pub fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_model_config::ModelConfig;

    fn saved() -> TrainConfig {
        TrainConfig::default_for("gpt2-tiny", ModelConfig::preset("gpt2-tiny").unwrap())
    }

    #[test]
    fn changeable_flags_apply_and_are_reported() {
        let f = Flags { lr: Some(1e-4), steps: Some(5000), ckpt_every: Some(7), batch: Some(16), ..Flags::default() };
        let (c, changes) = apply(&saved(), &f).unwrap();
        assert_eq!((c.lr, c.min_lr, c.steps, c.ckpt_every), (1e-4, 1e-4 / 10.0, 5000, 7));
        assert_eq!(changes, ["steps 1200 -> 5000", "lr 0.003 -> 0.0001", "checkpoint every 200 -> 7"]);
        // The same values as saved are no change.
        assert!(apply(&saved(), &Flags { batch: Some(16), lr: Some(3e-3), ..Flags::default() }).unwrap().1.is_empty());
    }

    #[test]
    fn the_capacity_factor_may_change_on_a_moe_model_only() {
        let moe = TrainConfig::default_for("moe-tiny", ModelConfig::preset("moe-tiny").unwrap());
        let (c, changes) = apply(&moe, &Flags { capacity_factor: Some(0.0), ..Flags::default() }).unwrap();
        assert_eq!(c.model.moe.unwrap().capacity_factor, None);
        assert_eq!(changes, ["capacity factor 2 -> uncapped"]);
        let (_, same) = apply(&moe, &Flags { capacity_factor: Some(2.0), ..Flags::default() }).unwrap();
        assert!(same.is_empty(), "{same:?}");
        let low = apply(&moe, &Flags { capacity_factor: Some(0.9), ..Flags::default() }).unwrap_err().to_string();
        assert!(low.contains("--capacity-factor 0.9") && low.contains("at least 1"), "{low}");
        let dense = apply(&saved(), &Flags { capacity_factor: Some(2.0), ..Flags::default() }).unwrap_err().to_string();
        assert!(dense.contains("gpt2-tiny has no experts"), "{dense}");
    }

    #[test]
    fn fixed_flags_that_differ_are_refused_by_name() {
        for (flag, f) in [
            ("--preset", Flags { preset: Some("gpt2-124m".into()), ..Flags::default() }),
            ("--batch", Flags { batch: Some(8), ..Flags::default() }),
            ("--ctx", Flags { ctx: Some(64), ..Flags::default() }),
            ("--tokenizer", Flags { tokenizer: Some("gpt2".into()), ..Flags::default() }),
        ] {
            let e = apply(&saved(), &f).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
