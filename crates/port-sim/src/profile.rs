//! A sim profile: the figures the cost model needs beyond the chip database's peaks and
//! bandwidth — per-call launch overhead, which composites the chip's software fuses, and
//! efficiencies by op, shape and dtype — each with its source (`measured: ...` for the ones
//! `anychip chips measure` writes).
//!
//! Format (TOML; `anychip chips measure` writes one as `NAME.sim.toml` next to `NAME.toml`):
//! ```toml
//! chip = "cpu-here"                    # or "*" for the default of every database chip
//! launch_us = { value = 2.1, source = "measured: ..." }
//! fused = ["linear", "attention"]      # composite families priced as one kernel
//! fused_source = "..."
//! [[eff]]                              # fraction of the roofline this op reaches
//! op = "gemm"                          # or a class fallback: "gemm", "attention", "memory"
//! dtype = "f32"                        # optional: any dtype when absent
//! shape = [1024, 768, 768]             # optional size key (see cost::Work::shape)
//! eff = 0.62
//! source = "measured: ..."
//! ```
//! Lookup: the entries of the op (else of its class) for the dtype (else any dtype), weighted
//! by inverse squared distance of the log-shape among the nearest four.

use crate::cost::{Class, Work};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A figure with its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sourced {
    pub value: f64,
    pub source: String,
}

/// One efficiency measurement or assumption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eff {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
    pub eff: f64,
    pub source: String,
}

/// What the cost model knows about a chip beyond the database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProfile {
    /// The chip it describes ("*": every database chip without a profile of its own).
    pub chip: String,
    /// Fixed cost of one call (kernel launch, and on a host port the engine's own work per op).
    pub launch_us: Sourced,
    /// Composite families the chip's software runs as one kernel.
    pub fused: Vec<String>,
    pub fused_source: String,
    /// Price GEMMs and attention with the planner's calibrated model (`crates/plan`: GEMM
    /// efficiency by arithmetic intensity against the chip's ridge point, attention at
    /// `attn_eff`) instead of `eff` entries, so that the sim and `anychip plan` agree on the
    /// kernels both price. For database chips, whose efficiencies are not measured.
    #[serde(default)]
    pub planner_efficiencies: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub planner_efficiencies_source: String,
    #[serde(default)]
    pub eff: Vec<Eff>,
}

/// The default profile of database chips (datacenter accelerators with a mature software stack).
const DEFAULT: &str = include_str!("../profiles/default.toml");

impl SimProfile {
    /// The built-in default for database chips.
    pub fn builtin_default() -> SimProfile {
        SimProfile::parse(DEFAULT, "built-in profiles/default.toml").expect("built-in sim profile is valid")
    }

    /// Parse a profile; errors name the file and the field.
    pub fn parse(text: &str, origin: &str) -> Result<SimProfile> {
        let p: SimProfile = toml::from_str(text)
            .map_err(|e| anyhow!("sim profile {origin}: {}", e.to_string().lines().last().unwrap_or("").trim()))?;
        for e in &p.eff {
            if !(e.eff > 0.0 && e.eff <= 10.0) {
                bail!("sim profile {origin}: eff of op {} is {}, expected a number in (0, 10] (above 1 only for data that stays in cache)", e.op, e.eff);
            }
        }
        for f in &p.fused {
            if !anychip_port::Composite::NAMES.contains(&f.as_str()) {
                bail!(
                    "sim profile {origin}: '{f}' in fused is not a composite; known: {}",
                    anychip_port::Composite::NAMES.join(", ")
                );
            }
        }
        if !(p.launch_us.value >= 0.0 && p.launch_us.value.is_finite()) {
            bail!("sim profile {origin}: launch_us must be a non-negative number");
        }
        Ok(p)
    }

    /// Read a profile file.
    pub fn load(path: &Path) -> Result<SimProfile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read sim profile {}", path.display()))?;
        SimProfile::parse(&text, &path.display().to_string())
    }

    /// The profile as the TOML text of a `.sim.toml` file (written atomically by the caller).
    pub fn to_text(&self) -> Result<String> {
        let text = toml::to_string(self).context("serialising the sim profile")?;
        Ok(format!("# anychip sim profile (see docs/sim.md)\n{text}"))
    }

    /// Efficiency of `w` on this chip, or an error naming the missing entry and how to add it.
    pub fn efficiency(&self, w: &Work) -> Result<f64> {
        let dt = w.dtype.name();
        let by_op = |op: &str| -> Vec<&Eff> { self.eff.iter().filter(|e| e.op == op).collect() };
        let mut cands = by_op(&w.op);
        if cands.is_empty() {
            cands = by_op(w.class.name());
        }
        if cands.is_empty() && w.class == Class::Attention {
            cands = by_op(Class::Gemm.name());
        }
        if cands.is_empty() {
            bail!(
                "sim profile of chip {}: no efficiency for op {} or class {}; add an [[eff]] entry with op = \"{}\" (see docs/sim.md)",
                self.chip,
                w.op,
                w.class.name(),
                w.class.name()
            );
        }
        let typed: Vec<&Eff> = cands.iter().copied().filter(|e| e.dtype.as_deref() == Some(dt)).collect();
        let pool = if typed.is_empty() {
            let untyped: Vec<&Eff> = cands.iter().copied().filter(|e| e.dtype.is_none()).collect();
            if untyped.is_empty() {
                cands
            } else {
                untyped
            }
        } else {
            typed
        };
        Ok(nearest_weighted(&pool, &w.shape))
    }
}

/// Log-space distance between two size keys (0 when either is unspecified).
fn distance(a: &[usize], b: &[usize]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a.len() != b.len() {
        let (x, y) = (a.iter().product::<usize>().max(1) as f64, b.iter().product::<usize>().max(1) as f64);
        return (x / y).ln().abs();
    }
    a.iter().zip(b).map(|(&x, &y)| (x.max(1) as f64 / y.max(1) as f64).ln().powi(2)).sum::<f64>().sqrt()
}

/// Inverse-squared-distance average of the four nearest entries (exact on a measured shape).
fn nearest_weighted(pool: &[&Eff], shape: &[usize]) -> f64 {
    let mut d: Vec<(f64, f64)> = pool.iter().map(|e| (distance(&e.shape, shape), e.eff)).collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    d.truncate(4);
    if d[0].0 < 1e-9 {
        return d[0].1;
    }
    let (num, den) = d.iter().fold((0.0, 0.0), |(n, s), &(dist, eff)| {
        let wgt = 1.0 / (dist * dist);
        (n + wgt * eff, s + wgt)
    });
    num / den
}

/// The companion profile of a chip file: `NAME.toml` -> `NAME.sim.toml`.
pub fn companion(chip_file: &Path) -> PathBuf {
    let stem = chip_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    chip_file.with_file_name(format!("{stem}.sim.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anychip_port::DType;

    fn work(op: &str, class: Class, shape: Vec<usize>) -> Work {
        Work { op: op.into(), class, dtype: DType::F32, shape, flops: 1.0, bytes: 1.0 }
    }

    #[test]
    fn lookup_is_exact_on_a_measured_shape_and_between_neighbours_elsewhere() {
        let p = SimProfile::parse(
            r#"chip = "x"
launch_us = { value = 1, source = "t" }
fused = []
fused_source = "t"
[[eff]]
op = "gemm"
dtype = "f32"
shape = [64, 64, 64]
eff = 0.2
source = "t"
[[eff]]
op = "gemm"
dtype = "f32"
shape = [1024, 1024, 1024]
eff = 0.8
source = "t"
[[eff]]
op = "memory"
eff = 0.9
source = "t"
"#,
            "test",
        )
        .unwrap();
        assert_eq!(p.efficiency(&work("gemm", Class::Gemm, vec![64, 64, 64])).unwrap(), 0.2);
        let mid = p.efficiency(&work("gemm", Class::Gemm, vec![256, 256, 256])).unwrap();
        assert!(mid > 0.2 && mid < 0.8, "{mid}");
        // An op without entries falls back to its class; attention to gemm.
        assert_eq!(p.efficiency(&work("unary_exp", Class::Memory, vec![10])).unwrap(), 0.9);
        assert_eq!(p.efficiency(&work("attention_fwd", Class::Attention, vec![1024, 1024, 1024])).unwrap(), 0.8);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_field_named() {
        let base = "chip = \"x\"\nlaunch_us = { value = 1, source = \"t\" }\nfused_source = \"t\"\n";
        let e = SimProfile::parse(&format!("{base}fused = [\"flash\"]\n"), "f").unwrap_err().to_string();
        assert!(e.contains("'flash' in fused is not a composite"), "{e}");
        let e =
            SimProfile::parse(&format!("{base}fused = []\n[[eff]]\nop = \"gemm\"\neff = 70\nsource = \"t\"\n"), "f")
                .unwrap_err()
                .to_string();
        assert!(e.contains("eff of op gemm is 70"), "{e}");
    }

    #[test]
    fn the_builtin_default_parses() {
        assert_eq!(SimProfile::builtin_default().chip, "*");
    }
}
