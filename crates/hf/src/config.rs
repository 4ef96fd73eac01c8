//! config.json <-> ModelConfig for the supported architectures.

use anychip_model_config::{Llama3RopeScaling, Mlp, ModelConfig, Norm, Positions};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::path::Path;

/// A supported Hugging Face architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Gpt2,
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Ernie45,
    Qwen3Moe,
    Ernie45Moe,
}

impl Arch {
    /// The `architectures[0]` string transformers writes.
    pub fn class(self) -> &'static str {
        match self {
            Arch::Gpt2 => "GPT2LMHeadModel",
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Ernie45 => "Ernie4_5ForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
            Arch::Ernie45Moe => "Ernie4_5_MoeForCausalLM",
        }
    }
    fn model_type(self) -> &'static str {
        match self {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Ernie45 => "ernie4_5",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::Ernie45Moe => "ernie4_5_moe",
        }
    }
    /// ERNIE 4.5's interleaved-RoPE q/k layout (dense and MoE).
    pub(crate) fn is_ernie(self) -> bool {
        matches!(self, Arch::Ernie45 | Arch::Ernie45Moe)
    }
    /// A mixture-of-experts architecture (see `moe.rs`).
    pub(crate) fn is_moe(self) -> bool {
        matches!(self, Arch::Qwen3Moe | Arch::Ernie45Moe)
    }
    /// The architecture an anychip model family exports as.
    pub fn for_family(family: &str) -> Result<Arch> {
        Ok(match family {
            "gpt2" => Arch::Gpt2,
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "ernie4_5" => Arch::Ernie45,
            "qwen3_moe" => Arch::Qwen3Moe,
            "ernie4_5_moe" => Arch::Ernie45Moe,
            f => bail!("model family '{f}' has no Hugging Face architecture to export as"),
        })
    }
}

const SUPPORTED: &str = "GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Ernie4_5ForCausalLM, Qwen3MoeForCausalLM, Ernie4_5_MoeForCausalLM";

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
}

/// Read `dir/config.json` into an architecture and a ModelConfig.
pub fn read_config(dir: &Path) -> Result<(Arch, ModelConfig)> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| anyhow!("cannot read {} ({e}); is this a Hugging Face model directory?", p.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON ({e})", p.display()))?;
    let arch = arch_of(&v, &p)?;
    let cfg = if arch == Arch::Gpt2 { gpt2_config(&v, &p)? } else { llama_config(arch, &v, &p)? };
    debug_assert!(cfg.norm == if arch == Arch::Gpt2 { Norm::LayerNorm } else { Norm::RmsNorm });
    debug_assert!(cfg.mlp == if arch == Arch::Gpt2 { Mlp::Gelu } else { Mlp::SwiGlu });
    debug_assert!(cfg.positions == if arch == Arch::Gpt2 { Positions::Learned } else { Positions::Rope });
    cfg.validate().map_err(|m| anyhow!("{}: {m}", p.display()))?;
    Ok((arch, cfg))
}

/// The architecture a config names (`architectures[0]`, else `model_type`), or the error listing
/// the supported ones.
fn arch_of(v: &Value, p: &Path) -> Result<Arch> {
    let class = v["architectures"].get(0).and_then(|a| a.as_str()).unwrap_or("");
    let mt = v["model_type"].as_str().unwrap_or("");
    Ok(match (class, mt) {
        ("GPT2LMHeadModel", _) | ("", "gpt2") => Arch::Gpt2,
        ("LlamaForCausalLM", _) | ("", "llama") => Arch::Llama,
        ("MistralForCausalLM", _) | ("", "mistral") => Arch::Mistral,
        ("Qwen2ForCausalLM", _) | ("", "qwen2") => Arch::Qwen2,
        ("Qwen3ForCausalLM", _) | ("", "qwen3") => Arch::Qwen3,
        ("Ernie4_5ForCausalLM", _) | ("", "ernie4_5") => Arch::Ernie45,
        ("Qwen3MoeForCausalLM", _) | ("", "qwen3_moe") => Arch::Qwen3Moe,
        ("Ernie4_5_MoeForCausalLM", _) | ("", "ernie4_5_moe") => Arch::Ernie45Moe,
        _ => bail!(
            "{}: architecture '{class}' (model_type '{mt}') is not supported; supported: {SUPPORTED}",
            p.display()
        ),
    })
}

/// A size the config must give, as a count.
fn need(v: &Value, p: &Path, k: &str) -> Result<usize> {
    num(v, k).map(|x| x as usize).ok_or_else(|| anyhow!("{}: missing '{k}'", p.display()))
}

/// GPT-2's fields (`n_embd`, `n_layer`, ...; the tanh GELU only).
fn gpt2_config(v: &Value, p: &Path) -> Result<ModelConfig> {
    let need = |k: &str| need(v, p, k);
    let d = need("n_embd")?;
    let mut c = ModelConfig::gpt2(need("vocab_size")?, need("n_positions")?, need("n_layer")?, need("n_head")?, d);
    c.d_ff = num(v, "n_inner").map(|x| x as usize).unwrap_or(4 * d);
    c.norm_eps = num(v, "layer_norm_epsilon").unwrap_or(1e-5) as f32;
    c.tied_embeddings = v["tie_word_embeddings"].as_bool().unwrap_or(true);
    let act = v["activation_function"].as_str().unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        bail!("{}: activation '{act}' is not supported (anychip's GPT-2 uses the tanh GELU, 'gelu_new')", p.display());
    }
    Ok(c)
}

/// The Llama family's fields (Llama, Mistral, Qwen2/3, ERNIE 4.5 and their MoE variants): RoPE
/// and its scaling, Mistral's window, Qwen's biases and norms, the experts; no other biases, SiLU
/// only.
fn llama_config(arch: Arch, v: &Value, p: &Path) -> Result<ModelConfig> {
    let need = |k: &str| need(v, p, k);
    let heads = need("num_attention_heads")?;
    let d = need("hidden_size")?;
    let mut c = ModelConfig::llama(
        need("vocab_size")?,
        need("max_position_embeddings")?,
        need("num_hidden_layers")?,
        heads,
        num(v, "num_key_value_heads").map(|x| x as usize).unwrap_or(heads),
        d,
        need("intermediate_size")?,
    );
    c.family = arch.model_type().into();
    c.head_dim = num(v, "head_dim").map(|x| x as usize).unwrap_or(d / heads);
    c.norm_eps = num(v, "rms_norm_eps").unwrap_or(1e-6) as f32;
    c.rope_theta = num(&v["rope_parameters"], "rope_theta").or_else(|| num(v, "rope_theta")).unwrap_or(10000.0) as f32;
    c.rope_scaling = rope_scaling(v, p)?;
    // Qwen2/Qwen3 configs carry a sliding_window that use_sliding_window = false switches off.
    let window = num(v, "sliding_window").filter(|_| v["use_sliding_window"].as_bool() != Some(false));
    if let Some(w) = window.map(|w| w as usize).filter(|&w| w < c.max_ctx) {
        // Mistral 7B v0.1: within its window, sliding-window attention is full causal
        // attention, so the model is exact up to `w` tokens and refused beyond.
        if arch != Arch::Mistral {
            bail!(
                "{}: sliding-window attention (sliding_window {w}) is not supported for this architecture",
                p.display()
            );
        }
        c.max_ctx = w;
    }
    c.tied_embeddings = v["tie_word_embeddings"].as_bool().unwrap_or(false);
    c.qkv_bias = arch == Arch::Qwen2;
    c.qk_norm = matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe);
    if arch.is_moe() {
        c.moe = Some(crate::moe::read(arch, v, c.n_layer, p)?);
    }
    let bias = v["attention_bias"].as_bool().unwrap_or(false)
        || v["use_bias"].as_bool().unwrap_or(false)
        || v["mlp_bias"].as_bool().unwrap_or(false);
    if bias {
        bail!(
            "{}: biases on attention output or MLP projections are not supported (attention_bias/use_bias/mlp_bias)",
            p.display()
        );
    }
    if !matches!(v["hidden_act"].as_str().unwrap_or("silu"), "silu") {
        bail!("{}: hidden_act must be silu for this architecture", p.display());
    }
    Ok(c)
}

/// The RoPE scaling of a config: `rope_parameters` (transformers 5) or `rope_scaling` (4.x), whose
/// `rope_type` (or `type`) is absent or "default" for plain RoPE; "llama3" is read, other kinds
/// (linear, dynamic, yarn, longrope) are refused by name.
fn rope_scaling(v: &Value, p: &Path) -> Result<Option<Llama3RopeScaling>> {
    let r = if v["rope_parameters"].is_object() { &v["rope_parameters"] } else { &v["rope_scaling"] };
    match r["rope_type"].as_str().or(r["type"].as_str()) {
        None | Some("default") => Ok(None),
        Some("llama3") => {
            let f = |k: &str| num(r, k).ok_or_else(|| anyhow!("{}: llama3 RoPE scaling without '{k}'", p.display()));
            Ok(Some(Llama3RopeScaling {
                factor: f("factor")? as f32,
                low_freq_factor: f("low_freq_factor")? as f32,
                high_freq_factor: f("high_freq_factor")? as f32,
                original_max_position_embeddings: f("original_max_position_embeddings")? as usize,
            }))
        }
        Some(rt) => bail!(
            "{}: rope_type '{rt}' is not supported; anychip reads default RoPE and Llama 3's 'llama3' scaling",
            p.display()
        ),
    }
}

/// The `rope_parameters` transformers reads for `c` (with the scaling, if any).
fn rope_parameters(c: &ModelConfig) -> Value {
    match &c.rope_scaling {
        None => json!({"rope_theta": c.rope_theta, "rope_type": "default"}),
        Some(r) => json!({
            "rope_theta": c.rope_theta, "rope_type": "llama3", "factor": r.factor,
            "low_freq_factor": r.low_freq_factor, "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_max_position_embeddings
        }),
    }
}

/// Write `dir/config.json` for `cfg` as architecture `arch`.
pub fn write_config(dir: &Path, arch: Arch, c: &ModelConfig) -> Result<()> {
    let v = if arch == Arch::Gpt2 {
        json!({
            "architectures": [arch.class()], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.max_ctx, "n_embd": c.d_model, "n_layer": c.n_layer, "n_head": c.n_head,
            "n_inner": c.d_ff, "activation_function": "gelu_new", "layer_norm_epsilon": c.norm_eps,
            "tie_word_embeddings": c.tied_embeddings, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "dtype": "float32"
        })
    } else {
        let mut v = json!({
            "architectures": [arch.class()], "model_type": arch.model_type(), "vocab_size": c.vocab_size,
            "hidden_size": c.d_model, "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "head_dim": c.head_dim,
            "max_position_embeddings": c.max_ctx, "rms_norm_eps": c.norm_eps, "hidden_act": "silu",
            "rope_theta": c.rope_theta, "rope_parameters": rope_parameters(c),
            "tie_word_embeddings": c.tied_embeddings, "attention_bias": false, "dtype": "float32"
        });
        if arch.is_ernie() {
            v["use_bias"] = json!(false);
        }
        if arch == Arch::Mistral {
            // The context limit is the model's: inside it the window never applies.
            v["sliding_window"] = Value::Null;
        }
        if c.rope_scaling.is_some() {
            // transformers 4.x reads the scaling from `rope_scaling`.
            v["rope_scaling"] = rope_parameters(c);
        }
        if let (true, Some(m)) = (arch.is_moe(), &c.moe) {
            crate::moe::write(arch, c, m, &mut v);
        }
        v
    };
    let p = dir.join("config.json");
    anychip_data::write_atomic(&p, serde_json::to_string_pretty(&v)?.as_bytes())
}
