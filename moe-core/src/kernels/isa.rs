//! Which vector instructions the kernels run on this CPU: chosen once, at run time, in this one
//! place.
//!
//! The x86 kernels are compiled into every x86_64 build (`cfg(x86_simd)`, set by `build.rs`)
//! and picked when the CPU has their features, so one binary serves an AVX2 laptop and an
//! AVX-512 server. Elsewhere (ARM, x86 without AVX2, or the `portable` feature) every kernel runs
//! its plain-Rust version, and the products the x86 kernels would have taken go to `gemm`, which
//! has kernels of its own for those CPUs (NEON on aarch64).
//!
//! `MOE_CPU_ISA=portable|avx2|avx512` caps the choice below what the CPU has, as oneDNN's
//! `ONEDNN_MAX_CPU_ISA` does: to measure a kernel against its plainer version on one machine, or
//! to run the plain code paths' tests on a CPU that has the x86 features (CI does). It never
//! raises the choice above what the CPU runs.

use std::sync::OnceLock;

/// The environment variable that caps [`chosen`].
pub const ISA_VAR: &str = "MOE_CPU_ISA";

/// A level of the kernels' instruction sets, each including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust (LLVM vectorises some loops for the build's baseline) and `gemm`.
    Portable,
    /// x86 AVX2 + FMA + F16C: 8-lane registers.
    Avx2,
    /// x86 AVX-512F as well: the 16-lane register tiles of the prompt kernels.
    Avx512,
}

impl Isa {
    /// The name `MOE_CPU_ISA` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The level named `name` (as [`Isa::name`] writes it, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Portable, Self::Avx2, Self::Avx512].into_iter().find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What this build can run on this CPU, ignoring `MOE_CPU_ISA`.
pub fn detected() -> Isa {
    #[cfg(x86_simd)]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            return if has!("avx512f") { Isa::Avx512 } else { Isa::Avx2 };
        }
    }
    Isa::Portable
}

/// The level the kernels run: [`detected`], capped by `MOE_CPU_ISA` when it is set. Read once
/// per process. An unknown value is reported on stderr once and ignored (a kernel has no error
/// to return it through).
pub fn chosen() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let found = detected();
        match std::env::var(ISA_VAR) {
            Ok(value) => match Isa::from_name(&value) {
                Some(cap) => found.min(cap),
                None => {
                    eprintln!("warning: {ISA_VAR}={value:?} is not one of portable, avx2, avx512; ignored");
                    found
                }
            },
            Err(_) => found,
        }
    })
}

/// Whether the kernels run at least `level` on this CPU.
pub fn has(level: Isa) -> bool {
    chosen() >= level
}

/// Whether the AVX2 + FMA + F16C kernels run: the check in front of every x86 kernel call.
#[cfg(x86_simd)]
pub(super) fn avx2() -> bool {
    has(Isa::Avx2)
}

/// Whether the AVX-512 register tiles run as well. Where they do, 16-lane multiply-adds do
/// twice the work of AVX2's 8 per instruction: on a 2-core AMD EPYC (Zen 5) a chain-bound FMA
/// loop ran 131 GFLOP/s per core on `ymm` registers and 262 on `zmm` (2026-11-25).
#[cfg(x86_simd)]
pub(super) fn avx512() -> bool {
    has(Isa::Avx512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_cap_never_raises() {
        for level in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::from_name(level.name()), Some(level));
            assert_eq!(Isa::from_name(&level.name().to_uppercase()), Some(level));
        }
        assert_eq!(Isa::from_name("sse2"), None);
        assert!(chosen() <= detected());
        #[cfg(not(x86_simd))]
        assert_eq!(detected(), Isa::Portable, "a build without x86 SIMD runs the plain kernels");
    }
}
