//! Mixture-of-experts checkpoints: `Qwen3MoeForCausalLM` and `Ernie4_5_MoeForCausalLM` config
//! keys and the MoE feed-forward's tensor names, both ways.
//!
//! Per MoE layer i, transformers' `save_pretrained` writes (and the published checkpoints hold)
//! `model.layers.{i}.mlp.gate.weight` `[E, d]` (the router), `mlp.experts.{e}.{gate,up,down}_proj.weight`
//! per expert, and for ERNIE 4.5 `mlp.shared_experts.{gate,up,down}_proj.weight` (width
//! `moe_num_shared_experts * moe_intermediate_size`) and `mlp.moe_statics.e_score_correction_bias`
//! `[1, E]`. anychip keeps gate|up of each expert fused as `blocks.{i}.moe.experts.{e}.up.weight`.
//!
//! Which layers are MoE: Qwen3-MoE's layer i is when (i + 1) % `decoder_sparse_step` == 0 and i
//! is not in `mlp_only_layers` (a non-empty list is refused); ERNIE's when additionally
//! `moe_layer_start_index` <= i <= `moe_layer_end_index`. The load-balancing loss is part of
//! transformers' training loss only when `output_router_logits` is true; anychip's coefficient
//! is `router_aux_loss_coef` then and 0 otherwise, so both train the same objective.

use crate::config::Arch;
use crate::tensors::Store;
use anychip_model_config::{ModelConfig, MoeConfig};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::path::Path;

type Named = Vec<(String, Vec<f32>, Vec<usize>)>;

fn num(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| v.get(*k).and_then(|x| x.as_f64()))
}

/// The MoE settings of a MoE architecture's config.json.
pub(crate) fn read(arch: Arch, v: &Value, n_layer: usize, p: &Path) -> Result<MoeConfig> {
    let need = |keys: &[&str]| -> Result<usize> {
        num(v, keys).map(|x| x as usize).ok_or_else(|| anyhow!("{}: missing '{}'", p.display(), keys[0]))
    };
    let aux_on = v["output_router_logits"].as_bool().unwrap_or(false);
    let aux_loss_coef = if aux_on { num(v, &["router_aux_loss_coef"]).unwrap_or(0.001) as f32 } else { 0.0 };
    let m = if arch == Arch::Qwen3Moe {
        if v["mlp_only_layers"].as_array().is_some_and(|a| !a.is_empty()) {
            bail!(
                "{}: mlp_only_layers (dense layers at listed indices) is not supported; only decoder_sparse_step",
                p.display()
            );
        }
        MoeConfig {
            n_experts: need(&["num_experts", "num_local_experts"])?,
            top_k: need(&["num_experts_per_tok"])?,
            norm_topk_prob: v["norm_topk_prob"].as_bool().unwrap_or(false),
            d_expert: need(&["moe_intermediate_size"])?,
            n_shared: 0,
            layer_start: 0,
            layer_interval: num(v, &["decoder_sparse_step"]).unwrap_or(1.0) as usize,
            layer_end: None,
            aux_loss_coef,
            aux_loss_per_layer: false, // transformers pools every layer's routing
            aux_loss_router_only: false,
            selection_bias: false,
            bias_balance_rate: 0.0, // the checkpoints' routing is matched as trained
            capacity_factor: None,  // transformers routes uncapped
        }
    } else {
        let end = num(v, &["moe_layer_end_index"]).map(|x| x as i64).unwrap_or(n_layer as i64 - 1);
        MoeConfig {
            n_experts: need(&["moe_num_experts", "num_experts"])?,
            top_k: need(&["moe_k", "num_experts_per_tok"])?,
            norm_topk_prob: true,
            d_expert: need(&["moe_intermediate_size"])?,
            n_shared: num(v, &["moe_num_shared_experts"]).unwrap_or(0.0) as usize,
            layer_start: num(v, &["moe_layer_start_index"]).unwrap_or(0.0) as usize,
            layer_interval: num(v, &["moe_layer_interval"]).unwrap_or(1.0) as usize,
            layer_end: (end >= 0 && (end as usize) < n_layer - 1).then_some(end as usize),
            aux_loss_coef,
            aux_loss_per_layer: false,
            aux_loss_router_only: false,
            selection_bias: true,
            bias_balance_rate: 0.0, // ERNIE's bias is loaded, never moved here
            capacity_factor: None,
        }
    };
    Ok(m)
}

/// Add a MoE config's keys to an architecture's config.json.
pub(crate) fn write(arch: Arch, c: &ModelConfig, m: &MoeConfig, v: &mut Value) {
    v["output_router_logits"] = json!(m.aux_loss_coef > 0.0);
    v["router_aux_loss_coef"] = json!(if m.aux_loss_coef > 0.0 { m.aux_loss_coef } else { 0.001 });
    v["moe_intermediate_size"] = json!(m.d_expert);
    if arch == Arch::Qwen3Moe {
        v["num_experts"] = json!(m.n_experts);
        v["num_experts_per_tok"] = json!(m.top_k);
        v["norm_topk_prob"] = json!(m.norm_topk_prob);
        v["decoder_sparse_step"] = json!(m.layer_interval);
        v["mlp_only_layers"] = json!([]);
    } else {
        v["moe_num_experts"] = json!(m.n_experts);
        v["moe_k"] = json!(m.top_k);
        v["moe_num_shared_experts"] = json!(m.n_shared);
        v["moe_layer_start_index"] = json!(m.layer_start);
        v["moe_layer_interval"] = json!(m.layer_interval);
        v["moe_layer_end_index"] = json!(m.layer_end.unwrap_or(c.n_layer - 1));
        v["moe_norm_min"] = json!(1e-12);
    }
}

/// Whether `arch`'s transformers class computes the settings `m` holds (what export can write).
pub(crate) fn check_exportable(arch: Arch, m: &MoeConfig) -> Result<()> {
    match arch {
        Arch::Qwen3Moe if m.n_shared > 0 || m.selection_bias || m.layer_start > 0 || m.layer_end.is_some() => bail!(
            "Qwen3MoeForCausalLM has no shared experts, selection bias or MoE start/end layers; export this model as ERNIE 4.5 MoE instead"
        ),
        Arch::Ernie45Moe if !m.norm_topk_prob || !m.selection_bias => {
            bail!("Ernie4_5_MoeForCausalLM always renormalises top-k weights and has a selection bias; export as Qwen3-MoE instead")
        }
        _ => Ok(()),
    }
}

/// A stored tensor whose shape must be `want`; the error says config and weights disagree.
fn get_shaped(s: &Store, name: &str, want: &[usize], what: &str) -> Result<Vec<f32>> {
    let (v, shape) = s.get(name)?;
    if shape.iter().product::<usize>() != want.iter().product::<usize>() {
        bail!("checkpoint tensor {name} has shape {shape:?} but config.json implies {want:?} ({what}); the config and the weights disagree");
    }
    Ok(v)
}

/// HF tensors of MoE layer `i` -> anychip parameters.
pub(crate) fn import_layer(c: &ModelConfig, m: &MoeConfig, s: &Store, i: usize, out: &mut Named) -> Result<()> {
    let (d, e, f) = (c.d_model, m.n_experts, m.d_expert);
    let (l, b) = (format!("model.layers.{i}.mlp."), format!("blocks.{i}.moe."));
    let (_, router_shape) = s.get(&format!("{l}gate.weight"))?;
    if router_shape.first() != Some(&e) || s.has(&format!("{l}experts.{e}.up_proj.weight")) {
        let found = router_shape.first().copied().unwrap_or(0);
        bail!(
            "layer {i} of the checkpoint has {found} experts but config.json says {e}; the config and the weights disagree (fix the expert count in config.json)"
        );
    }
    out.push((format!("{b}router.weight"), get_shaped(s, &format!("{l}gate.weight"), &[e, d], "router")?, vec![e, d]));
    if m.selection_bias {
        let bias = get_shaped(s, &format!("{l}moe_statics.e_score_correction_bias"), &[e], "selection bias")?;
        out.push((format!("{b}selection_bias"), bias, vec![e]));
    }
    let gate_up_down = |pre: &str, width: usize| -> Result<(Vec<f32>, Vec<f32>)> {
        let g = get_shaped(s, &format!("{pre}gate_proj.weight"), &[width, d], "expert width")?;
        let u = get_shaped(s, &format!("{pre}up_proj.weight"), &[width, d], "expert width")?;
        Ok(([g, u].concat(), get_shaped(s, &format!("{pre}down_proj.weight"), &[d, width], "expert width")?))
    };
    for x in 0..e {
        let (up, down) = gate_up_down(&format!("{l}experts.{x}."), f)?;
        out.push((format!("{b}experts.{x}.up.weight"), up, vec![2 * f, d]));
        out.push((format!("{b}experts.{x}.down.weight"), down, vec![d, f]));
    }
    if m.n_shared > 0 {
        let fs = m.n_shared * f;
        let (up, down) = gate_up_down(&format!("{l}shared_experts."), fs)?;
        out.push((format!("{b}shared.up.weight"), up, vec![2 * fs, d]));
        out.push((format!("{b}shared.down.weight"), down, vec![d, fs]));
    }
    Ok(())
}

/// anychip parameters of MoE layer `i` -> HF tensors.
pub(crate) fn export_layer(
    c: &ModelConfig,
    m: &MoeConfig,
    i: usize,
    get: crate::names::Get,
    put: crate::names::Put,
) -> Result<()> {
    let (d, e, f) = (c.d_model, m.n_experts, m.d_expert);
    let (l, b) = (format!("model.layers.{i}.mlp."), format!("blocks.{i}.moe."));
    put(format!("{l}gate.weight"), get(&format!("{b}router.weight"))?, vec![e, d]);
    if m.selection_bias {
        put(format!("{l}moe_statics.e_score_correction_bias"), get(&format!("{b}selection_bias"))?, vec![1, e]);
    }
    let mut split = |ours: &str, theirs: &str, width: usize| -> Result<()> {
        let up = get(&format!("{ours}up.weight"))?;
        put(format!("{theirs}gate_proj.weight"), up[..width * d].to_vec(), vec![width, d]);
        put(format!("{theirs}up_proj.weight"), up[width * d..].to_vec(), vec![width, d]);
        put(format!("{theirs}down_proj.weight"), get(&format!("{ours}down.weight"))?, vec![d, width]);
        Ok(())
    };
    for x in 0..e {
        split(&format!("{b}experts.{x}."), &format!("{l}experts.{x}."), f)?;
    }
    if m.n_shared > 0 {
        split(&format!("{b}shared."), &format!("{l}shared_experts."), m.n_shared * f)?;
    }
    Ok(())
}
