//! Models the planner knows: the engine presets of `anychip-model-config` plus planner-only presets
//! (published architectures the engine need not build), and model files in TOML.

use anychip_model_config::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// Planner-only presets, one `[[model]]` table each, with the source of every architecture.
const PRESETS_TOML: &str = include_str!("../data/models.toml");

/// A model file (and one preset entry): the few numbers the planner needs; the rest is derived.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Preset name (optional in a user file; the file name is used instead).
    #[serde(default)]
    pub name: String,
    /// Where the numbers came from.
    #[serde(default)]
    pub source: String,
    /// `gpt` (LayerNorm, GELU MLP of 4h, learned positions) or `llama` (RMSNorm, SwiGLU, RoPE, GQA).
    pub arch: String,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context the model supports (defaults to 4096).
    #[serde(default)]
    pub ctx: Option<usize>,
    /// Transformer layers.
    pub layers: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads (GQA); defaults to `heads`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Hidden width.
    pub d_model: usize,
    /// Per-head width; defaults to d_model / heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP hidden width; defaults to 4 x d_model for `gpt`.
    #[serde(default)]
    pub d_ff: Option<usize>,
    /// Whether the LM head shares the embedding (default: true for gpt, false for llama).
    #[serde(default)]
    pub tied: Option<bool>,
}

impl ModelFile {
    /// Build the shared config, checking it.
    pub fn to_config(&self) -> Result<ModelConfig> {
        let ctx = self.ctx.unwrap_or(4096);
        let mut c = match self.arch.as_str() {
            "gpt" => {
                if self.heads == 0 {
                    bail!("model {}: heads must be positive", self.name);
                }
                let mut c = ModelConfig::gpt2(self.vocab, ctx, self.layers, self.heads, self.d_model);
                c.family = "gpt".into();
                c.d_ff = self.d_ff.unwrap_or(4 * self.d_model);
                c
            }
            "llama" => {
                let d_ff = self.d_ff.ok_or_else(|| {
                    anyhow!("model {}: a llama model needs d_ff (the SwiGLU hidden width)", self.name)
                })?;
                if self.heads == 0 {
                    bail!("model {}: heads must be positive", self.name);
                }
                ModelConfig::llama(
                    self.vocab,
                    ctx,
                    self.layers,
                    self.heads,
                    self.kv_heads.unwrap_or(self.heads),
                    self.d_model,
                    d_ff,
                )
            }
            other => bail!("model {}: arch must be \"gpt\" or \"llama\", got \"{other}\"", self.name),
        };
        if let Some(kv) = self.kv_heads {
            c.n_kv_head = kv;
        }
        if let Some(hd) = self.head_dim {
            c.head_dim = hd;
        }
        if let Some(t) = self.tied {
            c.tied_embeddings = t;
        }
        c.validate().map_err(|e| anyhow!("model {}: {e}", self.name))?;
        Ok(c)
    }
}

#[derive(Deserialize)]
struct PresetList {
    model: Vec<ModelFile>,
}

fn planner_presets() -> Vec<ModelFile> {
    let list: PresetList = toml::from_str(PRESETS_TOML).expect("data/models.toml is valid");
    list.model
}

/// A named model and its architecture.
#[derive(Clone, Debug)]
pub struct Model {
    /// Preset name or file name.
    pub name: String,
    /// The architecture.
    pub config: ModelConfig,
}

/// Every preset name the planner accepts (planner presets, then engine presets).
pub fn preset_names() -> Vec<String> {
    let mut v: Vec<String> = planner_presets().into_iter().map(|m| m.name).collect();
    for n in ModelConfig::preset_names() {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    }
    v
}

/// Resolve `--model`: a preset name, or a path to a TOML model file.
pub fn resolve(spec: &str) -> Result<Model> {
    let lower = spec.to_ascii_lowercase();
    if let Some(m) = planner_presets().into_iter().find(|m| m.name == lower) {
        return Ok(Model { name: m.name.clone(), config: m.to_config()? });
    }
    if let Some(c) = ModelConfig::preset(&lower) {
        return Ok(Model { name: lower, config: c });
    }
    let path = Path::new(spec);
    if spec.ends_with(".toml") || path.exists() {
        return load_file(path);
    }
    bail!("unknown model '{spec}'; presets: {} (or pass a TOML model file)", preset_names().join(", "))
}

/// Read a model file.
pub fn load_file(path: &Path) -> Result<Model> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let mut m: ModelFile = toml::from_str(&text)
        .map_err(|e| anyhow!("model file {}: {}", path.display(), crate::chips::one_line(&e.to_string())))?;
    if m.name.is_empty() {
        m.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    }
    let config = m.to_config().map_err(|e| anyhow!("model file {}: {e}", path.display()))?;
    Ok(Model { name: m.name, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_validates() {
        for n in preset_names() {
            let m = resolve(&n).unwrap();
            m.config.validate().unwrap();
        }
    }

    #[test]
    fn published_parameter_counts() {
        // (preset, published total parameters, tolerance)
        let cases = [
            ("gpt3-175b", 175e9, 0.01),
            ("llama2-7b", 6.74e9, 0.01),
            ("llama2-70b", 68.98e9, 0.01),
            ("llama3-8b", 8.03e9, 0.01),
            ("llama3-405b", 405.9e9, 0.01),
            ("qwen3-32b", 32.8e9, 0.01),
        ];
        for (n, want, tol) in cases {
            let got = resolve(n).unwrap().config.n_params() as f64;
            assert!((got / want - 1.0).abs() < tol, "{n}: {got:.4e} vs {want:.4e}");
        }
    }
}
