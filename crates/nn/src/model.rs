//! The transformer: parameters, forward pass and loss.

use crate::init::init_param;
use crate::moe::{self, ExpertGroup, LayerRouting, MoeBlock, RouterStats};
use crate::params::{Param, ParamKind};
use crate::precision::Precision;
use anychip_core::{
    attention_autocast, attention_qkv_autocast, cross_entropy, embedding, linear, linear_autocast, rope, swiglu, Error,
    Result, Tensor,
};
use anychip_model_config::{inv_freq, Mlp, ModelConfig, Norm, Positions};
use anychip_port::{Collectives, DType, GeluKind, Port};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Indices into `Transformer::params` for one block.
struct Block {
    ln1: (usize, Option<usize>),
    qkv: (usize, Option<usize>),
    q_norm: Option<usize>,
    k_norm: Option<usize>,
    o: (usize, Option<usize>),
    ln2: (usize, Option<usize>),
    ffn: Ffn,
}

/// A block's feed-forward part.
enum Ffn {
    /// `up` is GELU's fc, or SwiGLU's gate and up fused as one `[2 d_ff, d]` matrix.
    Dense { up: (usize, Option<usize>), down: (usize, Option<usize>) },
    /// Routed experts (see [`crate::moe`]).
    Moe(MoeBlock),
}

/// How one model is spread over the ranks of a job (the default: not at all).
#[derive(Clone, Default)]
pub struct Placement {
    /// Every rank training together (data parallelism): the router counts of the
    /// load-balancing loss are summed over them, so that loss is the global batch's.
    pub world: Option<Arc<dyn Collectives>>,
    /// Expert parallelism: this rank holds its group's share of the experts.
    pub experts: Option<ExpertGroup>,
}

/// A decoder-only transformer built from a [`ModelConfig`].
pub struct Transformer {
    cfg: ModelConfig,
    port: Arc<dyn Port>,
    params: Vec<Param>,
    tok_emb: usize,
    pos_emb: Option<usize>,
    blocks: Vec<Block>,
    ln_f: (usize, Option<usize>),
    head: Option<usize>,
    precision: Precision,
    rope_cache: Mutex<HashMap<usize, (Tensor, Tensor)>>,
    router_stats: Mutex<Option<RouterStats>>,
    placement: Placement,
    /// Per parameter: one of this rank's experts under expert parallelism (held here alone).
    expert_shard: Vec<bool>,
    /// Every expert weight of the whole model, in creation order.
    slots: Vec<ExpertSlot>,
}

/// One expert weight of the whole model.
#[derive(Clone, Debug)]
pub struct ExpertSlot {
    pub name: String,
    pub shape: Vec<usize>,
    /// The expert it belongs to (in its layer).
    pub expert: usize,
    /// Its index in [`Transformer::params`] when this rank holds it.
    pub held: Option<usize>,
}

struct Builder<'a> {
    port: &'a Arc<dyn Port>,
    seed: u64,
    offset: u64,
    n_layer: usize,
    params: Vec<Param>,
    expert_shard: Vec<bool>,
    slots: Vec<ExpertSlot>,
}

impl Builder<'_> {
    fn add(&mut self, name: String, shape: &[usize], kind: ParamKind) -> Result<usize> {
        let t = init_param(self.port, shape, kind, self.seed, self.offset, self.n_layer)?;
        // Each parameter reads its own region of the stream: adding a layer never shifts another's init.
        self.offset += shape.iter().product::<usize>() as u64;
        self.params.push(Param { name, kind, tensor: t.with_requires_grad() });
        self.expert_shard.push(false);
        Ok(self.params.len() - 1)
    }
    /// A parameter of a MoE block: created when `held` (marked as one of this rank's experts
    /// when `sharded`), else only named, its region of the init stream skipped so that every
    /// rank's experts equal those of a one-rank model. `expert`: which expert it belongs to.
    fn moe_param(
        &mut self,
        (name, shape, kind): (String, &[usize], ParamKind),
        expert: Option<usize>,
        held: bool,
        sharded: bool,
    ) -> Result<Option<usize>> {
        let index = if held {
            let i = self.add(name.clone(), shape, kind)?;
            self.expert_shard[i] = sharded && expert.is_some();
            Some(i)
        } else {
            self.offset += shape.iter().product::<usize>() as u64;
            None
        };
        if let Some(expert) = expert {
            self.slots.push(ExpertSlot { name, shape: shape.to_vec(), expert, held: index });
        }
        Ok(index)
    }
    fn linear(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
        residual: bool,
    ) -> Result<(usize, Option<usize>)> {
        let kind = if residual { ParamKind::ResidualWeight } else { ParamKind::Weight };
        let w = self.add(format!("{name}.weight"), &[out, inp], kind)?;
        let b = if bias { Some(self.add(format!("{name}.bias"), &[out], ParamKind::Bias)?) } else { None };
        Ok((w, b))
    }
    fn norm(&mut self, name: &str, d: usize, cfg: &ModelConfig) -> Result<(usize, Option<usize>)> {
        let w = self.add(format!("{name}.weight"), &[d], ParamKind::NormWeight)?;
        let has_bias = cfg.norm == Norm::LayerNorm && cfg.linear_bias;
        let b = if has_bias { Some(self.add(format!("{name}.bias"), &[d], ParamKind::NormBias)?) } else { None };
        Ok((w, b))
    }

    /// Block `i`'s parameters, in the order their initialisation draws from the seed: norms,
    /// attention (with Qwen3's q/k norms), then the dense MLP or this rank's `local` experts.
    fn block(&mut self, cfg: &ModelConfig, i: usize, local: &std::ops::Range<usize>, sharded: bool) -> Result<Block> {
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        let p = format!("blocks.{i}");
        let qkv_out = (cfg.n_head + 2 * cfg.n_kv_head) * hd;
        let ff_out = match cfg.mlp {
            Mlp::Gelu => cfg.d_ff,
            Mlp::SwiGlu => 2 * cfg.d_ff,
        };
        Ok(Block {
            ln1: self.norm(&format!("{p}.ln1"), d, cfg)?,
            qkv: self.linear(&format!("{p}.attn.qkv"), qkv_out, d, cfg.qkv_bias, false)?,
            q_norm: cfg
                .qk_norm
                .then(|| self.add(format!("{p}.attn.q_norm.weight"), &[hd], ParamKind::NormWeight))
                .transpose()?,
            k_norm: cfg
                .qk_norm
                .then(|| self.add(format!("{p}.attn.k_norm.weight"), &[hd], ParamKind::NormWeight))
                .transpose()?,
            o: self.linear(&format!("{p}.attn.o"), d, cfg.n_head * hd, cfg.linear_bias, true)?,
            ln2: self.norm(&format!("{p}.ln2"), d, cfg)?,
            ffn: match &cfg.moe {
                Some(m) if cfg.is_moe_layer(i) => {
                    let add = &mut |n, s: &[usize], k, e, held| self.moe_param((n, s, k), e, held, sharded);
                    Ffn::Moe(moe::build(add, &format!("{p}.moe"), m, d, local.clone())?)
                }
                _ => Ffn::Dense {
                    up: self.linear(&format!("{p}.mlp.up"), ff_out, d, cfg.linear_bias, false)?,
                    down: self.linear(&format!("{p}.mlp.down"), d, cfg.d_ff, cfg.linear_bias, true)?,
                },
            },
        })
    }
}

/// This rank's experts: all of them without expert parallelism, else its group's share (the
/// experts must split evenly over the group).
fn local_experts(cfg: &ModelConfig, placement: &Placement) -> Result<std::ops::Range<usize>> {
    Ok(match (&cfg.moe, &placement.experts) {
        (Some(m), Some(g)) => {
            if g.members.is_empty() || m.n_experts % g.members.len() != 0 {
                return Err(Error::Shape {
                    op: "model",
                    detail: format!("{} experts do not split over {} ranks", m.n_experts, g.members.len()),
                });
            }
            g.local_experts(m.n_experts)
        }
        (Some(m), None) => 0..m.n_experts,
        (None, _) => 0..0,
    })
}

impl Transformer {
    /// A freshly initialised model (weights depend only on `seed`, not on the port).
    pub fn new(cfg: &ModelConfig, port: &Arc<dyn Port>, seed: u64) -> Result<Transformer> {
        Transformer::new_placed(cfg, port, seed, Placement::default())
    }

    /// [`Transformer::new`] as one rank's part of a model spread over ranks: under expert
    /// parallelism only this rank's experts are created, each with the weights it has in the
    /// whole model.
    pub fn new_placed(cfg: &ModelConfig, port: &Arc<dyn Port>, seed: u64, placement: Placement) -> Result<Transformer> {
        cfg.validate().map_err(|m| Error::Shape { op: "model", detail: m })?;
        let d = cfg.d_model;
        let local = local_experts(cfg, &placement)?;
        let sharded = placement.experts.is_some();
        let mut b = Builder {
            port,
            seed,
            offset: 0,
            n_layer: cfg.n_layer,
            params: Vec::new(),
            expert_shard: Vec::new(),
            slots: Vec::new(),
        };
        let tok_emb = b.add("tok_emb.weight".into(), &[cfg.vocab_size, d], ParamKind::Embedding)?;
        let pos_emb = match cfg.positions {
            Positions::Learned => Some(b.add("pos_emb.weight".into(), &[cfg.max_ctx, d], ParamKind::Embedding)?),
            Positions::Rope => None,
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            blocks.push(b.block(cfg, i, &local, sharded)?);
        }
        let ln_f = b.norm("ln_f", d, cfg)?;
        let head = if cfg.tied_embeddings {
            None
        } else {
            Some(b.add("lm_head.weight".into(), &[cfg.vocab_size, d], ParamKind::Weight)?)
        };
        Ok(Transformer {
            cfg: cfg.clone(),
            port: port.clone(),
            params: b.params,
            tok_emb,
            pos_emb,
            blocks,
            ln_f,
            head,
            precision: Precision::F32,
            rope_cache: Mutex::new(HashMap::new()),
            router_stats: Mutex::new(None),
            placement,
            expert_shard: b.expert_shard,
            slots: b.slots,
        })
    }

    /// How this model is spread over ranks.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
    /// Per parameter (as [`Transformer::params`]): whether it is one of this rank's experts
    /// under expert parallelism, which no other rank of its group holds (all false otherwise).
    pub fn expert_shard(&self) -> &[bool] {
        &self.expert_shard
    }
    /// Every expert weight of the whole model (held here or not), in creation order.
    pub fn expert_slots(&self) -> &[ExpertSlot] {
        &self.slots
    }
    /// Names of the whole model's parameters that other ranks hold (expert parallelism).
    pub fn held_elsewhere(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().filter(|s| s.held.is_none()).map(|s| s.name.as_str())
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    /// What the linear layers and the LM head multiply in (f32 unless set).
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// Multiply in `p` from the next forward on (weights stay f32 either way).
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
    }
    /// This model multiplying in `p`.
    pub fn with_precision(mut self, p: Precision) -> Transformer {
        self.precision = p;
        self
    }
    /// The port the weights live on.
    pub fn port(&self) -> &Arc<dyn Port> {
        &self.port
    }
    /// Every parameter, in a fixed order (the checkpoint and optimizer order).
    pub fn params(&self) -> &[Param] {
        &self.params
    }
    /// Number of scalar parameters this rank holds.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|p| p.tensor.numel()).sum()
    }
    /// Number of scalar parameters of the whole model, wherever held (expert parallelism).
    pub fn n_params_whole(&self) -> usize {
        let elsewhere: usize =
            self.slots.iter().filter(|s| s.held.is_none()).map(|s| s.shape.iter().product::<usize>()).sum();
        self.n_params() + elsewhere
    }
    /// Look up a parameter by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    fn t(&self, i: usize) -> &Tensor {
        &self.params[i].tensor
    }
    fn ot(&self, i: Option<usize>) -> Option<&Tensor> {
        i.map(|i| self.t(i))
    }

    /// A linear layer (or the LM head) at the model's precision.
    fn linear(&self, x: &Tensor, (w, b): (usize, Option<usize>)) -> Result<Tensor> {
        match self.precision {
            Precision::F32 => linear(x, self.t(w), self.ot(b)),
            p => linear_autocast(x, self.t(w), self.ot(b), p.operands()),
        }
    }

    fn norm(&self, x: &Tensor, (w, b): (usize, Option<usize>)) -> Result<Tensor> {
        match self.cfg.norm {
            Norm::LayerNorm => x.layer_norm(Some(self.t(w)), self.ot(b), self.cfg.norm_eps),
            Norm::RmsNorm => x.rms_norm(Some(self.t(w)), self.cfg.norm_eps),
        }
    }

    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let mut cache = self.rope_cache.lock().expect("rope cache poisoned");
        if let Some(v) = cache.get(&t) {
            return Ok(v.clone());
        }
        let half = self.cfg.head_dim / 2;
        let freqs = inv_freq(self.cfg.rope_theta, self.cfg.head_dim, self.cfg.rope_scaling.as_ref());
        let (mut c, mut s) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for pos in 0..t {
            for &inv in &freqs {
                let a = pos as f32 * inv;
                c.push(a.cos());
                s.push(a.sin());
            }
        }
        let v = (
            Tensor::from_f32(&self.port, &c, &[t, half], DType::F32)?,
            Tensor::from_f32(&self.port, &s, &[t, half], DType::F32)?,
        );
        cache.insert(t, v.clone());
        Ok(v)
    }

    /// Logits `[B*T, vocab]` for token ids `[B, T]` (I32).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.forward_routed(ids)?.0)
    }

    /// Router statistics of the last forward that recorded gradients (None for dense models).
    pub fn router_stats(&self) -> Option<RouterStats> {
        self.router_stats.lock().expect("router stats poisoned").clone()
    }

    /// [`Transformer::forward`] and what every MoE layer's router did.
    fn forward_routed(&self, ids: &Tensor) -> Result<(Tensor, Vec<LayerRouting>)> {
        let t = ids.dim(1);
        if t > self.cfg.max_ctx {
            return Err(Error::Shape {
                op: "forward",
                detail: format!(
                    "context {t} is longer than the model's maximum {}; use a smaller --ctx",
                    self.cfg.max_ctx
                ),
            });
        }
        let d = self.cfg.d_model;
        let mut x = embedding(self.t(self.tok_emb), ids)?; // [B, T, d]
        if let Some(p) = self.pos_emb {
            x = x.add(&self.t(p).narrow(0, 0, t)?)?;
        }
        let rope_t = match self.cfg.positions {
            Positions::Rope => Some(self.rope_tables(t)?),
            Positions::Learned => None,
        };
        let mut routing = Vec::new();
        for blk in &self.blocks {
            let h = self.norm(&x, blk.ln1)?;
            let a = self.attention(blk, &h, rope_t.as_ref())?;
            x = x.add(&self.linear(&a, blk.o)?)?;
            let h = self.norm(&x, blk.ln2)?;
            x = x.add(&self.ffn(blk, &h, &mut routing)?)?;
        }
        let x = self.norm(&x, self.ln_f)?.reshape(&[-1, d as isize])?;
        Ok((self.linear(&x, (self.head.unwrap_or(self.tok_emb), None))?, routing))
    }

    /// Block `blk`'s causal self-attention on its normed input `h [B, T, d]`, before the output
    /// projection: `[B, T, nh hd]`, its two products in the model's precision as autocast runs
    /// them; RoPE from `rope_t` where the model has it.
    fn attention(&self, blk: &Block, h: &Tensor, rope_t: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
        let (hd, nh, nkv) = (self.cfg.head_dim, self.cfg.n_head, self.cfg.n_kv_head);
        let (b, ti) = (h.dim(0) as isize, h.dim(1) as isize);
        let qkv = self.linear(h, blk.qkv)?; // [B, T, (nh + 2 nkv) hd]
        let scale = 1.0 / (hd as f32).sqrt();
        let operands = self.precision.operands();
        if blk.q_norm.is_none() {
            // Heads read in place from qkv: no split, permute or merge copies.
            let tables = rope_t.map(|(c, s)| (c, s));
            return attention_qkv_autocast(&qkv, nh, nkv, tables, true, scale, operands);
        }
        let heads = |start: usize, n: usize| -> Result<Tensor> {
            qkv.narrow(-1, start * hd, n * hd)?.reshape(&[b, ti, n as isize, hd as isize])?.permute(&[0, 2, 1, 3])
        };
        let (mut q, mut k, v) = (heads(0, nh)?, heads(nh, nkv)?, heads(nh + nkv, nkv)?);
        if let (Some(qn), Some(kn)) = (blk.q_norm, blk.k_norm) {
            q = q.rms_norm(Some(self.t(qn)), self.cfg.norm_eps)?;
            k = k.rms_norm(Some(self.t(kn)), self.cfg.norm_eps)?;
        }
        if let Some((cos, sin)) = rope_t {
            q = rope(&q, cos, sin)?;
            k = rope(&k, cos, sin)?;
        }
        let a = attention_autocast(&q, &k, &v, true, scale, operands)?; // [B, nh, T, hd]
        a.permute(&[0, 2, 1, 3])?.reshape(&[b, ti, (nh * hd) as isize])
    }

    /// Block `blk`'s MLP or MoE layer on its normed input `h [B, T, d]`; a MoE layer's routing
    /// goes onto `routing`.
    fn ffn(&self, blk: &Block, h: &Tensor, routing: &mut Vec<LayerRouting>) -> Result<Tensor> {
        match &blk.ffn {
            Ffn::Dense { up, down } => {
                let up = self.linear(h, *up)?;
                let act = match self.cfg.mlp {
                    Mlp::Gelu => up.gelu(GeluKind::Tanh)?,
                    Mlp::SwiGlu => swiglu(&up)?,
                };
                self.linear(&act, *down)
            }
            Ffn::Moe(m) => {
                let cfg = self.cfg.moe.as_ref().expect("a MoE block has a MoE config");
                let (b, ti, d) = (h.dim(0) as isize, h.dim(1) as isize, self.cfg.d_model as isize);
                let rows = h.reshape(&[-1, d])?;
                let (y, r) = m.forward(&|i| self.t(i).clone(), cfg, &rows, self.placement.experts.as_ref())?;
                routing.push(r);
                y.reshape(&[b, ti, d])
            }
        }
    }

    /// The training objective on `ids [B,T]` against `targets [B,T]` (I32): the mean
    /// next-token cross-entropy, plus the load-balancing loss times its coefficient for a MoE
    /// model (as transformers adds it). Records the router statistics when gradients are on.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (logits, mut routing) = self.forward_routed(ids)?;
        let ce = cross_entropy(&logits, &targets.reshape(&[-1])?)?;
        let Some(m) = &self.cfg.moe else { return Ok(ce) };
        if let (Some(world), false) = (&self.placement.world, routing.is_empty()) {
            moe::pool_counts(&mut routing, world, &self.port)?;
        }
        if anychip_core::is_grad_enabled() && m.bias_balance_rate > 0.0 {
            self.balance_routing(&routing, m.bias_balance_rate)?;
        }
        let Some(aux) = moe::aux_loss(&routing, m.n_experts, m.aux_loss_per_layer)? else { return Ok(ce) };
        if anychip_core::is_grad_enabled() {
            *self.router_stats.lock().expect("router stats poisoned") = Some(moe::stats(&routing, aux.item()?));
        }
        if m.aux_loss_coef == 0.0 {
            return Ok(ce);
        }
        ce.add(&aux.mul_scalar(m.aux_loss_coef as f64)?)
    }

    /// One aux-loss-free balancing move of every MoE layer's selection bias from the loads its
    /// router gave (`routing`, one per MoE layer in order; see [`crate::moe`]).
    fn balance_routing(&self, routing: &[LayerRouting], gamma: f32) -> Result<()> {
        let blocks = self.blocks.iter().filter_map(|b| match &b.ffn {
            Ffn::Moe(m) => Some(m),
            Ffn::Dense { .. } => None,
        });
        for (m, r) in blocks.zip(routing) {
            m.balance(&|i| self.t(i).clone(), r, gamma)?;
        }
        Ok(())
    }

    /// Mean next-token cross-entropy alone (the validation loss; no auxiliary terms).
    pub fn lm_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        cross_entropy(&self.forward(ids)?, &targets.reshape(&[-1])?)
    }
}
