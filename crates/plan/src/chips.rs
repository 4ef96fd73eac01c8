//! The chip database: every figure with its source and confidence, unknowns kept unknown.
//!
//! Built-in records are TOML files in `crates/plan/chips/`, embedded at compile time so the binary
//! works anywhere. A user chip file in the same format adds a chip or overrides figures of a
//! built-in one; `--override chip.field=value` sets a single figure.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// How much to trust a figure (as in shared/anchors/chips.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Confidence {
    /// Vendor datasheet or documentation, or read directly from a public log.
    H,
    /// Several trade-press or analyst reports agree.
    M,
    /// A single secondary source, an estimate, or a user's own assumption.
    L,
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confidence::H => "H",
            Confidence::M => "M",
            Confidence::L => "L",
        })
    }
}

/// One number of a chip record; `value` is `None` when the figure is not public.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// The number, in the unit of its field (see [`FIELDS`]); absent when unknown.
    #[serde(default)]
    pub value: Option<f64>,
    /// Confidence of the value (or of the statement that it is unknown).
    pub conf: Confidence,
    /// Where it came from.
    pub source: String,
}

/// A field a chip record may carry: key, unit, meaning.
pub struct FieldInfo {
    /// TOML key and `--override` name.
    pub key: &'static str,
    /// Unit printed after the value.
    pub unit: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Every field a chip record may carry, in display order.
pub const FIELDS: &[FieldInfo] = &[
    FieldInfo { key: "bf16_tflops", unit: "TFLOP/s", doc: "dense BF16/FP16 tensor throughput" },
    FieldInfo { key: "fp8_tflops", unit: "TFLOP/s", doc: "dense FP8 tensor throughput" },
    FieldInfo { key: "fp4_tflops", unit: "TFLOP/s", doc: "dense FP4 (NVFP4, MXFP4) tensor throughput" },
    FieldInfo { key: "fp32_tflops", unit: "TFLOP/s", doc: "FP32 throughput" },
    FieldInfo { key: "int8_tops", unit: "TOP/s", doc: "dense INT8 throughput" },
    FieldInfo { key: "memory_gb", unit: "GB", doc: "device memory as the vendor quotes it (HBM sizes are binary GB)" },
    FieldInfo { key: "usable_memory_gib", unit: "GiB", doc: "memory a framework can allocate, where measured" },
    FieldInfo { key: "mem_bw_tbs", unit: "TB/s", doc: "device memory bandwidth" },
    FieldInfo { key: "scaleup_gbs", unit: "GB/s", doc: "scale-up (chip-to-chip) link, bidirectional per chip" },
    FieldInfo { key: "scaleup_domain", unit: "chips", doc: "chips sharing the scale-up fabric (NVLink domain, node)" },
    FieldInfo { key: "scaleout_gbs", unit: "GB/s", doc: "scale-out network per chip, one direction" },
    FieldInfo {
        key: "host_link_gbs",
        unit: "GB/s",
        doc: "link between the chip and host memory (PCIe, NVLink-C2C), one direction: activation offload",
    },
    FieldInfo {
        key: "host_memory_gb",
        unit: "GB",
        doc: "host memory per chip in the reference system (CPU DRAM / chips per node): activation offload",
    },
    FieldInfo { key: "tdp_w", unit: "W", doc: "board power" },
    FieldInfo { key: "price_per_hour", unit: "USD/h", doc: "rental or amortised price per chip-hour" },
    FieldInfo { key: "die_mm2", unit: "mm2", doc: "die area, for the export-control performance density" },
    FieldInfo { key: "measured_bf16_tflops", unit: "TFLOP/s", doc: "measured large-GEMM BF16/FP16 throughput" },
    FieldInfo {
        key: "maf_bf16_tflops",
        unit: "TFLOP/s",
        doc: "max-achievable dense BF16 GEMM rate at the sustained clock (a vendor's size sweep): caps the tensor clock",
    },
    FieldInfo { key: "measured_mem_bw_tbs", unit: "TB/s", doc: "measured memory bandwidth" },
    FieldInfo {
        key: "sfu_exp_tops",
        unit: "Texp/s",
        doc: "exponentials per second of the special-function units (softmax)",
    },
    FieldInfo {
        key: "sync_mma_fraction",
        unit: "",
        doc: "throughput of warp-synchronous MMA kernels (FlashAttention-2) relative to the chip's asynchronous tensor-core kernels; absent: 1",
    },
];

/// One accelerator record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chip {
    /// Short lower-case name used on the command line (`h100`, `p800`).
    pub name: String,
    /// Other accepted names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Full product name.
    #[serde(default)]
    pub display: String,
    /// Vendor name.
    #[serde(default)]
    pub vendor: String,
    /// Chip family for placement rules (`nvidia`, `kunlun`, `t-head`, `ascend`).
    #[serde(default)]
    pub family: String,
    /// Ignored: the calibration is one set of constants for every chip (data/calibration.toml).
    /// Kept so chip files written for earlier versions still load.
    #[serde(default, skip_serializing)]
    pub calibration: Option<String>,
    /// The figures, keyed by a name from [`FIELDS`].
    #[serde(default)]
    pub specs: BTreeMap<String, Figure>,
}

impl Chip {
    /// The value of a field, if known.
    pub fn get(&self, field: &str) -> Option<f64> {
        self.specs.get(field).and_then(|f| f.value)
    }

    /// The value of a field the planner cannot do without; the error says how to supply it.
    pub fn require(&self, field: &str) -> Result<f64> {
        match self.specs.get(field) {
            Some(Figure { value: Some(v), .. }) => Ok(*v),
            Some(f) => bail!(
                "chip {}: {} is unknown ({}); supply it with --override {}.{}=VALUE or a chip file (--chip-file FILE)",
                self.name,
                field,
                f.source,
                self.name,
                field
            ),
            None => bail!(
                "chip {}: {} is not in the database; supply it with --override {}.{}=VALUE or a chip file (--chip-file FILE)",
                self.name,
                field,
                self.name,
                field
            ),
        }
    }

    /// A rate the model divides by: present, and above zero. Zero would make every time infinite
    /// and the utilisation NaN, so it is refused with the way to fix it.
    pub fn require_positive(&self, field: &str) -> Result<f64> {
        let v = self.require(field)?;
        if v <= 0.0 {
            bail!(
                "chip {}: {field} must be above zero, got {v}; fix it in the chip file or with --override {}.{field}=VALUE",
                self.name,
                self.name
            );
        }
        Ok(v)
    }

    /// Set a field (from an override), marking it as the user's own low-confidence figure.
    pub fn set(&mut self, field: &str, value: f64, source: &str) -> Result<()> {
        check_field(field)?;
        if !value.is_finite() || value < 0.0 {
            bail!("chip {}: {field}={value} must be a non-negative number", self.name);
        }
        for (rated, measured) in MEASURED_ON_RATED {
            if field == *rated {
                self.rescale_measured(rated, measured, value, source);
            }
        }
        self.specs.insert(field.to_string(), Figure { value: Some(value), conf: Confidence::L, source: source.into() });
        Ok(())
    }

    /// A new rated figure makes a figure measured on the old chip stale (a usable memory size,
    /// a max-achievable GEMM rate): scale it by new / old, the same share of the rating, unless
    /// the same set of overrides (one `source`) states the measured figure itself.
    fn rescale_measured(&mut self, rated: &str, measured: &str, value: f64, source: &str) {
        let old = self.get(rated).filter(|&m| m > 0.0);
        let Some(fig) = self.specs.get_mut(measured) else {
            return;
        };
        if let (Some(old), Some(v), true) = (old, fig.value, fig.source != source) {
            fig.value = Some(v * value / old);
            fig.conf = Confidence::L;
            fig.source = format!("{} scaled to {rated}={value} ({source})", fig.source);
        }
    }

    /// Usable device memory in bytes: measured where known, else 94% of the nominal size
    /// (the fraction FlagPerf measured on Ascend 910B, 60.32 of 64 GiB, and close to what CUDA leaves
    /// after its context on 80 GB parts).
    pub fn usable_memory_bytes(&self) -> Result<f64> {
        if let Some(g) = self.get("usable_memory_gib") {
            return Ok(g * GIB);
        }
        Ok(self.require("memory_gb")? * GIB * 0.94)
    }

    /// Whether the name or an alias matches, in any case and with any spaces, hyphens or other
    /// punctuation (`TPU v5p`, `Gaudi 2` and `H100_SXM` as `tpu-v5p`, `gaudi2`, `h100-sxm`); no
    /// two shipped chips' names or aliases differ only so (a test checks).
    pub fn answers_to(&self, name: &str) -> bool {
        let n = spelling_key(name);
        spelling_key(&self.name) == n || self.aliases.iter().any(|a| spelling_key(a) == n)
    }
}

/// A chip name as compared: its letters (lower case) and digits only.
fn spelling_key(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Figures measured on a chip as it was rated (rated field, measured field): overriding the
/// rating rescales the measurement ([`Chip::set`]), so a what-if on the rating changes the plan.
const MEASURED_ON_RATED: &[(&str, &str)] =
    &[("memory_gb", "usable_memory_gib"), ("bf16_tflops", "maf_bf16_tflops"), ("bf16_tflops", "measured_bf16_tflops")];

/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn check_field(field: &str) -> Result<()> {
    if FIELDS.iter().any(|f| f.key == field) {
        Ok(())
    } else {
        let keys: Vec<_> = FIELDS.iter().map(|f| f.key).collect();
        bail!("unknown chip field '{field}'; known fields: {}", keys.join(", "))
    }
}

/// The built-in records, embedded so the binary needs no data directory.
const BUILTIN: &[(&str, &str)] = &[
    ("h100.toml", include_str!("../chips/h100.toml")),
    ("h800.toml", include_str!("../chips/h800.toml")),
    ("h200.toml", include_str!("../chips/h200.toml")),
    ("h200-nvl.toml", include_str!("../chips/h200-nvl.toml")),
    ("a100.toml", include_str!("../chips/a100.toml")),
    ("a100-40gb.toml", include_str!("../chips/a100-40gb.toml")),
    ("a800.toml", include_str!("../chips/a800.toml")),
    ("v100.toml", include_str!("../chips/v100.toml")),
    ("h20.toml", include_str!("../chips/h20.toml")),
    ("p800.toml", include_str!("../chips/p800.toml")),
    ("r300.toml", include_str!("../chips/r300.toml")),
    ("ppu.toml", include_str!("../chips/ppu.toml")),
    ("910b.toml", include_str!("../chips/910b.toml")),
    ("910c.toml", include_str!("../chips/910c.toml")),
    ("mlu370.toml", include_str!("../chips/mlu370.toml")),
    ("b200.toml", include_str!("../chips/b200.toml")),
    ("gb200.toml", include_str!("../chips/gb200.toml")),
    ("b300.toml", include_str!("../chips/b300.toml")),
    ("gb300.toml", include_str!("../chips/gb300.toml")),
    ("mi300x.toml", include_str!("../chips/mi300x.toml")),
    ("mi325x.toml", include_str!("../chips/mi325x.toml")),
    ("mi350x.toml", include_str!("../chips/mi350x.toml")),
    ("mi355x.toml", include_str!("../chips/mi355x.toml")),
    ("gaudi2.toml", include_str!("../chips/gaudi2.toml")),
    ("gaudi3.toml", include_str!("../chips/gaudi3.toml")),
    ("tpu-v4.toml", include_str!("../chips/tpu-v4.toml")),
    ("tpu-v5e.toml", include_str!("../chips/tpu-v5e.toml")),
    ("tpu-v5p.toml", include_str!("../chips/tpu-v5p.toml")),
    ("tpu-v6e.toml", include_str!("../chips/tpu-v6e.toml")),
    ("tpu-v7.toml", include_str!("../chips/tpu-v7.toml")),
];

/// A set of chip records.
#[derive(Clone, Debug, Default)]
pub struct ChipDb {
    /// The records, built-in first.
    pub chips: Vec<Chip>,
}

impl ChipDb {
    /// The records shipped with the crate.
    pub fn builtin() -> ChipDb {
        let chips = BUILTIN
            .iter()
            .map(|(file, text)| {
                parse_chip(text, file).unwrap_or_else(|e| panic!("built-in chip file is invalid: {e:#}"))
            })
            .collect();
        ChipDb { chips }
    }

    /// Built-in records plus chip files and `chip.field=value` overrides, in that order.
    pub fn with_user(chip_files: &[std::path::PathBuf], overrides: &[String]) -> Result<ChipDb> {
        let mut db = ChipDb::builtin();
        for f in chip_files {
            db.load_file(f)?;
        }
        for o in overrides {
            db.apply_override(o)?;
        }
        Ok(db)
    }

    /// Merge a user chip file: a new name adds a chip, a known name overrides the figures it gives.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read chip file {}", path.display()))?;
        let chip = parse_chip(&text, &path.display().to_string())?;
        self.merge(chip);
        Ok(())
    }

    /// Add a chip or merge its given figures over an existing one of the same name.
    pub fn merge(&mut self, chip: Chip) {
        if let Some(old) = self.chips.iter_mut().find(|c| c.answers_to(&chip.name)) {
            for (k, v) in chip.specs {
                old.specs.insert(k, v);
            }
            if !chip.family.is_empty() {
                old.family = chip.family;
            }
        } else {
            let mut chip = chip;
            if chip.display.is_empty() {
                chip.display = chip.name.clone();
            }
            if chip.family.is_empty() {
                chip.family = chip.name.clone();
            }
            self.chips.push(chip);
        }
    }

    /// Apply `chip.field=value`.
    pub fn apply_override(&mut self, spec: &str) -> Result<()> {
        let (lhs, rhs) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--override '{spec}' must look like CHIP.FIELD=VALUE, e.g. ppu.bf16_tflops=150"))?;
        let (chip, field) = lhs
            .trim()
            .split_once('.')
            .ok_or_else(|| anyhow!("--override '{spec}' must look like CHIP.FIELD=VALUE, e.g. ppu.bf16_tflops=150"))?;
        let value: f64 =
            rhs.trim().parse().map_err(|_| anyhow!("--override '{spec}': '{}' is not a number", rhs.trim()))?;
        let name = self.find(chip)?.name.clone();
        let c = self.chips.iter_mut().find(|c| c.name == name).expect("found above");
        c.set(field.trim(), value, "user override (--override)")
    }

    /// Find a chip by name or alias; the error lists the known names.
    pub fn find(&self, name: &str) -> Result<&Chip> {
        self.chips.iter().find(|c| c.answers_to(name)).ok_or_else(|| {
            let names: Vec<_> = self.chips.iter().map(|c| c.name.as_str()).collect();
            anyhow!(
                "unknown chip '{name}'{}; known chips: {} (or add one with --chip-file FILE)",
                crate::names::suggestion(name, names.iter().copied()),
                names.join(", ")
            )
        })
    }
}

/// Parse one chip record, checking field names and values; the error names the file.
pub fn parse_chip(text: &str, origin: &str) -> Result<Chip> {
    let mut chip: Chip =
        toml::from_str(text).map_err(|e| anyhow!("chip file {origin}: {}", one_line(&e.to_string())))?;
    chip.name = chip.name.to_ascii_lowercase();
    if chip.name.is_empty() {
        bail!("chip file {origin}: `name` must not be empty");
    }
    for (k, f) in &chip.specs {
        check_field(k).map_err(|e| anyhow!("chip file {origin}: {e}"))?;
        if let Some(v) = f.value {
            if !v.is_finite() || v < 0.0 {
                bail!("chip file {origin}: {k} = {v} must be a non-negative number");
            }
        }
    }
    Ok(chip)
}

/// Collapse a multi-line parser message (toml prints a snippet) into one line.
pub(crate) fn one_line(msg: &str) -> String {
    // Drop the source snippet lines ("3 | text", "  |   ^") and keep the messages.
    let snippet = |l: &str| {
        let rest = l.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
        rest.starts_with('|')
    };
    msg.lines().map(str::trim).filter(|l| !l.is_empty() && !snippet(l)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> Chip {
        ChipDb::builtin().find("h100").unwrap().clone()
    }

    #[test]
    fn chip_names_match_in_any_case_and_punctuation_and_never_two_chips() {
        let db = ChipDb::builtin();
        for (typed, chip) in
            [("TPU v5p", "tpu-v5p"), ("Gaudi 2", "gaudi2"), ("H100_SXM", "h100"), ("a100 40gb", "a100-40gb")]
        {
            assert_eq!(db.find(typed).unwrap().name, chip, "{typed}");
        }
        assert!(db.find("h100x").is_err() && db.find("tpu v9").is_err());
        let mut keys = std::collections::BTreeMap::new();
        for c in &db.chips {
            for n in std::iter::once(&c.name).chain(&c.aliases) {
                if let Some(other) = keys.insert(spelling_key(n), c.name.clone()) {
                    assert_eq!(other, c.name, "'{n}' of {} reads as a name of {other}", c.name);
                }
            }
        }
    }

    #[test]
    fn a_new_memory_size_rescales_the_measured_usable_size() {
        // The H100's usable 79.1 GiB was measured on its 80 GB; overriding the size to 141 GB
        // used to leave it at 79.1, so the override changed no plan.
        let mut c = h100();
        let measured = c.usable_memory_bytes().unwrap();
        c.set("memory_gb", 141.0, "user override (--override)").unwrap();
        let scaled = c.usable_memory_bytes().unwrap();
        assert!((scaled / measured - 141.0 / 80.0).abs() < 1e-12, "{scaled} {measured}");
        // A usable size stated by the same overrides stands, in either order.
        for order in [["usable_memory_gib", "memory_gb"], ["memory_gb", "usable_memory_gib"]] {
            let mut c = h100();
            for field in order {
                let v = if field == "memory_gb" { 141.0 } else { 100.0 };
                c.set(field, v, "user override (--override)").unwrap();
            }
            assert_eq!(c.usable_memory_bytes().unwrap(), 100.0 * GIB, "{order:?}");
        }
    }

    #[test]
    fn a_new_bf16_rating_rescales_the_measured_gemm_rate() {
        // The MI300X's max-achievable 708 TFLOP/s was measured against its 1,307.4 rated: a
        // what-if at 2,000 rated used to keep 708, so the plan ran no faster.
        let mut c = ChipDb::builtin().find("mi300x").unwrap().clone();
        c.set("bf16_tflops", 2000.0, "user override (--override)").unwrap();
        let maf = c.get("maf_bf16_tflops").unwrap();
        assert!((maf - 708.0 * 2000.0 / 1307.4).abs() < 1e-9, "{maf}");
    }
}
