//! The training loop, checkpoints, sampling and benchmarks.
