//! Software stack profiles (`data/stacks.toml`): which kernels the training framework fuses and
//! which communication it overlaps. The planner never assumes a stack: `plan --stack NAME` names
//! one, published runs carry theirs, and `unknown` is the conservative default.
//!
//! A profile may start from another with `base = "NAME"` and list only what differs; a user's own
//! framework is a TOML file of the same fields passed as `--stack FILE.toml`.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;

const STACKS_TOML: &str = include_str!("../data/stacks.toml");

/// The stack `plan` assumes when none is given.
pub const DEFAULT_STACK: &str = "unknown";

/// What one training framework does.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// Name used by `--stack`.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Fused attention that never stores the s x s scores and skips the masked half.
    pub flash_attention: bool,
    /// Fused norm/bias/activation/dropout kernels.
    pub fused_elementwise: bool,
    /// Fused cross-entropy: the loss reads the logits once forward and once backward and writes
    /// their gradient once, instead of a chain of element-wise kernels over them.
    pub fused_cross_entropy: bool,
    /// Tensor/sequence-parallel collectives overlapped with GEMMs.
    pub overlap_tp: bool,
    /// Pipeline sends overlapped with compute.
    pub overlap_pp: bool,
    /// Gradient reduction and parameter gathers overlapped with backward and forward.
    pub overlap_dp: bool,
    /// MoE all-to-all overlapped with another micro-batch's computation.
    pub overlap_ep: bool,
    /// A MoE layer's shared experts computed while its tokens are dispatched and combined
    /// (Megatron-Core's `moe_shared_expert_overlap`, on its all-to-all dispatcher only: ignored
    /// with `moe_flex_dispatcher`): the all-to-all runs under their GEMMs.
    #[serde(default)]
    pub shared_expert_overlap: bool,
    /// MoE tokens dispatched by a flex dispatcher (DeepEP, HybridEP): each token crosses the
    /// scale-out network once per destination domain and fans out over the scale-up link there,
    /// instead of one scale-out copy per routed expert (a plain all-to-all).
    pub moe_flex_dispatcher: bool,
    /// The experts' fc1, activation and fc2 run as one fused grouped MLP (Transformer Engine op
    /// fuser, CuTe DSL kernels) that applies the experts' biases and activation clamp inside it;
    /// otherwise Megatron-Core applies them in separate element-wise kernels. Absent: false.
    #[serde(default)]
    pub fused_expert_mlp: bool,
    /// In FP8 training, fused attention also runs in FP8 (Transformer Engine
    /// `fp8_dot_product_attention`); otherwise attention stays BF16. Absent: false.
    #[serde(default)]
    pub fp8_attention: bool,
    /// The whole forward and backward of an iteration is captured in one CUDA graph and replayed
    /// (Megatron-Core `cuda_graph_impl = "full_iteration"`): no kernel is launched from the host.
    /// Absent: false.
    #[serde(default)]
    pub full_iteration_cuda_graph: bool,
    /// Fused attention runs warp-synchronous MMA kernels (FlashAttention-2: PyTorch SDPA's flash
    /// backend, Triton kernels of 2023) instead of ones built on the chip's asynchronous tensor
    /// cores (FlashAttention-3, cuDNN): it reaches the chip's `sync_mma_fraction` of their rate.
    /// Absent: false.
    #[serde(default)]
    pub sync_mma_attention: bool,
    /// Fused attention through the cuDNN of 2025 (9.x, under Transformer Engine 2.x: NeMo 25.x
    /// and Megatron-Bridge containers, MLPerf v5.x NVIDIA code, NeMo AutoModel's TE attention),
    /// faster than the 2023-2024 kernels the other stacks ran by the fitted `attn_gain_2025`.
    /// FlashAttention-2-class stacks (`sync_mma_attention`) do not gain. Absent: false.
    #[serde(default)]
    pub cudnn_attention_2025: bool,
    /// The framework can keep layers' stored activations in host memory (Megatron-Core
    /// `cpu_offloading`, MaxText's remat `offload`): a `--layout` with `offload` needs it (the
    /// search never tries offload: on PCIe nodes the copies share the NICs' lanes, unpriced).
    /// Absent: false.
    #[serde(default)]
    pub activation_offload: bool,
    /// The recipe trains with hidden and attention dropout (Megatron-LM's argument default, 0.1):
    /// each layer stores its two dropout masks (1 byte per element, Korthikanti's 2 s b h) and,
    /// with unfused attention, the scores' mask and dropped copy (3 a s^2 b). Modern pre-training
    /// recipes set both to 0, and at 0 PyTorch's dropout returns its input and stores nothing.
    /// Absent: false.
    #[serde(default)]
    pub dropout: bool,
    /// In FP8 training the data-parallel parameter all-gather moves the FP8 weights, 1 byte each,
    /// instead of BF16 (Megatron-Core `fp8_param_gather`). Absent: false.
    #[serde(default)]
    pub fp8_param_gather: bool,
    /// The pipeline schedule the framework runs when a layout has pipeline stages and one chunk
    /// each ([`crate::perf::Schedule`]: `1f1b`, `zb-h1`, `zb-h2`, `dualpipe`); a `--layout` may
    /// name another with `schedule=`. Absent: 1F1B.
    #[serde(default)]
    pub pipeline_schedule: crate::perf::Schedule,
    /// Where a model's layers do not divide over the pipeline's chunks, the framework balances the
    /// split as Megatron-Core recipes do (an even split is refused there): the embedding and the
    /// loss each counted as a layer (`account_for_embedding/loss_in_pipeline_split`), else the loss
    /// alone, else DeepSeek-V3's layouts (the last chunk's multi-token prediction module and loss
    /// in three layers' place); [`crate::perf::Layout::stage_split`]. Absent: ceil(layers / pp)
    /// on every stage, the heaviest the framework could run.
    #[serde(default)]
    pub balanced_pipeline_split: bool,
    /// In quantized training each linear layer keeps its quantized input for the weight gradient
    /// instead of the BF16 one (Transformer Engine). torchtitan's torchao Float8 runs measure the
    /// memory of its BF16 runs (its December 2024 tables: 76.8 against 77.0 GiB on 8 H100, 61.8
    /// against 62.0 on 128), so its stacks keep BF16 inputs. Absent: true.
    #[serde(default = "yes")]
    pub stores_quantized_inputs: bool,
    /// Optimizer states sharded over data parallel even at zero = 0.
    pub distributed_optimizer: bool,
    /// The ZeRO stages the framework implements (a layout's `zero`): Megatron-LM's distributed
    /// optimizer is stage 1, and Megatron-Core had nothing beyond it before its FSDP (November
    /// 2024); PyTorch FSDP has no stage 1 (NO_SHARD, SHARD_GRAD_OP, FULL_SHARD). Absent: 0 to 3.
    #[serde(default = "every_zero_stage")]
    pub zero_stages: Vec<u8>,
    /// The highest ZeRO stage the framework runs with pipeline stages (DeepSpeed's pipeline
    /// engine asserts a stage below 2). Absent: 3.
    #[serde(default = "highest_zero_stage")]
    pub pipeline_zero_max: u8,
    /// The framework runs several pipeline chunks a stage (Megatron's interleaved schedule);
    /// DeepSpeed's pipeline engine runs one. Absent: true.
    #[serde(default = "yes")]
    pub interleaved_pipeline: bool,
    /// The activation recompute modes the framework has (a layout's `recompute`; Megatron-LM
    /// had only full checkpointing before selective recompute, May 2022). Absent: all three.
    #[serde(default = "every_recompute_mode")]
    pub recompute_modes: Vec<crate::perf::Recompute>,
    /// A full recompute can cover some of a chunk's layers and leave the others whole (a
    /// layout's `recompute_layers`: Megatron-LM's `recompute_method` block with
    /// `recompute_num_layers`, from August 2021; torchtitan's layer checkpointing of every n-th
    /// block). Absent: false (every layer or none).
    #[serde(default)]
    pub partial_recompute: bool,
    /// The framework shards the activations outside the tensor-parallel region over its ranks
    /// (Megatron's sequence parallelism, April 2022). Absent: true.
    #[serde(default = "yes")]
    pub sequence_parallel: bool,
    /// The framework splits layers over tensor-parallel ranks (absent: true; PyTorch FSDP and
    /// Composer's, Lightning's and Hugging Face's trainers on it or on DeepSpeed shard data
    /// parallelism only).
    #[serde(default = "yes")]
    pub tensor_parallel: bool,
    /// The framework runs pipeline stages (absent: true).
    #[serde(default = "yes")]
    pub pipeline_parallel: bool,
    /// The framework splits a sequence over context-parallel ranks (absent: true).
    #[serde(default = "yes")]
    pub context_parallel: bool,
    /// The framework places a MoE layer's experts on different ranks (absent: true).
    #[serde(default = "yes")]
    pub expert_parallel: bool,
    /// ZeRO-3 keeps a stage's gathered weights for the whole step instead of re-gathering them.
    pub zero3_keep_gathered: bool,
    /// Bytes per gradient element in the data-parallel reduction.
    pub grad_comm_bytes: f64,
    /// Bytes per gradient element kept between micro-batches.
    pub main_grad_bytes: f64,
    /// Optimizer state per parameter, bytes: FP32 master weights and Adam's two FP32 moments, 12
    /// (absent: 12); Megatron-Core's precision-aware optimizer with BF16 moments
    /// (`exp_avg_dtype` and `exp_avg_sq_dtype` bf16, FP32 master) 8; BF16 parameters updated in
    /// place with BF16 moments and no master copy (NeMo AutoModel's MoE recipes) 4. The AdamW step
    /// reads and writes it once a step.
    #[serde(default = "fp32_master_and_moments")]
    pub optimizer_state_bytes: f64,
    /// Where the flags come from.
    pub source: String,
}

/// FP32 master weights and two FP32 Adam moments: 12 bytes a parameter.
fn fp32_master_and_moments() -> f64 {
    12.0
}

fn every_zero_stage() -> Vec<u8> {
    vec![0, 1, 2, 3]
}

fn every_recompute_mode() -> Vec<crate::perf::Recompute> {
    use crate::perf::Recompute;
    vec![Recompute::None, Recompute::Selective, Recompute::Full]
}

fn highest_zero_stage() -> u8 {
    3
}

fn yes() -> bool {
    true
}

impl Stack {
    /// Whether this is the default stack ([`DEFAULT_STACK`]), the one a job gets when it names
    /// none: a framework the planner has no profile of.
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_STACK
    }

    /// Whether the framework can run `l`'s ZeRO stage and pipeline chunks: the error names what
    /// it cannot and what it can.
    pub fn check_runs(&self, l: &crate::perf::Layout) -> Result<()> {
        if !self.zero_stages.contains(&l.zero) {
            let stages: Vec<String> = self.zero_stages.iter().map(u8::to_string).collect();
            bail!(
                "layout {l}: stack {} has no ZeRO stage {} (it runs zero={}); pick one of those or another stack",
                self.name,
                l.zero,
                stages.join(" or ")
            );
        }
        if l.pp > 1 && l.zero > self.pipeline_zero_max {
            bail!(
                "layout {l}: stack {} runs ZeRO stage {} only without pipeline stages (at most zero={} with pp > 1)",
                self.name,
                l.zero,
                self.pipeline_zero_max
            );
        }
        if l.v > 1 && !self.interleaved_pipeline {
            bail!("layout {l}: stack {} runs one pipeline chunk a stage (no interleaving); use vp=1", self.name);
        }
        let degrees = [
            ("tp", l.tp, self.tensor_parallel, "tensor"),
            ("pp", l.pp, self.pipeline_parallel, "pipeline"),
            ("cp", l.cp, self.context_parallel, "context"),
            ("ep", l.ep, self.expert_parallel, "expert"),
        ];
        if let Some((key, n, _, kind)) = degrees.iter().find(|(_, n, has, _)| *n > 1 && !has) {
            bail!(
                "layout {l}: stack {} has no {kind} parallelism ({key}={n}); use {key}=1 or a stack that has it",
                self.name
            );
        }
        let selective = self.recompute_modes.contains(&crate::perf::Recompute::Selective);
        if !self.recompute_modes.contains(&l.recompute) || (!l.modules.is_empty() && !selective) {
            let modes: Vec<String> = self.recompute_modes.iter().map(|m| m.to_string()).collect();
            bail!(
                "layout {l}: stack {} recomputes {} only (no selective recompute or recompute modules); use recompute={}",
                self.name,
                modes.join(" or "),
                modes.join(" or recompute=")
            );
        }
        if l.recompute_layers > 0 && !self.partial_recompute {
            bail!(
                "layout {l}: stack {} recomputes every layer or none (no recompute_layers); leave recompute_layers out or use a stack that has it (megatron-core-2024, nemo-2025, torchtitan-2024)",
                self.name
            );
        }
        if l.sp && l.tp > 1 && !self.sequence_parallel {
            bail!("layout {l}: stack {} has no sequence parallelism; give sp=0", self.name);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct File {
    stack: Vec<toml::Table>,
}

/// Every stack profile shipped with the planner, parsed once (a search, a fleet or the
/// validation looks stacks up by name many times).
pub fn all() -> &'static [Stack] {
    static STACKS: OnceLock<Vec<Stack>> = OnceLock::new();
    STACKS.get_or_init(|| {
        let f: File = toml::from_str(STACKS_TOML).expect("data/stacks.toml is valid");
        let mut stacks = Vec::new();
        for t in f.stack {
            let s = with_base(t, &stacks).expect("data/stacks.toml: every stack resolves");
            stacks.push(s);
        }
        stacks
    })
}

/// One profile from its table: the fields of its `base` (a stack in `known`), overridden by its own.
fn with_base(mut own: toml::Table, known: &[Stack]) -> Result<Stack> {
    let mut t = match own.remove("base") {
        Some(toml::Value::String(b)) => {
            let base = lookup(&b, known)?;
            let toml::Value::Table(t) = toml::Value::try_from(base)? else { unreachable!("a stack is a table") };
            t
        }
        Some(v) => bail!("base must be a stack name, got {v}"),
        None => toml::Table::new(),
    };
    t.extend(own);
    let s: Stack = toml::Value::Table(t).try_into()?;
    for (field, bytes) in [
        ("grad_comm_bytes", s.grad_comm_bytes),
        ("main_grad_bytes", s.main_grad_bytes),
        ("optimizer_state_bytes", s.optimizer_state_bytes),
    ] {
        if !(bytes.is_finite() && bytes >= 0.0) {
            bail!("{field} must be a byte count of 0 or more, got {bytes}");
        }
    }
    if s.zero_stages.is_empty() || s.zero_stages.iter().any(|z| *z > 3) {
        bail!("zero_stages must list ZeRO stages from 0 to 3 (e.g. [0, 1]), got {:?}", s.zero_stages);
    }
    if s.recompute_modes.is_empty() {
        bail!("recompute_modes must list at least one of none, selective, full (e.g. [\"none\", \"full\"])");
    }
    if s.pipeline_zero_max > 3 {
        bail!("pipeline_zero_max must be a ZeRO stage from 0 to 3, got {}", s.pipeline_zero_max);
    }
    Ok(s)
}

fn lookup<'a>(name: &str, stacks: &'a [Stack]) -> Result<&'a Stack> {
    let lower = name.to_ascii_lowercase();
    stacks.iter().find(|s| s.name == lower).ok_or_else(|| {
        let names: Vec<_> = stacks.iter().map(|s| s.name.as_str()).collect();
        anyhow!(
            "unknown stack '{name}'{}; known stacks: {}",
            crate::names::suggestion(name, names.iter().copied()),
            names.join(", ")
        )
    })
}

/// Find a shipped stack by name; the error lists the known ones.
pub fn find(name: &str) -> Result<Stack> {
    lookup(name, all()).cloned()
}

/// The shipped profile at the top of `name`'s `base` chain: the framework a recipe-level variant
/// derives from (`nemo-2026-fused-mlp` -> `nemo-2025`, `torchtitan-2024-compile-pp` ->
/// `torchtitan-2024`), what a user who names only the framework would pick.
pub fn root(name: &str) -> Result<String> {
    let f: File = toml::from_str(STACKS_TOML)?;
    let base_of = |n: &str| -> Result<Option<String>> {
        let t = f.stack.iter().find(|t| t.get("name").and_then(|v| v.as_str()) == Some(n));
        let t = t.ok_or_else(|| anyhow!("unknown stack '{n}'"))?;
        Ok(t.get("base").and_then(|b| b.as_str()).map(str::to_string))
    };
    let mut cur = lookup(name, all())?.name.clone();
    while let Some(b) = base_of(&cur)? {
        cur = b;
    }
    Ok(cur)
}

/// Resolve `--stack`: a shipped profile's name, or a TOML file describing one (its fields at top
/// level, optionally `base = "NAME"` and only the fields that differ; `name` defaults to the file
/// name, `description` and `source` to the file's path).
pub fn resolve(spec: &str) -> Result<Stack> {
    let path = Path::new(spec);
    if !spec.ends_with(".toml") && !path.is_file() {
        return find(spec);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read stack file {spec}"))?;
    let mut t: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("stack file {spec}: {}", crate::chips::one_line(&e.to_string())))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    t.entry("name").or_insert(stem.into());
    t.entry("description").or_insert(format!("stack file {spec}").into());
    t.entry("source").or_insert(format!("stack file {spec}").into());
    with_base(t, all()).map_err(|e| anyhow!("stack file {spec}: {}", crate::chips::one_line(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stack_has_a_source_and_unique_name() {
        let s = all();
        assert!(s.iter().any(|x| x.name == DEFAULT_STACK));
        for (i, a) in s.iter().enumerate() {
            assert!(!a.source.is_empty(), "{} has no source", a.name);
            assert!(s[i + 1..].iter().all(|b| b.name != a.name), "duplicate {}", a.name);
        }
        assert!(find("no-such-stack").unwrap_err().to_string().contains("megatron-2021"));
    }

    /// `text` written to `dir/name`.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_variant_s_root_is_the_top_of_its_base_chain() {
        assert_eq!(root("nemo-2026-fused-mlp-fp8-attn").unwrap(), "nemo-2025");
        assert_eq!(root("torchtitan-2024-compile-async-tp-pp").unwrap(), "torchtitan-2024");
        assert_eq!(root("megatron-core-2024").unwrap(), "megatron-core-2024");
        assert!(root("nope").unwrap_err().to_string().contains("unknown stack 'nope'"));
    }

    #[test]
    fn a_derived_stack_is_its_base_with_the_fields_it_names() {
        let base = find("nemo-2025").unwrap();
        let flex = find("nemo-2025-flex").unwrap();
        assert!(flex.moe_flex_dispatcher && !base.moe_flex_dispatcher);
        let json = |s: &Stack| {
            let mut v = serde_json::to_value(s).unwrap();
            for k in ["name", "description", "source", "moe_flex_dispatcher"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(json(&flex), json(&base));
        assert_ne!(flex.source, base.source, "a derived stack states its own source");
    }

    #[test]
    fn a_stack_file_names_itself_and_inherits_from_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            "our-launcher.toml",
            "base = \"megatron-core-2024\"\noverlap_tp = false\ngrad_comm_bytes = 4.0\n",
        );
        let s = resolve(p.to_str().unwrap()).unwrap();
        let base = find("megatron-core-2024").unwrap();
        assert_eq!(s.name, "our-launcher");
        assert!(!s.overlap_tp && base.overlap_tp);
        assert_eq!((s.grad_comm_bytes, s.overlap_dp, s.flash_attention), (4.0, base.overlap_dp, base.flash_attention));
        assert!(s.source.contains("our-launcher.toml"));
    }

    #[test]
    fn bad_stack_files_are_one_line_naming_the_problem() {
        let cases = [
            ("unknown-base.toml", "base = \"megatron-2099\"\n", "unknown stack 'megatron-2099'"),
            ("typo.toml", "base = \"nemo-2025\"\noverlap_tpp = true\n", "overlap_tpp"),
            ("type.toml", "base = \"nemo-2025\"\noverlap_tp = \"yes\"\n", "overlap_tp"),
            ("missing.toml", "flash_attention = true\n", "missing field"),
            ("negative.toml", "base = \"nemo-2025\"\noptimizer_state_bytes = -4\n", "optimizer_state_bytes must be"),
            ("nan.toml", "base = \"nemo-2025\"\nmain_grad_bytes = nan\n", "main_grad_bytes must be"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (name, text, needle) in cases {
            let e = format!("{:#}", resolve(file(&dir, name, text).to_str().unwrap()).unwrap_err());
            assert!(e.contains(needle) && e.contains(name) && !e.contains('\n'), "{name}: {e}");
        }
    }
}
