//! The mixture-of-experts feed-forward block and its load-balancing loss.
//!
//! Forward for the normalised hidden states h `[N, d]` of one layer:
//! 1. router: p = softmax(h R^T) `[N, E]` (one composite, [`moe_router`]);
//! 2. top-k on the host: each token's k largest p (plus the selection bias when the config has
//!    one, ERNIE 4.5) pick its experts; the weights are those experts' p, divided by their sum
//!    when `norm_topk_prob` (Qwen3-MoE's flag; ERNIE always does it);
//! 3. dispatch (dropless): the N k (token, expert) slots are sorted by expert and h's rows are
//!    gathered into that order (`embedding`, whose backward is the scatter-add);
//! 4. the experts run on their row ranges ([`moe_experts`]), and the combine sums each slot's
//!    output, times its weight, back into its token's row ([`moe_combine`]);
//! 5. shared experts (ERNIE 4.5), when present, are one dense SwiGLU added to the result.
//!
//! Under expert parallelism ([`ExpertGroup`]) each rank holds `E / m` of the experts and step 4
//! moves the rows instead: the sorted slots for member j's experts are one contiguous run, so
//! each rank tells every member how many rows it sends each of its experts (an all-to-all of the
//! counts), sends the rows ([`all_to_all_rows`]), reorders what arrived (source-major) to
//! expert-major, runs its experts, restores the arrival order and sends the outputs back; the
//! combine then runs where the tokens live. The exchanges are autograd nodes whose backward is
//! the reverse all-to-all, so the expert weights' gradients collect every member's tokens.
//!
//! Expert capacity (`capacity_factor` f, Switch / GShard's capacity without their dropping):
//! after step 2 each expert may hold at most C = ceil(f N k / E) of the layer's N k slots. Slots
//! are visited from the weakest selection score up; one whose expert holds more than C moves to
//! the best-scoring expert of its token that has room and is not already among its picks, and
//! its weight becomes that expert's probability (renormalised with the rest). Every token still
//! gets k experts (dropless); the router's own preference (before the cap), the realised loads
//! and the slots moved are all reported. Under expert parallelism each rank caps its own tokens.
//!
//! Aux-loss-free balancing (DeepSeek-V3 section 2.1.2, `bias_balance_rate` gamma > 0): the
//! selection bias b `[E]` of step 2 is not trained but moved after every training forward from
//! the layer's preferred loads c_e (slots the pick sends to e before any capacity cap, summed
//! over ranks when the counts are pooled) and their mean m = N k / E:
//! b_e <- b_e + gamma sign(m - c_e). An overloaded expert's score for
//! the pick drops, an idle one's rises; the combine weights stay the plain probabilities, so the
//! bias steers the choice without entering the loss or its gradients. With gradient accumulation
//! each micro-batch moves it once.
//!
//! Load balancing is transformers' `load_balancing_loss_func` (Switch Transformer eq. 4, as
//! Mixtral, Qwen3-MoE and ERNIE 4.5 compute it there): over the router outputs of EVERY MoE layer
//! taken together as one batch of L N rows, aux = E sum_e f_e P_e with f_e the fraction of the L N
//! rows whose top-k (of the plain probabilities, without ERNIE's selection bias) holds e and P_e
//! the mean probability of e. The paper sums a per-layer loss instead; transformers' pooled form is
//! what the checkpoints were trained with, so it is what is matched here. Gradient flows through
//! P only (f counts discrete choices). With `aux_loss_router_only` (moe-tiny) P is taken from a
//! second router product of h with its gradient stopped, so the balancing pressure trains R alone
//! and never reaches h, whose shape the language-model loss alone decides.

use crate::params::ParamKind;
use anychip_core::{
    all_to_all_rows, embedding, in_region, linear, moe_combine, moe_experts, moe_router, swiglu, Result, Tensor,
};
use anychip_model_config::MoeConfig;
use anychip_port::{Collectives, DType, Port};
use std::ops::Range;
use std::sync::Arc;

/// The ranks that share one copy of the experts (expert parallelism): member j holds experts
/// `j E/m .. (j+1) E/m` of every MoE layer and receives the rows routed to them.
#[derive(Clone)]
pub struct ExpertGroup {
    /// Collectives over every rank of the job; exchanges send nothing outside `members`.
    pub coll: Arc<dyn Collectives>,
    /// The group's ranks (in `coll`), in the order of the experts they hold.
    pub members: Vec<usize>,
    /// This rank's place in `members`.
    pub index: usize,
}

impl ExpertGroup {
    /// The experts (of `n_experts`) this rank holds.
    pub fn local_experts(&self, n_experts: usize) -> Range<usize> {
        let per = n_experts / self.members.len();
        self.index * per..(self.index + 1) * per
    }

    /// A count per rank of `coll`: `per_member[j]` at member j's rank, 0 elsewhere.
    fn spread(&self, per_member: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut v = vec![0; self.coll.world()];
        self.members.iter().zip(per_member).for_each(|(&r, n)| v[r] = n);
        v
    }
}

/// The [`in_region`] names a profiler charges the block's parts to (the experts' products are
/// ordinary matmuls and stay charged as such).
pub const ROUTER: &str = "moe_router";
pub const DISPATCH: &str = "moe_dispatch";
pub const COMBINE: &str = "moe_combine";

/// What [`MoeBlock::route`] returns.
struct Routed {
    /// Router probabilities `[N, E]`.
    probs: Tensor,
    /// The chosen experts' weights, token-major `[N k, 1]`.
    weights: Tensor,
    /// The experts each slot is sent to, token-major `[N k]` (after the capacity cap).
    chosen: Vec<usize>,
    /// The plain top-k of the probabilities (no selection bias, no cap): the aux loss's picks.
    plain: Vec<usize>,
    /// Per expert, the slots the pick sent it before the capacity cap.
    preferred: Vec<usize>,
    /// Slots the capacity cap moved to another expert.
    rerouted: usize,
}

/// Parameter indices of one MoE block.
pub(crate) struct MoeBlock {
    router: usize,
    selection_bias: Option<usize>,
    /// The experts this rank holds (all of them without expert parallelism), in order.
    up: Vec<usize>,
    down: Vec<usize>,
    shared: Option<(usize, usize)>,
}

/// What one MoE layer's forward hands to the model for the auxiliary loss and the metrics.
pub(crate) struct LayerRouting {
    /// Sum over tokens of the router probabilities `[E]` (differentiable).
    pub prob_sum: Tensor,
    /// Per expert, tokens whose plain top-k holds it (the aux loss's counts).
    pub topk_counts: Vec<usize>,
    /// Per expert, tokens actually routed to it (with the selection bias and capacity cap, if any).
    pub routed: Vec<usize>,
    /// Per expert, tokens the router's pick sent it before the capacity cap (`routed` without one).
    pub preferred: Vec<usize>,
    /// Slots the capacity cap moved to another expert.
    pub rerouted: usize,
    /// Tokens of this layer over every rank whose counts were pooled (see [`pool_counts`]);
    /// `tokens` until then.
    pub pooled_tokens: usize,
    /// The experts each token was sent to, token-major `[N k]` (tests check a step kept them).
    #[cfg_attr(not(test), allow(dead_code))]
    pub chosen: Vec<usize>,
    pub tokens: usize,
}

/// Router statistics of the last training forward, summed over the MoE layers.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterStats {
    /// Tokens routed to each expert, summed over layers.
    pub tokens_per_expert: Vec<usize>,
    /// The unweighted load-balancing loss (1.0 is perfectly balanced).
    pub aux_loss: f32,
    /// The largest expert share over the mean share, worst layer.
    pub max_load_ratio: f32,
    /// The same for the router's preference before the capacity cap (`max_load_ratio` without one).
    pub router_max_load_ratio: f32,
    /// Slots the capacity cap moved to another expert, summed over the layers.
    pub rerouted: usize,
    /// The largest expert share over the mean share of each MoE layer, in layer order.
    pub load_ratio_per_layer: Vec<f32>,
}

/// Creates a parameter (name, shape, kind, the expert it belongs to, whether this rank holds
/// it) and returns its index, or `None` for one held by another rank.
pub(crate) type AddParam<'a> =
    dyn FnMut(String, &[usize], ParamKind, Option<usize>, bool) -> Result<Option<usize>> + 'a;

/// The parameters of one MoE block, created in a fixed order; of the experts only `local`
/// are held here (all of them without expert parallelism).
pub(crate) fn build(
    add: &mut AddParam<'_>,
    prefix: &str,
    cfg: &MoeConfig,
    d: usize,
    local: Range<usize>,
) -> Result<MoeBlock> {
    let (e, f) = (cfg.n_experts, cfg.d_expert);
    let router = held(add, format!("{prefix}.router.weight"), &[e, d], ParamKind::Weight)?;
    let selection_bias = cfg
        .selection_bias
        .then(|| held(add, format!("{prefix}.selection_bias"), &[e], ParamKind::Statistic))
        .transpose()?;
    let (mut up, mut down) = (Vec::with_capacity(local.len()), Vec::with_capacity(local.len()));
    for i in 0..e {
        let here = local.contains(&i);
        let u = add(format!("{prefix}.experts.{i}.up.weight"), &[2 * f, d], ParamKind::Weight, Some(i), here)?;
        let w = add(format!("{prefix}.experts.{i}.down.weight"), &[d, f], ParamKind::ResidualWeight, Some(i), here)?;
        up.extend(u);
        down.extend(w);
    }
    let shared = if cfg.n_shared > 0 {
        let fs = cfg.n_shared * f;
        let u = held(add, format!("{prefix}.shared.up.weight"), &[2 * fs, d], ParamKind::Weight)?;
        Some((u, held(add, format!("{prefix}.shared.down.weight"), &[d, fs], ParamKind::ResidualWeight)?))
    } else {
        None
    };
    Ok(MoeBlock { router, selection_bias, up, down, shared })
}

/// A parameter every rank holds.
fn held(add: &mut AddParam<'_>, name: String, shape: &[usize], kind: ParamKind) -> Result<usize> {
    let missing = || anychip_core::Error::Shape { op: "moe", detail: format!("parameter {name} was not created") };
    add(name.clone(), shape, kind, None, true)?.ok_or_else(missing)
}

/// The k best experts of each row of `scores` `[N, E]`, best first (ties: lower index first).
fn top_k(scores: &[f32], e: usize, k: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(scores.len() / e * k);
    let mut order: Vec<usize> = (0..e).collect();
    for row in scores.chunks(e) {
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        out.extend_from_slice(&order[..k]);
    }
    out
}

/// Slots `(token, j)` sorted by expert (tokens ascending within one): the token of each sorted
/// slot, its token-major slot index `token k + j`, and each expert's start offset.
fn sort_by_expert(chosen: &[usize], e: usize, k: usize) -> (Vec<i32>, Vec<i32>, Vec<usize>) {
    let mut offsets = vec![0usize; e + 1];
    for &x in chosen {
        offsets[x + 1] += 1;
    }
    for i in 0..e {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let (mut tok, mut slot) = (vec![0i32; chosen.len()], vec![0i32; chosen.len()]);
    for (s, &x) in chosen.iter().enumerate() {
        let at = next[x];
        next[x] += 1;
        (tok[at], slot[at]) = ((s / k) as i32, s as i32);
    }
    (tok, slot, offsets)
}

fn counts(chosen: &[usize], e: usize) -> Vec<usize> {
    let mut c = vec![0; e];
    chosen.iter().for_each(|&x| c[x] += 1);
    c
}

impl MoeBlock {
    /// The block's output `[N, d]` for h `[N, d]`, and what the router did; with `group`, the
    /// experts run on the group's ranks (module header).
    pub(crate) fn forward(
        &self,
        p: &dyn Fn(usize) -> Tensor,
        cfg: &MoeConfig,
        h: &Tensor,
        group: Option<&ExpertGroup>,
    ) -> Result<(Tensor, LayerRouting)> {
        let (n, (e, k)) = (h.dim(0), (cfg.n_experts, cfg.top_k));
        let Routed { probs, weights: w, chosen, plain, preferred, rerouted } =
            in_region(Some(ROUTER), || self.route(p, cfg, h))?;
        let port: Arc<dyn Port> = h.port().clone();
        let dispatch = || -> Result<_> {
            let (tok, slot, offsets) = sort_by_expert(&chosen, e, k);
            let tok = Tensor::from_i32(&port, &tok, &[n * k])?;
            let w_sorted = embedding(&w, &Tensor::from_i32(&port, &slot, &[n * k])?)?.reshape(&[-1, 1])?;
            Ok((embedding(h, &tok)?, tok, w_sorted, offsets)) // rows [N k, d], expert-major
        };
        let (xs, tok, w_sorted, offsets) = in_region(Some(DISPATCH), dispatch)?;
        let up: Vec<Tensor> = self.up.iter().map(|&i| p(i)).collect();
        let down: Vec<Tensor> = self.down.iter().map(|&i| p(i)).collect();
        let ys = match group {
            None => moe_experts(&xs, &offsets, &up, &down)?,
            Some(g) => remote_experts(g, &xs, &offsets, &up, &down)?,
        };
        let mut out = in_region(Some(COMBINE), || moe_combine(&ys, &w_sorted, &tok, n))?;
        if let Some((u, dn)) = self.shared {
            out = out.add(&linear(&swiglu(&linear(h, &p(u), None)?)?, &p(dn), None)?)?;
        }
        let aux_probs = |probs: Tensor| -> Result<Tensor> {
            let probs = match cfg.aux_loss_router_only {
                true => moe_router(&h.detach(), &p(self.router))?,
                false => probs,
            };
            probs.sum_axes(&[0], false)
        };
        let routing = LayerRouting {
            prob_sum: in_region(Some(ROUTER), || aux_probs(probs))?,
            topk_counts: counts(&plain, e),
            routed: counts(&chosen, e),
            preferred,
            rerouted,
            chosen,
            tokens: n,
            pooled_tokens: n,
        };
        Ok((out, routing))
    }

    /// Moves this block's selection bias by one aux-loss-free balancing step (module header)
    /// from the loads of `routing`; nothing without a selection bias or with `gamma` 0.
    pub(crate) fn balance(&self, p: &dyn Fn(usize) -> Tensor, routing: &LayerRouting, gamma: f32) -> Result<()> {
        let (Some(b), true) = (self.selection_bias, gamma > 0.0) else { return Ok(()) };
        let _g = anychip_core::no_grad();
        let bias = p(b);
        let mut host = bias.to_vec_f32()?;
        balance_bias(&mut host, &routing.preferred, gamma);
        bias.assign(&Tensor::from_f32(bias.port(), &host, bias.shape(), DType::F32)?)
    }

    /// The router's probabilities, picks (with the selection bias and the capacity cap, if any)
    /// and the picks' weights.
    fn route(&self, p: &dyn Fn(usize) -> Tensor, cfg: &MoeConfig, h: &Tensor) -> Result<Routed> {
        let (n, (e, k)) = (h.dim(0), (cfg.n_experts, cfg.top_k));
        let probs = moe_router(h, &p(self.router))?; // [N, E]
        let host = probs.to_vec_f32()?;
        let plain = top_k(&host, e, k);
        // The pick's scores: the probabilities, plus ERNIE's selection bias where there is one.
        let (scores, mut chosen) = match self.selection_bias {
            Some(b) => {
                let bias = p(b).to_vec_f32()?;
                let biased: Vec<f32> = host.iter().enumerate().map(|(i, &x)| x + bias[i % e]).collect();
                let picks = top_k(&biased, e, k);
                (biased, picks)
            }
            None => (host, plain.clone()),
        };
        let preferred = counts(&chosen, e);
        let rerouted = match cfg.capacity_factor {
            Some(f) => cap_loads(&scores, &mut chosen, e, k, capacity(f, n * k, e)),
            None => 0,
        };
        // Chosen probabilities, token-major [N k, 1], renormalised per token when asked.
        let flat: Vec<i32> = chosen.iter().enumerate().map(|(s, &x)| ((s / k) * e + x) as i32).collect();
        let mut w = embedding(&probs.reshape(&[-1, 1])?, &Tensor::from_i32(h.port(), &flat, &[n * k])?)?;
        if cfg.norm_topk_prob {
            let wk = w.reshape(&[n as isize, k as isize])?;
            w = wk.div(&wk.sum_axes(&[1], true)?)?.reshape(&[-1, 1])?;
        }
        Ok(Routed { probs, weights: w, chosen, plain, preferred, rerouted })
    }
}

/// The most of `slots` one of `e` experts may hold under capacity factor `f`: ceil(f slots / e).
fn capacity(f: f32, slots: usize, e: usize) -> usize {
    (f as f64 * slots as f64 / e as f64).ceil() as usize
}

/// Caps every expert at `cap` of the token-major slots `chosen` `[N k]` (module header): slots
/// from the weakest `scores` `[N, E]` up, each over-full expert's slot moves to its token's
/// best-scoring expert with room that the token has not picked (none: it stays). Returns the
/// number of slots moved.
fn cap_loads(scores: &[f32], chosen: &mut [usize], e: usize, k: usize, cap: usize) -> usize {
    let mut load = counts(chosen, e);
    if load.iter().all(|&c| c <= cap) {
        return 0;
    }
    let score = |s: usize, x: usize| scores[(s / k) * e + x];
    let mut order: Vec<usize> = (0..chosen.len()).collect();
    order.sort_by(|&a, &b| score(a, chosen[a]).total_cmp(&score(b, chosen[b])).then(a.cmp(&b)));
    let mut moved = 0;
    for s in order {
        let x = chosen[s];
        if load[x] <= cap {
            continue;
        }
        let picks = &chosen[(s / k) * k..(s / k + 1) * k];
        let room = (0..e).filter(|&y| load[y] < cap && !picks.contains(&y));
        // Best score first; ties to the lower index, as in `top_k`.
        if let Some(y) = room.max_by(|&a, &b| score(s, a).total_cmp(&score(s, b)).then(b.cmp(&a))) {
            (chosen[s], load[x], load[y], moved) = (y, load[x] - 1, load[y] + 1, moved + 1);
        }
    }
    moved
}

/// Rows `xs` `[S, d]` sorted by expert (`offsets` over all E experts) through experts held by
/// the members of `g` (`up`, `down`: this rank's); the outputs come back in `xs`'s order.
fn remote_experts(g: &ExpertGroup, xs: &Tensor, offsets: &[usize], up: &[Tensor], down: &[Tensor]) -> Result<Tensor> {
    let (m, el) = (g.members.len(), up.len());
    let port = xs.port().clone();
    let dispatch = || -> Result<_> {
        // How many rows this rank sends each expert, and (exchanged) how many each member sends
        // each of this rank's experts: `theirs[j el + l]`.
        let mine: Vec<i32> = offsets.windows(2).map(|w| (w[1] - w[0]) as i32).collect();
        let theirs = Tensor::from_i32(&port, &vec![0; m * el], &[m * el])?;
        let per = g.spread(std::iter::repeat(el));
        g.coll.all_to_all_v(&Tensor::from_i32(&port, &mine, &[mine.len()])?.view(), &per, &theirs.view(), &per)?;
        let theirs: Vec<usize> = theirs.to_vec_i32()?.into_iter().map(|c| c as usize).collect();
        let send = g.spread((0..m).map(|j| offsets[(j + 1) * el] - offsets[j * el]));
        let recv = g.spread(theirs.chunks(el).map(|c| c.iter().sum()));
        let got = all_to_all_rows(xs, &g.coll, &send, &recv)?; // source-major
        let (order, local_offsets) = expert_major(&theirs, m, el);
        let x_local = embedding(&got, &Tensor::from_i32(&port, &order, &[order.len()])?)?;
        Ok((x_local, local_offsets, order, send, recv))
    };
    let (x_local, local_offsets, order, send, recv) = in_region(Some(DISPATCH), dispatch)?;
    let y_local = moe_experts(&x_local, &local_offsets, up, down)?;
    in_region(Some(COMBINE), || {
        let mut back = vec![0i32; order.len()];
        order.iter().enumerate().for_each(|(i, &o)| back[o as usize] = i as i32);
        let y_arrived = embedding(&y_local, &Tensor::from_i32(&port, &back, &[back.len()])?)?;
        all_to_all_rows(&y_arrived, &g.coll, &recv, &send)
    })
}

/// For rows that arrived source-major (`counts[j el + l]` rows from member j for local expert
/// l), the arrival index of each row in expert-major order, and each local expert's offset.
fn expert_major(counts: &[usize], m: usize, el: usize) -> (Vec<i32>, Vec<usize>) {
    let mut start = vec![0usize; m * el];
    let mut at = 0;
    for (s, c) in start.iter_mut().zip(counts) {
        *s = at;
        at += c;
    }
    let (mut order, mut offsets) = (Vec::with_capacity(at), vec![0usize]);
    for l in 0..el {
        for j in 0..m {
            order.extend((start[j * el + l]..start[j * el + l] + counts[j * el + l]).map(|i| i as i32));
        }
        offsets.push(order.len());
    }
    (order, offsets)
}

/// Sum the router counts of `layers` over every rank of `coll` (one all-reduce), so that the
/// load-balancing loss and the statistics are those of the global batch: with f from the pooled
/// counts and P from this rank's probabilities, the mean over ranks of the per-rank losses is
/// exactly the loss of the whole batch on one rank (the loss is linear in P), gradients too.
pub(crate) fn pool_counts(
    layers: &mut [LayerRouting],
    coll: &Arc<dyn Collectives>,
    port: &Arc<dyn Port>,
) -> Result<()> {
    let mut host: Vec<f32> = Vec::new();
    for l in layers.iter() {
        host.extend(l.topk_counts.iter().chain(&l.routed).chain(&l.preferred).map(|&c| c as f32));
        host.extend([l.tokens as f32, l.rerouted as f32]);
    }
    let t = Tensor::from_f32(port, &host, &[host.len()], DType::F32)?;
    coll.all_reduce(&t.view())?;
    // Counts stay below 2^24, so f32 sums of them are exact.
    let mut sums = t.to_vec_f32()?.into_iter().map(|x| x.round() as usize);
    for l in layers.iter_mut() {
        let counts = l.topk_counts.iter_mut().chain(l.routed.iter_mut()).chain(l.preferred.iter_mut());
        counts.for_each(|c| *c = sums.next().unwrap_or(0));
        l.pooled_tokens = sums.next().unwrap_or(0);
        l.rerouted = sums.next().unwrap_or(0);
    }
    Ok(())
}

/// The load-balancing loss over the MoE layers' routing: transformers' pooled form (module
/// header) over all of them, or with `per_layer` the mean of each layer's own loss.
pub(crate) fn aux_loss(layers: &[LayerRouting], n_experts: usize, per_layer: bool) -> Result<Option<Tensor>> {
    if !per_layer || layers.len() < 2 {
        return pooled_aux_loss(layers, n_experts);
    }
    let mut total: Option<Tensor> = None;
    for l in layers {
        let Some(a) = pooled_aux_loss(std::slice::from_ref(l), n_experts)? else { continue };
        total = Some(match total {
            Some(t) => in_region(Some(ROUTER), || t.add(&a))?,
            None => a,
        });
    }
    let n = layers.len() as f64;
    total.map(|t| in_region(Some(ROUTER), || t.mul_scalar(1.0 / n))).transpose()
}

/// transformers' pooled load-balancing loss over the given layers' routing (module header):
/// E sum_e (C_e / R) (S_e / R) with R = L N rows, C the top-k counts and S the probability sums.
/// After [`pool_counts`], C and the R that divides it are the global batch's, and S and its R
/// this rank's.
fn pooled_aux_loss(layers: &[LayerRouting], n_experts: usize) -> Result<Option<Tensor>> {
    let Some(first) = layers.first() else { return Ok(None) };
    let rows: usize = layers.iter().map(|l| l.tokens).sum();
    let pooled_rows: usize = layers.iter().map(|l| l.pooled_tokens).sum();
    let mut c = vec![0f32; n_experts];
    let mut s = first.prob_sum.clone();
    for (i, l) in layers.iter().enumerate() {
        l.topk_counts.iter().zip(&mut c).for_each(|(&n, c)| *c += n as f32);
        if i > 0 {
            s = s.add(&l.prob_sum)?;
        }
    }
    let scale = n_experts as f64 / (rows as f64 * pooled_rows as f64);
    let c = Tensor::from_f32(s.port(), &c, &[n_experts], DType::F32)?;
    in_region(Some(ROUTER), || -> Result<Option<Tensor>> { Ok(Some(s.mul(&c)?.sum()?.mul_scalar(scale)?)) })
}

/// One aux-loss-free balancing move (module header): each bias up by `gamma` for an expert whose
/// load is below the mean of `loads`, down by `gamma` above it, unchanged at the mean.
pub(crate) fn balance_bias(bias: &mut [f32], loads: &[usize], gamma: f32) {
    let (total, e) = (loads.iter().sum::<usize>(), loads.len());
    for (b, &c) in bias.iter_mut().zip(loads) {
        // c vs the mean total / e, compared as c e vs total (exact in integers).
        *b += gamma
            * match (c * e).cmp(&total) {
                std::cmp::Ordering::Less => 1.0,
                std::cmp::Ordering::Greater => -1.0,
                std::cmp::Ordering::Equal => 0.0,
            };
    }
}

/// Router statistics of one forward (the aux loss unweighted).
pub(crate) fn stats(layers: &[LayerRouting], aux: f32) -> RouterStats {
    let e = layers.first().map_or(0, |l| l.routed.len());
    let mut total = vec![0usize; e];
    layers.iter().for_each(|l| l.routed.iter().zip(&mut total).for_each(|(&n, t)| *t += n));
    let per_layer: Vec<f32> = layers.iter().map(|l| load_ratio(&l.routed)).collect();
    let worst = |r: &mut dyn Iterator<Item = f32>| r.fold(0f32, f32::max);
    RouterStats {
        tokens_per_expert: total,
        aux_loss: aux,
        max_load_ratio: worst(&mut per_layer.iter().copied()),
        router_max_load_ratio: worst(&mut layers.iter().map(|l| load_ratio(&l.preferred))),
        rerouted: layers.iter().map(|l| l.rerouted).sum(),
        load_ratio_per_layer: per_layer,
    }
}

/// The busiest expert's share of `loads` over the mean share.
fn load_ratio(loads: &[usize]) -> f32 {
    let sum: usize = loads.iter().sum();
    let max = loads.iter().copied().max().unwrap_or(0);
    max as f32 * loads.len() as f32 / sum.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::{philox, PortOptions, Registry};

    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        (0..n).map(|i| philox::uniform(seed, i as u64) * 2.0 - 1.0).collect()
    }

    /// The reference port, which every test here runs on.
    fn ref_port() -> Arc<dyn Port> {
        let mut reg = Registry::new();
        anychip_port_ref::register(&mut reg);
        reg.create("ref", &PortOptions::default()).unwrap()
    }

    /// Two layers of 4 tokens, top-1 of 2 experts: layer 0 sends every token to expert 0 and
    /// layer 1 every token to expert 1, with the probabilities to match. Pooled, the two look
    /// balanced (1.0, the balanced value at top-1); each on its own is collapsed (2.0).
    #[test]
    fn per_layer_balance_sees_a_collapse_the_pooled_loss_misses() {
        let port = ref_port();
        let layer = |e: usize| {
            let mut probs = [0.0f32; 2];
            probs[e] = 4.0;
            let mut counts = vec![0usize; 2];
            counts[e] = 4;
            LayerRouting {
                prob_sum: Tensor::from_f32(&port, &probs, &[2], DType::F32).unwrap(),
                topk_counts: counts.clone(),
                routed: counts.clone(),
                preferred: counts,
                rerouted: 0,
                pooled_tokens: 4,
                chosen: vec![e; 4],
                tokens: 4,
            }
        };
        let layers = [layer(0), layer(1)];
        let value = |per_layer| aux_loss(&layers, 2, per_layer).unwrap().unwrap().item().unwrap();
        assert!((value(false) - 1.0).abs() < 1e-6, "pooled {}", value(false));
        assert!((value(true) - 2.0).abs() < 1e-6, "per layer {}", value(true));
    }

    /// The block alone, with O(1) activations and weights so that f32 finite differences resolve
    /// the router's gradient too: objective sum(out * r) + 0.5 aux for top-2 of 4 experts with
    /// renormalised weights, a shared expert and a selection bias. Each parameter (and h) is
    /// moved along a random direction; the step must leave every token's choice as it was,
    /// which the test checks rather than assumes.
    #[test]
    fn block_gradients_match_finite_differences() {
        let port = ref_port();
        let (n, d) = (10, 6);
        let cfg = MoeConfig {
            n_experts: 4,
            top_k: 2,
            d_expert: 5,
            n_shared: 1,
            selection_bias: true,
            ..MoeConfig::default()
        };
        let mut params: Vec<Tensor> = Vec::new();
        let mut add = |_: String, shape: &[usize], _: ParamKind, _: Option<usize>, _: bool| -> Result<Option<usize>> {
            let numel = shape.iter().product();
            let scale = if shape.len() == 1 {
                0.05
            } else if shape[0] == 4 {
                3.0
            } else {
                0.6
            };
            let v: Vec<f32> = uniform(numel, 40 + params.len() as u64).iter().map(|x| x * scale).collect();
            params.push(Tensor::from_f32(&port, &v, shape, DType::F32)?.with_requires_grad());
            Ok(Some(params.len() - 1))
        };
        let block = build(&mut add, "moe", &cfg, d, 0..cfg.n_experts).unwrap();
        let h = Tensor::from_f32(&port, &uniform(n * d, 7), &[n, d], DType::F32).unwrap().with_requires_grad();
        let r = Tensor::from_f32(&port, &uniform(n * d, 8), &[n, d], DType::F32).unwrap();
        let objective = |ps: &[Tensor], h: &Tensor| -> (Tensor, Vec<usize>) {
            let (out, routing) = block.forward(&|i| ps[i].clone(), &cfg, h, None).unwrap();
            let aux = aux_loss(std::slice::from_ref(&routing), cfg.n_experts, false).unwrap().unwrap();
            let obj = out.mul(&r).unwrap().sum().unwrap().add(&aux.mul_scalar(0.5).unwrap()).unwrap();
            (obj, routing.chosen)
        };
        let (obj, chosen) = objective(&params, &h);
        let grads = obj.backward().unwrap();
        let _g = anychip_core::no_grad();
        let mut leaves: Vec<Tensor> = params.clone();
        leaves.push(h.clone());
        for (i, leaf) in leaves.iter().enumerate() {
            let Some(g) = grads.get(leaf) else {
                assert_eq!(leaf.shape(), [4], "only the selection bias gets no gradient");
                continue;
            };
            let (g, w0) = (g.to_vec_f32().unwrap(), leaf.to_vec_f32().unwrap());
            let dir = uniform(w0.len(), 200 + i as u64);
            let analytic: f64 = g.iter().zip(&dir).map(|(a, b)| *a as f64 * *b as f64).sum();
            let step = 1e-2f32;
            let at = |s: f32| -> f64 {
                let w: Vec<f32> = w0.iter().zip(&dir).map(|(w, d)| w + s * d).collect();
                let moved = Tensor::from_f32(&port, &w, leaf.shape(), DType::F32).unwrap();
                let mut ps = params.clone();
                let hh = if i == params.len() {
                    moved
                } else {
                    ps[i] = moved;
                    h.clone()
                };
                let (o, c) = objective(&ps, &hh);
                assert_eq!(c, chosen, "leaf {i}: the step changed a token's experts; use a smaller step");
                o.item().unwrap() as f64
            };
            let fd = (at(step) - at(-step)) / (2.0 * step as f64);
            assert!(
                (fd - analytic).abs() < 1e-3 + 1e-3 * analytic.abs(),
                "leaf {i} {:?}: fd {fd} vs analytic {analytic}",
                leaf.shape()
            );
        }
    }

    /// With `aux_loss_router_only` the load-balancing loss reaches the router's weights and not
    /// the block's input; without it, both.
    #[test]
    fn a_router_only_aux_loss_leaves_the_input_alone() {
        let port = ref_port();
        let (n, d) = (12, 6);
        for router_only in [false, true] {
            let cfg = MoeConfig {
                n_experts: 4,
                top_k: 2,
                d_expert: 5,
                aux_loss_router_only: router_only,
                ..MoeConfig::default()
            };
            let mut params: Vec<Tensor> = Vec::new();
            let mut add =
                |_: String, shape: &[usize], _: ParamKind, _: Option<usize>, _: bool| -> Result<Option<usize>> {
                    let v = uniform(shape.iter().product(), 60 + params.len() as u64);
                    params.push(Tensor::from_f32(&port, &v, shape, DType::F32)?.with_requires_grad());
                    Ok(Some(params.len() - 1))
                };
            let block = build(&mut add, "moe", &cfg, d, 0..cfg.n_experts).unwrap();
            let h = Tensor::from_f32(&port, &uniform(n * d, 9), &[n, d], DType::F32).unwrap().with_requires_grad();
            let (_, routing) = block.forward(&|i| params[i].clone(), &cfg, &h, None).unwrap();
            let aux = aux_loss(std::slice::from_ref(&routing), cfg.n_experts, false).unwrap().unwrap();
            let grads = aux.backward().unwrap();
            let norm =
                |t: &Tensor| grads.get(t).map_or(0.0, |g| g.to_vec_f32().unwrap().iter().map(|x| x.abs()).sum::<f32>());
            assert!(norm(&params[block.router]) > 0.0, "router_only {router_only}: the router must learn to balance");
            assert_eq!(norm(&h) == 0.0, router_only, "router_only {router_only}: input gradient {}", norm(&h));
        }
    }

    #[test]
    fn balance_bias_raises_the_idle_and_lowers_the_busy() {
        // Loads 10, 2, 5, 3: mean 5.
        let mut b = vec![0.5f32, 0.0, -0.25, 0.0];
        balance_bias(&mut b, &[10, 2, 5, 3], 0.125);
        assert_eq!(b, vec![0.375, 0.125, -0.25, 0.125]);
    }

    /// A router skewed towards expert 0 (every token has a large first feature and the router
    /// reads it into expert 0's score only): with top-1 of 4 experts nearly all tokens pick it at
    /// first. Repeated balancing moves alone (nothing trained) must bring the busiest expert
    /// close to the mean share; moving the bias the wrong way makes the skew worse.
    #[test]
    fn bias_balancing_evens_a_skewed_router() {
        let port = ref_port();
        let (n, d, e) = (256, 8, 4);
        let cfg = MoeConfig { n_experts: e, top_k: 1, d_expert: 4, selection_bias: true, ..MoeConfig::default() };
        let mut params: Vec<Tensor> = Vec::new();
        let mut add = |_: String, shape: &[usize], _: ParamKind, _: Option<usize>, _: bool| -> Result<Option<usize>> {
            let numel: usize = shape.iter().product();
            let mut v: Vec<f32> = uniform(numel, 60 + params.len() as u64);
            if shape == [e, d] {
                v[0] = 3.0; // expert 0's score grows with feature 0
            }
            if shape == [e] {
                v.iter_mut().for_each(|x| *x = 0.0);
            }
            params.push(Tensor::from_f32(&port, &v, shape, DType::F32)?);
            Ok(Some(params.len() - 1))
        };
        let block = build(&mut add, "moe", &cfg, d, 0..e).unwrap();
        let mut h = uniform(n * d, 9);
        h.iter_mut().step_by(d).for_each(|x| *x += 1.0);
        let h = Tensor::from_f32(&port, &h, &[n, d], DType::F32).unwrap();
        let p = |i: usize| params[i].clone();
        let ratio = || {
            let (_, routing) = block.forward(&p, &cfg, &h, None).unwrap();
            block.balance(&p, &routing, 0.01).unwrap();
            stats(std::slice::from_ref(&routing), 0.0).max_load_ratio
        };
        let first = ratio();
        assert!(first > 3.0, "the toy router should start skewed, busiest expert {first}x the mean share");
        let last: Vec<f32> = (0..300).map(|_| ratio()).skip(280).collect();
        let worst = last.iter().copied().fold(0.0, f32::max);
        assert!(worst < 1.25, "after 300 balancing moves the busiest expert is still {worst}x the mean share");
    }

    #[test]
    fn the_capacity_cap_moves_the_weakest_slots_to_their_next_choice() {
        // 4 tokens, 3 experts, top-1: everyone prefers expert 0; cap ceil(1.0 * 4 / 3) = 2.
        let scores = [0.9, 0.1, 0.0, 0.6, 0.3, 0.1, 0.8, 0.0, 0.2, 0.5, 0.2, 0.3];
        let mut chosen = top_k(&scores, 3, 1);
        assert_eq!(chosen, vec![0, 0, 0, 0]);
        assert_eq!(cap_loads(&scores, &mut chosen, 3, 1, capacity(1.0, 4, 3)), 2);
        // Tokens 1 and 3 want expert 0 least (0.6, 0.5); each goes to its own next choice.
        assert_eq!(chosen, vec![0, 1, 0, 2]);
        assert_eq!(counts(&chosen, 3), vec![2, 1, 1]);
    }

    #[test]
    fn the_capacity_cap_never_gives_a_token_the_same_expert_twice() {
        // top-2 of 3: every token picks experts 0 and 1; with cap 2 of 6 slots, two slots leave
        // each of 0 and 1, but only for expert 2, which has room for two: it takes the weakest.
        let scores = [0.5, 0.4, 0.1, 0.45, 0.44, 0.11, 0.6, 0.3, 0.1];
        let mut chosen = top_k(&scores, 3, 2);
        assert_eq!(cap_loads(&scores, &mut chosen, 3, 2, 2), 2);
        for t in chosen.chunks(2) {
            assert_ne!(t[0], t[1], "{chosen:?}");
        }
        assert_eq!(counts(&chosen, 3), vec![2, 2, 2]);
        // Nothing moves under a cap every expert already meets.
        let mut calm = top_k(&scores, 3, 2);
        assert_eq!(cap_loads(&scores, &mut calm, 3, 2, 3), 0);
        assert_eq!(calm, top_k(&scores, 3, 2));
    }

    #[test]
    fn top_k_picks_the_largest_in_order() {
        let s = [0.1, 0.5, 0.2, 0.2, 0.9, 0.0, 0.05, 0.05];
        assert_eq!(top_k(&s, 4, 2), vec![1, 2, 0, 2]);
    }

    #[test]
    fn slots_sort_by_expert_then_token() {
        // 3 tokens, k = 2: token 0 -> (2, 0), token 1 -> (0, 1), token 2 -> (2, 1).
        let (tok, slot, off) = sort_by_expert(&[2, 0, 0, 1, 2, 1], 3, 2);
        assert_eq!(off, vec![0, 2, 4, 6]);
        assert_eq!(tok, vec![0, 1, 1, 2, 0, 2]);
        assert_eq!(slot, vec![1, 2, 3, 5, 0, 4]);
    }
}
