//! Deterministic test inputs, so that every failure reproduces.

use anychip_port::philox;

/// NaN, infinities, signed zeros and a huge finite value (overflow paths), placed at the front of special-value inputs.
pub const SPECIALS: [f32; 6] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e30];

/// `n` values in [-scale, scale) from the Philox stream `seed` (the same on every machine and
/// every port: Philox is part of the port contract).
pub fn philox_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (philox::uniform(seed, i as u64) * 2.0 - 1.0) * scale).collect()
}

/// `v` with [`SPECIALS`] written over its first elements.
pub fn with_specials(mut v: Vec<f32>) -> Vec<f32> {
    for (x, s) in v.iter_mut().zip(SPECIALS) {
        *x = s;
    }
    v
}

/// A small deterministic generator (xorshift64*), for tests that draw many unrelated values.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// n values in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}
