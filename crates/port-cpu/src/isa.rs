//! The one place that decides which instruction set this port's own kernels run on.
//!
//! Every kernel family asks [`level`] (never `is_x86_feature_detected!` itself), so one setting
//! moves all of them together: `ANYCHIP_CPU_ISA=avx512|avx2|portable` caps the level, which is
//! how every path is tested and measured on one machine. The cap is a ceiling, not a demand:
//! asking for more than the CPU has gives the best level the CPU has below it (`avx512` on an
//! AVX2-only CPU runs AVX2; `avx2` on a CPU without AVX2+FMA runs portable), and `anychip
//! ports` prints the level in use. An unknown value is refused when the port is created.
//!
//! On aarch64 the only level is `portable`: NEON is part of the baseline target there, so the
//! portable kernels already compile to NEON (and the gemm crate has NEON micro-kernels).
//!
//! Not covered: the `gemm` crate (f32 and widened-bf16 products) picks its own micro-kernels
//! from what the CPU has and cannot be told otherwise, so under a cap below the CPU's best its
//! products still use the wider unit; a vendor BLAS is capped by its own variable
//! (`MKL_ENABLE_INSTRUCTIONS`).

use std::sync::OnceLock;

/// An instruction-set level of this port's kernels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust: whatever the compiler makes of it for the build's baseline target.
    Portable,
    /// 256-bit AVX2 with FMA (x86-64-v3).
    Avx2,
    /// 512-bit AVX-512F (x86-64-v4).
    Avx512,
}

/// The variable that caps the level.
pub const ENV: &str = "ANYCHIP_CPU_ISA";

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `ANYCHIP_CPU_ISA` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
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
            #[cfg(not(target_arch = "x86_64"))]
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
            format!("{ENV}={v:?} is not a level this port knows; use avx512, avx2 or portable, or unset it to use the best this CPU has")
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
            assert_eq!(got, l.min(detected()), "{} on a CPU whose best is {}", l.name(), detected().name());
        }
        assert_eq!(resolve(Some("AVX2")), resolve(Some("avx2")));
        assert_eq!(resolve(Some("portable")), Ok(Isa::Portable));
    }

    #[test]
    fn an_unknown_value_is_one_line_naming_it_and_the_choices() {
        let e = resolve(Some("sse9")).unwrap_err();
        assert!(e.contains("\"sse9\"") && e.contains("avx512, avx2 or portable") && !e.contains('\n'), "{e}");
    }
}
