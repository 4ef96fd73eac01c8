/// Element types a tensor can be stored in.
///
/// Arithmetic on `BF16` is done in f32 and rounded to nearest-even on store; reductions and
/// matmul accumulate in f32 (the `ref` port in f64). `I32` holds token ids and row indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 => 2,
        }
    }
    /// Lower-case name as used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
        }
    }
    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }
    /// Parse a name as printed by [`DType::name`].
    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "bf16" => Some(DType::BF16),
            "i32" => Some(DType::I32),
            _ => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// bf16 bits to f32 (exact).
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 to bf16 bits, round to nearest even; NaN stays a (quiet) NaN. Every port must round this way.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bf16_round_trip_and_rounding() {
        // Values with at most 8 significant bits survive exactly.
        for x in [0.0f32, -0.0, 1.0, -2.5, 2.0f32.powi(-120), 3.0 * 2.0f32.powi(120), f32::INFINITY, f32::NEG_INFINITY]
        {
            assert_eq!(bf16_to_f32(f32_to_bf16(x)).to_bits(), x.to_bits());
        }
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        // 1 + 2^-8 is exactly half-way between two bf16 values: ties go to even (1.0).
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // 1 + 3*2^-8 is half-way as well and rounds up to the even neighbour 1 + 2^-6.
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
    }
}
