//! A Hugging Face `config.json` read as a planner model, so that `--model path/to/config.json`
//! (or the checkpoint directory holding it) plans any published model without a hand-written
//! TOML file.
//!
//! Each `model_type` maps its own field names onto [`ModelFile`]: the same widths, counts and
//! expert layout the TOML presets carry (`data/models.toml`, whose `source` lines name these
//! configs). Multimodal configs are read through their `text_config`. Only the shapes matter to
//! the planner: weights, dtypes and rope settings are ignored. Families whose blocks the model
//! cannot price (parallel attention, non-gated MLPs other than GPT-2's) are refused by name
//! rather than approximated.

use crate::model::ModelFile;
use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// `model_type`s read as a dense decoder with SwiGLU (or GeGLU: the same three matrices).
const GATED_DENSE: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "ernie4_5",
    "gemma",
    "gemma2",
    "gemma3_text",
    "olmo2",
    "olmo3",
    "granite",
    "phi3",
    "glm4",
    "smollm3",
    "seed_oss",
];

/// `model_type`s read as a dense decoder with a plain MLP (up, activation, down: Nemotron's squared
/// ReLU) and llama-style attention fields: the planner's `gpt` architecture with the config's
/// key/value heads, head width, MLP width and untied head.
const PLAIN_DENSE: &[&str] = &["nemotron"];

/// `model_type`s read as a mixture of experts.
const MOE: &[&str] = &[
    "mixtral",
    "phimoe",
    "granitemoe",
    "granitemoeshared",
    "olmoe",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
    "kimi_k2",
    "glm4_moe",
    "dots1",
    "bailing_moe",
    "gpt_oss",
    "ernie4_5_moe",
    "llama4",
    "llama4_text",
];

/// Every `model_type` this module reads, for the error that names them.
pub fn supported() -> Vec<&'static str> {
    let mut v = vec!["gpt2"];
    v.extend_from_slice(GATED_DENSE);
    v.extend_from_slice(PLAIN_DENSE);
    v.extend_from_slice(MOE);
    v
}

/// Read a parsed `config.json` as a planner model file named `name`.
pub fn model_file(config: &Value, name: &str) -> Result<ModelFile> {
    let c = Fields { v: config.get("text_config").filter(|t| t.is_object()).unwrap_or(config) };
    let mt = c.v["model_type"].as_str().or(config["model_type"].as_str()).unwrap_or("");
    let mut m = match mt {
        "gpt2" => gpt2(&c)?,
        _ if GATED_DENSE.contains(&mt) => gated(&c, "llama")?,
        _ if PLAIN_DENSE.contains(&mt) => gated(&c, "gpt")?,
        _ if MOE.contains(&mt) => experts(&c, mt)?,
        _ => bail!(
            "model_type '{mt}' is not one the planner reads from config.json (it reads {}); describe the model in a TOML model file instead (docs/planner.md, 'Model files')",
            supported().join(", ")
        ),
    };
    m.name = name.to_string();
    m.source = format!("Hugging Face config.json (model_type {mt})");
    Ok(m)
}

/// Typed access to a config's fields with one-line errors naming the missing one.
struct Fields<'a> {
    v: &'a Value,
}

impl Fields<'_> {
    fn opt(&self, key: &str) -> Option<usize> {
        match &self.v[key] {
            Value::Number(n) => n.as_u64().map(|x| x as usize),
            // ERNIE 4.5 VL gives per-modality lists; the first entry is the text experts'.
            Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as usize),
            _ => None,
        }
    }

    fn req(&self, key: &str) -> Result<usize> {
        self.opt(key).ok_or_else(|| anyhow!("config.json has no integer '{key}', which the planner needs"))
    }

    fn first(&self, keys: &[&str]) -> Result<usize> {
        keys.iter()
            .find_map(|k| self.opt(k))
            .ok_or_else(|| anyhow!("config.json has none of {}, which the planner needs", keys.join(" / ")))
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.v[key].as_bool()
    }
}

fn gpt2(c: &Fields) -> Result<ModelFile> {
    Ok(ModelFile {
        arch: "gpt".into(),
        vocab: c.req("vocab_size")?,
        ctx: c.opt("n_positions"),
        layers: c.req("n_layer")?,
        heads: c.req("n_head")?,
        d_model: c.req("n_embd")?,
        d_ff: c.opt("n_inner"),
        tied: Some(c.flag("tie_word_embeddings").unwrap_or(true)),
        ..Default::default()
    })
}

/// The attention and embedding fields every llama-style config shares, with `arch`.
fn gated(c: &Fields, arch: &str) -> Result<ModelFile> {
    let (sliding_window, sliding_fraction) = window(c);
    Ok(ModelFile {
        arch: arch.into(),
        vocab: c.req("vocab_size")?,
        ctx: c.opt("max_position_embeddings"),
        layers: c.req("num_hidden_layers")?,
        heads: c.req("num_attention_heads")?,
        kv_heads: c.opt("num_key_value_heads"),
        d_model: c.req("hidden_size")?,
        head_dim: c.opt("head_dim"),
        d_ff: if arch == "moe" { None } else { Some(c.req("intermediate_size")?) },
        // transformers' default where the file omits it: Gemma ties, the others do not.
        tied: Some(
            c.flag("tie_word_embeddings").unwrap_or(c.v["model_type"].as_str().is_some_and(|t| t.starts_with("gemma"))),
        ),
        sliding_window,
        sliding_fraction,
        ..Default::default()
    })
}

/// The sliding window and the share of layers using it: from `layer_types` where the config
/// lists them (transformers >= 4.53), else Gemma 2's alternation, Gemma 3's
/// `sliding_window_pattern`, or a window on every layer where one is set and not switched off
/// (`use_sliding_window` false in Qwen2/Qwen3 configs).
fn window(c: &Fields) -> (Option<usize>, Option<f64>) {
    let Some(w) = c.opt("sliding_window") else {
        return (None, None);
    };
    if let Some(types) = c.v["layer_types"].as_array().filter(|t| !t.is_empty()) {
        let sliding = types.iter().filter(|t| t.as_str() == Some("sliding_attention")).count();
        return if sliding == 0 { (None, None) } else { (Some(w), Some(sliding as f64 / types.len() as f64)) };
    }
    if c.flag("use_sliding_window") == Some(false) {
        return (None, None);
    }
    let frac = match (c.v["model_type"].as_str(), c.opt("sliding_window_pattern")) {
        (Some("gemma2"), _) => 0.5,
        (_, Some(p)) if p > 0 => (p - 1) as f64 / p as f64,
        _ => 1.0,
    };
    (Some(w), Some(frac))
}

/// A mixture-of-experts config: llama-style (or latent) attention plus each family's expert fields.
fn experts(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = gated(c, "moe")?;
    let dense_ff = c.opt("intermediate_size");
    match mt {
        // Every layer MoE, the experts `intermediate_size` wide (Granite's shared expert, when
        // present, `shared_intermediate_size`).
        "mixtral" | "phimoe" | "granitemoe" | "granitemoeshared" | "olmoe" => {
            m.experts = Some(c.first(&["num_local_experts", "num_experts"])?);
            m.experts_per_token = Some(c.req("num_experts_per_tok")?);
            m.expert_d_ff = Some(c.req("intermediate_size")?);
            one_shared_expert(c, &mut m, "shared_intermediate_size");
        }
        "qwen2_moe" | "qwen3_moe" => {
            m.experts = Some(c.req("num_experts")?);
            m.experts_per_token = Some(c.req("num_experts_per_tok")?);
            m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
            one_shared_expert(c, &mut m, "shared_expert_intermediate_size");
            if c.v["mlp_only_layers"].as_array().is_some_and(|l| !l.is_empty()) {
                bail!("config.json: mlp_only_layers (dense layers at chosen indices) cannot be planned from config.json; write a TOML model file with dense_layers / moe_every");
            }
            let every = c.opt("decoder_sparse_step").unwrap_or(1);
            if every > 1 {
                m.moe_every = Some(every);
                m.d_ff = dense_ff;
            }
        }
        // DeepSeek's field names; GLM-4.5 and dots.llm1 use them with plain (not latent) attention.
        "deepseek_v2" | "deepseek_v3" | "kimi_k2" | "glm4_moe" | "dots1" => {
            m.experts = Some(c.req("n_routed_experts")?);
            m.experts_per_token = Some(c.req("num_experts_per_tok")?);
            m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
            m.shared_experts = c.opt("n_shared_experts");
            if c.opt("moe_layer_freq").unwrap_or(1) != 1 {
                bail!("config.json: moe_layer_freq other than 1 cannot be planned from config.json; write a TOML model file");
            }
            first_dense_layers(c, &mut m, dense_ff);
            latent(c, &mut m)?;
        }
        "gpt_oss" => {
            m.experts = Some(c.req("num_local_experts")?);
            m.experts_per_token = Some(c.first(&["num_experts_per_tok", "experts_per_token"])?);
            m.expert_d_ff = Some(c.req("intermediate_size")?);
            // The architecture's experts always carry biases (gate_up_proj_bias, down_proj_bias)
            // and clamp their gated activation at swiglu_limit.
            m.expert_bias = Some(true);
            m.activation_clamp = c.v["swiglu_limit"].as_f64().or(Some(7.0));
        }
        // Ant Group's Ling (BailingMoe v1 and v2): shared experts of moe_intermediate_size each
        // unless v2 gives them their own width; first_k_dense_replace dense layers.
        "bailing_moe" => {
            m.experts = Some(c.req("num_experts")?);
            m.experts_per_token = Some(c.req("num_experts_per_tok")?);
            let width = c.req("moe_intermediate_size")?;
            m.expert_d_ff = Some(width);
            if let Some(s) = c.opt("num_shared_experts").filter(|&s| s > 0) {
                m.shared_experts = Some(s);
                m.shared_expert_d_ff = Some(c.opt("moe_shared_expert_intermediate_size").unwrap_or(width));
            }
            first_dense_layers(c, &mut m, dense_ff);
        }
        "ernie4_5_moe" => {
            m.experts = Some(c.req("moe_num_experts")?);
            m.experts_per_token = Some(c.req("moe_k")?);
            m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
            m.shared_experts = c.opt("moe_num_shared_experts").filter(|&s| s > 0);
            let start = c.opt("moe_layer_start_index").unwrap_or(0);
            let every = c.opt("moe_layer_interval").unwrap_or(1);
            if start > 0 || every > 1 {
                m.dense_layers = Some(start).filter(|&s| s > 0);
                m.moe_every = Some(every).filter(|&e| e > 1);
                m.d_ff = dense_ff;
            }
        }
        _ => {
            // Llama 4: every interleave_moe_layer_step-th layer is MoE (routed experts of
            // intermediate_size plus one shared expert of the same width), the others dense of
            // intermediate_size_mlp.
            m.experts = Some(c.req("num_local_experts")?);
            m.experts_per_token = Some(c.req("num_experts_per_tok")?);
            m.expert_d_ff = Some(c.req("intermediate_size")?);
            m.shared_experts = Some(1);
            let every = c.opt("interleave_moe_layer_step").unwrap_or(1);
            if every > 1 {
                m.moe_every = Some(every);
                m.d_ff = Some(c.req("intermediate_size_mlp")?);
            }
        }
    }
    Ok(m)
}

/// One always-on shared expert as wide as `key` says, when the config gives it a positive width.
fn one_shared_expert(c: &Fields, m: &mut ModelFile, key: &str) {
    if let Some(s) = c.opt(key).filter(|&s| s > 0) {
        m.shared_experts = Some(1);
        m.shared_expert_d_ff = Some(s);
    }
}

/// The first `first_k_dense_replace` layers dense, of the config's `intermediate_size` (`dense_ff`).
fn first_dense_layers(c: &Fields, m: &mut ModelFile, dense_ff: Option<usize>) {
    let first_dense = c.opt("first_k_dense_replace").unwrap_or(0);
    if first_dense > 0 {
        m.dense_layers = Some(first_dense);
        m.d_ff = dense_ff;
    }
}

/// Multi-head latent attention widths (DeepSeek-V2/V3, Kimi K2); plain attention when the config
/// has no `kv_lora_rank`. The key/value head count of such configs describes the expanded heads,
/// which the latent widths already price.
fn latent(c: &Fields, m: &mut ModelFile) -> Result<()> {
    let Some(kv) = c.opt("kv_lora_rank") else {
        return Ok(());
    };
    m.kv_lora_rank = Some(kv);
    m.q_lora_rank = c.opt("q_lora_rank");
    m.qk_nope_dim = Some(c.req("qk_nope_head_dim")?);
    m.qk_rope_dim = Some(c.req("qk_rope_head_dim")?);
    m.v_head_dim = Some(c.req("v_head_dim")?);
    m.kv_heads = None;
    m.head_dim = None;
    Ok(())
}
