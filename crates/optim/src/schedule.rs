//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

/// Linear warmup to `max_lr`, then cosine decay to `min_lr` at `total` steps (flat after).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub max_lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub total: u64,
}

impl CosineSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> CosineSchedule {
        CosineSchedule { max_lr: lr, min_lr: lr, warmup: 0, total: 1 }
    }

    /// Learning rate for 0-based `step`.
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f32 / self.warmup as f32;
        }
        if step >= self.total {
            return self.min_lr;
        }
        let span = (self.total - self.warmup).max(1) as f64;
        let progress = (step - self.warmup) as f64 / span;
        let c = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + c * (self.max_lr - self.min_lr) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn warmup_peak_and_floor() {
        let s = CosineSchedule { max_lr: 1.0, min_lr: 0.1, warmup: 10, total: 110 };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(10) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-6);
        assert!((s.lr(110) - 0.1).abs() < 1e-6);
        assert!(s.lr(30) > s.lr(40));
        assert_eq!(CosineSchedule::constant(0.3).lr(1000), 0.3);
    }
}
