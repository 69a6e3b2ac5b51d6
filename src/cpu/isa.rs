//! The instruction-set levels the CPU kernel is compiled for, and the choice among them.
//!
//! The kernel is one generic function compiled once per level (`const ISA: u8`); each inner
//! loop takes its intrinsic path where `ISA` allows it. Only [`level`] (run-time feature
//! detection) picks a level above [`PORTABLE`], so an intrinsic path never runs on a CPU
//! without its instructions.

/// Plain Rust loops (any CPU).
pub const PORTABLE: u8 = 0;
/// AVX2 + FMA intrinsics (x86-64 since Haswell).
pub const AVX2: u8 = 1;
/// AVX-512F intrinsics on top of AVX2 + FMA: 8-wide vectors, and whole 64-byte records per
/// load. The kernel streams its tables from L2, and 64-byte loads fetch them faster.
pub const AVX512: u8 = 2;

/// The best level this CPU runs, lowered by `NEXTSTAT_CPU_ISA=portable|avx2` (for comparing
/// the builds; a level the CPU lacks is never raised to).
pub fn level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("NEXTSTAT_CPU_ISA").as_deref() {
            Ok("portable") => PORTABLE,
            Ok("avx2") => AVX2,
            _ => AVX512,
        };
        cap.min(supported())
    })
}

/// The best level this CPU supports.
pub fn supported() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") { AVX512 } else { AVX2 };
        }
    }
    PORTABLE
}
