//! Everything that defines a training run; saved with every checkpoint.

use anychip_model_config::ModelConfig;
use anychip_nn::Precision;
use anychip_optim::AdamWConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A training run's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Preset name the model came from (informational).
    pub preset: String,
    pub model: ModelConfig,
    /// What the linear layers and the LM head multiply in (`--precision`); f32 in runs saved
    /// before the setting existed.
    #[serde(default)]
    pub precision: Precision,
    /// Text file or directory; None means the default Shakespeare corpus.
    pub data: Option<PathBuf>,
    /// `bytes` or `gpt2`.
    pub tokenizer: String,
    pub steps: u64,
    pub batch: usize,
    pub ctx: usize,
    /// Micro-batches accumulated per optimizer step.
    pub accum: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub adamw: AdamWConfig,
    pub seed: u64,
    /// Validation every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Batches per validation pass.
    pub eval_batches: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub ckpt_every: u64,
    /// Fraction of the corpus held out for validation.
    pub val_fraction: f64,
    pub port: String,
    pub threads: Option<usize>,
    /// Hugging Face checkpoint the weights start from (`--init`).
    #[serde(default)]
    pub init: Option<PathBuf>,
}

/// The peak learning rate of a preset's default run (`--lr` overrides it). 3e-3 for the byte and
/// GPT-2 presets; moe-tiny 2e-3: at its equal-wall-time budget (500 steps, Intel Xeon model 207)
/// it reached 1.8282 / 1.8242 on seeds 1337 / 2 against 1.8347 / ~1.831 at 3e-3 and 1.8820 at
/// 4.5e-3, while the dense shakespeare-bytes preset is best at 3e-3 (600 steps: 1.8309 / 1.7896,
/// at 2e-3 1.8261 / 1.8103); docs/moe.md.
fn peak_lr(preset: &str) -> f32 {
    match preset {
        "moe-tiny" => 2e-3,
        _ => 3e-3,
    }
}

impl TrainConfig {
    /// The README's default run: a byte-level GPT of a few million parameters on Shakespeare.
    pub fn default_for(preset: &str, model: ModelConfig) -> TrainConfig {
        TrainConfig {
            preset: preset.into(),
            ctx: model.max_ctx.min(128),
            model,
            precision: Precision::F32,
            data: None,
            tokenizer: "bytes".into(),
            steps: 1200,
            batch: 16,
            accum: 1,
            lr: peak_lr(preset),
            min_lr: peak_lr(preset) / 10.0,
            warmup: 50,
            adamw: AdamWConfig::default(),
            seed: 1337,
            eval_every: 200,
            eval_batches: 40,
            ckpt_every: 200,
            val_fraction: 0.05,
            port: "cpu".into(),
            threads: None,
            init: None,
        }
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch * self.ctx * self.accum
    }
}
