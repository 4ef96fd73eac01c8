//! Software stack profiles (`data/stacks.toml`): which kernels the training framework fuses and
//! which communication it overlaps. The planner never assumes a stack: `plan --stack NAME` names
//! one, published runs carry theirs, and `unknown` is the conservative default.

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

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
    /// Optimizer states sharded over data parallel even at zero = 0.
    pub distributed_optimizer: bool,
    /// ZeRO-3 keeps a stage's gathered weights for the whole step instead of re-gathering them.
    pub zero3_keep_gathered: bool,
    /// Bytes per gradient element in the data-parallel reduction.
    pub grad_comm_bytes: f64,
    /// Bytes per gradient element kept between micro-batches.
    pub main_grad_bytes: f64,
    /// Where the flags come from.
    pub source: String,
}

#[derive(Deserialize)]
struct File {
    stack: Vec<Stack>,
}

/// Every stack profile shipped with the planner.
pub fn all() -> Vec<Stack> {
    let f: File = toml::from_str(STACKS_TOML).expect("data/stacks.toml is valid");
    f.stack
}

/// Find a stack by name; the error lists the known ones.
pub fn find(name: &str) -> Result<Stack> {
    let stacks = all();
    let lower = name.to_ascii_lowercase();
    stacks.iter().find(|s| s.name == lower).cloned().ok_or_else(|| {
        let names: Vec<_> = stacks.iter().map(|s| s.name.as_str()).collect();
        anyhow!("unknown stack '{name}'; known stacks: {}", names.join(", "))
    })
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
}
