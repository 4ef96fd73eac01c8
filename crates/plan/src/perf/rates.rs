//! What one chip does: its peak rates under its power limit, memory bandwidth and links, read
//! from its chip file with the calibration's link efficiencies applied.

use super::*;

/// Rates of one chip the model needs, bytes/s and FLOP/s, with the measured link efficiencies applied.
#[derive(Clone, Debug)]
pub struct Rates {
    /// The chip's name, for the messages that tell the user which figure to give.
    pub chip: String,
    /// Nominal dense BF16 FLOP/s (the datasheet's; MFU is reported against it).
    pub nominal_bf16: f64,
    /// Dense BF16 FLOP/s at the clock the chip sustains under its power limit ([`power_clock`]).
    pub peak_bf16: f64,
    /// Dense quantized GEMM rate at that clock: FP8 FLOP/s (under `--precision int8` INT8 OP/s,
    /// under `fp4` FP4 FLOP/s), if the chip has it.
    pub peak_8bit: Option<f64>,
    /// Nominal memory bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Achieved scale-up link, one direction, bytes/s.
    pub scaleup: f64,
    /// Chips in one scale-up domain.
    pub domain: usize,
    /// Achieved scale-out per chip, bytes/s (`None` when not public and not needed).
    pub scaleout: Option<f64>,
    /// Softmax exponentials per second (`None` when the chip does not say).
    pub exp_rate: Option<f64>,
    /// Fraction of the attention rate warp-synchronous MMA kernels reach (chip `sync_mma_fraction`);
    /// `None` on a chip without asynchronous tensor-core instructions (wgmma, tcgen05), whose
    /// every attention kernel is warp-synchronous.
    pub sync_mma: Option<f64>,
    /// Achieved link to host memory, one direction, bytes/s (`None` when the chip does not say).
    pub host_link: Option<f64>,
    /// Host memory offloaded activations may take per chip, bytes (`None` when the chip does not say).
    pub host_memory: Option<f64>,
}

/// How much faster `stack`'s fused attention runs than `attn_eff` prices it: 1 + `attn_gain_2025`
/// for the cuDNN of 2025 (`cudnn_attention_2025`) on asynchronous kernels, else 1.
pub fn cudnn_2025_speedup(stack: &Stack, k: &Constants) -> f64 {
    if stack.cudnn_attention_2025 && !stack.sync_mma_attention {
        1.0 + k.attn_gain_2025
    } else {
        1.0
    }
}

impl Rates {
    /// Fraction of the chip's fused-attention rate `stack`'s attention kernel reaches: the chip's
    /// `sync_mma_fraction` for a FlashAttention-2-class stack (`sync_mma_attention`), else 1.
    pub fn attention_kernel(&self, stack: &Stack) -> f64 {
        if stack.sync_mma_attention {
            self.sync_mma.unwrap_or(1.0)
        } else {
            1.0
        }
    }

    /// Whether `stack`'s fused attention runs its softmax exponentials under its products: an
    /// asynchronous-MMA kernel (cuDNN, FlashAttention-3/4) on a chip that has them.
    pub fn softmax_under_products(&self, stack: &Stack) -> bool {
        self.sync_mma.is_some() && !stack.sync_mma_attention
    }

    /// Read a chip's rates; unknown figures the job needs are errors naming the field.
    pub fn of(chip: &Chip, k: &Constants, chips_used: usize, precision: Precision) -> Result<Rates> {
        let peak_bf16 = chip.require_positive("bf16_tflops")? * 1e12;
        let fp8 = Precision::Fp8.peak_field();
        let peak_8bit = match precision {
            Precision::Fp8 => Some(quantized_peak(chip, fp8, "in FP8", "bf16")?),
            Precision::Int8 => Some(quantized_peak(chip, precision.peak_field(), "with INT8 matmuls", "bf16")?),
            Precision::Fp4 => {
                let instead = if chip.get(fp8).is_some() { "fp8 or bf16" } else { "bf16" };
                Some(quantized_peak(chip, precision.peak_field(), "in FP4", instead)?)
            }
            Precision::Bf16 => chip.get(fp8).map(|t| t * 1e12),
        };
        let mem_bw = chip.require_positive("mem_bw_tbs")? * 1e12;
        let domain = chip.require("scaleup_domain")?;
        if domain < 1.0 || domain.fract() != 0.0 {
            bail!("chip {}: scaleup_domain must be a whole number of chips, at least 1, got {domain}", chip.name);
        }
        let domain = domain as usize;
        if chip.get("tdp_w").is_some() {
            // A zero power would read as no power limit and no energy: refused like the rates.
            chip.require_positive("tdp_w")?;
        }
        let scaleup =
            if chips_used > 1 { chip.require_positive("scaleup_gbs")? * 1e9 / 2.0 * k.scaleup_eff } else { 0.0 };
        let scaleout = if chips_used > domain {
            Some(chip.require_positive("scaleout_gbs")? * 1e9 * k.scaleout_eff)
        } else {
            chip.get("scaleout_gbs").map(|g| g * 1e9 * k.scaleout_eff)
        };
        let clock = power_clock(chip, k);
        let exp_rate = chip.get("sfu_exp_tops").map(|t| t * 1e12 * clock);
        let sync_mma = chip.get("sync_mma_fraction");
        // Copies to host memory over PCIe or NVLink-C2C reach about what a NIC does of its rate.
        let host_link = chip.get("host_link_gbs").map(|g| g * 1e9 * k.scaleout_eff);
        // The chip's share of its node's DRAM, less a fifth for the OS, the data loaders and the
        // framework's pinned buffers (assumed).
        let host_memory = chip.get("host_memory_gb").map(|g| 0.8 * g * 1e9);
        Ok(Rates {
            chip: chip.name.clone(),
            nominal_bf16: peak_bf16,
            peak_bf16: peak_bf16 * clock,
            peak_8bit: peak_8bit.map(|p| p * clock),
            mem_bw,
            scaleup,
            domain,
            scaleout,
            exp_rate,
            sync_mma,
            host_link,
            host_memory,
        })
    }

    /// Bandwidth per rank of a collective over a group whose members are `stride` chips apart and
    /// span `span` consecutive chips.
    ///
    /// Inside one domain: the scale-up link. Across domains NCCL runs hierarchical rings (one per
    /// NIC), so a group with k members per domain moves its inter-domain share over k NICs at once:
    /// k x the per-chip scale-out, never more than the scale-up link.
    pub fn link(&self, stride: usize, span: usize) -> f64 {
        if span <= self.domain {
            return self.scaleup;
        }
        let per_domain = (self.domain / stride.max(1)).max(1) as f64;
        match self.scaleout {
            Some(so) => (so * per_domain).min(self.scaleup.max(so)),
            None => self.scaleup,
        }
    }

    /// Whether a group of `span` consecutive chips crosses a domain boundary.
    pub(super) fn crosses(&self, span: usize) -> bool {
        span > self.domain
    }
}

/// Fraction of the quantized peak `precision`'s GEMMs reach relative to a BF16 GEMM of the same
/// shape: `fp4_gemm_eff` for FP4 (NVFP4 and MXFP4 recipes carry block scales and, in NVFP4,
/// Hadamard transforms that FP8's per-tensor or MXFP8 scaling does not), `fp8_gemm_eff` for FP8
/// and INT8, 1 otherwise.
pub(super) fn quantized_gemm_eff(k: &Constants, precision: Precision) -> f64 {
    match precision {
        Precision::Fp4 => k.fp4_gemm_eff,
        Precision::Fp8 | Precision::Int8 => k.fp8_gemm_eff,
        Precision::Bf16 => 1.0,
    }
}

/// A chip's quantized GEMM peak `field` (OP/s), or the one-line refusal to train `how` without
/// it, naming the precisions to use `instead` and the override that supplies the figure.
fn quantized_peak(chip: &Chip, field: &str, how: &str, instead: &str) -> Result<f64> {
    let t = chip.require_positive(field).map_err(|_| {
        anyhow!(
            "chip {}: no {field}, so it cannot train {how}; use --precision {instead} or supply it with --override {}.{field}=VALUE",
            chip.name,
            chip.name
        )
    })?;
    Ok(t * 1e12)
}

/// Fraction of its rated clock a chip's tensor cores sustain under full load within its board
/// power. Datasheet peaks are at the rated (boost) clock; a chip rated at fewer board watts per
/// dense BF16 TFLOP/s than `k.power_w_per_tflop` holds only
/// (watts per TFLOP/s / power_w_per_tflop)^(1/3) of it, since dynamic power goes as f V^2 and V
/// as f near the top of the voltage/frequency curve. 1 for a chip whose board power is not known.
///
/// A chip with a vendor's max-achievable FLOPs measurement (`maf_bf16_tflops`: the best dense
/// GEMM rate found by a size sweep at the clock the chip sustains, AMD's for the MI300X and
/// MI325X) holds no more than the clock at which `gemm_eff` of its rated peak is that rate: AMD
/// measures its CDNA 3 parts' dense-GEMM clock at 57-69% of the rated 2,100 MHz with 94% of the
/// issue slots busy, which no power model of other chips predicts. (A single-size benchmark such
/// as FlagPerf's `measured_bf16_tflops` is not a maximum and does not cap.)
pub fn power_clock(chip: &Chip, k: &Constants) -> f64 {
    let power = match (chip.get("tdp_w"), chip.get("bf16_tflops")) {
        (Some(w), Some(t)) if w > 0.0 && t > 0.0 && k.power_w_per_tflop > 0.0 => {
            (w / t / k.power_w_per_tflop).cbrt().min(1.0)
        }
        _ => 1.0,
    };
    power.min(maf_clock(chip, k))
}

/// The clock a chip's max-achievable GEMM rate allows at `gemm_eff` of its rated peak (at most
/// 1; 1 without the measurement).
pub fn maf_clock(chip: &Chip, k: &Constants) -> f64 {
    match (chip.get("maf_bf16_tflops"), chip.get("bf16_tflops")) {
        (Some(m), Some(t)) if m > 0.0 && t > 0.0 && k.gemm_eff > 0.0 => (m / (t * k.gemm_eff)).min(1.0),
        _ => 1.0,
    }
}
