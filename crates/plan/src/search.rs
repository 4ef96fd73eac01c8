//! Layout search: every tensor x pipeline x data x context x expert-parallel split, micro-batch,
//! interleaving, recompute policy and ZeRO stage for a job on `count` chips of one kind; or one
//! layout pinned with `--layout`.

use crate::calib::{self, Constants};
use crate::chips::{Chip, GIB};
use crate::model::Model;
use crate::perf::{
    balanced_split, check_layout, estimate, Estimate, Job, Layout, Modules, Precision, Rates, Recompute, Schedule,
};
use crate::stack::Stack;
use anyhow::{anyhow, bail, Result};
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
    /// GEMM number format.
    pub precision: Precision,
    /// The software stack assumed.
    pub stack: Stack,
    /// Evaluate only this layout (`--layout`).
    pub pinned: Option<Layout>,
}

/// Parse `--layout tp=8,pp=8,vp=6,mb=1,zero=1,recompute=selective[,cp=..,ep=..,etp=..,sp=..,modules=layernorm+moe_act,shard=..]`
/// for `count` chips: data parallel is what the other degrees leave; `shard=N` shards the ZeRO
/// stage over groups of N data-parallel replicas (hybrid sharding).
pub fn parse_layout(spec: &str, count: usize) -> Result<Layout> {
    Ok(parse_layout_spec(spec, count)?.0)
}

/// [`parse_layout`] for a job on `stack`: a spec that names no `schedule` runs the stack's
/// ([`stack_schedule`]), as the search's layouts and the published rows do.
pub fn parse_layout_on(spec: &str, count: usize, stack: &Stack) -> Result<Layout> {
    let (mut l, named) = parse_layout_spec(spec, count)?;
    if !named.schedule {
        l.schedule = stack_schedule(stack, l.pp, l.v);
    }
    // Sequence parallelism is on by default where the stack has it.
    if !named.sp {
        l.sp = stack.sequence_parallel;
    }
    Ok(l)
}

/// Which of a `--layout`'s defaults the spec set itself.
#[derive(Default)]
struct Named {
    schedule: bool,
    sp: bool,
}

/// A `--layout` key (lower case) under its one name, so that a key given twice under two
/// spellings (`vp=4,v=2`) is caught like one given twice; Megatron's and NeMo's names (`vpp`,
/// `mbs`) are the planner's.
fn canonical_layout_key(key: &str) -> &str {
    match key {
        "v" | "vpp" => "vp",
        "mbs" => "mb",
        "recompute_modules" => "modules",
        "bf16_layers" => "bf16",
        "first_layers" => "first",
        "last_layers" => "last",
        other => other,
    }
}

/// The layout of `spec` and which of its defaults it named.
fn parse_layout_spec(spec: &str, count: usize) -> Result<(Layout, Named)> {
    let mut named = Named::default();
    let mut seen: Vec<String> = Vec::new();
    let mut l = Layout { zero: 1, sp: true, ..Layout::data_parallel(1) };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--layout '{spec}': '{part}' must look like KEY=VALUE, e.g. tp=8"))?;
        let lower = key.trim().to_ascii_lowercase();
        let key = canonical_layout_key(&lower);
        if seen.iter().any(|k| k == key) {
            bail!("--layout '{spec}': {key} is given twice; give each key once");
        }
        seen.push(key.to_string());
        let num = || -> Result<usize> {
            val.trim().parse().map_err(|_| anyhow!("--layout '{spec}': {key}={val} is not a whole number"))
        };
        let degree = || -> Result<usize> {
            match num()? {
                0 => bail!("--layout '{spec}': {key}=0; every degree and the micro-batch are at least 1"),
                n => Ok(n),
            }
        };
        match key {
            "tp" => l.tp = degree()?,
            "pp" => l.pp = degree()?,
            "vp" => l.v = degree()?,
            "cp" => l.cp = degree()?,
            "ep" => l.ep = degree()?,
            "etp" => l.etp = degree()?,
            "mb" => l.mb = degree()?,
            "dp" => l.dp = degree()?,
            "shard" => l.shard = num()?,
            "zero" => l.zero = u8::try_from(num()?).unwrap_or(u8::MAX),
            "recompute" => l.recompute = Recompute::parse(val.trim()).map_err(|e| anyhow!("--layout '{spec}': {e}"))?,
            "modules" => l.modules = Modules::parse([val]).map_err(|e| anyhow!("--layout '{spec}': {e}"))?,
            "sp" => {
                l.sp = matches!(val.trim(), "1" | "true" | "on");
                named.sp = true;
            }
            "offload" => l.offload = num()?,
            "recompute_layers" => l.recompute_layers = num()?,
            "bf16" => l.bf16_layers = num()?,
            "first" => l.first_layers = Some(num()?),
            "last" => l.last_layers = Some(num()?),
            "schedule" => {
                l.schedule = Schedule::parse(val.trim()).map_err(|e| anyhow!("--layout '{spec}': {e}"))?;
                named.schedule = true;
            }
            other => {
                bail!("--layout '{spec}': unknown key '{other}'; keys: tp, pp, vp, cp, ep, etp, mb, zero, shard, recompute, recompute_layers, modules, sp, dp, offload, bf16, schedule, first, last")
            }
        }
    }
    let degrees =
        [("tp", l.tp), ("pp", l.pp), ("cp", l.cp), ("ep", l.ep), ("etp", l.etp), ("dp", l.dp), ("shard", l.shard)];
    if let Some((key, n)) = degrees.iter().find(|(_, n)| *n > count) {
        bail!("--layout '{spec}': {key}={n} is more than the {count} chips");
    }
    let model_par = l.tp.saturating_mul(l.pp).saturating_mul(l.cp);
    if model_par == 0 || !count.is_multiple_of(model_par) {
        bail!("--layout '{spec}': tp x pp x cp = {model_par} does not divide the {count} chips");
    }
    let dp = count / model_par;
    if seen.iter().any(|k| k == "dp") && l.dp != dp {
        bail!("--layout '{spec}': dp={} but {count} chips / (tp x pp x cp) leaves dp={dp}", l.dp);
    }
    l.dp = dp;
    if l.zero > 3 {
        bail!("--layout '{spec}': zero must be 0, 1, 2 or 3");
    }
    Ok((l, named))
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
    /// Memory it needs per chip, GiB (what `reason` breaks down).
    pub memory_gib: f64,
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
    /// What the planner assumed reading the model: set for a Hugging Face config of a family it
    /// does not know by name, read by transformers' standard field names; None otherwise.
    pub model_note: Option<String>,
    /// Sequence length.
    pub seq: usize,
    /// Training tokens.
    pub tokens: f64,
    /// Software stack assumed.
    pub stack: String,
    /// GEMM number format.
    pub precision: Precision,
    /// Whether published runs on this chip were part of the calibration.
    pub validated: bool,
    /// `dense`, `moe`, `hybrid` or `gdn-hybrid`.
    pub kind: String,
    /// The class of published runs `accuracy` measures: the kind, `moe-all-to-all` for a MoE job
    /// on a stack without a flex dispatcher, `-long` added at 16,384 tokens or more
    /// ([`crate::calib::accuracy_class`]).
    pub accuracy_class: String,
    /// How far off the planner was on published runs like this job, each predicted without
    /// its own source ([`crate::calib::accuracy_for`]).
    pub accuracy: Vec<crate::calib::Accuracy>,
    /// How far off it was on published runs of this very model, on any chip
    /// ([`crate::calib::model_accuracy`]; empty for a model without published runs).
    pub model_accuracy: Vec<crate::calib::Accuracy>,
    /// On the default stack only: how far off it was on published runs of frameworks without a
    /// profile priced on that stack ([`crate::calib::unprofiled_accuracy`]; empty otherwise).
    pub default_stack_accuracy: Vec<crate::calib::Accuracy>,
    /// Fraction of its rated clock the chip's tensor cores sustain within its board power
    /// ([`crate::perf::power_clock`]; 1 when not power-limited or its power is not known).
    pub tensor_clock: f64,
    /// Fraction of the chip's fused-attention rate the stack's attention kernel reaches: the
    /// chip's `sync_mma_fraction` for a FlashAttention-2-class stack (`sync_mma_attention`), else 1.
    pub attention_kernel: f64,
    /// How much faster than the 2023-2024 kernels the stack's fused attention is priced: 1 +
    /// `attn_gain_2025` for the cuDNN of 2025 ([`crate::perf::cudnn_2025_speedup`]), else 1.
    pub attention_speedup: f64,
    /// What the chip's published runs say the physics misses ([`crate::calib::ChipResidual`]):
    /// every time in [`Plan::ranked`] carries its factor. None for a chip without runs.
    pub chip_residual: Option<crate::calib::ChipResidual>,
    /// The links the plan was priced on: a chip file holds one reference system's network, so a
    /// cluster with another must name its own (`--override CHIP.scaleout_gbs=...`).
    pub network: Network,
    /// Fitting layouts, fastest first; for a [`PinnedOver`] plan, the pinned layout that does not.
    pub ranked: Vec<Ranked>,
    /// The fastest layouts that did not fit.
    pub rejected: Vec<Rejected>,
    /// The layouts faster than the best that come nearest to fitting, least memory first: what
    /// more memory per chip would buy (`rejected`'s fastest misfits can need many times the chip).
    pub near_misses: Vec<Rejected>,
    /// Layouts evaluated.
    pub evaluated: usize,
    /// Why the pinned layout does not fit, where the memory model prices it above usable
    /// memory ([`PinnedOver`]); None for every plan whose `ranked` layouts fit.
    pub over_memory: Option<String>,
}

/// The error of a pinned layout (`--layout`) the memory model prices above the chip's usable
/// memory: every caller gets the one line it always got ("layout ... does not fit on ...:
/// needs ..."), and it carries the plan of that layout, priced as if it fit, so that `anychip
/// plan --layout` still shows its step and memory. The memory model is an estimate: some
/// published runs ran at layouts it prices over (docs/planner.md, Limits), so a user pinning
/// the layout they ran gets its time as well as the warning.
#[derive(Debug)]
pub struct PinnedOver {
    /// The one-line error.
    pub message: String,
    /// The pinned layout's plan (`ranked` holds it alone, `over_memory` says why it does not fit).
    pub plan: Box<Plan>,
}

impl std::fmt::Display for PinnedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PinnedOver {}

/// A chip file's links, GB/s one direction per chip: inside its scale-up domain and between
/// domains, with where the scale-out figure comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Network {
    /// Scale-up link (NVLink, ICI, ...).
    pub scaleup_gbs: Option<f64>,
    /// Chips in one scale-up domain.
    pub scaleup_domain: Option<f64>,
    /// Scale-out link between domains.
    pub scaleout_gbs: Option<f64>,
    /// The scale-out figure's source: the reference system it was read from, or the override.
    pub scaleout_source: String,
}

impl Network {
    /// The links of `chip` as its file (and any override) gives them.
    pub fn of(chip: &Chip) -> Network {
        Network {
            scaleup_gbs: chip.get("scaleup_gbs"),
            scaleup_domain: chip.get("scaleup_domain"),
            scaleout_gbs: chip.get("scaleout_gbs"),
            scaleout_source: chip.specs.get("scaleout_gbs").map(|f| f.source.clone()).unwrap_or_default(),
        }
    }
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

/// The memory of an estimate, part by part, against what the chip can use.
pub fn memory_reason(est: &Estimate) -> String {
    let m = &est.memory;
    format!(
        "needs {:.1} GiB of {:.1} usable (weights {:.1}, gradients {:.1}, optimizer {:.1}, gathered {:.1}, activations {:.1}, logits {:.1}, reserve {:.1})",
        m.total() / GIB,
        est.capacity / GIB,
        m.weights / GIB,
        m.gradients / GIB,
        m.optimizer / GIB,
        m.gathered / GIB,
        m.activations / GIB,
        m.logits / GIB,
        m.reserve / GIB
    ) + &host_reason(est)
}

/// The memory line's note on offloaded activations: how much sits in host memory, of how much.
fn host_reason(est: &Estimate) -> String {
    match (est.memory.offloaded, est.host_capacity) {
        (o, _) if o <= 0.0 => String::new(),
        (o, Some(h)) => format!("; {:.1} GiB of activations in host memory of {:.1} usable", o / GIB, h / GIB),
        (o, None) => format!("; {:.1} GiB of activations in host memory (host memory per chip unknown)", o / GIB),
    }
}

/// Every layout the search tries for `req` on a chip with `domain` chips per scale-up domain.
/// None offloads activations: on PCIe nodes the copies share the host's lanes with the NICs,
/// which the model does not price, so an offload layout is evaluated only when pinned.
fn candidates(req: &Request, domain: usize) -> Vec<Layout> {
    grids(req, domain)
        .iter()
        .flat_map(|g| runs_on(req, g, domain))
        // Each layout again with each lighter last stage the stack can run.
        .flat_map(|l| {
            last_stage_choices(req, l.pp, l.v).into_iter().map(move |last_layers| Layout { last_layers, ..l })
        })
        .collect()
}

/// One way to lay the chips out: tensor, context, pipeline, data and expert degrees.
struct Grid {
    tp: usize,
    cp: usize,
    pp: usize,
    dp: usize,
    ep: usize,
    etp: usize,
}

/// Tensor-parallel degrees the search tries: at most 16 and inside one scale-up domain, dividing
/// the heads, and dividing the domain where it is 16 chips or fewer, so that no group straddles
/// two (an 8-GPU node: 1, 2, 4, 8); in a larger domain (an NVL72 rack, a TPU pod) any degree that
/// divides the heads (PaLM's 12 of 48).
fn tp_choices(domain: usize, heads: usize) -> impl Iterator<Item = usize> {
    (1..=domain.clamp(1, 16)).filter(move |t| heads.is_multiple_of(*t) && (domain > 16 || domain.is_multiple_of(*t)))
}

/// Every grid whose degrees divide the chips, the heads, the sequence and the experts, tensor
/// parallelism inside one scale-up domain (at most 16) and context parallelism only at 32k
/// tokens or more.
fn grids(req: &Request, domain: usize) -> Vec<Grid> {
    let a = &req.model.arch;
    let cps: Vec<usize> = if req.seq >= 32768 { powers_of_two_upto(16).collect() } else { vec![1] };
    let eps: Vec<usize> = match a.moe {
        Some(m) => powers_of_two_upto(m.experts.min(256)).filter(|e| m.experts % e == 0).collect(),
        None => vec![1],
    };
    let mut out = Vec::new();
    for tp in tp_choices(domain, a.heads) {
        if !req.count.is_multiple_of(tp) {
            continue;
        }
        for &cp in &cps {
            if !req.count.is_multiple_of(tp * cp) || !req.seq.is_multiple_of(cp) {
                continue;
            }
            let rest = req.count / (tp * cp);
            for pp in (1..=rest.min(a.layers)).filter(|p| rest.is_multiple_of(*p)) {
                let dp = rest / pp;
                for (ep, etp) in expert_splits(a, &eps, tp, tp * cp * dp) {
                    out.push(Grid { tp, cp, pp, dp, ep, etp });
                }
            }
        }
    }
    out
}

/// The runs tried on grid `g`: micro-batch, interleave, recompute mode, ZeRO stage and its
/// shard groups, on the stack's schedule.
fn runs_on(req: &Request, g: &Grid, domain: usize) -> Vec<Layout> {
    let (layers, mut out) = (req.model.arch.layers, Vec::new());
    for mb in [1, 2, 4, 8] {
        for v in [1, 2, 3, 4, 6, 8] {
            if v > 1 && (g.pp == 1 || g.pp * v > layers || !chunks_fit(req, g.pp, v)) {
                continue;
            }
            for recompute in [Recompute::None, Recompute::Selective, Recompute::Full] {
                for zero in 0..=3u8 {
                    if zero > 0 && g.dp * g.cp == 1 {
                        continue;
                    }
                    for shard in shard_choices(zero, g.tp * g.cp, g.dp, domain) {
                        out.push(Layout {
                            tp: g.tp,
                            pp: g.pp,
                            dp: g.dp,
                            cp: g.cp,
                            ep: g.ep,
                            etp: g.etp,
                            mb,
                            v,
                            schedule: stack_schedule(&req.stack, g.pp, v),
                            recompute,
                            recompute_layers: 0,
                            modules: Modules::default(),
                            zero,
                            shard,
                            sp: g.tp > 1 && req.stack.sequence_parallel,
                            offload: 0,
                            bf16_layers: 0,
                            first_layers: None,
                            last_layers: None,
                        });
                    }
                }
            }
        }
    }
    out.retain(|l| req.stack.check_runs(l).is_ok());
    out
}

/// Whether `req`'s layers go into `pp` x `v` chunks: evenly, or on a stack that balances its
/// splits ([`Stack::balanced_pipeline_split`]) the way Megatron-Core must ([`Layout::balanced_on`]).
fn chunks_fit(req: &Request, pp: usize, v: usize) -> bool {
    let layers = req.model.arch.layers;
    layers.is_multiple_of(pp * v) || (req.stack.balanced_pipeline_split && balanced_split(layers, pp, v).is_some())
}

/// The last stage's layer counts the search tries at `pp` stages of one chunk: the even split
/// (`None`; on a stack that balances, the split it must run) and, on such a stack (Megatron-Core's
/// `num_layers_in_last_pipeline_stage`), the last stage one or two layers lighter, so that its LM
/// head's time comes off the stage that binds; the estimate prices whichever stage then binds.
fn last_stage_choices(req: &Request, pp: usize, v: usize) -> Vec<Option<usize>> {
    let layers = req.model.arch.layers;
    let even = layers.div_ceil(pp.max(1));
    let mut out = vec![None];
    if req.stack.balanced_pipeline_split && pp > 1 && v == 1 {
        out.extend((1..=2).filter(|&d| even > d && layers - (even - d) >= pp - 1).map(|d| Some(even - d)));
    }
    out
}

/// The schedule a layout of `pp` stages and `v` chunks runs on `stack`: the stack's own
/// (`pipeline_schedule`) where it applies (one chunk a stage, an even `pp` for DualPipe), else 1F1B.
pub fn stack_schedule(stack: &Stack, pp: usize, v: usize) -> Schedule {
    match stack.pipeline_schedule {
        _ if pp == 1 || v > 1 => Schedule::OneFOneB,
        Schedule::DualPipe if !pp.is_multiple_of(2) => Schedule::OneFOneB,
        s => s,
    }
}

/// (ep, etp) pairs the search tries on `ranks` = tp x cp x dp chips: each expert-parallel degree
/// of `eps` with experts whole (etp 1) and, at tensor parallelism, split over the TP group as
/// Megatron-Core does by default (etp = tp), where the experts' width splits.
fn expert_splits(a: &crate::model::Arch, eps: &[usize], tp: usize, ranks: usize) -> Vec<(usize, usize)> {
    let etps = match a.moe {
        Some(m) if tp > 1 && m.expert_d_ff.is_multiple_of(tp) => vec![1, tp],
        _ => vec![1],
    };
    let pairs = eps.iter().flat_map(|&ep| etps.iter().map(move |&etp| (ep, etp)));
    pairs.filter(|&(ep, etp)| ranks.is_multiple_of(ep * etp)).collect()
}

/// ZeRO shard groups the search tries: every replica (0), and for ZeRO-3 whose data-parallel
/// group leaves the scale-up domain, hybrid sharding inside one domain (`width` = tp x cp chips a
/// replica takes there), so that the per-micro-batch gathers stay on the fast links.
fn shard_choices(zero: u8, width: usize, dp: usize, domain: usize) -> Vec<usize> {
    let inside = domain / width.max(1);
    if zero == 3 && inside >= 2 && inside < dp && dp.is_multiple_of(inside) {
        vec![0, inside]
    } else {
        vec![0]
    }
}

/// The global batch a layout runs: the request's, or the largest multiple of dp x mb within about
/// [`DEFAULT_BATCH_TOKENS`], so that layouts are compared at (nearly) one batch; `None` for a
/// layout whose dp x mb alone exceeds it, unless `round_up` (when no layout stays within it, each
/// runs the smallest multiple above).
fn batch_for(req: &Request, l: &Layout, round_up: bool) -> Option<usize> {
    let unit = l.dp * l.mb;
    let target = (DEFAULT_BATCH_TOKENS / req.seq).max(1);
    match req.global_batch {
        Some(b) => Some(b),
        None if unit <= target => Some(target / unit * unit),
        None if round_up => Some(unit),
        None => None,
    }
}

/// Training tokens must be a finite positive number and a given global batch at least one
/// sequence of `seq` tokens and at most the tokens to train: otherwise every rate is zero, every
/// duration infinite, or the job ends before its first step. `tokens_name` and `batch_name` are
/// how the user spelled them (`--tokens` on the command line, `tokens` in a jobs file).
pub fn check_job_size(
    tokens: f64,
    global_batch: Option<usize>,
    seq: usize,
    tokens_name: &str,
    batch_name: &str,
) -> Result<()> {
    if !tokens.is_finite() || tokens <= 0.0 {
        bail!("{tokens_name} must be a positive finite number of training tokens, got {tokens}; e.g. 2e12");
    }
    match global_batch {
        Some(0) => bail!(
            "{batch_name} must be at least 1 sequence per step; give a positive value or leave it out for about 4M tokens per step"
        ),
        Some(b) if b as f64 * seq as f64 > tokens => bail!(
            "{batch_name} {b} sequences of {seq} tokens is {:.3e} tokens a step, more than the {tokens:.3e} tokens to train; lower {batch_name} or raise {tokens_name}",
            b as f64 * seq as f64
        ),
        _ => Ok(()),
    }
}

/// The most chips a job is planned on: ten times the largest clusters built, and far below
/// where the layouts' products of degrees could overflow.
pub const MAX_CHIPS: usize = 10_000_000;

/// Search every layout (or evaluate the pinned one); errors name what is missing or why nothing fits.
pub fn search(req: &Request, chip: &Chip) -> Result<Plan> {
    search_with(req, chip, &calib::shipped())
}

/// [`search`] with explicit constants. Without a global batch, layouts are compared at about
/// [`DEFAULT_BATCH_TOKENS`]; only if none of those can run (too many chips for that batch, or
/// none fits) do layouts whose dp x mb exceeds it run their smallest batch, and that wider
/// search's answer (or error, which then covers every layout) is the one returned.
pub fn search_with(req: &Request, chip: &Chip, k: &Constants) -> Result<Plan> {
    match search_at(req, chip, k, req.pinned.is_some()) {
        Err(_) if req.global_batch.is_none() && req.pinned.is_none() => search_at(req, chip, k, true),
        other => other,
    }
}

/// [`search_with`] without its fallback: with `round_up` false and no global batch, only layouts
/// whose dp x mb stays within about [`DEFAULT_BATCH_TOKENS`] are priced.
pub(crate) fn search_at(req: &Request, chip: &Chip, k: &Constants, round_up: bool) -> Result<Plan> {
    check_request(req, chip)?;
    let rates = Rates::of(chip, k, req.count, req.precision)?;
    let capacity = chip.usable_memory_bytes()?;
    let mut found = evaluate(req, chip, k, &rates, capacity, round_up)?;
    if found.evaluated == 0 {
        let a = &req.model.arch;
        bail!(
            "no parallel layout splits {} (heads {}, layers {}) over {} chips; try a power-of-two count",
            req.model.name,
            a.heads,
            a.layers,
            req.count
        );
    }
    if found.ranked.is_empty() {
        let err = nothing_fits(req, chip, &found);
        let Some(est) = found.pinned_over.take() else {
            return Err(err);
        };
        let over_memory = Some(memory_reason(&est));
        found.rejected.clear();
        found.ranked.push(rank(est, req, chip));
        let plan = Plan { over_memory, ..plan_of(req, chip, k, &rates, found) };
        return Err(PinnedOver { message: err.to_string(), plan: Box::new(plan) }.into());
    }
    found.ranked.sort_by(|a, b| b.estimate.tokens_per_s.total_cmp(&a.estimate.tokens_per_s));
    let near_misses = near_misses(&found.rejected, found.ranked[0].estimate.tokens_per_s);
    found.rejected.sort_by(|a, b| b.tokens_per_s.total_cmp(&a.tokens_per_s));
    found.rejected.truncate(3);
    Ok(Plan { near_misses, ..plan_of(req, chip, k, &rates, found) })
}

/// Up to three layouts faster than `best` tokens/s that need the least memory, least first; of
/// layouts alike in speed and memory (ZeRO-0 and ZeRO-1 where the optimizer is small), the first.
fn near_misses(rejected: &[Rejected], best: f64) -> Vec<Rejected> {
    let mut faster: Vec<&Rejected> = rejected.iter().filter(|r| r.tokens_per_s > best).collect();
    faster.sort_by(|a, b| a.memory_gib.total_cmp(&b.memory_gib).then(b.tokens_per_s.total_cmp(&a.tokens_per_s)));
    faster.dedup_by(|a, b| a.tokens_per_s == b.tokens_per_s && a.memory_gib == b.memory_gib);
    faster.into_iter().take(3).cloned().collect()
}

/// The request's sizes: chips, sequence, tokens and batch, each with its one-line error.
fn check_request(req: &Request, chip: &Chip) -> Result<()> {
    if req.count == 0 {
        bail!("chip count must be positive (e.g. --chips {}:8)", chip.name);
    }
    if req.count > MAX_CHIPS {
        bail!("{} chips is more than the planner prices (at most {MAX_CHIPS}); plan a part of the fleet", req.count);
    }
    if req.seq == 0 {
        bail!("--seq must be positive");
    }
    check_job_size(req.tokens, req.global_batch, req.seq, "--tokens", "--global-batch")
}

/// What the search found: the layouts that fit, those that did not, how many were priced and a
/// pinned layout's estimate where it does not fit ([`PinnedOver`]).
struct Found {
    ranked: Vec<Ranked>,
    rejected: Vec<Rejected>,
    evaluated: usize,
    pinned_over: Option<Estimate>,
}

/// Price every candidate layout (or the pinned one, whose malformation is an error where a
/// candidate's is a skip) at its batch.
fn evaluate(req: &Request, chip: &Chip, k: &Constants, rates: &Rates, capacity: f64, round_up: bool) -> Result<Found> {
    let layouts = match req.pinned {
        Some(l) => vec![l],
        None => candidates(req, rates.domain),
    };
    let mut found = Found { ranked: Vec::new(), rejected: Vec::new(), evaluated: 0, pinned_over: None };
    for layout in layouts {
        let Some(batch) = batch_for(req, &layout, round_up) else {
            continue;
        };
        let job = Job { arch: &req.model.arch, seq: req.seq, global_batch: batch, precision: req.precision };
        if req.pinned.is_some() {
            check_layout(&job, &layout)?;
        } else if check_layout(&job, &layout).is_err() {
            continue;
        }
        let est = estimate(&job, &layout, rates, k, &req.stack, capacity)?;
        found.evaluated += 1;
        if est.fits() {
            if req.pinned.is_none() && req.stack.partial_recompute {
                if let Some(partial) =
                    least_recompute(&job, &est, |l| estimate(&job, l, rates, k, &req.stack, capacity))?
                {
                    found.evaluated += 1;
                    found.ranked.push(rank(partial, req, chip));
                }
            }
            found.ranked.push(rank(est, req, chip));
        } else {
            let r = Rejected {
                layout,
                tokens_per_s: est.tokens_per_s,
                memory_gib: est.memory.total() / GIB,
                reason: memory_reason(&est),
            };
            found.rejected.push(r);
            if req.pinned.is_some() {
                found.pinned_over = Some(est);
            }
        }
    }
    Ok(found)
}

/// The fitting full-recompute estimate `full`'s partial sibling that recomputes the fewest
/// layers of each chunk and still fits (Megatron-Core's block method): the stored activations
/// move linearly with the recomputed share, so the memory of recomputing nothing and of
/// recomputing all gives a first count, and a bisection the fewest. None where recomputing
/// nothing fits (that layout is a candidate of its own), only recomputing every layer fits, or a
/// chunk holds a single layer.
fn least_recompute(
    job: &Job,
    full: &Estimate,
    price: impl Fn(&Layout) -> Result<Estimate>,
) -> Result<Option<Estimate>> {
    let l = full.layout;
    let chunk = l.chunk_layers(job.arch.layers);
    if l.recompute != Recompute::Full || l.recompute_layers > 0 || chunk < 2 {
        return Ok(None);
    }
    let none = price(&Layout { recompute: Recompute::None, ..l })?;
    if none.fits() {
        return Ok(None);
    }
    let (all, kept) = (full.memory.total(), none.memory.total());
    let over = (kept - full.capacity) / (kept - all).max(f64::MIN_POSITIVE);
    // Memory falls as more layers recompute: bisect between a count known not to fit (0) and
    // one known to fit (the whole chunk), probing the linear estimate first.
    let (mut lo, mut hi, mut best) = (0, chunk, None);
    let mut probe = ((over * chunk as f64).ceil() as usize).clamp(1, chunk - 1);
    while hi - lo > 1 {
        let est = price(&Layout { recompute_layers: probe, ..l })?;
        if est.fits() {
            (hi, best) = (probe, Some(est));
        } else {
            lo = probe;
        }
        probe = (lo + hi) / 2;
    }
    Ok(best)
}

/// The error when no priced layout fits: the pinned layout's reason, or the leanest layout's
/// (the first of those needing the least memory; `found.rejected` holds every misfit here).
fn nothing_fits(req: &Request, chip: &Chip, found: &Found) -> anyhow::Error {
    let leanest = found.rejected.iter().min_by(|a, b| a.memory_gib.total_cmp(&b.memory_gib));
    if let (Some(l), Some(r)) = (req.pinned, leanest) {
        return anyhow!("layout {l} does not fit on {}: {}", chip.name, r.reason);
    }
    let smallest = leanest.map(|r| format!("; the leanest layout, {}, {}", r.layout, r.reason)).unwrap_or_default();
    let st = &req.stack;
    let splits = if st.tensor_parallel && st.pipeline_parallel {
        String::new()
    } else {
        format!(
            ", or a stack that splits layers (stack {} has no {} parallelism; torchtitan-2024 and megatron-core-2024 have both)",
            st.name,
            if st.tensor_parallel { "pipeline" } else if st.pipeline_parallel { "tensor" } else { "tensor or pipeline" }
        )
    };
    anyhow!(
        "{} does not fit on {} x {} in any of {} layouts{}; use more chips or a chip with more memory{splits}",
        req.model.name,
        req.count,
        chip.name,
        found.evaluated,
        smallest
    )
}

/// The plan of what was found, with the accuracy lines for the job's class, chip and model.
fn plan_of(req: &Request, chip: &Chip, k: &Constants, rates: &Rates, found: Found) -> Plan {
    let class = crate::calib::accuracy_class(req.model.kind(), &req.stack, req.seq);
    let default_stack_accuracy =
        if req.stack.is_default() { crate::calib::unprofiled_accuracy(&class) } else { Vec::new() };
    Plan {
        chip: chip.name.clone(),
        count: req.count,
        model: req.model.name.clone(),
        model_note: req.model.note.clone(),
        seq: req.seq,
        tokens: req.tokens,
        stack: req.stack.name.clone(),
        precision: req.precision,
        validated: crate::validation::rows().iter().any(|r| chip.answers_to(&r.chip)),
        kind: req.model.kind().into(),
        accuracy: crate::calib::accuracy_for(&class, &chip.family),
        accuracy_class: class,
        model_accuracy: crate::calib::model_accuracy(&req.model.name),
        default_stack_accuracy,
        tensor_clock: crate::perf::power_clock(chip, k),
        attention_kernel: rates.attention_kernel(&req.stack),
        attention_speedup: crate::perf::cudnn_2025_speedup(&req.stack, k),
        chip_residual: k.chip_residual.get(&chip.name).cloned(),
        network: Network::of(chip),
        ranked: found.ranked,
        rejected: found.rejected,
        near_misses: Vec::new(),
        evaluated: found.evaluated,
        over_memory: None,
    }
}

fn rank(est: Estimate, req: &Request, chip: &Chip) -> Ranked {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn misfit(zero: usize, tokens_per_s: f64, memory_gib: f64) -> Rejected {
        let layout = parse_layout(&format!("tp=8,zero={zero}"), 64).unwrap();
        Rejected { layout, tokens_per_s, memory_gib, reason: format!("needs {memory_gib} GiB") }
    }

    #[test]
    fn near_misses_are_the_faster_misfits_needing_least_memory() {
        let rejected = [
            misfit(1, 150.0, 900.0), // fastest, far over: the old list's first
            misfit(1, 105.0, 85.0),
            misfit(0, 105.0, 85.0), // alike in speed and memory: shown once
            misfit(1, 90.0, 80.0),  // slower than the best: nothing to gain
            misfit(1, 120.0, 82.0),
            misfit(1, 110.0, 95.0),
            misfit(1, 130.0, 300.0),
        ];
        let got: Vec<(f64, f64)> =
            near_misses(&rejected, 100.0).iter().map(|r| (r.tokens_per_s, r.memory_gib)).collect();
        assert_eq!(got, [(120.0, 82.0), (105.0, 85.0), (110.0, 95.0)]);
        assert!(near_misses(&rejected, 200.0).is_empty(), "none faster than the best");
    }
}
