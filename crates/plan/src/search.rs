//! Layout search: every tensor x pipeline x data x context-parallel split, micro-batch,
//! interleaving, recompute policy and ZeRO stage for a job on `count` chips of one kind.

use crate::calib::{self, Calibration};
use crate::chips::{Chip, GIB};
use crate::model::Model;
use crate::perf::{estimate, Estimate, Job, Layout, Rates, Recompute, Software};
use anyhow::{bail, Result};
use serde::Serialize;

/// Tokens per optimizer step the planner aims for when no global batch is given (~4M, the
/// order of magnitude Llama 2/3 and Qwen pre-training used).
pub const DEFAULT_BATCH_TOKENS: usize = 4 * 1024 * 1024;

/// What to plan.
#[derive(Clone, Debug)]
pub struct Request {
    /// The model.
    pub model: Model,
    /// Chips available (all of one kind).
    pub count: usize,
    /// Training tokens.
    pub tokens: f64,
    /// Sequence length.
    pub seq: usize,
    /// Sequences per step; `None` picks about [`DEFAULT_BATCH_TOKENS`] per step for each layout.
    pub global_batch: Option<usize>,
}

/// One ranked layout with the job-level numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    /// The model's prediction.
    pub estimate: Estimate,
    /// Seconds per step.
    pub step_s: f64,
    /// Days to train all tokens.
    pub days: f64,
    /// Chip energy (TDP x time), kWh, if the TDP is known.
    pub energy_kwh: Option<f64>,
    /// Chip rental cost, USD, if a price is known.
    pub cost_usd: Option<f64>,
}

/// A layout that did not fit, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    /// The layout.
    pub layout: Layout,
    /// Predicted tokens/s had it fitted (to pick the most interesting failures).
    pub tokens_per_s: f64,
    /// Why it was dropped.
    pub reason: String,
}

/// The result of a search.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Chip name.
    pub chip: String,
    /// Chips used.
    pub count: usize,
    /// Model name.
    pub model: String,
    /// Sequence length.
    pub seq: usize,
    /// Training tokens.
    pub tokens: f64,
    /// Calibration generation used.
    pub calibration: String,
    /// Whether that calibration is validated on published runs.
    pub validated: bool,
    /// Fitting layouts, fastest first.
    pub ranked: Vec<Ranked>,
    /// The fastest layouts that did not fit.
    pub rejected: Vec<Rejected>,
    /// Layouts evaluated.
    pub evaluated: usize,
}

impl Plan {
    /// The best layout.
    pub fn best(&self) -> &Ranked {
        &self.ranked[0]
    }
}

fn powers_of_two_upto(n: usize) -> impl Iterator<Item = usize> {
    (0..).map(|k| 1usize << k).take_while(move |&x| x <= n)
}

/// Search every layout; errors name what is missing or why nothing fits.
pub fn search(req: &Request, chip: &Chip, sw: &Software) -> Result<Plan> {
    if req.count == 0 {
        bail!("chip count must be positive (e.g. --chips {}:8)", chip.name);
    }
    if req.seq == 0 {
        bail!("--seq must be positive");
    }
    if req.tokens.is_nan() || req.tokens <= 0.0 {
        bail!("--tokens must be positive");
    }
    let cal: Calibration = calib::for_chip(chip)?;
    let sh = calib::shared();
    let rates = Rates::of(chip, &cal, req.count)?;
    let capacity = chip.usable_memory_bytes()?;
    let m = &req.model.config;
    let mut ranked = Vec::new();
    let mut rejected = Vec::new();
    let mut evaluated = 0;
    // The layout needing the least memory, for the error when nothing fits.
    let mut leanest: Option<(f64, Rejected)> = None;
    let cps: Vec<usize> = if req.seq >= 32768 { powers_of_two_upto(16).collect() } else { vec![1] };
    for tp in powers_of_two_upto(rates.domain.min(16)) {
        if req.count % tp != 0 || m.n_head % tp != 0 || (m.n_kv_head % tp != 0 && tp % m.n_kv_head != 0) {
            continue;
        }
        for &cp in &cps {
            if req.count % (tp * cp) != 0 || req.seq % cp != 0 {
                continue;
            }
            let rest = req.count / (tp * cp);
            for pp in (1..=rest.min(m.n_layer)).filter(|p| rest % p == 0) {
                let dp = rest / pp;
                let batch = match req.global_batch {
                    Some(b) => b,
                    None => (DEFAULT_BATCH_TOKENS / req.seq).max(1).div_ceil(dp) * dp,
                };
                for mb in [1, 2, 4, 8] {
                    if batch % (dp * mb) != 0 {
                        continue;
                    }
                    let n_micro = batch / (dp * mb);
                    for v in [1, 2, 4] {
                        if v > 1 && (pp == 1 || pp * v > m.n_layer || n_micro % pp != 0) {
                            continue;
                        }
                        for recompute in [Recompute::None, Recompute::Selective, Recompute::Full] {
                            for zero in 0..=3u8 {
                                if zero > 0 && dp * cp == 1 {
                                    continue;
                                }
                                let layout = Layout { tp, pp, dp, cp, mb, v, recompute, zero, sp: tp > 1 };
                                let job = Job { model: m, seq: req.seq, global_batch: batch };
                                let est = estimate(&job, &layout, &rates, &cal, &sh, sw, capacity)?;
                                evaluated += 1;
                                if est.fits() {
                                    ranked.push(rank(est, req, chip, &rates));
                                } else {
                                    let mem = &est.memory;
                                    let r = Rejected {
                                        layout,
                                        tokens_per_s: est.tokens_per_s,
                                        reason: format!(
                                            "needs {:.1} GiB of {:.1} usable (states {:.1}, activations {:.1}, logits {:.1}, reserve {:.1})",
                                            mem.total() / GIB,
                                            capacity / GIB,
                                            (mem.layer_states + mem.embedding_states) / GIB,
                                            mem.activations / GIB,
                                            mem.logits / GIB,
                                            mem.reserve / GIB
                                        ),
                                    };
                                    if !matches!(&leanest, Some((m, _)) if *m <= mem.total()) {
                                        leanest = Some((mem.total(), r.clone()));
                                    }
                                    rejected.push(r);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if evaluated == 0 {
        bail!(
            "no parallel layout splits {} (heads {}, kv heads {}, layers {}) over {} chips; try a power-of-two count",
            req.model.name,
            m.n_head,
            m.n_kv_head,
            m.n_layer,
            req.count
        );
    }
    ranked.sort_by(|a, b| b.estimate.tokens_per_s.total_cmp(&a.estimate.tokens_per_s));
    rejected.sort_by(|a, b| b.tokens_per_s.total_cmp(&a.tokens_per_s));
    rejected.truncate(3);
    if ranked.is_empty() {
        let smallest =
            leanest.map(|(_, r)| format!("; the leanest layout, {}, {}", r.layout, r.reason)).unwrap_or_default();
        bail!(
            "{} does not fit on {} x {} in any of {} layouts{}; use more chips or a chip with more memory",
            req.model.name,
            req.count,
            chip.name,
            evaluated,
            smallest
        );
    }
    Ok(Plan {
        chip: chip.name.clone(),
        count: req.count,
        model: req.model.name.clone(),
        seq: req.seq,
        tokens: req.tokens,
        calibration: cal.name.clone(),
        validated: cal.validated,
        ranked,
        rejected,
        evaluated,
    })
}

fn rank(est: Estimate, req: &Request, chip: &Chip, _rates: &Rates) -> Ranked {
    let step_s = est.time.total();
    let seconds = req.tokens / est.tokens_per_s;
    let chips = est.layout.chips() as f64;
    let hours = seconds / 3600.0;
    Ranked {
        step_s,
        days: seconds / 86400.0,
        energy_kwh: chip.get("tdp_w").map(|w| w * chips * hours / 1000.0),
        cost_usd: chip.get("price_per_hour").map(|p| p * chips * hours),
        estimate: est,
    }
}
