//! Training, checkpoints, sampling and benchmarks: everything `anychip train|sample|bench` runs.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod fixed_batch;
pub mod precision;
pub mod profile;
pub mod sample;
pub mod trainer;

pub use anychip_nn::Precision;
pub use config::TrainConfig;
pub use trainer::{train, Summary};
