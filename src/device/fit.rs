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

/// One fit's parameters among a whole batch's, as an f32 engine read them back: one
/// allocation shared by the batch's fits. Widening 40,000 tHu fits' parameters to f64 vectors
/// took longer than fitting them (50 ms on the H200's host, most of it the first touch of
/// 59 MB); a caller widens one fit's at a time into a buffer it reuses instead.
#[derive(Debug, Clone)]
pub struct SharedPars {
    all: std::sync::Arc<Vec<f32>>,
    start: usize,
    len: usize,
}

impl SharedPars {
    /// Row `i` of `all` (rows of `len` values); `None` past its end.
    pub fn row(all: &std::sync::Arc<Vec<f32>>, i: usize, len: usize) -> Option<Self> {
        let start = i.checked_mul(len)?;
        (start.checked_add(len)? <= all.len()).then(|| SharedPars {
            all: all.clone(),
            start,
            len,
        })
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.all[self.start..self.start + self.len]
    }
}

/// One fit done on the device.
#[derive(Debug, Clone)]
pub struct GpuFit {
    /// Parameters at the minimum (widened to f64 by an f32 engine). Empty for a converged fit
    /// when the caller did not ask for them ([`GpuFitOptions::keep_pars`]): an f64 engine
    /// carries the NLL instead, an f32 engine the f32 parameters in `pars_f32`. Always there
    /// for a fit that did not converge, so that it can be continued on the CPU.
    pub pars: Vec<f64>,
    /// An f32 engine's parameters at the minimum where `pars` is empty (see
    /// [`GpuFit::pars_into`]).
    pub pars_f32: Option<SharedPars>,
    /// The POI's value at the minimum.
    pub poi: f64,
    pub status: GpuFitStatus,
    pub iterations: u32,
    /// The NLL at `pars` (pyhf's -logpdf, constants included) as an f64 engine computed it;
    /// `None` from an f32 engine or where the engine does not know the dataset's constant
    /// (toys drawn on the device), so that callers evaluate it on the CPU.
    pub nll: Option<f64>,
}

impl GpuFit {
    /// The parameters at the minimum, in f64, written into `out` (from `pars`, else widened
    /// from `pars_f32`); empty when the engine left neither.
    pub fn pars_into(&self, out: &mut Vec<f64>) {
        out.clear();
        match &self.pars_f32 {
            Some(p) if self.pars.is_empty() => {
                out.extend(p.as_slice().iter().map(|&x| f64::from(x)))
            }
            _ => out.extend_from_slice(&self.pars),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(pars: Vec<f64>, pars_f32: Option<SharedPars>) -> GpuFit {
        GpuFit {
            pars,
            pars_f32,
            poi: 0.0,
            status: GpuFitStatus::Converged,
            iterations: 1,
            nll: None,
        }
    }

    /// A fit's parameters come from `pars` where it has them, else widened from its row of
    /// the batch's shared f32 parameters; a row past the batch's end does not exist.
    #[test]
    fn pars_into_reads_the_fits_own_row() {
        let all = std::sync::Arc::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut out = vec![9.0];
        fit(Vec::new(), SharedPars::row(&all, 1, 3)).pars_into(&mut out);
        assert_eq!(out, [4.0, 5.0, 6.0]);
        fit(vec![7.0, 8.0], SharedPars::row(&all, 0, 3)).pars_into(&mut out);
        assert_eq!(out, [7.0, 8.0]);
        fit(Vec::new(), None).pars_into(&mut out);
        assert!(out.is_empty());
        assert!(SharedPars::row(&all, 2, 3).is_none());
        assert!(SharedPars::row(&all, usize::MAX, 3).is_none());
    }
}
