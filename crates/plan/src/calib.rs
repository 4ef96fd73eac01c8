//! Calibration of the performance model: one set of constants per chip generation.
//!
//! The constants live in `data/calibration.toml`, each with where it came from; docs/planner.md
//! explains them. Chips of a generation no published run covers use `default`.

use crate::chips::Chip;
use anyhow::{anyhow, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

const CALIBRATION_TOML: &str = include_str!("../data/calibration.toml");

/// Achieved fractions of nominal hardware rates, for one chip generation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Name of the generation (`ampere`, `hopper`, `default`).
    #[serde(default)]
    pub name: String,
    /// Fraction of nominal BF16 peak that a training step's large GEMMs reach.
    pub gemm_eff: f64,
    /// Width (d_model / tp) at which GEMM efficiency falls to half of `gemm_eff`: small matrices
    /// cannot fill the chip (tile quantisation, wave tails, launch overhead).
    pub gemm_half_width: f64,
    /// Fraction of nominal memory bandwidth reached by element-wise kernels.
    pub bw_eff: f64,
    /// Fraction of the scale-up link (one direction) reached by collectives (nccl-tests busbw).
    pub scaleup_eff: f64,
    /// Fraction of the scale-out NIC bandwidth reached by collectives.
    pub scaleout_eff: f64,
    /// Where the constants came from.
    pub source: String,
    /// Whether published runs on this generation validate it.
    #[serde(default)]
    pub validated: bool,
}

/// Constants shared by every generation: properties of the training software, not of the chip.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shared {
    /// Memory passes over the stored-activation bytes per forward (element-wise kernels read and
    /// write each tensor a few times); backward costs twice a forward.
    pub elementwise_passes: f64,
    /// Fixed time per layer per micro-batch (forward and backward), microseconds: kernel launches
    /// and synchronisation.
    pub layer_overhead_us: f64,
    /// Fraction of tensor/context-parallel communication hidden when the software overlaps it.
    pub tp_overlap_hidden: f64,
    /// Memory a framework keeps beside the model (CUDA/driver context, NCCL buffers, fragmentation), GiB.
    pub reserve_gib: f64,
    /// Where these came from.
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    shared: Shared,
    generation: BTreeMap<String, Calibration>,
}

fn file() -> File {
    toml::from_str(CALIBRATION_TOML).expect("data/calibration.toml is valid")
}

/// The shared software constants.
pub fn shared() -> Shared {
    file().shared
}

/// All generations, by name.
pub fn generations() -> BTreeMap<String, Calibration> {
    file()
        .generation
        .into_iter()
        .map(|(k, mut v)| {
            v.name = k.clone();
            (k, v)
        })
        .collect()
}

/// The calibration a chip uses (its record's `calibration` key).
///
/// A chip's measured GEMM rate is shown by `chips show` but does not rescale `gemm_eff`: sources
/// disagree on what "nominal" is for the chips that publish only a measurement (910B), and an
/// unvalidated scaling would flatter exactly the chips the planner knows least about.
pub fn for_chip(chip: &Chip) -> Result<Calibration> {
    let gens = generations();
    gens.get(&chip.calibration).cloned().ok_or_else(|| {
        anyhow!(
            "chip {}: calibration '{}' is unknown; use one of {}",
            chip.name,
            chip.calibration,
            gens.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}
