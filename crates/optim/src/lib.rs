//! Optimizers and learning-rate schedules.

mod adamw;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamGroup};
pub use schedule::CosineSchedule;
