//! The one place that decides which instruction set this port's own kernels run on.
//!
//! Every kernel family asks [`level`] (never `is_x86_feature_detected!` itself), so one setting
//! moves all of them together: `ANYCHIP_CPU_ISA=avx512|avx2|neon|portable` caps the level, which
//! is how every path is tested and measured on one machine. The cap is a ceiling, not a demand:
//! asking for more than the CPU has gives the best level the CPU has below it (`avx512` on an
//! AVX2-only CPU runs AVX2; `avx2` on a CPU without AVX2+FMA runs portable), and `anychip
//! ports` prints the level in use. An unknown value is refused when the port is created.
//!
//! Levels are ordered by vector width, portable < neon (128-bit) < avx2 (256) < avx512 (512), and
//! each CPU supports portable plus those of its own architecture. So on aarch64 `neon` is the best
//! level (NEON with FMA is part of the aarch64-unknown-linux-gnu baseline, so it is always
//! supported there) and a cap of `avx2` or `avx512` runs NEON; on x86-64 a cap of `neon` runs
//! portable. At `portable` on aarch64 the plain Rust kernels still compile to NEON by
//! auto-vectorisation, but without FMA contraction (Rust never contracts `a * b + c`) and with
//! exp's special cases (infinities, NaN) selected in every lane; at `neon` the hand-written
//! kernels of `math_neon.rs` and the NEON attention tiles (`fused/tile.rs`) run.
//!
//! The `gemm` crate (f32 and widened-bf16 products) picks its own micro-kernels once, from what
//! the CPU has: `gemm-common`'s `gemm_def!` (0.19) tests `is_x86_feature_detected!("avx512f")`
//! then `("fma")` (on aarch64 `is_aarch64_feature_detected!("neon")`) and keeps the answer in a
//! private static function pointer. It reads no environment variable, has no setter, and its
//! `Parallelism` argument is only a thread count; its one switch, the `x86-v4` cargo feature,
//! is compile time and would drop the AVX-512 kernels from every build. It does make public the
//! parts that function pointer is built from: the generic driver
//! `gemm_common::gemm::gemm_basic_generic` and each kernel set's tables
//! (`gemm_f32::microkernel::fma::f32`). So at `avx2` on an AVX-512 CPU, [`gemm_kernels`] names
//! gemm's AVX2+FMA set and `prim::matmul` calls the driver with it (after the same operand
//! transposition `gemm::gemm` does); otherwise `gemm::gemm` runs as before. Not at `portable`:
//! gemm's scalar set, run the same way, missed the conformance suite's L1 matmul tolerance
//! under qemu (4.6e-5 against 5.1e-6 allowed on [17x64]x[64x17], alpha 2, beta 0.25) and was not
//! investigated further, so at `portable` gemm keeps its own choice (AVX2+FMA, AVX-512 or NEON)
//! and the portable level caps this port's own kernels only. A vendor BLAS is capped by its own
//! variable (`MKL_ENABLE_INSTRUCTIONS`).

use std::sync::OnceLock;

/// An instruction-set level of this port's kernels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust: whatever the compiler makes of it for the build's baseline target.
    Portable,
    /// 128-bit NEON with FMA (aarch64's baseline).
    Neon,
    /// 256-bit AVX2 with FMA (x86-64-v3).
    Avx2,
    /// 512-bit AVX-512F (x86-64-v4).
    Avx512,
}

/// The variable that caps the level.
pub const ENV: &str = "ANYCHIP_CPU_ISA";

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Neon, Isa::Avx2, Isa::Avx512];

    /// The name `ANYCHIP_CPU_ISA` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run kernels of this level.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            // NEON and FMA are part of every aarch64 Linux target's baseline.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            _ => false,
        }
    }
}

/// The best level this CPU supports.
pub fn detected() -> Isa {
    Isa::ALL.into_iter().rev().find(|l| l.supported()).unwrap_or(Isa::Portable)
}

/// The level for a value of `ANYCHIP_CPU_ISA` (None: unset), capped to what the CPU has; or the
/// one line that says what is wrong with the value.
pub fn resolve(value: Option<&str>) -> Result<Isa, String> {
    let cap = match value.map(str::trim) {
        None | Some("") => Isa::Avx512,
        Some(v) => Isa::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(v)).ok_or_else(|| {
            format!("{ENV}={v:?} is not a level this port knows; use avx512, avx2, neon or portable, or unset it to use the best this CPU has")
        })?,
    };
    Ok(Isa::ALL.into_iter().rev().find(|&l| l <= cap && l.supported()).unwrap_or(Isa::Portable))
}

/// The level in use, read once from the environment. An unknown value (which
/// [`crate::CpuPort::new`] refuses before any kernel runs) counts as unset here.
pub fn level() -> Isa {
    static LEVEL: OnceLock<Isa> = OnceLock::new();
    *LEVEL.get_or_init(|| resolve(std::env::var(ENV).ok().as_deref()).unwrap_or_else(|_| detected()))
}

/// The level in use for reports, with the cap when one applies: "avx2", or
/// "avx2 (ANYCHIP_CPU_ISA=avx512; this CPU has no higher)".
pub fn about() -> String {
    match std::env::var(ENV).ok().filter(|v| !v.trim().is_empty()) {
        None => level().name().to_string(),
        Some(v) if v.trim().eq_ignore_ascii_case(level().name()) => format!("{} ({ENV}={})", level().name(), v.trim()),
        Some(v) => format!("{} ({ENV}={}; this CPU has {})", level().name(), v.trim(), detected().name()),
    }
}

/// Which of the gemm crate's f32 kernel sets the products run on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernels {
    /// gemm's own choice, the best the CPU has (no cap below it is in force).
    Own,
    /// The AVX2+FMA set (`gemm_f32::microkernel::fma`), for `avx2` on a CPU with AVX-512.
    Fma,
}

/// The gemm kernel set for dispatch level `level` (one the CPU supports): the AVX2+FMA set at
/// `avx2` below the CPU's AVX-512, else gemm's own choice (see the module docs for `portable`).
pub fn gemm_kernels_at(level: Isa) -> GemmKernels {
    if level == Isa::Avx2 && detected() == Isa::Avx512 {
        GemmKernels::Fma
    } else {
        GemmKernels::Own
    }
}

/// The gemm kernel set for the level in use.
pub fn gemm_kernels() -> GemmKernels {
    gemm_kernels_at(level())
}

/// Check `ANYCHIP_CPU_ISA` for a port being created.
pub fn check_env() -> Result<(), String> {
    resolve(std::env::var(ENV).ok().as_deref()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_never_exceeds_the_cpu_and_unset_means_the_best() {
        assert_eq!(resolve(None), Ok(detected()));
        assert_eq!(resolve(Some("")), Ok(detected()));
        for l in Isa::ALL {
            let got = resolve(Some(l.name())).unwrap();
            assert!(got <= l && got.supported(), "{} gave {}", l.name(), got.name());
            // The best supported level under the cap: nothing supported lies between.
            let skipped = Isa::ALL.into_iter().find(|&s| s > got && s <= l && s.supported());
            assert_eq!(skipped, None, "{} gave {} on a CPU whose best is {}", l.name(), got.name(), detected().name());
        }
        assert_eq!(resolve(Some("AVX2")), resolve(Some("avx2")));
        assert_eq!(resolve(Some("portable")), Ok(Isa::Portable));
    }

    #[test]
    fn neon_is_the_best_level_on_aarch64_and_never_elsewhere() {
        assert_eq!(Isa::Neon.supported(), cfg!(target_arch = "aarch64"));
        if cfg!(target_arch = "aarch64") {
            assert_eq!(detected(), Isa::Neon);
            assert_eq!(resolve(Some("avx512")), Ok(Isa::Neon));
            assert_eq!(resolve(Some("NEON")), Ok(Isa::Neon));
        } else {
            assert_eq!(resolve(Some("neon")), Ok(Isa::Portable));
        }
    }

    #[test]
    fn gemm_runs_its_avx2_set_only_at_avx2_below_avx512() {
        assert_eq!(gemm_kernels_at(detected()), GemmKernels::Own);
        assert_eq!(gemm_kernels_at(Isa::Portable), GemmKernels::Own);
        if detected() == Isa::Avx512 {
            assert_eq!(gemm_kernels_at(Isa::Avx2), GemmKernels::Fma);
        }
    }

    #[test]
    fn an_unknown_value_is_one_line_naming_it_and_the_choices() {
        let e = resolve(Some("sse9")).unwrap_err();
        assert!(e.contains("\"sse9\"") && e.contains("avx512, avx2, neon or portable") && !e.contains('\n'), "{e}");
    }
}
