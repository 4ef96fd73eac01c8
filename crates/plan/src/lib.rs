//! Chip database, training performance model and mixed-fleet planner.
//!
//! - [`chips`]: accelerator records with a source and confidence for every figure.
//! - [`export`]: US export-control class computed from those figures.
//! - [`model`]: model presets and model files; [`hf_config`] Hugging Face `config.json` read as one.
//! - [`perf`]: the analytic step-time and memory model; [`calib`] its constants and their fit;
//!   [`stack`] the software stack profiles it takes as input.
//! - [`validation`]: the model run on published training runs; [`check`] on a team's own.

pub mod calib;
pub mod chart;
pub mod check;
pub mod chips;
pub mod export;
pub mod fleet;
pub mod hf_config;
pub mod model;
pub mod names;
pub mod perf;
pub mod search;
pub mod sizing;
pub mod stack;
pub mod validation;
