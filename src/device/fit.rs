//! What every GPU engine's fitter reports, and its settings: the status codes written
//! by `wgsl/fit.wgsl` and `cuda/fit.cu` (the same numbers), one fit's result, and the
//! tolerances, whose defaults differ with the engine's float width.

/// How a fit on the device ended (the codes of wgsl/fit.wgsl and cuda/fit.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuFitStatus {
    Converged,
    ConvergedByObjective,
    MaxIterations,
    LineSearchFailed,
    NonFiniteStart,
    /// Still running when the dispatch budget ran out.
    Unfinished,
}

impl GpuFitStatus {
    pub fn from_code(c: u32) -> Self {
        match c {
            2 => GpuFitStatus::Converged,
            3 => GpuFitStatus::ConvergedByObjective,
            4 => GpuFitStatus::MaxIterations,
            5 => GpuFitStatus::LineSearchFailed,
            6 => GpuFitStatus::NonFiniteStart,
            _ => GpuFitStatus::Unfinished,
        }
    }
    pub fn converged(self) -> bool {
        matches!(
            self,
            GpuFitStatus::Converged | GpuFitStatus::ConvergedByObjective
        )
    }
}

/// One fit done on the device.
#[derive(Debug, Clone)]
pub struct GpuFit {
    /// Parameters at the minimum (widened to f64 by an f32 engine). Empty for a converged fit
    /// of an engine that carries the NLL when the caller did not ask for them
    /// ([`GpuFitOptions::keep_pars`]); always there for a fit that did not converge, so that
    /// it can be continued on the CPU.
    pub pars: Vec<f64>,
    /// The POI's value at the minimum.
    pub poi: f64,
    pub status: GpuFitStatus,
    pub iterations: u32,
    /// The NLL at `pars` (pyhf's -logpdf, constants included) as an f64 engine computed it;
    /// `None` from an f32 engine or where the engine does not know the dataset's constant
    /// (toys drawn on the device), so that callers evaluate it on the CPU.
    pub nll: Option<f64>,
}

/// Settings of a device fitter. [`GpuFitOptions::f32`] suits the WGSL engine,
/// [`GpuFitOptions::f64`] the CUDA engine (the CPU fitter's tolerances).
#[derive(Debug, Clone, Copy)]
pub struct GpuFitOptions {
    pub memory: u32,
    pub max_iter: u32,
    /// Iterations per dispatch (short dispatches for GPU watchdogs; the WGSL engine). The
    /// CUDA engine's blocks fit each item to the end in one launch.
    pub iters_per_dispatch: u32,
    pub pgtol: f64,
    pub ftol: f64,
    pub pgtol_loose: f64,
    /// Stop dispatching once at most `n / tail_divisor` fits are still running (0: never);
    /// the rest are handed back unfinished and completed on the CPU (the WGSL engine).
    pub tail_divisor: u32,
    /// At most this many persistent blocks (the CUDA engine; 0: as many as are resident on
    /// the device at once). With fewer blocks than fits each block fits several in turn.
    pub max_blocks: u32,
    /// Read back every fit's parameters. Toy-based tests need only the NLL and the POI of a
    /// converged fit; without the rest, tHu's 40,000 fits read back 2 MB instead of 59 MB
    /// (an engine that does not carry the NLL reads them all regardless).
    pub keep_pars: bool,
}

impl GpuFitOptions {
    /// Tolerances an f32 gradient can reach.
    pub fn f32() -> Self {
        GpuFitOptions {
            memory: 8,
            max_iter: 500,
            iters_per_dispatch: 16,
            pgtol: 2e-3,
            ftol: 1e-7,
            pgtol_loose: 5e-2,
            tail_divisor: 200,
            max_blocks: 0,
            keep_pars: true,
        }
    }

    /// The CPU fitter's tolerances (`optim::LbfgsbOptions::default`), for an f64 engine.
    pub fn f64() -> Self {
        let cpu = crate::optim::LbfgsbOptions::default();
        GpuFitOptions {
            memory: cpu.memory as u32,
            max_iter: 1000,
            iters_per_dispatch: 64,
            pgtol: cpu.pgtol,
            ftol: cpu.ftol,
            pgtol_loose: cpu.pgtol_loose,
            tail_divisor: 0,
            max_blocks: 0,
            keep_pars: true,
        }
    }
}
