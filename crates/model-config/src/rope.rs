//! Rotary position frequencies, with Llama 3's frequency-dependent scaling.
//!
//! Plain RoPE rotates the pair (2i, 2i+1) of a head of width d by position x theta_i with
//! theta_i = base^(-2i/d). Llama 3.1 and later (`rope_type = "llama3"`) stretch the context by
//! `factor` without retraining the short wavelengths: with L the original context, a frequency
//! whose wavelength 2 pi / theta is below L / high_freq_factor is kept, one above
//! L / low_freq_factor is divided by `factor`, and the band between is interpolated with
//! s = (L / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor):
//! theta' = (1 - s) theta / factor + s theta. transformers computes this in f32
//! (`_compute_llama3_parameters`); so does [`inv_freq`].

use serde::{Deserialize, Serialize};

/// Llama 3's RoPE frequency scaling (`rope_scaling` with `rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// How much longer the context becomes (8 for Llama 3.1, 32 for Llama 3.2).
    pub factor: f32,
    /// Wavelengths above original / low_freq_factor are divided by `factor`.
    pub low_freq_factor: f32,
    /// Wavelengths below original / high_freq_factor are kept.
    pub high_freq_factor: f32,
    /// The context the base model was trained at.
    pub original_max_position_embeddings: usize,
}

/// The inverse frequencies theta_i of the `head_dim / 2` rotated pairs.
pub fn inv_freq(base: f32, head_dim: usize, scaling: Option<&Llama3RopeScaling>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            // base^(-2i/d), computed in f64 then rounded, as transformers gets it in f32.
            let theta = (base as f64).powf(-(2.0 * i as f64) / head_dim as f64) as f32;
            scaling.map_or(theta, |s| s.scale(theta))
        })
        .collect()
}

impl Llama3RopeScaling {
    fn scale(&self, theta: f32) -> f32 {
        let old = self.original_max_position_embeddings as f32;
        let wavelen = 2.0 * std::f32::consts::PI / theta;
        if wavelen < old / self.high_freq_factor {
            theta
        } else if wavelen > old / self.low_freq_factor {
            theta / self.factor
        } else {
            let s = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - s) * theta / self.factor + s * theta
        }
    }

    /// Why the numbers cannot describe a scaling, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.factor >= 1.0
            && self.low_freq_factor > 0.0
            && self.high_freq_factor > self.low_freq_factor
            && self.original_max_position_embeddings > 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "model config: llama3 RoPE scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a positive original context, got {self:?}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_rope_is_base_to_the_minus_two_i_over_d() {
        let f = inv_freq(10000.0, 8, None);
        assert_eq!(f.len(), 4);
        for (i, x) in f.iter().enumerate() {
            assert!((x / 10000f32.powf(-(2.0 * i as f32) / 8.0) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn llama3_scaling_keeps_short_divides_long_and_blends_between() {
        // head_dim 16, base 10000: wavelengths 6.28, 19.9, 62.8, 199, ... With L = 64, low 1,
        // high 4: 6.28 < 16 kept; 19.9 and 62.8 blended; 199 and longer divided by 8.
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let (plain, scaled) = (inv_freq(10000.0, 16, None), inv_freq(10000.0, 16, Some(&s)));
        assert_eq!(scaled[0], plain[0]);
        for i in 3..8 {
            assert!((scaled[i] * 8.0 / plain[i] - 1.0).abs() < 1e-6, "{i}");
        }
        // Blended: wavelength 2 pi / 10000^(-1/8) = 19.87, s = (64 / 19.87 - 1) / 3 = 0.7402.
        let s1 = (64.0 / (2.0 * std::f32::consts::PI / plain[1]) - 1.0) / 3.0;
        assert!((s1 - 0.7402).abs() < 1e-3, "{s1}");
        assert!((scaled[1] / plain[1] - ((1.0 - s1) / 8.0 + s1)).abs() < 1e-6);
        assert!(scaled[2] < plain[2] && scaled[2] > plain[2] / 8.0);
    }
}
