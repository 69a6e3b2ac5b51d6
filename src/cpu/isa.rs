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
/// AVX2 + FMA, and AVX-512 (F and DQ) in the histosys loops only: they stream their records
/// from L2, and a 64-byte record is one load instead of two. The rest of the kernel stays at
/// 256 bits (a whole-kernel AVX-512 build was no faster in session 3).
pub const AVX512: u8 = 2;

/// The best level this CPU runs, or a lower one with `NEXTSTAT_CPU_ISA=portable` or `avx2`
/// (for comparing the builds). Read once per process.
pub fn level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("NEXTSTAT_CPU_ISA").as_deref() {
        Ok("portable") => PORTABLE,
        Ok("avx2") => AVX2.min(supported()),
        Ok("auto") | Ok("") | Err(_) => supported(),
        Ok(other) => {
            eprintln!(
                "NEXTSTAT_CPU_ISA='{other}' is not 'portable', 'avx2' or 'auto': using the \
                 best build this CPU runs"
            );
            supported()
        }
    })
}

/// The best level this CPU supports.
pub fn supported() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            if has!("avx512f") && has!("avx512dq") {
                return AVX512;
            }
            return AVX2;
        }
    }
    PORTABLE
}
