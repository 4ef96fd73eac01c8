//! A Hugging Face `config.json` read as a planner model, so that `--model path/to/config.json`
//! (or the checkpoint directory holding it) plans any published model without a hand-written
//! TOML file.
//!
//! Each `model_type` maps its own field names onto [`ModelFile`]: the same widths, counts and
//! expert layout the TOML presets carry (`data/models.toml`, whose `source` lines name these
//! configs). Multimodal configs are read through their `text_config` (Gemma 3's with its config
//! class's defaults for the fields it leaves out), or their top level where the language model's
//! fields sit there (Qwen2-VL and Qwen2.5-VL files of early 2025). Only the shapes matter to
//! the planner: weights, dtypes and rope settings are ignored, and so are parallel attention/MLP
//! blocks (Falcon, GPT-J, GPT-NeoX, Phi, Cohere), which do the same matmuls as serial ones.
//! Families with a gated MLP (SwiGLU, GeGLU) read as `llama`, the remote-code configs of ChatGLM2/3
//! and GLM-4 and transformers' GLM-4 (`glm`), Qwen-1, Baichuan, InternLM and InternLM3, Aquila,
//! MiniCPM, EXAONE 3 and EXAONE 4.0 (its "LLLG" window pattern) included; those with a
//! plain one (GELU, squared ReLU, xIELU: GPT-2, GPT-J, GPT-NeoX/Pythia, OPT, BLOOM, MPT, Falcon,
//! Phi-1/2, StarCoder, StarCoder2, Nemotron, Arcee AFM, Apertus) as `gpt` with their key/value
//! heads and MLP width; MiMo-7B as Qwen2 with its multi-token prediction modules; mixtures of
//! experts (DBRX's, DeepSeek-MoE's, Hunyuan-A13B's, Ling 2.0's and GLM-4.5V's included) as `moe`,
//! DeepSeek-V3.2 as DeepSeek-V3 with DeepSeek Sparse Attention's indexer and top-k core;
//! Nemotron-H and Nemotron 3 (Mamba-2, attention, MLP and expert layers), IBM's Granite 4.0
//! hybrids and Bamba (a Mamba-2 or attention mixer then an MLP or experts in every layer),
//! Falcon-H1 (attention and a Mamba-2 mixer side by side, then an MLP, in every layer),
//! Qwen3-Next and Qwen3.5 (Gated DeltaNet or gated attention, then experts or an MLP) and Kimi
//! Linear (Kimi Delta Attention, read as Gated DeltaNet with low-rank gates, or latent
//! attention, then experts or an MLP) as `hybrid`. A causal language model of a `model_type` not
//! named here is read by transformers' standard field names where it sets no field those names
//! cannot describe, and says so (`standard_names`); the rest (Jamba, Mamba-1, encoders) are
//! refused rather than approximated.

use crate::model::ModelFile;
use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// `model_type`s read as a dense decoder with SwiGLU (or GeGLU: the same three matrices).
const GATED_DENSE: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3_vl_text",
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
    "olmo",
    "cohere",
    "cohere2",
    "stablelm",
    "internlm2",
    "internlm",
    "aquila",
    "minicpm",
    "hunyuan_v1_dense",
    "exaone4",
    "glm",
    "internlm3",
    "qwen2_vl",
    "qwen2_vl_text",
    "qwen2_5_vl",
    "qwen2_5_vl_text",
];

/// `model_type`s read as a dense decoder with a plain MLP (up, activation, down: GELU, Nemotron's
/// squared ReLU) of `intermediate_size` and llama-style attention fields: the planner's `gpt`
/// architecture with the config's key/value heads, head width and MLP width.
/// Arcee's AFM (squared ReLU) and Apertus (xIELU) are llama-style models with such an MLP.
const PLAIN_DENSE: &[&str] = &["nemotron", "gpt_neox", "phi", "starcoder2", "arcee", "apertus"];

/// `model_type`s read as a mixture of experts.
const MOE: &[&str] = &[
    "mixtral",
    "phimoe",
    "granitemoe",
    "granitemoeshared",
    "olmoe",
    "qwen2_moe",
    "qwen3_moe",
    "qwen3_vl_moe_text",
    "minimax_m2",
    "deepseek",
    "deepseek_v2",
    "deepseek_v3",
    "deepseek_v32",
    "kimi_k2",
    "glm4_moe",
    "glm4v_moe",
    "glm4v_moe_text",
    "dots1",
    "bailing_moe",
    "bailing_moe_v2",
    "gpt_oss",
    "ernie4_5_moe",
    "llama4",
    "llama4_text",
];

/// How one family's config is read: the parsed fields and the `model_type`.
type Reader = fn(&Fields, &str) -> Result<ModelFile>;

/// `model_type`s whose configs name their fields their own way, and the function reading each.
const OWN_FIELDS: &[(&str, Reader)] = &[
    ("gpt2", gpt2_named),
    ("gptj", gpt2_named),
    ("gpt_bigcode", gpt2_named),
    ("falcon", falcon),
    ("bloom", bloom),
    ("opt", opt),
    ("mpt", mpt),
    ("dbrx", dbrx),
    ("nemotron_h", nemotron_h),
    ("qwen3_next", qwen3_next),
    ("qwen3_5", qwen3_next),
    ("qwen3_5_text", qwen3_next),
    ("qwen3_5_moe", qwen3_next),
    ("qwen3_5_moe_text", qwen3_next),
    ("granitemoehybrid", granite_hybrid),
    ("bamba", granite_hybrid),
    ("falcon_h1", falcon_h1),
    ("chatglm", chatglm),
    ("qwen", qwen),
    ("baichuan", baichuan),
    ("exaone", exaone),
    ("hunyuan_v1_moe", hunyuan),
    ("hunyuan", hunyuan),
    ("mimo", mimo),
    ("kimi_linear", kimi_linear),
];

/// `model_type`s whose config class (transformers', or the checkpoint's remote code for MiniCPM and
/// EXAONE 3) ties the LM head to the embedding when the file has no `tie_word_embeddings` (the
/// others default to an untied head).
const TIED_BY_DEFAULT: &[&str] = &[
    "gpt2",
    "gpt_bigcode",
    "falcon",
    "bloom",
    "opt",
    "mpt",
    "starcoder2",
    "gemma",
    "gemma2",
    "gemma3_text",
    "cohere",
    "cohere2",
    "minicpm",
    "exaone",
];

/// Config classes' defaults for the shape fields some published files leave out, filled in
/// before reading where a key is absent (a null value is kept: EXAONE 4.0's null
/// `sliding_window` means no window): Gemma 3's multimodal configs give a `text_config` without
/// `vocab_size` (the 4B one without its heads and head width too), which Gemma3TextConfig
/// supplies; Exaone4Config windows 4,096 tokens on all layers but every fourth.
const CLASS_DEFAULTS: &[(&str, &[(&str, u64)])] = &[
    (
        "gemma3_text",
        &[
            ("vocab_size", 262_208),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("head_dim", 256),
            ("max_position_embeddings", 131_072),
            ("sliding_window", 4096),
            ("sliding_window_pattern", 6),
        ],
    ),
    ("exaone4", &[("sliding_window", 4096), ("sliding_window_pattern", 4)]),
];

/// Every `model_type` this module reads, for the error that names them.
pub fn supported() -> Vec<&'static str> {
    let mut v: Vec<&str> = OWN_FIELDS.iter().map(|(t, _)| *t).collect();
    v.extend_from_slice(GATED_DENSE);
    v.extend_from_slice(PLAIN_DENSE);
    v.extend_from_slice(MOE);
    v
}

/// Read a parsed `config.json` as a planner model file named `name`.
pub fn model_file(config: &Value, name: &str) -> Result<ModelFile> {
    let mut text = config.get("text_config").filter(|t| t.is_object()).unwrap_or(config);
    let mt = text["model_type"].as_str().or(config["model_type"].as_str()).unwrap_or("");
    let filled;
    if let Some((_, defaults)) = CLASS_DEFAULTS.iter().find(|(t, _)| *t == mt) {
        let mut v = text.clone();
        for &(key, value) in defaults.iter() {
            if v.get(key).is_none() {
                v[key] = value.into();
            }
        }
        filled = v;
        text = &filled;
    }
    let c = Fields { v: text };
    let own = OWN_FIELDS.iter().find(|(t, _)| *t == mt).map(|(_, read)| read);
    let mut m = match own {
        Some(read) => read(&c, mt)?,
        None if GATED_DENSE.contains(&mt) => llama_named(&c, mt, "llama", Some("intermediate_size"))?,
        None if PLAIN_DENSE.contains(&mt) => llama_named(&c, mt, "gpt", Some("intermediate_size"))?,
        None if MOE.contains(&mt) => experts(&c, mt)?,
        None => standard_names(&c, config, mt).map_err(|why| {
            anyhow!(
                "model_type '{mt}' is not one the planner reads from config.json (it reads {}), and {why}; describe the model in a TOML model file instead (docs/planner.md, 'Model files')",
                supported().join(", ")
            )
        })?,
    };
    m.name = name.to_string();
    m.source = format!("Hugging Face config.json (model_type {mt})");
    Ok(m)
}

/// Substrings of field names that say a config holds what transformers' standard names cannot
/// describe (state-space and linear-attention mixers, convolutions, hybrid layer patterns,
/// encoders, cross-attention, sparse-attention indexers, LongCat's zero experts, Gemma 3n's
/// per-layer inputs): a config of a `model_type` the planner does not know is refused when any
/// such field is set.
const NONSTANDARD_FIELDS: &[&str] = &[
    "mamba",
    "ssm",
    "linear_attn",
    "linear_key",
    "linear_value",
    "linear_num",
    "conv",
    "kda",
    "rwkv",
    "block_type",
    "hybrid",
    "cross_attention",
    "encoder",
    "zero_expert",
    "index_",
    "altup",
    "laurel",
    "per_layer",
    "lightning",
    "attn_layer",
    "full_attn",
];

/// `hidden_act`s of a plain (ungated) MLP in the families the planner knows: squared ReLU
/// (Nemotron, Arcee AFM), ReLU (OPT) and the GELUs of GPT-2 and GPT-NeoX. Every other
/// activation is read as a gated MLP (SwiGLU, GeGLU), as in every llama-style family.
const PLAIN_ACTIVATIONS: &[&str] = &["relu2", "relu", "gelu_new", "gelu_fast"];

/// A `model_type` the planner does not know by name, read by transformers' standard field
/// names: LlamaConfig's for a dense decoder, and for experts the fields of the family whose
/// names the file uses (DeepSeek's `n_routed_experts`, latent attention included; Mixtral's
/// `num_local_experts`, or OLMoE's `num_experts`, with experts `intermediate_size` wide;
/// Qwen-MoE's `num_experts` with `moe_intermediate_size`). Only a file that
/// says it is a causal language model (`architectures`) and sets no field
/// [`NONSTANDARD_FIELDS`] names is read; the model's `note` says what was assumed. The error
/// says why a file was not read.
fn standard_names(c: &Fields, top: &Value, mt: &str) -> Result<ModelFile> {
    if !is_causal_lm(top) {
        bail!("its architectures do not name a causal language model (...ForCausalLM)");
    }
    if let Some(key) = nonstandard_field(c.v) {
        bail!("it sets '{key}', which transformers' standard field names do not describe");
    }
    let (mut m, what) = match standard_experts(c, mt)? {
        Some(read) => read,
        None => standard_dense(c, mt)?,
    };
    m.note = Some(format!(
        "model_type '{mt}' is not one the planner knows by name: read by transformers' standard field names as {what}; if the model is built otherwise, describe it in a TOML model file (docs/planner.md, 'Model files')"
    ));
    Ok(m)
}

/// [`standard_names`]' experts, by the family whose names the file uses, and what was assumed;
/// None for a file without experts.
fn standard_experts(c: &Fields, mt: &str) -> Result<Option<(ModelFile, String)>> {
    let positive = |key: &str| c.opt(key).filter(|&e| e > 0);
    let deepseek = positive("n_routed_experts");
    let mixtral = positive("num_local_experts")
        .or_else(|| positive("num_experts").filter(|_| c.opt("moe_intermediate_size").is_none()));
    let Some(experts) = deepseek.or(mixtral).or_else(|| positive("num_experts")) else {
        return Ok(None);
    };
    let mut m = llama_named(c, mt, "moe", None)?;
    let what = if deepseek.is_some() {
        deepseek_experts(c, &mut m, mt, c.opt("intermediate_size"))?;
        let attention = if m.kv_lora_rank.is_some() { "latent attention" } else { "grouped-query attention" };
        format!("a mixture of {experts} experts with DeepSeek's field names and {attention}")
    } else if mixtral.is_some() {
        every_layer_experts(c, &mut m)?;
        format!("a mixture of {experts} experts with Mixtral's field names (every layer MoE, experts intermediate_size wide)")
    } else {
        qwen_experts(c, &mut m, c.opt("intermediate_size"))?;
        format!("a mixture of {experts} experts with Qwen-MoE's field names")
    };
    Ok(Some((m, what)))
}

/// [`standard_names`]' dense decoder (LlamaConfig's names; a plain MLP for the
/// [`PLAIN_ACTIVATIONS`]) and what was assumed.
fn standard_dense(c: &Fields, mt: &str) -> Result<(ModelFile, String)> {
    if c.opt("kv_lora_rank").is_some() {
        bail!("it sets 'kv_lora_rank' (latent attention) without DeepSeek's expert fields");
    }
    let act = c.v["hidden_act"].as_str().unwrap_or("silu");
    let (arch, mlp) = if PLAIN_ACTIVATIONS.contains(&act) { ("gpt", "plain") } else { ("llama", "gated") };
    let m = llama_named(c, mt, arch, Some("intermediate_size"))?;
    Ok((m, format!("a decoder with a {mlp} MLP (hidden_act {act}) and grouped-query attention")))
}

/// Whether a config's `architectures` (at its top level, where a multimodal wrapper keeps them)
/// name a causal language model: `...ForCausalLM`, `...LMHeadModel`, or a wrapper's
/// `...ForConditionalGeneration` around a text model.
fn is_causal_lm(top: &Value) -> bool {
    let wrapped = top.get("text_config").is_some_and(Value::is_object);
    top["architectures"].as_array().is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|n| {
            n.ends_with("ForCausalLM")
                || n.ends_with("LMHeadModel")
                || (wrapped && n.ends_with("ForConditionalGeneration"))
        })
    })
}

/// The first field set (not null, false, 0 or empty) whose name holds a [`NONSTANDARD_FIELDS`]
/// substring, or a `layer_types` entry other than full and sliding attention.
fn nonstandard_field(v: &Value) -> Option<String> {
    let set = |x: &Value| match x {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    };
    let obj = v.as_object()?;
    if let Some(types) = obj.get("layer_types").and_then(Value::as_array) {
        let other =
            types.iter().filter_map(Value::as_str).find(|t| !matches!(*t, "full_attention" | "sliding_attention"));
        if let Some(t) = other {
            return Some(format!("layer_types' \"{t}\""));
        }
    }
    obj.iter().find(|(k, x)| NONSTANDARD_FIELDS.iter().any(|s| k.contains(s)) && set(x)).map(|(k, _)| k.clone())
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

    /// A field that may be one value or a list of one value a layer (Hunyuan's `moe_topk`,
    /// `num_shared_expert`, `moe_intermediate_size`): the value, or `None` where absent; a list
    /// whose entries differ is refused, since the planner prices every MoE layer alike.
    fn per_layer(&self, key: &str) -> Result<Option<usize>> {
        let Some(list) = self.v[key].as_array() else {
            return Ok(self.opt(key));
        };
        let values: Vec<u64> = list.iter().filter_map(Value::as_u64).collect();
        match values.first() {
            Some(&v) if values.len() == list.len() && values.iter().all(|&x| x == v) => Ok(Some(v as usize)),
            _ => bail!(
                "config.json: {key} differs between layers ({}), which the planner cannot price from config.json; write a TOML model file",
                Value::Array(list.clone())
            ),
        }
    }

    fn req(&self, key: &str) -> Result<usize> {
        self.opt(key).ok_or_else(|| match &self.v[key] {
            Value::Null => anyhow!("config.json has no integer '{key}', which the planner needs"),
            other => anyhow!("config.json '{key}' is {other}, not the whole non-negative number the planner needs"),
        })
    }

    fn first(&self, keys: &[&str]) -> Result<usize> {
        if let [key] = keys {
            return self.req(key);
        }
        keys.iter()
            .find_map(|k| self.opt(k))
            .ok_or_else(|| anyhow!("config.json has none of {}, which the planner needs", keys.join(" / ")))
    }

    /// A list of layer indices (`attn_layer_indices`, `mlp_only_layers`); empty where absent.
    fn indices(&self, key: &str) -> Vec<usize> {
        self.v[key].as_array().map_or(vec![], |a| a.iter().filter_map(Value::as_u64).map(|i| i as usize).collect())
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.v[key].as_bool()
    }

    /// A nested object's fields (MPT's and DBRX's `attn_config`, `ffn_config`); none where absent.
    fn sub(&self, key: &str) -> Fields<'_> {
        Fields { v: &self.v[key] }
    }
}

/// Where a family's config keeps the fields every model has (the first name present wins).
struct Names {
    vocab: &'static [&'static str],
    d_model: &'static [&'static str],
    layers: &'static [&'static str],
    heads: &'static [&'static str],
    ctx: &'static [&'static str],
}

/// transformers' usual names (LlamaConfig's, and most families' since).
const LLAMA_NAMES: Names = Names {
    vocab: &["vocab_size"],
    d_model: &["hidden_size"],
    layers: &["num_hidden_layers"],
    heads: &["num_attention_heads"],
    ctx: &["max_position_embeddings"],
};

/// GPT-2's names, kept by GPT-J and GPT-BigCode.
const GPT2_NAMES: Names = Names {
    vocab: &["vocab_size"],
    d_model: &["n_embd"],
    layers: &["n_layer"],
    heads: &["n_head"],
    ctx: &["n_positions"],
};

/// MPT's names, kept by DBRX.
const MPT_NAMES: Names = Names {
    vocab: &["vocab_size"],
    d_model: &["d_model"],
    layers: &["n_layers"],
    heads: &["n_heads"],
    ctx: &["max_seq_len"],
};

/// The fields every family has, read under `names`, as architecture `arch`; the head tied as the
/// file says or else as `mt`'s config class defaults.
fn common(c: &Fields, mt: &str, arch: &str, names: &Names) -> Result<ModelFile> {
    Ok(ModelFile {
        arch: arch.into(),
        vocab: c.first(names.vocab)?,
        ctx: names.ctx.iter().find_map(|k| c.opt(k)),
        layers: c.first(names.layers)?,
        heads: c.first(names.heads)?,
        d_model: c.first(names.d_model)?,
        tied: Some(c.flag("tie_word_embeddings").unwrap_or(TIED_BY_DEFAULT.contains(&mt))),
        ..Default::default()
    })
}

/// GPT-2's field names: GPT-2, GPT-J and GPT-BigCode (StarCoder, SantaCoder), a plain MLP of
/// `n_inner` (4 x `n_embd` when null). GPT-BigCode's `multi_query` (its default) is one shared
/// key/value head.
fn gpt2_named(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = common(c, mt, "gpt", &GPT2_NAMES)?;
    m.d_ff = c.opt("n_inner");
    if mt == "gpt_bigcode" && c.flag("multi_query").unwrap_or(true) {
        m.kv_heads = Some(1);
    }
    Ok(m)
}

/// Falcon (7B, 40B, 180B): a plain GELU MLP of `ffn_hidden_size` (4 x hidden when absent), one
/// shared key/value head under `multi_query` (the default), `num_kv_heads` groups in the new
/// decoder architecture (40B, 180B). FalconConfig reads `n_embed` before `hidden_size`, maps
/// `n_layer`/`n_head` (RefinedWeb-era files) and defaults to 2,048 positions.
fn falcon(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names {
        vocab: &["vocab_size"],
        d_model: &["n_embed", "hidden_size"],
        layers: &["num_hidden_layers", "n_layer"],
        heads: &["num_attention_heads", "n_head"],
        ctx: &["max_position_embeddings"],
    };
    let mut m = common(c, mt, "gpt", &NAMES)?;
    m.ctx = m.ctx.or(Some(2048));
    m.d_ff = c.opt("ffn_hidden_size");
    m.kv_heads = if c.flag("new_decoder_architecture") == Some(true) {
        Some(c.first(&["num_kv_heads", "n_head_kv"]).unwrap_or(m.heads))
    } else if c.flag("multi_query").unwrap_or(true) {
        Some(1)
    } else {
        None
    };
    Ok(m)
}

/// Nemotron-H and Nemotron 3 (NemotronHConfig): a hybrid of Mamba-2 mixers, attention, squared-ReLU
/// MLPs and experts, one per layer, named by `hybrid_override_pattern` (M, *, -, E) or, in later
/// files, `layers_block_type` (`mamba`, `attention`, `mlp`, `moe`); dense MLPs `intermediate_size`
/// wide, experts `moe_intermediate_size` with `n_shared_experts` of
/// `moe_shared_expert_intermediate_size`.
fn nemotron_h(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = llama_named(c, mt, "hybrid", None)?;
    const KINDS: &[(&str, char)] =
        &[("mamba", 'M'), ("attention", '*'), ("full_attention", '*'), ("mlp", '-'), ("moe", 'E')];
    let pattern = match (&c.v["hybrid_override_pattern"], layer_list(c, "layers_block_type", mt, KINDS, m.layers)?) {
        (Value::String(p), _) => p.clone(),
        (_, Some(kinds)) => kinds.into_iter().collect(),
        _ => bail!(
            "config.json has neither hybrid_override_pattern nor layers_block_type, which a nemotron_h model needs"
        ),
    };
    m.gated = Some(c.v["mlp_hidden_act"].as_str().is_some_and(|a| a != "relu2"));
    if pattern.contains('M') {
        m.mamba_heads = Some(c.req("mamba_num_heads")?);
        m.mamba_head_dim = Some(c.req("mamba_head_dim")?);
        m.mamba_state = Some(c.req("ssm_state_size")?);
        m.mamba_groups = Some(c.req("n_groups")?);
    }
    if pattern.contains('E') {
        m.experts = Some(c.req("n_routed_experts")?);
        m.experts_per_token = Some(c.req("num_experts_per_tok")?);
        m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
        if let Some(s) = c.opt("moe_shared_expert_intermediate_size").filter(|&s| s > 0) {
            m.shared_experts = Some(c.opt("n_shared_experts").unwrap_or(1));
            m.shared_expert_d_ff = Some(s);
        }
        m.moe_latent = c.opt("moe_latent_size").filter(|&l| l > 0);
    }
    // The config's multi-token prediction modules, one depth each (a recipe may run one module
    // for several depths: a model file's mtp_layers and mtp_repeated say so).
    m.mtp_layers = mtp_depths(c, "num_nextn_predict_layers");
    if pattern.contains('-') {
        m.d_ff = Some(c.req("intermediate_size")?);
    }
    m.pattern = Some(pattern);
    Ok(m)
}

/// A config's per-layer list `key` (`layer_types`, `layers_block_type`) read through `kinds`, each
/// name to what the planner makes of it; `None` where the config has no such list. A name outside
/// `kinds`, or a list that is not `layers` long, is refused in one line naming it.
fn layer_list<T: Copy>(c: &Fields, key: &str, mt: &str, kinds: &[(&str, T)], layers: usize) -> Result<Option<Vec<T>>> {
    let Some(list) = c.v[key].as_array() else {
        return Ok(None);
    };
    let read = list
        .iter()
        .map(|k| {
            let name = k.as_str();
            kinds.iter().find(|(n, _)| Some(*n) == name).map(|&(_, t)| t).ok_or_else(|| {
                let names: Vec<&str> = kinds.iter().map(|(n, _)| *n).collect();
                anyhow!("config.json: {key} has {name:?}; a {mt} layer is one of {}", names.join(", "))
            })
        })
        .collect::<Result<Vec<T>>>()?;
    if read.len() != layers {
        bail!("config.json: {key} lists {} layers, num_hidden_layers says {layers}", read.len());
    }
    Ok(Some(read))
}

/// The Mamba-2 widths of IBM's and TII's configs (BambaConfig, GraniteMoeHybridConfig,
/// FalconH1Config) for `heads` heads: the mixer `mamba_d_ssm` wide (else `mamba_expand` (2) x
/// hidden), each head `mamba_d_head` (else the mixer over the heads: the classes' "auto"), state
/// `mamba_d_state` (256), groups `mamba_n_groups` (1). Heads that do not fill the mixer are
/// refused, as the config classes refuse them.
fn mamba2_widths(c: &Fields, m: &mut ModelFile, heads: usize) -> Result<()> {
    let inner = c.opt("mamba_d_ssm").unwrap_or(c.opt("mamba_expand").unwrap_or(2) * m.d_model);
    let head_dim = c.opt("mamba_d_head").unwrap_or(inner / heads.max(1));
    if heads * head_dim != inner {
        bail!(
            "config.json: mamba_n_heads {heads} x mamba_d_head {head_dim} does not fill the mixer's mamba_d_ssm {inner} (mamba_expand x hidden_size where absent)"
        );
    }
    m.mamba_heads = Some(heads);
    m.mamba_head_dim = Some(head_dim);
    m.mamba_state = Some(c.opt("mamba_d_state").unwrap_or(256));
    m.mamba_groups = Some(c.opt("mamba_n_groups").unwrap_or(1));
    Ok(())
}

/// IBM's Granite 4.0 hybrids (GraniteMoeHybridConfig) and Bamba (BambaConfig): every layer a
/// mixer, Mamba-2 or attention, then a SwiGLU feed-forward block, written here as two blocks of
/// the planner's pattern. Granite names its mixers in `layer_types` (`mamba` or `attention`; all
/// Mamba-2 when absent, as its `layers_block_type` property reads) and its feed-forward block is
/// experts of `intermediate_size` with a shared one of `shared_intermediate_size`, or only that
/// shared MLP where `num_local_experts` is 0; Bamba lists its attention layers in
/// `attn_layer_indices` and has a dense MLP of `intermediate_size`. The Mamba-2 widths as
/// [`mamba2_widths`] reads them, `mamba_n_heads` 128 by default.
fn granite_hybrid(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = llama_named(c, mt, "hybrid", None)?;
    let layers = m.layers;
    const KINDS: &[(&str, bool)] = &[("mamba", false), ("attention", true)];
    let attention: Vec<bool> = if mt == "bamba" {
        let idx = c.indices("attn_layer_indices");
        (0..layers).map(|i| idx.contains(&i)).collect()
    } else {
        match layer_list(c, "layer_types", mt, KINDS, layers)? {
            Some(kinds) => kinds,
            None => layer_list(c, "layers_block_type", mt, KINDS, layers)?.unwrap_or(vec![false; layers]),
        }
    };
    let experts = if mt == "bamba" { 0 } else { c.opt("num_local_experts").unwrap_or(8) };
    let ffn = if experts > 0 { 'E' } else { '-' };
    m.pattern = Some(attention.iter().flat_map(|&a| [if a { '*' } else { 'M' }, ffn]).collect());
    m.layers = 2 * layers;
    m.gated = Some(true);
    if attention.contains(&false) {
        mamba2_widths(c, &mut m, c.opt("mamba_n_heads").unwrap_or(128))?;
    }
    let shared = c.opt("shared_intermediate_size").unwrap_or(1024);
    if mt == "bamba" {
        m.d_ff = Some(c.req("intermediate_size")?);
    } else if experts > 0 {
        m.experts = Some(experts);
        m.experts_per_token = Some(c.opt("num_experts_per_tok").unwrap_or(2));
        m.expert_d_ff = Some(c.req("intermediate_size")?);
        m.shared_experts = Some(1);
        m.shared_expert_d_ff = Some(shared);
    } else {
        m.d_ff = Some(shared);
    }
    Ok(m)
}

/// Falcon-H1 (FalconH1Config): every layer runs attention and a Mamba-2 mixer side by side on
/// the same input, then a SwiGLU MLP of `intermediate_size`; priced as three blocks (`*M-`), the
/// same matmuls and kernels as run in parallel; the Mamba-2 widths as [`mamba2_widths`] reads
/// them, `mamba_n_heads` required.
fn falcon_h1(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = llama_named(c, mt, "hybrid", Some("intermediate_size"))?;
    let layers = m.layers;
    mamba2_widths(c, &mut m, c.req("mamba_n_heads")?)?;
    m.pattern = Some("*M-".repeat(layers));
    m.layers = 3 * layers;
    m.gated = Some(true);
    Ok(m)
}

/// The hybrid pattern of a delta-rule model (Qwen3-Next's Gated DeltaNet, Kimi Linear's KDA): per
/// layer its mixer, `*` attention where `attention[i]` else `G` (a gated delta rule), then `E`
/// experts where `moe(i)` else `-` a dense MLP.
fn delta_attention_pattern(attention: &[bool], moe: impl Fn(usize) -> bool) -> String {
    attention
        .iter()
        .enumerate()
        .flat_map(|(i, &a)| [if a { '*' } else { 'G' }, if moe(i) { 'E' } else { '-' }])
        .collect()
}

/// Qwen3-Next and Qwen3.5 (Qwen3NextConfig, Qwen3_5TextConfig, Qwen3_5MoeTextConfig): every
/// layer a mixer, Gated DeltaNet (`linear_attention`) or attention with a sigmoid output gate
/// (`full_attention`), named in `layer_types` or else every `full_attention_interval`-th (4) layer
/// attention; then experts (`num_experts` of `moe_intermediate_size`, a shared one of
/// `shared_expert_intermediate_size`, on the layers `decoder_sparse_step` and `mlp_only_layers`
/// leave them) or a dense SwiGLU MLP of `intermediate_size`. The Gated DeltaNet widths are the
/// `linear_*` fields; `mtp_num_hidden_layers` multi-token prediction modules.
fn qwen3_next(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = llama_named(c, mt, "hybrid", None)?;
    let layers = m.layers;
    const KINDS: &[(&str, bool)] = &[("linear_attention", false), ("full_attention", true)];
    let attention = match layer_list(c, "layer_types", mt, KINDS, layers)? {
        Some(kinds) => kinds,
        None => {
            let every = c.opt("full_attention_interval").unwrap_or(4).max(1);
            (0..layers).map(|i| (i + 1) % every == 0).collect()
        }
    };
    let experts = c.opt("num_experts").unwrap_or(0);
    let step = c.opt("decoder_sparse_step").unwrap_or(1).max(1);
    let dense_only = c.indices("mlp_only_layers");
    let pattern =
        delta_attention_pattern(&attention, |i| experts > 0 && !dense_only.contains(&i) && (i + 1) % step == 0);
    if pattern.contains('-') {
        m.d_ff = Some(c.req("intermediate_size")?);
    }
    if pattern.contains('E') {
        m.experts = Some(experts);
        m.experts_per_token = Some(c.req("num_experts_per_tok")?);
        m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
        if let Some(s) = c.opt("shared_expert_intermediate_size").filter(|&s| s > 0) {
            m.shared_experts = Some(1);
            m.shared_expert_d_ff = Some(s);
        }
    }
    if pattern.contains('G') {
        m.gdn_key_heads = Some(c.req("linear_num_key_heads")?);
        m.gdn_value_heads = Some(c.req("linear_num_value_heads")?);
        m.gdn_key_head_dim = Some(c.req("linear_key_head_dim")?);
        m.gdn_value_head_dim = Some(c.req("linear_value_head_dim")?);
    }
    m.attn_output_gate = Some(c.flag("attn_output_gate").unwrap_or(true));
    m.mtp_layers = mtp_depths(c, "mtp_num_hidden_layers");
    m.pattern = Some(pattern);
    m.layers = 2 * layers;
    m.gated = Some(true);
    Ok(m)
}

/// BLOOM: a plain GELU MLP of 4 x hidden, ALiBi positions (no length in the config). BloomConfig
/// reads `n_embed` before `hidden_size` and maps `num_hidden_layers`/`num_attention_heads` onto
/// `n_layer`/`n_head`.
fn bloom(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names {
        vocab: &["vocab_size"],
        d_model: &["n_embed", "hidden_size"],
        layers: &["n_layer", "num_hidden_layers"],
        heads: &["n_head", "num_attention_heads"],
        ctx: &[],
    };
    common(c, mt, "gpt", &NAMES)
}

/// OPT: llama-style names with a plain ReLU MLP of `ffn_dim`. OPT-350m's embedding is narrower
/// than the blocks (`word_embed_proj_dim`, projected in and out), which the planner cannot price.
fn opt(c: &Fields, mt: &str) -> Result<ModelFile> {
    let m = llama_named(c, mt, "gpt", Some("ffn_dim"))?;
    if let Some(p) = c.opt("word_embed_proj_dim").filter(|&p| p != m.d_model) {
        bail!(
            "config.json: word_embed_proj_dim {p} differs from hidden_size {} (an embedding projected in and out of the blocks), which the planner cannot price; approximate the model in a TOML model file",
            m.d_model
        );
    }
    Ok(m)
}

/// MPT's and DBRX's names, with `attn_config.kv_n_heads` where the config groups key/value heads.
fn mpt_named(c: &Fields, mt: &str, arch: &str) -> Result<ModelFile> {
    let mut m = common(c, mt, arch, &MPT_NAMES)?;
    m.kv_heads = c.sub("attn_config").opt("kv_n_heads");
    Ok(m)
}

/// MPT: a plain GELU MLP `expansion_ratio` (4 by default) times `d_model` wide.
fn mpt(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = mpt_named(c, mt, "gpt")?;
    let ratio = c.v["expansion_ratio"].as_f64().unwrap_or(4.0);
    m.d_ff = Some((ratio * m.d_model as f64).round() as usize);
    Ok(m)
}

/// DBRX: every layer a mixture of GLU experts (`ffn_config`), grouped key/value heads; defaults
/// those of DbrxAttentionConfig and DbrxFFNConfig.
fn dbrx(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = mpt_named(c, mt, "moe")?;
    m.kv_heads = m.kv_heads.or(Some(1));
    let ffn = c.sub("ffn_config");
    m.experts = Some(ffn.opt("moe_num_experts").unwrap_or(4));
    m.experts_per_token = Some(ffn.opt("moe_top_k").unwrap_or(1));
    m.expert_d_ff = Some(ffn.opt("ffn_hidden_size").unwrap_or(3584));
    Ok(m)
}

/// ChatGLM2, ChatGLM3 and GLM-4 (THUDM's remote-code ChatGLMConfig, model_type `chatglm`):
/// `num_layers` layers, `padded_vocab_size` tokens, `seq_length` positions, a SwiGLU MLP
/// `ffn_hidden_size` wide, heads `kv_channels` wide (128, the class's default, where absent), and
/// `multi_query_group_num` key/value heads when `multi_query_attention` is set, every head its own
/// otherwise, as modeling_chatglm.py's SelfAttention sizes its fused query/key/value projection.
/// The head (`output_layer`) is untied unless the file says otherwise. ChatGLM-6B (v1) shares the
/// model_type but not the layout (a GELU MLP of `inner_hidden_size`) and is refused.
fn chatglm(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names {
        vocab: &["padded_vocab_size", "vocab_size"],
        d_model: &["hidden_size"],
        layers: &["num_layers", "num_hidden_layers"],
        heads: &["num_attention_heads"],
        ctx: &["seq_length"],
    };
    if c.opt("ffn_hidden_size").is_none() && c.opt("inner_hidden_size").is_some() {
        bail!(
            "config.json is ChatGLM-6B's (v1: a GELU MLP of inner_hidden_size), which the planner does not read; describe the model in a TOML model file"
        );
    }
    let mut m = common(c, mt, "llama", &NAMES)?;
    m.d_ff = Some(c.req("ffn_hidden_size")?);
    m.head_dim = Some(c.opt("kv_channels").unwrap_or(128));
    if c.flag("multi_query_attention") == Some(true) {
        m.kv_heads = Some(c.opt("multi_query_group_num").unwrap_or(1));
    }
    Ok(m)
}

/// Qwen-1 (Qwen's remote-code QWenConfig, model_type `qwen`): llama's names (the first releases'
/// `n_embd`, `n_layer`, `n_head` and `ffn_hidden_size` too), heads `kv_channels` wide, every head
/// its own keys and values, `seq_length` positions (else `max_position_embeddings`). Its
/// `intermediate_size` counts both halves of the SwiGLU MLP: modeling_qwen.py's QWenMLP builds
/// `w1` and `w2` each `intermediate_size // 2` wide and `c_proj` back from that width.
fn qwen(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names {
        vocab: &["vocab_size", "padded_vocab_size"],
        d_model: &["hidden_size", "n_embd"],
        layers: &["num_hidden_layers", "n_layer"],
        heads: &["num_attention_heads", "n_head"],
        ctx: &["seq_length", "max_position_embeddings", "n_positions"],
    };
    let mut m = common(c, mt, "llama", &NAMES)?;
    m.d_ff = Some(c.first(&["intermediate_size", "ffn_hidden_size"])? / 2);
    m.head_dim = c.opt("kv_channels");
    Ok(m)
}

/// Baichuan and Baichuan 2 (Baichuan's remote-code BaiChuanConfig / BaichuanConfig): llama's
/// names with every head its own keys and values (no `num_key_value_heads`) and a SwiGLU MLP of
/// `intermediate_size`; the 13B models (ALiBi) give their length only as `model_max_length`.
fn baichuan(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names { ctx: &["max_position_embeddings", "model_max_length"], ..LLAMA_NAMES };
    named(c, mt, "llama", &NAMES, Some("intermediate_size"))
}

/// EXAONE 3.0 and 3.5 (LG's remote-code ExaoneConfig): llama-style, but its layers are
/// `num_layers` (`num_hidden_layers` is only the class's alias); a SwiGLU MLP of
/// `intermediate_size` (4 x hidden where absent) and a head tied unless the file says otherwise,
/// as the class defaults.
fn exaone(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names { layers: &["num_layers", "num_hidden_layers"], ..LLAMA_NAMES };
    let mut m = named(c, mt, "llama", &NAMES, None)?;
    m.d_ff = Some(c.opt("intermediate_size").unwrap_or(4 * m.d_model));
    Ok(m)
}

/// Hunyuan's mixtures of experts: transformers' HunYuanMoEV1Config (`hunyuan_v1_moe`) and
/// Tencent's remote-code HunYuanConfig (`hunyuan`, which Hunyuan-A13B's first release carries).
/// Llama's names, heads `head_dim` (else `attention_head_dim`) wide; `num_experts` experts of
/// `moe_intermediate_size` (else `intermediate_size`), `moe_topk` of them a token, and, where
/// `use_mixed_mlp_moe` is set, one shared MLP `num_shared_expert` x `intermediate_size` wide, as
/// the remote code's HunYuanMLP and vLLM's HunYuanSparseMoeBlock size it. The expert fields may
/// be lists with one entry a layer; lists whose entries differ are refused ([`Fields::per_layer`]).
/// One expert (`num_experts` 1, a dense remote-code Hunyuan) reads as a SwiGLU MLP of
/// `intermediate_size`. Cross-layer attention (`use_cla`, Hunyuan-Large: keys and values shared
/// by `cla_share_factor` layers) is refused.
fn hunyuan(c: &Fields, mt: &str) -> Result<ModelFile> {
    if c.flag("use_cla") == Some(true) {
        bail!(
            "config.json: use_cla (keys and values shared across cla_share_factor layers, Hunyuan-Large) cannot be planned from config.json; write a TOML model file"
        );
    }
    let experts = c.per_layer("num_experts")?.unwrap_or(1);
    let mut m = llama_named(c, mt, if experts > 1 { "moe" } else { "llama" }, None)?;
    m.head_dim = m.head_dim.or(c.opt("attention_head_dim"));
    let width = c.req("intermediate_size")?;
    if experts <= 1 {
        m.d_ff = Some(width);
        return Ok(m);
    }
    m.experts = Some(experts);
    m.experts_per_token = Some(c.per_layer("moe_topk")?.unwrap_or(1));
    m.expert_d_ff = Some(c.per_layer("moe_intermediate_size")?.unwrap_or(width));
    let mixed = &c.v["use_mixed_mlp_moe"];
    if mixed.as_bool().or(mixed.as_u64().map(|x| x > 0)) == Some(true) {
        m.shared_experts = Some(1);
        m.shared_expert_d_ff = Some(c.per_layer("num_shared_expert")?.unwrap_or(1) * width);
    }
    Ok(m)
}

/// Xiaomi's MiMo-7B (the remote-code MiMoConfig, a Qwen2Config with `num_nextn_predict_layers`):
/// a Qwen2 decoder (SwiGLU MLP of `intermediate_size`, grouped key/value heads) and
/// `num_nextn_predict_layers` multi-token prediction modules, each an attention and a dense MLP
/// block of the decoder's widths and a 2h -> h projection (modeling_mimo.py's MiMoMTPLayers), one
/// depth each. A `mimo` config with experts is not MiMo-7B's layout and is refused.
fn mimo(c: &Fields, mt: &str) -> Result<ModelFile> {
    if let Some(e) =
        ["n_routed_experts", "num_experts", "num_local_experts"].iter().find(|k| c.opt(k).is_some_and(|n| n > 0))
    {
        bail!(
            "config.json: a mimo config with experts ({e}) is not MiMo-7B's dense layout, which is all the planner reads as mimo; write a TOML model file"
        );
    }
    let mut m = llama_named(c, mt, "llama", Some("intermediate_size"))?;
    m.mtp_layers = mtp_depths(c, "num_nextn_predict_layers");
    Ok(m)
}

/// transformers' usual names with the key/value heads, head width and sliding window of
/// llama-style configs, as `arch`; the dense MLP `d_ff` wide (none for `moe`, whose caller reads
/// the experts).
fn llama_named(c: &Fields, mt: &str, arch: &str, d_ff: Option<&str>) -> Result<ModelFile> {
    named(c, mt, arch, &LLAMA_NAMES, d_ff)
}

/// [`llama_named`] with a family's own `names` for the common fields.
fn named(c: &Fields, mt: &str, arch: &str, names: &Names, d_ff: Option<&str>) -> Result<ModelFile> {
    let mut m = common(c, mt, arch, names)?;
    m.kv_heads = c.opt("num_key_value_heads");
    m.head_dim = c.opt("head_dim");
    m.d_ff = d_ff.map(|k| c.req(k)).transpose()?;
    (m.sliding_window, m.sliding_fraction) = window(c);
    Ok(m)
}

/// The sliding window and the share of layers using it: from `layer_types` where the config
/// lists them (transformers >= 4.53), else Gemma 2's alternation, `sliding_window_pattern` (Gemma
/// 3's and Cohere 2's integer n: all layers but every n-th; EXAONE 4.0's string of `L` local and
/// `G` global layers, "LLLG"), or a window on every layer where one is set and not switched off
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
    let pattern = &c.v["sliding_window_pattern"];
    let frac = match (c.v["model_type"].as_str(), pattern.as_u64(), pattern.as_str()) {
        (Some("gemma2"), _, _) => 0.5,
        (_, Some(p), _) if p > 0 => (p - 1) as f64 / p as f64,
        (_, _, Some(p)) if !p.is_empty() => p.chars().filter(|&l| l == 'L').count() as f64 / p.chars().count() as f64,
        _ => 1.0,
    };
    if frac == 0.0 {
        return (None, None);
    }
    (Some(w), Some(frac))
}

/// A mixture-of-experts config: llama-style (or latent) attention plus each family's expert fields.
fn experts(c: &Fields, mt: &str) -> Result<ModelFile> {
    let mut m = llama_named(c, mt, "moe", None)?;
    let dense_ff = c.opt("intermediate_size");
    match mt {
        "mixtral" | "phimoe" | "granitemoe" | "granitemoeshared" | "olmoe" | "minimax_m2" => {
            every_layer_experts(c, &mut m)?
        }
        "qwen2_moe" | "qwen3_moe" | "qwen3_vl_moe_text" => qwen_experts(c, &mut m, dense_ff)?,
        "deepseek" | "deepseek_v2" | "deepseek_v3" | "deepseek_v32" | "kimi_k2" | "glm4_moe" | "glm4v_moe"
        | "glm4v_moe_text" | "dots1" => deepseek_experts(c, &mut m, mt, dense_ff)?,
        "gpt_oss" => gpt_oss_experts(c, &mut m)?,
        "bailing_moe" | "bailing_moe_v2" => ling_experts(c, &mut m, dense_ff)?,
        "ernie4_5_moe" => ernie_experts(c, &mut m, dense_ff)?,
        _ => llama4_experts(c, &mut m)?,
    }
    Ok(m)
}

/// Mixtral, PhiMoE, Granite MoE, OLMoE and MiniMax-M2: every layer MoE, the experts
/// `intermediate_size` wide (Granite's shared expert, when present, `shared_intermediate_size`).
fn every_layer_experts(c: &Fields, m: &mut ModelFile) -> Result<()> {
    m.experts = Some(c.first(&["num_local_experts", "num_experts"])?);
    m.experts_per_token = Some(c.req("num_experts_per_tok")?);
    m.expert_d_ff = Some(c.req("intermediate_size")?);
    one_shared_expert(c, m, "shared_intermediate_size");
    Ok(())
}

/// Qwen2-MoE, Qwen3-MoE and Qwen3-VL's MoE language model: routed experts of
/// `moe_intermediate_size`, Qwen2-MoE's shared expert, every `decoder_sparse_step`-th layer MoE.
fn qwen_experts(c: &Fields, m: &mut ModelFile, dense_ff: Option<usize>) -> Result<()> {
    m.experts = Some(c.req("num_experts")?);
    m.experts_per_token = Some(c.req("num_experts_per_tok")?);
    m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
    one_shared_expert(c, m, "shared_expert_intermediate_size");
    if !c.indices("mlp_only_layers").is_empty() {
        bail!("config.json: mlp_only_layers (dense layers at chosen indices) cannot be planned from config.json; write a TOML model file with dense_layers / moe_every");
    }
    let every = c.opt("decoder_sparse_step").unwrap_or(1);
    if every > 1 {
        m.moe_every = Some(every);
        m.d_ff = dense_ff;
    }
    Ok(())
}

/// DeepSeek's field names; DeepSeek-MoE (`deepseek`), GLM-4.5, GLM-4.5V/4.6V's language model
/// (`glm4v_moe_text`, Glm4vMoeTextConfig: GLM-4.5-Air's fields) and dots.llm1 use them with
/// plain (not latent) attention. Their `num_nextn_predict_layers` is not read (the
/// deepseek-v3 preset is priced without its MTP module; docs/planner.md). DeepSeek-V3.2
/// (`deepseek_v32`) is DeepSeek-V3 with DeepSeek Sparse Attention ([`sparse_attention`]).
fn deepseek_experts(c: &Fields, m: &mut ModelFile, mt: &str, dense_ff: Option<usize>) -> Result<()> {
    m.experts = Some(c.req("n_routed_experts")?);
    m.experts_per_token = Some(c.req("num_experts_per_tok")?);
    m.expert_d_ff = Some(c.req("moe_intermediate_size")?);
    m.shared_experts = c.opt("n_shared_experts");
    if c.opt("moe_layer_freq").unwrap_or(1) != 1 {
        bail!("config.json: moe_layer_freq other than 1 cannot be planned from config.json; write a TOML model file");
    }
    first_dense_layers(c, m, dense_ff);
    latent(c, m)?;
    if mt == "deepseek_v32" {
        sparse_attention(c, m)?;
    }
    Ok(())
}

/// GPT-OSS: every layer MoE, the experts `intermediate_size` wide.
fn gpt_oss_experts(c: &Fields, m: &mut ModelFile) -> Result<()> {
    m.experts = Some(c.req("num_local_experts")?);
    m.experts_per_token = Some(c.first(&["num_experts_per_tok", "experts_per_token"])?);
    m.expert_d_ff = Some(c.req("intermediate_size")?);
    // The architecture's experts always carry biases (gate_up_proj_bias, down_proj_bias)
    // and clamp their gated activation at swiglu_limit.
    m.expert_bias = Some(true);
    m.activation_clamp = c.v["swiglu_limit"].as_f64().or(Some(7.0));
    Ok(())
}

/// Ant Group's Ling (BailingMoe v1 and v2; Ling 2.0's published files say `bailing_moe`,
/// Ant's BailingMoeV2Config `bailing_moe_v2`): shared experts of moe_intermediate_size each
/// unless v2 gives them their own width; first_k_dense_replace dense layers; v2's
/// num_nextn_predict_layers multi-token prediction modules (MoE layers, as
/// modeling_bailing_moe_v2.py's BailingMoeV2MTPLayer), kept after the num_hidden_layers
/// layers: the base checkpoints carry one, the chat ones none.
fn ling_experts(c: &Fields, m: &mut ModelFile, dense_ff: Option<usize>) -> Result<()> {
    m.experts = Some(c.req("num_experts")?);
    m.experts_per_token = Some(c.req("num_experts_per_tok")?);
    let width = c.req("moe_intermediate_size")?;
    m.expert_d_ff = Some(width);
    if let Some(s) = c.opt("num_shared_experts").filter(|&s| s > 0) {
        m.shared_experts = Some(s);
        m.shared_expert_d_ff = Some(c.opt("moe_shared_expert_intermediate_size").unwrap_or(width));
    }
    first_dense_layers(c, m, dense_ff);
    m.mtp_layers = mtp_depths(c, "num_nextn_predict_layers");
    Ok(())
}

/// ERNIE 4.5 MoE: routed and shared experts of `moe_intermediate_size`, MoE layers from
/// `moe_layer_start_index` every `moe_layer_interval`.
fn ernie_experts(c: &Fields, m: &mut ModelFile, dense_ff: Option<usize>) -> Result<()> {
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
    Ok(())
}

/// Llama 4: every interleave_moe_layer_step-th layer is MoE (routed experts of
/// intermediate_size plus one shared expert of the same width), the others dense of
/// intermediate_size_mlp.
fn llama4_experts(c: &Fields, m: &mut ModelFile) -> Result<()> {
    m.experts = Some(c.req("num_local_experts")?);
    m.experts_per_token = Some(c.req("num_experts_per_tok")?);
    m.expert_d_ff = Some(c.req("intermediate_size")?);
    m.shared_experts = Some(1);
    let every = c.opt("interleave_moe_layer_step").unwrap_or(1);
    if every > 1 {
        m.moe_every = Some(every);
        m.d_ff = Some(c.req("intermediate_size_mlp")?);
    }
    Ok(())
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

/// Multi-token prediction depths a config's `key` gives (`num_nextn_predict_layers`,
/// `mtp_num_hidden_layers`): none when absent or 0.
fn mtp_depths(c: &Fields, key: &str) -> Option<usize> {
    c.opt(key).filter(|&n| n > 0)
}

/// DeepSeek-V3.2's DeepSeek Sparse Attention (DeepseekV32Config: DeepseekV3Config plus
/// `index_n_heads` 64, `index_head_dim` 128, `index_topk` 2048, all required here): the lightning
/// indexer on every layer and each query's core attending its `index_topk` best keys
/// ([`crate::model::Dsa`]; DeepSeek-V3.2 report, arXiv 2512.02556, section 2.1;
/// deepseek-ai/DeepSeek-V3.2-Exp inference/model.py `Indexer`). Files that reuse one layer's
/// top-k in others (`index_topk_freq` above 1, as Megatron-Core's DSA allows for GLM-5) are
/// refused: the planner gives every layer its own indexer.
fn sparse_attention(c: &Fields, m: &mut ModelFile) -> Result<()> {
    if let Some(f) = c.opt("index_topk_freq").filter(|&f| f > 1) {
        bail!(
            "config.json: index_topk_freq {f} (layers reusing another layer's top-k indices) cannot be priced from config.json; write a TOML model file"
        );
    }
    m.index_heads = Some(c.req("index_n_heads")?);
    m.index_head_dim = Some(c.req("index_head_dim")?);
    m.index_topk = Some(c.req("index_topk")?);
    Ok(())
}

/// Moonshot's Kimi Linear (KimiLinearConfig, `kimi_linear`: Kimi-Linear-48B-A3B): every layer a
/// mixer, Kimi Delta Attention or multi-head latent attention, then experts or a dense MLP.
/// `linear_attn_config` lists the mixers by 1-based layer number (`kda_layers`,
/// `full_attn_layers`: 3 KDA to 1 MLA, the last layer MLA) and gives KDA's `num_heads` heads of
/// `head_dim` for queries, keys and values alike, which read as Gated DeltaNet layers (`G`) of
/// those widths with the low-rank gates of [`crate::model::Hybrid::kda_gate_rank`] (rank
/// `head_dim`); the MLA layers read as DeepSeek-V3's latent attention (`q_lora_rank` null: a
/// full-rank query; `mla_use_nope` drops the rotary embedding, not its widths). Layer i (from
/// 0) has experts when i >= `first_k_dense_replace` and i % `moe_layer_freq` == 0: `num_experts`
/// of `moe_intermediate_size`, `num_experts_per_token` a token and `num_shared_experts` shared
/// ones as one MLP of their summed width; the others a SwiGLU MLP of `intermediate_size`.
///
/// Sources: vLLM vllm/model_executor/models/kimi_linear.py at 01d9958 (KimiDecoderLayer, KimiMoE,
/// KimiMLAAttention) and vllm/model_executor/layers/kda.py at 01a7e5d (KimiDeltaAttention); the
/// Kimi Linear report (arXiv 2510.26692). What this reading cannot express is refused by name:
/// full-rank KDA gates (`use_full_rank_gate`), an output gate on the MLA layers
/// (`mla_use_output_gate`), routed experts on a width of their own (`routed_expert_hidden_size`)
/// and attention residual blocks (`attn_res_block_size`), fields of later Kimi configs.
fn kimi_linear(c: &Fields, mt: &str) -> Result<ModelFile> {
    const NAMES: Names = Names { ctx: &["max_position_embeddings", "model_max_length"], ..LLAMA_NAMES };
    let kda = c.sub("linear_attn_config");
    refuse_later_kimi_fields(c, &kda)?;
    let mut m = named(c, mt, "hybrid", &NAMES, None)?;
    let layers = m.layers;
    let attention = kimi_attention_layers(&kda, layers)?;
    let experts = c.opt("num_experts").unwrap_or(0);
    let (first_dense, every) =
        (c.opt("first_k_dense_replace").unwrap_or(0), c.opt("moe_layer_freq").unwrap_or(1).max(1));
    let pattern = delta_attention_pattern(&attention, |i| experts > 0 && i >= first_dense && i % every == 0);
    if pattern.contains('-') {
        m.d_ff = Some(c.req("intermediate_size")?);
    }
    if pattern.contains('E') {
        let width = c.req("moe_intermediate_size")?;
        m.experts = Some(experts);
        m.experts_per_token = Some(c.req("num_experts_per_token")?);
        m.expert_d_ff = Some(width);
        if let Some(s) = c.opt("num_shared_experts").filter(|&s| s > 0) {
            m.shared_experts = Some(1);
            m.shared_expert_d_ff = Some(s * width);
        }
    }
    if pattern.contains('G') {
        let (heads, width) = (kda.req("num_heads")?, kda.req("head_dim")?);
        m.gdn_key_heads = Some(heads);
        m.gdn_value_heads = Some(heads);
        m.gdn_key_head_dim = Some(width);
        m.gdn_value_head_dim = Some(width);
        m.kda_gate_rank = Some(width);
    }
    if pattern.contains('*') {
        latent(c, &mut m)?;
        if m.kv_lora_rank.is_none() {
            bail!("config.json: a kimi_linear full-attention layer needs kv_lora_rank (multi-head latent attention)");
        }
    }
    m.mtp_layers = mtp_depths(c, "num_nextn_predict_layers");
    m.pattern = Some(pattern);
    m.layers = 2 * layers;
    m.gated = Some(true);
    Ok(m)
}

/// The fields of later Kimi configs this reading cannot express, refused by name.
fn refuse_later_kimi_fields(c: &Fields, kda: &Fields) -> Result<()> {
    for key in ["mla_use_output_gate", "use_full_rank_gate"] {
        if c.flag(key) == Some(true) || kda.flag(key) == Some(true) {
            bail!("config.json: {key} is set, a Kimi layout the planner does not read (it reads Kimi-Linear-48B-A3B's low-rank KDA gates and ungated MLA); write a TOML model file");
        }
    }
    for key in ["routed_expert_hidden_size", "attn_res_block_size"] {
        if !c.v[key].is_null() {
            bail!("config.json: {key} is set, a Kimi layout the planner does not read (it reads Kimi-Linear-48B-A3B's); write a TOML model file");
        }
    }
    Ok(())
}

/// Which of `layers` layers are full (MLA) attention: `linear_attn_config`'s 1-based
/// `kda_layers` and `full_attn_layers`, each layer in exactly one list; no list at all: every
/// layer MLA.
fn kimi_attention_layers(kda: &Fields, layers: usize) -> Result<Vec<bool>> {
    let (kda_layers, full) = (kda.indices("kda_layers"), kda.indices("full_attn_layers"));
    let attention = (1..=layers)
        .map(|n| match (kda_layers.contains(&n), full.contains(&n) || kda_layers.is_empty()) {
            (true, false) => Ok(false),
            (false, true) => Ok(true),
            (true, true) => {
                bail!("config.json: linear_attn_config lists layer {n} as both a KDA and a full-attention layer")
            }
            (false, false) => {
                bail!("config.json: linear_attn_config lists layer {n} in neither kda_layers nor full_attn_layers")
            }
        })
        .collect::<Result<_>>()?;
    if let Some(n) = kda_layers.iter().chain(&full).find(|&&n| n == 0 || n > layers) {
        bail!(
            "config.json: linear_attn_config names layer {n}; its layers are numbered 1 to num_hidden_layers {layers}"
        );
    }
    Ok(attention)
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
