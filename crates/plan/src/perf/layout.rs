//! What a plan is: the layout (parallel degrees, micro-batch, interleave, recompute, ZeRO stage,
//! pipeline split and schedule), its number format, and the checks that a layout is well-formed
//! for a job before anything is priced.

use super::*;

/// Activation recomputation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// Keep every activation.
    None,
    /// Recompute only the attention core (Korthikanti's selective recompute).
    Selective,
    /// Keep only each layer's input and rerun the layer's forward in backward.
    Full,
}

impl Recompute {
    /// Parse `none`, `selective` or `full`.
    pub fn parse(s: &str) -> Result<Recompute> {
        Ok(match s {
            "none" => Recompute::None,
            "selective" => Recompute::Selective,
            "full" => Recompute::Full,
            other => bail!("recompute must be none, selective or full, got '{other}'"),
        })
    }
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        })
    }
}

/// Pipeline schedule of a layout with pipeline parallelism. Per micro-batch and stage, F is the
/// forward, B the backward for the inputs and W the backward for the weights (the weight-gradient
/// GEMMs, as long as the forward's linears); a stage's micro-batch is F + B + W.
/// - `1f1b`: one forward, one backward (Narayanan et al. 2021), interleaved over `v` chunks when
///   v > 1: (p - 1)(F + B + W) / v of bubble, min(m, p) micro-batches in flight on the first stage.
/// - `zb-h1`: Zero Bubble's ZB-H1 (Qi et al., ICLR 2024, section 3.1): W is deferred into the
///   cool-down's idle slots, (p - 1)(F + B - W) of bubble, the same memory as 1F1B.
/// - `zb-h2`: ZB-H2 (same paper): more warm-up forwards fill the rest, (p - 1)(F + B - 2W) (none
///   below zero), up to 2p - 1 micro-batches in flight on the first stage.
/// - `dualpipe`: DeepSeek-V3's DualPipe (DeepSeek-V3 report, section 3.2.1 and Table 2):
///   micro-batches fed from both ends, each rank holding two chunks (its stage of either
///   direction) and overlapping one chunk's forward with another's backward: (p/2 - 1)(F&B + B -
///   3W) of bubble in chunk times (F&B = F + B + W, B the full backward), p + 1 micro-batches in
///   flight, and the model's parameters twice (weights and gradients; one optimizer state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// One forward, one backward (interleaved when `v` > 1).
    #[default]
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// Zero Bubble ZB-H1.
    #[serde(rename = "zb-h1")]
    ZbH1,
    /// Zero Bubble ZB-H2.
    #[serde(rename = "zb-h2")]
    ZbH2,
    /// DeepSeek-V3's DualPipe.
    #[serde(rename = "dualpipe")]
    DualPipe,
}

impl Schedule {
    /// Parse `1f1b`, `zb-h1`, `zb-h2` or `dualpipe`.
    pub fn parse(s: &str) -> Result<Schedule> {
        Ok(match s {
            "1f1b" | "interleaved" => Schedule::OneFOneB,
            "zb-h1" | "zb1p" => Schedule::ZbH1,
            "zb-h2" | "zb2p" => Schedule::ZbH2,
            "dualpipe" => Schedule::DualPipe,
            other => bail!("schedule must be 1f1b, zb-h1, zb-h2 or dualpipe, got '{other}'"),
        })
    }

    /// Idle time of a stage over the step, from a micro-batch's stage time `t_mb` (F + B + W and
    /// what it exposes), its forward share `fwd` and its weight-gradient GEMMs `w`, with `p`
    /// stages of `v` interleaved chunks and `m` micro-batches a step. A zero-bubble schedule saves
    /// on 1F1B in two ways: its backward chain through the p - 1 stages carries B without W, which
    /// saves (p - 1) W whatever m; and it fills idle slots with deferred weight gradients, the rest
    /// of its steady-state saving, in full only with p - 1 micro-batches or more to draw on, and
    /// m / (p - 1) of it with fewer (the Zero Bubble paper's appendix H: at m <= p its schedules
    /// still gain, less than at m >> p).
    pub fn bubble(self, t_mb: f64, fwd: f64, w: f64, p: f64, v: f64, m: f64) -> f64 {
        let one_f_one_b = t_mb * (p - 1.0) / v;
        let steady = match self {
            Schedule::OneFOneB => return one_f_one_b,
            Schedule::ZbH1 => (p - 1.0) * (t_mb - 2.0 * w).max(0.0),
            Schedule::ZbH2 => (p - 1.0) * (t_mb - 3.0 * w).max(0.0),
            // A chunk is half a rank's layers: F&B + B - 3W = (t_mb + (t_mb - fwd) - 3w) / 2.
            Schedule::DualPipe => (p / 2.0 - 1.0).max(0.0) * (2.0 * t_mb - fwd - 3.0 * w).max(0.0) / 2.0,
        };
        let chain = (one_f_one_b - (p - 1.0) * w).max(steady);
        let filled = (m / (p - 1.0)).min(1.0);
        chain - filled * (chain - steady)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::OneFOneB => "1f1b",
            Schedule::ZbH1 => "zb-h1",
            Schedule::ZbH2 => "zb-h2",
            Schedule::DualPipe => "dualpipe",
        })
    }
}

/// Submodules whose outputs are discarded after forward and recomputed in backward, on top of
/// [`Recompute`] (Megatron-Core `recompute_modules`: "moe_act", "layernorm" and "mla_up_proj" use
/// output-discarding checkpointing; TransformerConfig docstring and the MoE README, "Checkpointing").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Modules {
    /// The input and pre-MLP norms: their outputs (the QKV and MLP inputs) are not stored.
    pub layernorm: bool,
    /// The routed experts' activation: its output (the down projection's input) is not stored.
    pub moe_act: bool,
    /// Latent attention's up projections and RoPE: the per-head queries, keys and values are not
    /// stored, only the compressed latents.
    pub mla_up_proj: bool,
    /// The dense MLP: only its input is kept; its up projections, activation and down projection
    /// rerun in backward (Megatron-Core `recompute_modules` "mlp"; MaxText's `remat` of `mlpwi`
    /// and `mlpwo`). MoE layers are not touched (Megatron-Core names them "moe").
    pub mlp: bool,
    /// A MoE layer checkpointed whole (Megatron-Core `recompute_modules` "moe", `MoELayer`'s
    /// `custom_forward` under `tensor_parallel.checkpoint`): only its input is kept; router,
    /// dispatch, experts, combine and shared experts rerun in backward, the all-to-all included.
    pub moe: bool,
    /// A MoE layer's shared experts: only their input is kept; their up projections, activation
    /// and down projection rerun in backward (Megatron-Core `recompute_modules` "shared_experts",
    /// `SharedExpertMLP` checkpointed whole).
    pub shared_experts: bool,
    /// torchtitan's per-op selective checkpointing (`selective_ac_option = "op"`): of a layer's
    /// forward only the outputs of the ops in its save list are kept (matmuls, attention, max),
    /// except every second matmul; everything else reruns in backward, the element-wise ops
    /// included (torchtitan parallelize_llama.py `_save_list`, `_custom_policy`, 2024-12 to
    /// 2025-06). Float8 linears count as matmuls too: the checkpointing mode sees `aten.mm` on
    /// torchao's Float8 tensors before they dispatch to `_scaled_mm`.
    pub op_sac: bool,
}

impl Modules {
    /// Parse module names joined by `+` (or given one by one): `layernorm`, `moe_act`, `mla_up_proj`,
    /// `mlp`, `moe`, `shared_experts`, `op_sac`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Modules> {
        let mut m = Modules::default();
        for name in names.into_iter().flat_map(|n| n.split('+')).map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "layernorm" => m.layernorm = true,
                "moe_act" => m.moe_act = true,
                "mla_up_proj" => m.mla_up_proj = true,
                "mlp" => m.mlp = true,
                "moe" => m.moe = true,
                "shared_experts" => m.shared_experts = true,
                "op_sac" => m.op_sac = true,
                other => bail!(
                    "recompute module must be layernorm, moe_act, mla_up_proj, mlp, moe, shared_experts or op_sac, got '{other}'"
                ),
            }
        }
        Ok(m)
    }

    /// Whether no module is recomputed.
    pub fn is_empty(&self) -> bool {
        *self == Modules::default()
    }
}

impl fmt::Display for Modules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = [
            (self.layernorm, "layernorm"),
            (self.moe_act, "moe_act"),
            (self.mla_up_proj, "mla_up_proj"),
            (self.mlp, "mlp"),
            (self.moe, "moe"),
            (self.shared_experts, "shared_experts"),
            (self.op_sac, "op_sac"),
        ];
        let names: Vec<&str> = on.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        f.write_str(&names.join("+"))
    }
}

/// Number format of the transformer layers' GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// BF16 everywhere.
    Bf16,
    /// FP8 GEMMs in the transformer layers (Transformer Engine style); the rest BF16.
    Fp8,
    /// INT8 GEMMs in the transformer layers (quantized training as Google's AQT does it on TPUs,
    /// at the chip's `int8_tops`); otherwise as FP8: the same low-precision GEMM efficiency, casts
    /// and 1-byte stored linear inputs, but no persistent 8-bit weight copy.
    Int8,
    /// NVFP4 GEMMs in the transformer layers (Transformer Engine's `nvfp4` recipe: 4-bit elements
    /// with an FP8 scale per 16, at the chip's `fp4_tflops`); otherwise as FP8, with 0.5625-byte
    /// operands, casts and stored linear inputs.
    Fp4,
}

impl Precision {
    /// Parse `bf16`, `fp8`, `int8` or `fp4` (also `nvfp4`).
    pub fn parse(s: &str) -> Result<Precision> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bf16" => Precision::Bf16,
            "fp8" => Precision::Fp8,
            "int8" => Precision::Int8,
            "fp4" | "nvfp4" => Precision::Fp4,
            other => bail!("--precision must be bf16, fp8, int8 or fp4, got '{other}'"),
        })
    }

    /// The chip field holding this format's dense GEMM peak (`bf16_tflops`, `fp8_tflops`,
    /// `int8_tops`, `fp4_tflops`).
    pub fn peak_field(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16_tflops",
            Precision::Fp8 => "fp8_tflops",
            Precision::Int8 => "int8_tops",
            Precision::Fp4 => "fp4_tflops",
        }
    }

    /// Whether the transformer layers' GEMMs run quantized (FP8, INT8 or FP4).
    pub fn quantized(self) -> bool {
        self != Precision::Bf16
    }

    /// Bytes per element of a transformer GEMM operand: 2 in BF16, 1 in FP8 and INT8, and in
    /// NVFP4 half a byte plus one 1-byte scale per 16 elements.
    pub fn operand_bytes(self) -> f64 {
        match self {
            Precision::Bf16 => 2.0,
            Precision::Fp8 | Precision::Int8 => 1.0,
            Precision::Fp4 => 0.5 + 1.0 / 16.0,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Fp4 => "fp4",
        })
    }
}

/// A parallel layout of one job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Layout {
    /// Tensor-parallel degree (Megatron column/row split).
    pub tp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Data-parallel replicas.
    pub dp: usize,
    /// Context-parallel degree (sequence split across ranks for attention).
    pub cp: usize,
    /// Expert-parallel degree (experts split across ranks of tp x cp x dp).
    pub ep: usize,
    /// Expert tensor-parallel degree (Megatron-Core's `expert_tensor_parallel_size`): each
    /// expert's matrices split over `etp` ranks, which all-gather the routed tokens the
    /// all-to-all brought them and reduce-scatter the experts' outputs. 1 keeps experts whole;
    /// Megatron-Core before 0.10 split them over the tensor-parallel group (`etp` = `tp`), and
    /// 0.10 and later default to that where a recipe leaves it unset.
    pub etp: usize,
    /// Sequences per micro-batch.
    pub mb: usize,
    /// Interleaved model chunks per pipeline stage (1 = plain 1F1B).
    pub v: usize,
    /// Pipeline schedule (1F1B unless the stack or the layout names another; pp > 1 only).
    pub schedule: Schedule,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// Under a full recompute, the layers of each model chunk that recompute, the chunk's first
    /// ones (Megatron-Core's `recompute_method` block with `recompute_num_layers`); the chunk's
    /// other layers keep every activation. 0: every layer recomputes.
    pub recompute_layers: usize,
    /// Submodules recomputed on top of `recompute` (ignored under full recompute).
    pub modules: Modules,
    /// ZeRO stage of the data-parallel optimizer: 0 none, 1 optimizer states, 2 + gradients, 3 + weights.
    pub zero: u8,
    /// Data-parallel replicas the ZeRO stage (or a distributed optimizer) shards over; 0 = all
    /// `dp`. Fewer is hybrid sharding (PyTorch HSDP, MaxText's FSDP inside a slice and data
    /// parallelism across slices, Megatron's `num_distributed_optimizer_instances`): each group of
    /// `shard` replicas holds one sharded copy, and the `dp / shard` copies all-reduce their
    /// gradient shards.
    pub shard: usize,
    /// Sequence parallelism in the tensor-parallel group (Korthikanti).
    pub sp: bool,
    /// Layers of each pipeline stage whose stored activations go to host memory after their
    /// forward and come back for their backward (Megatron-Core `cpu_offloading_num_layers`;
    /// MaxText's remat `offload`); 0 keeps every activation on the chip.
    pub offload: usize,
    /// Layers of the model a quantized recipe keeps in BF16 (Megatron-Bridge's
    /// `num_layers_at_start_in_bf16` plus `num_layers_at_end_in_bf16` under
    /// `first_last_layers_bf16`); 0 quantizes every layer. Ignored in BF16.
    pub bf16_layers: usize,
    /// Layers on the first pipeline stage where the split is uneven (Megatron-Core's
    /// `num_layers_in_first_pipeline_stage`, Llama 3's and Zero Bubble's "one layer fewer" on the
    /// stages holding the embedding and the loss); `None`: the stages share the layers evenly.
    pub first_layers: Option<usize>,
    /// Layers on the last pipeline stage, the one with the LM head and the loss
    /// (`num_layers_in_last_pipeline_stage`); `None`: an even share.
    pub last_layers: Option<usize>,
}

/// Layers a pipeline rank holds (over all its interleaved chunks): the first rank's, each middle
/// rank's and the last rank's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageSplit {
    /// The first rank's layers (the embedding's stage).
    pub first: f64,
    /// Each rank's between the first and the last (the larger share where they do not divide
    /// evenly).
    pub middle: f64,
    /// The last rank's layers (the LM head's and the loss's stage).
    pub last: f64,
}

impl StageSplit {
    /// The most layers a rank without the LM head holds (the first's or a middle one's).
    pub fn body(&self) -> f64 {
        self.first.max(self.middle)
    }

    /// The most layers a rank holds, LM head aside: what the states and the stored activations
    /// of the heaviest rank are counted on.
    pub fn most(&self) -> f64 {
        self.body().max(self.last)
    }
}

impl Layout {
    /// How `layers` spread over the pipeline ranks: `first_layers` and `last_layers` where given,
    /// the rest shared by the other ranks (the larger share where they do not divide evenly;
    /// every rank ceil(layers / pp) without either, as Megatron's even split prices the heaviest).
    pub fn stage_split(&self, layers: usize) -> StageSplit {
        let p = self.pp.max(1);
        let (first, last) = (self.first_layers, self.last_layers);
        if p == 1 || (first.is_none() && last.is_none()) {
            let even = layers.div_ceil(p) as f64;
            return StageSplit { first: even, middle: even, last: even };
        }
        let given = [first, last];
        let pinned: usize = given.iter().flatten().sum();
        let others = p - given.iter().flatten().count();
        let middle = if others == 0 { 0 } else { layers.saturating_sub(pinned).div_ceil(others) };
        StageSplit { first: first.unwrap_or(middle) as f64, middle: middle as f64, last: last.unwrap_or(middle) as f64 }
    }

    /// This layout with the split a framework that balances it runs
    /// ([`Stack::balanced_pipeline_split`]: Megatron-Core's recipes, which refuse an even split
    /// where the layers do not divide over the pp x vp chunks) written in, where it names none.
    pub fn balanced_on(&self, layers: usize, stack: &Stack) -> Layout {
        match (self.first_layers, self.last_layers, stack.balanced_pipeline_split) {
            (None, None, true) => match balanced_split(layers, self.pp, self.v) {
                Some((first_layers, last_layers)) => Layout { first_layers, last_layers, ..*self },
                None => *self,
            },
            _ => *self,
        }
    }

    /// Data-parallel replicas that share one sharded copy of the states (`shard`, or every one).
    pub fn shard_group(&self) -> usize {
        if self.shard == 0 {
            self.dp
        } else {
            self.shard
        }
    }

    /// Sharded copies of the states across the data-parallel replicas (1 unless hybrid).
    pub fn replicas(&self) -> usize {
        self.dp / self.shard_group().max(1)
    }

    /// `dp` plain data-parallel replicas: every other degree 1, one sequence per micro-batch, no
    /// recompute, no ZeRO; change fields with struct update syntax.
    pub fn data_parallel(dp: usize) -> Layout {
        Layout {
            tp: 1,
            pp: 1,
            dp,
            cp: 1,
            ep: 1,
            etp: 1,
            mb: 1,
            v: 1,
            schedule: Schedule::OneFOneB,
            recompute: Recompute::None,
            recompute_layers: 0,
            modules: Modules::default(),
            zero: 0,
            shard: 0,
            sp: false,
            offload: 0,
            bf16_layers: 0,
            first_layers: None,
            last_layers: None,
        }
    }

    /// Ranks one expert's group spans: its `etp` tensor-parallel shards of each of `ep` expert
    /// sets (Megatron-Core's expert model-parallel group, ordered etp, then ep).
    pub fn expert_model_parallel(&self) -> usize {
        self.ep.max(1) * self.etp.max(1)
    }

    /// Chips the layout occupies.
    pub fn chips(&self) -> usize {
        self.tp * self.pp * self.dp * self.cp
    }

    /// The most layers one model chunk holds when `layers` split over `pp` x `v` chunks.
    pub fn chunk_layers(&self, layers: usize) -> usize {
        layers.div_ceil(self.pp * self.v.max(1))
    }

    /// Share of a rank's `stage_layers` (over its `v` chunks) that rerun their forward in
    /// backward under a full recompute: `recompute_layers` of each chunk, or all of them; 0 under
    /// the other modes.
    pub fn recomputed_share(&self, stage_layers: f64) -> f64 {
        match (self.recompute, self.recompute_layers) {
            (Recompute::Full, 0) => 1.0,
            (Recompute::Full, n) if stage_layers > 0.0 => ((n * self.v.max(1)) as f64 / stage_layers).min(1.0),
            _ => 0.0,
        }
    }
}

/// The first and last ranks' layers where `layers` do not divide over `pp` x `v` chunks: with
/// the embedding and the loss each taking a layer's place, (layers + 2) / pp - 1 on both end
/// ranks (Llama 3.1 405B, Qwen3-235B-A22B); with the loss alone, (layers + 1) / pp - 1 on the
/// last; with the last chunk's MTP module and loss in three layers' place, (layers + 3) / pp - 3
/// on the last (Megatron-Bridge's DeepSeek-V3 and Kimi K2 layouts); the first that divides.
/// `None` where the layers divide (the even split runs) or none of them does.
pub(crate) fn balanced_split(layers: usize, pp: usize, v: usize) -> Option<(Option<usize>, Option<usize>)> {
    let chunks = pp * v.max(1);
    if pp < 2 || layers.is_multiple_of(chunks) {
        return None;
    }
    let per_rank = |slots: usize| (slots.is_multiple_of(chunks)).then(|| slots / pp);
    if let Some(n) = per_rank(layers + 2).filter(|&n| n > 1) {
        return Some((Some(n - 1), Some(n - 1)));
    }
    if let Some(n) = per_rank(layers + 1).filter(|&n| n > 1) {
        return Some((None, Some(n - 1)));
    }
    per_rank(layers + 3).filter(|&n| n > 3).map(|n| (None, Some(n - 3)))
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tp{} pp{} dp{}", self.tp, self.pp, self.dp)?;
        if self.cp > 1 {
            write!(f, " cp{}", self.cp)?;
        }
        if self.ep > 1 {
            write!(f, " ep{}", self.ep)?;
        }
        if self.etp > 1 {
            write!(f, " etp{}", self.etp)?;
        }
        if self.v > 1 {
            write!(f, " v{}", self.v)?;
        }
        if self.schedule != Schedule::OneFOneB {
            write!(f, " {}", self.schedule)?;
        }
        write!(f, " mb{} rc:{}", self.mb, self.recompute)?;
        if self.recompute == Recompute::Full && self.recompute_layers > 0 {
            write!(f, ":{}", self.recompute_layers)?;
        }
        if !self.modules.is_empty() {
            write!(f, "+{}", self.modules)?;
        }
        write!(f, " zero{}", self.zero)?;
        if self.replicas() > 1 {
            write!(f, " shard{}", self.shard_group())?;
        }
        if self.sp && self.tp > 1 {
            f.write_str(" sp")?;
        }
        if self.offload > 0 {
            write!(f, " offload{}", self.offload)?;
        }
        if self.bf16_layers > 0 {
            write!(f, " bf16:{}", self.bf16_layers)?;
        }
        if let Some(n) = self.first_layers {
            write!(f, " first:{n}")?;
        }
        if let Some(n) = self.last_layers {
            write!(f, " last:{n}")?;
        }
        Ok(())
    }
}

/// Why an uneven pipeline split (`first`, `last`) cannot place `layers`.
fn check_stage_split(l: &Layout, layers: usize) -> Result<()> {
    let given: Vec<usize> = [l.first_layers, l.last_layers].into_iter().flatten().collect();
    if given.is_empty() {
        return Ok(());
    }
    if l.pp < 2 {
        bail!("layout {l}: first= and last= set the layers of the first and last pipeline stages; give pp=2 or more");
    }
    if given.contains(&0) {
        bail!("layout {l}: first= and last= count the layers of a stage: give 1 or more");
    }
    let (pinned, others) = (given.iter().sum::<usize>(), l.pp - given.len());
    let rest = layers.checked_sub(pinned).filter(|&r| if others == 0 { r == 0 } else { r >= others * l.v });
    if rest.is_none() {
        bail!(
            "layout {l}: first/last stages hold {pinned} of the model's {layers} layers, leaving {} for the other {others} stages; they must leave every other stage at least vp={} layers{}",
            layers as i64 - pinned as i64,
            l.v,
            if others == 0 { " (with pp=2, first + last = layers)" } else { "" }
        );
    }
    Ok(())
}

/// Why a layout cannot run this job at all (as opposed to not fitting in memory).
pub fn check_layout(job: &Job, l: &Layout) -> Result<()> {
    check_degrees(job, l)?;
    check_pipeline(job.arch, l)?;
    check_splits(job, l)?;
    check_experts(job.arch, l)?;
    let a = job.arch;
    if l.bf16_layers > a.layers {
        bail!("layout {l}: bf16={} is more than the model's {} layers", l.bf16_layers, a.layers);
    }
    check_stage_split(l, a.layers)?;
    if l.offload > a.layers.div_ceil(l.pp) {
        bail!("layout {l}: offload={} is more than a stage's {} layers", l.offload, a.layers.div_ceil(l.pp));
    }
    check_recompute_layers(l, a.layers)
}

/// `recompute_layers` only under a full recompute, and no more than a chunk's layers.
fn check_recompute_layers(l: &Layout, layers: usize) -> Result<()> {
    if l.recompute_layers == 0 {
        return Ok(());
    }
    if l.recompute != Recompute::Full {
        bail!(
            "layout {l}: recompute_layers={} needs recompute=full (the layers of each chunk that rerun their forward)",
            l.recompute_layers
        );
    }
    let chunk = l.chunk_layers(layers);
    if l.recompute_layers > chunk {
        bail!(
            "layout {l}: recompute_layers={} is more than a chunk's {chunk} layers; give at most {chunk} (or leave it out to recompute every layer)",
            l.recompute_layers
        );
    }
    Ok(())
}

/// Every degree at least 1, a ZeRO stage that exists, shard groups that divide data parallel,
/// and a global batch that the data-parallel micro-batches divide.
fn check_degrees(job: &Job, l: &Layout) -> Result<()> {
    if [l.tp, l.pp, l.dp, l.cp, l.mb, l.v, l.ep, l.etp].contains(&0) {
        bail!("layout {l}: every degree must be at least 1");
    }
    if l.zero > 3 {
        bail!("layout {l}: zero must be 0, 1, 2 or 3");
    }
    if l.shard > 0 && !l.dp.is_multiple_of(l.shard) {
        bail!("layout {l}: shard={} must divide dp={} (each group of shard replicas holds one copy)", l.shard, l.dp);
    }
    if l.replicas() > 1 && l.zero == 0 {
        bail!("layout {l}: shard={} shards a ZeRO stage: give zero=1, 2 or 3", l.shard);
    }
    if !job.global_batch.is_multiple_of(l.dp * l.mb) {
        bail!("layout {l}: global batch {} is not a multiple of dp x mb = {}", job.global_batch, l.dp * l.mb);
    }
    Ok(())
}

/// Stages the layers can fill, interleaved chunks a stage can hold, and a schedule the
/// pipeline can run.
fn check_pipeline(a: &Arch, l: &Layout) -> Result<()> {
    if l.pp > a.layers {
        bail!("layout {l}: {} layers cannot fill {} pipeline stages", a.layers, l.pp);
    }
    if l.v > a.layers.div_ceil(l.pp) {
        bail!(
            "layout {l}: a stage of {} layers cannot be split into vp={} interleaved chunks",
            a.layers.div_ceil(l.pp),
            l.v
        );
    }
    if l.v > 1 && l.pp == 1 {
        bail!("layout {l}: interleave vp={} needs pipeline parallelism (pp > 1)", l.v);
    }
    if l.schedule != Schedule::OneFOneB {
        if l.pp == 1 {
            bail!("layout {l}: schedule={} needs pipeline parallelism (pp > 1)", l.schedule);
        }
        if l.v > 1 {
            bail!(
                "layout {l}: schedule={} runs one chunk per stage; use vp=1 (or schedule=1f1b to interleave)",
                l.schedule
            );
        }
    }
    if l.schedule == Schedule::DualPipe && !l.pp.is_multiple_of(2) {
        bail!("layout {l}: schedule=dualpipe pairs the stages from both ends: pp must be even");
    }
    Ok(())
}

/// Heads (attention, Mamba-2, Gated DeltaNet) that tensor parallelism splits, and a sequence
/// that context parallelism splits where it is priced.
fn check_splits(job: &Job, l: &Layout) -> Result<()> {
    let a = job.arch;
    if !a.heads.is_multiple_of(l.tp) {
        bail!("layout {l}: {} attention heads do not split over tp={}", a.heads, l.tp);
    }
    if !job.seq.is_multiple_of(l.cp) {
        bail!("layout {l}: sequence {} is not a multiple of cp {}", job.seq, l.cp);
    }
    if let Some(hy) = a.hybrid.filter(|hy| hy.mamba > 0) {
        if l.cp > 1 {
            bail!("layout {l}: context parallelism over Mamba-2 layers is not priced; use cp=1");
        }
        if !hy.mamba_heads.is_multiple_of(l.tp) || !hy.mamba_groups.is_multiple_of(l.tp) {
            bail!(
                "layout {l}: {} Mamba-2 heads in {} groups do not split over tp={}",
                hy.mamba_heads,
                hy.mamba_groups,
                l.tp
            );
        }
    }
    if let Some(hy) = a.hybrid.filter(|hy| hy.gdn > 0) {
        if l.cp > 1 {
            bail!("layout {l}: context parallelism over Gated DeltaNet layers is not priced; use cp=1");
        }
        if !hy.gdn_key_heads.is_multiple_of(l.tp) {
            bail!("layout {l}: {} Gated DeltaNet key heads do not split over tp={}", hy.gdn_key_heads, l.tp);
        }
    }
    Ok(())
}

/// Expert parallelism only on a MoE model, its experts and their width splitting over ep and
/// etp, and the expert grid fitting the ranks it is folded onto.
fn check_experts(a: &Arch, l: &Layout) -> Result<()> {
    match a.moe {
        None if l.ep > 1 => bail!("layout {l}: ep={} needs a mixture-of-experts model", l.ep),
        None if l.etp > 1 => bail!("layout {l}: etp={} needs a mixture-of-experts model", l.etp),
        Some(m) if m.experts % l.ep != 0 => bail!("layout {l}: {} experts do not split over ep={}", m.experts, l.ep),
        Some(m) if m.expert_d_ff % l.etp != 0 => {
            bail!("layout {l}: the experts' width {} does not split over etp={}", m.expert_d_ff, l.etp)
        }
        _ => {}
    }
    if !(l.tp * l.cp * l.dp).is_multiple_of(l.expert_model_parallel()) {
        bail!("layout {l}: ep x etp = {} must divide tp x cp x dp = {}", l.expert_model_parallel(), l.tp * l.cp * l.dp);
    }
    Ok(())
}
