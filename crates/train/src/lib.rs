//! Training, checkpoints, sampling and benchmarks: everything `anychip train|sample|bench` runs.

pub mod bench;
pub mod checkpoint;
pub mod config;
mod fault;
pub mod fixed_batch;
pub mod precision;
pub mod profile;
pub mod resume;
pub mod run_dir;
pub mod sample;
pub mod signals;
pub mod step_guard;
pub mod trainer;
pub mod validate;

pub use anychip_nn::Precision;
pub use config::TrainConfig;
pub use trainer::{train, Summary};
