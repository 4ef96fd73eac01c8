//! US export-control class (ECCN 3A090) computed from a chip's public figures.
//!
//! This is arithmetic on the published thresholds, not an official classification: licence
//! requirements also change by notice (the H20 licence of April 2025 came that way).
//!
//! TPP = 2 x MacTOPS x bit length = dense TOP/s x bit length, the highest over precisions.
//! PD (performance density) = TPP / die area in mm2.
//! Oct-2023 rule: 3A090.a if TPP >= 4800, or TPP >= 1600 with PD >= 5.92;
//! 3A090.b if 2400 <= TPP < 4800 with 1.6 <= PD < 5.92, or TPP >= 1600 with 3.2 <= PD < 5.92.
//! Oct-2022 rule (superseded): TPP >= 4800 and chip-to-chip I/O >= 600 GB/s.

use crate::chips::Chip;

/// The computed class with the rule that put it there.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportClass {
    /// Total processing performance, if any throughput figure is known.
    pub tpp: Option<f64>,
    /// Performance density, if the die area is known.
    pub pd: Option<f64>,
    /// `3A090.a`, `3A090.b`, `below 3A090 thresholds`, or `unknown`.
    pub class: &'static str,
    /// The clause of the rule that decided it, or what is missing.
    pub rule: String,
}

/// Compute TPP, PD and the Oct-2023 class of a chip.
pub fn classify(chip: &Chip) -> ExportClass {
    let cands = [
        chip.get("bf16_tflops").map(|t| t * 16.0),
        chip.get("fp8_tflops").map(|t| t * 8.0),
        chip.get("int8_tops").map(|t| t * 8.0),
        chip.get("fp32_tflops").map(|t| t * 32.0),
    ];
    let tpp = cands.iter().flatten().cloned().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let pd = match (tpp, chip.get("die_mm2")) {
        (Some(t), Some(a)) if a > 0.0 => Some(t / a),
        _ => None,
    };
    let Some(t) = tpp else {
        return ExportClass { tpp, pd, class: "unknown", rule: "no throughput figure is public".into() };
    };
    let (class, rule) = if t >= 4800.0 {
        ("3A090.a", format!("TPP {t:.0} >= 4800 (Oct-2023 rule)"))
    } else if t < 1600.0 {
        ("below 3A090 thresholds", format!("TPP {t:.0} < 1600"))
    } else {
        match pd {
            None => (
                "unknown",
                format!("TPP {t:.0} is in 1600..4800, where the class depends on the die area, which is not public"),
            ),
            Some(p) if p >= 5.92 => ("3A090.a", format!("TPP {t:.0} >= 1600 and PD {p:.2} >= 5.92 (Oct-2023 rule)")),
            Some(p) if t >= 2400.0 && p >= 1.6 => {
                ("3A090.b", format!("TPP {t:.0} in 2400..4800 and PD {p:.2} in 1.6..5.92 (Oct-2023 rule)"))
            }
            Some(p) if p >= 3.2 => {
                ("3A090.b", format!("TPP {t:.0} >= 1600 and PD {p:.2} in 3.2..5.92 (Oct-2023 rule)"))
            }
            Some(p) => ("below 3A090 thresholds", format!("TPP {t:.0} < 4800 and PD {p:.2} under the density lines")),
        }
    };
    ExportClass { tpp, pd, class, rule }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chips::ChipDb;

    #[test]
    fn h100_is_3a090a_and_h20_is_under_every_line() {
        let db = ChipDb::builtin();
        let h100 = classify(db.find("h100").unwrap());
        assert_eq!(h100.class, "3A090.a");
        assert!((h100.tpp.unwrap() - 15_832.0).abs() < 1.0);
        let h20 = classify(db.find("h20").unwrap());
        // 148 x 16 = 2368 < 2400, PD 2.9 < 3.2: just under every line, as the anchors say.
        assert_eq!(h20.tpp, Some(2368.0));
        assert_eq!(h20.class, "below 3A090 thresholds");
        assert_eq!(classify(db.find("ppu").unwrap()).class, "unknown");
    }
}
