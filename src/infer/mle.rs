//! Maximum-likelihood fits: free, conditional on the POI, with any parameters held fixed.

use crate::cpu::Evaluator;
use crate::model::{Constraint, Dataset, Model};
use crate::optim::{hessian_from_gradient, invert_symmetric, Lbfgsb, LbfgsbOptions, Status};

/// Options of a fit.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Parameters held at a value (in addition to the model's fixed parameters).
    pub fixed: Vec<(usize, f64)>,
    /// Starting point (default: the model's inits).
    pub init: Option<Vec<f64>>,
    /// Also compute the Hessian, covariance and uncertainties at the minimum.
    pub uncertainties: bool,
}

/// Result of a fit.
#[derive(Debug, Clone)]
pub struct FitResult {
    /// Parameters at the minimum, in the model's order.
    pub pars: Vec<f64>,
    /// NLL at the minimum (pyhf's `-logpdf`).
    pub nll: f64,
    pub converged: bool,
    pub status: Status,
    pub iterations: usize,
    pub evaluations: usize,
    /// Largest |projected gradient| at the end.
    pub grad_norm: f64,
    /// Parameters the fit held fixed.
    pub fixed: Vec<bool>,
    /// Standard deviations from the inverse Hessian (0 for fixed parameters); with
    /// `FitOptions::uncertainties`, when the Hessian is positive definite.
    pub uncertainties: Option<Vec<f64>>,
    pub covariance: Option<Vec<Vec<f64>>>,
}

impl FitResult {
    /// 2 * NLL at the minimum (what pyhf's fits return as the fitted value).
    pub fn twice_nll(&self) -> f64 {
        2.0 * self.nll
    }

    /// Correlation matrix from the covariance.
    pub fn correlation(&self) -> Option<Vec<Vec<f64>>> {
        let c = self.covariance.as_ref()?;
        let n = c.len();
        Some(
            (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            let d = (c[i][i] * c[j][j]).sqrt();
                            if d > 0.0 {
                                c[i][j] / d
                            } else if i == j {
                                1.0
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect(),
        )
    }
}

/// A fitter for one model: evaluator and minimiser buffers, reused across fits. A clone is
/// several times cheaper than a new one (no tables built again).
#[derive(Clone)]
pub struct Fitter<'m> {
    model: &'m Model,
    ev: Evaluator<'m>,
    opt: Lbfgsb,
    lower: Vec<f64>,
    upper: Vec<f64>,
    diag: Vec<f64>,
    /// Use the Fisher-diagonal preconditioner (on by default).
    pub precondition: bool,
    /// A preconditioner to use for every fit instead of computing one at each start.
    fixed_preconditioner: Option<Vec<f64>>,
}

impl<'m> Fitter<'m> {
    pub fn new(model: &'m Model) -> Self {
        Self::with_options(model, LbfgsbOptions::default())
    }

    pub fn with_options(model: &'m Model, opts: LbfgsbOptions) -> Self {
        let (lower, upper) = model.bounds().into_iter().unzip();
        Fitter {
            model,
            ev: Evaluator::new(model),
            opt: Lbfgsb::new(model.n_params(), opts),
            lower,
            upper,
            diag: vec![0.0; model.n_params()],
            precondition: true,
            fixed_preconditioner: None,
        }
    }

    /// Uses a whole initial inverse Hessian (from [`Fitter::inverse_fisher_matrix`]) for
    /// every following fit, in place of the diagonal one; `None` returns to the diagonal.
    pub fn set_dense_preconditioner(&mut self, inverse_hessian: Option<&[f64]>) {
        self.opt.set_dense_preconditioner(inverse_hessian);
    }

    /// The inverse of the Fisher information at `pars` over the parameters that are not
    /// `fixed` (row-major `n x n`, zero in the rows and columns of fixed parameters): the
    /// initial inverse Hessian of fits that start near `pars`. None where a rate is not
    /// positive there, or the information is not positive definite.
    pub fn inverse_fisher_matrix(&mut self, pars: &[f64], fixed: &[bool]) -> Option<Vec<f64>> {
        let n = self.model.n_params();
        let mut f = vec![0.0; n * n];
        if !self.ev.fisher_matrix(pars, &mut f) {
            return None;
        }
        // a parameter the likelihood does not depend on (a parameter config no modifier
        // uses) has a zero row: unit curvature, as the diagonal preconditioner gives it, keeps
        // the rest invertible
        for i in 0..n {
            if f[i * n + i] <= 0.0 {
                f[i * n + i] = 1.0;
            }
        }
        let rows: Vec<Vec<f64>> = f.chunks(n).map(|r| r.to_vec()).collect();
        let keep: Vec<usize> = (0..n).filter(|&i| !fixed[i]).collect();
        let inv = crate::optim::invert_symmetric(&rows, &keep)?;
        Some(inv.concat())
    }

    /// Uses the inverse Fisher diagonal at `pars` as the preconditioner of every following fit
    /// (for many fits of similar datasets, such as the toys of one ensemble, where computing it
    /// once per fit would cost a fifth of the fit). `None` returns to one per fit.
    pub fn set_preconditioner_at(&mut self, pars: Option<&[f64]>) {
        let d = pars.and_then(|p| self.inverse_fisher_diagonal(p));
        self.fixed_preconditioner = d;
    }

    /// Uses a given inverse Fisher diagonal (from [`Fitter::inverse_fisher_diagonal`]) as the
    /// preconditioner of every following fit: one computation shared by many fitters.
    pub fn set_preconditioner(&mut self, inverse_diagonal: Option<Vec<f64>>) {
        self.fixed_preconditioner = inverse_diagonal;
    }

    /// The inverse of the Fisher information's diagonal at `pars` (None where a rate is not
    /// positive there).
    pub fn inverse_fisher_diagonal(&mut self, pars: &[f64]) -> Option<Vec<f64>> {
        let mut d = vec![0.0; self.model.n_params()];
        if !self.ev.fisher_diagonal(pars, &mut d) {
            return None;
        }
        for v in d.iter_mut() {
            *v = if *v > 0.0 { 1.0 / *v } else { 1.0 };
        }
        Some(d)
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Minimises the NLL of `data`.
    pub fn fit(&mut self, data: &Dataset, options: &FitOptions) -> FitResult {
        let m = self.model;
        let mut x0 = options.init.clone().unwrap_or_else(|| m.init());
        let mut fixed = m.fixed();
        for &(i, v) in &options.fixed {
            fixed[i] = true;
            x0[i] = v;
        }
        let r = self.minimize(data, &x0, &fixed);
        let mut result = FitResult {
            pars: r.x,
            nll: r.f,
            converged: r.status.converged(),
            status: r.status,
            iterations: r.iterations,
            evaluations: r.evaluations,
            grad_norm: r.pg_norm,
            fixed,
            uncertainties: None,
            covariance: None,
        };
        if options.uncertainties && result.nll.is_finite() {
            self.add_uncertainties(data, &mut result);
        }
        result
    }

    /// A free fit.
    pub fn fit_free(&mut self, data: &Dataset) -> FitResult {
        self.fit(data, &FitOptions::default())
    }

    /// A fit with the POI held at `mu` (pyhf's `fixed_poi_fit`).
    pub fn fit_fixed_poi(&mut self, data: &Dataset, mu: f64, init: Option<Vec<f64>>) -> FitResult {
        self.fit(
            data,
            &FitOptions {
                fixed: vec![(self.model.poi, mu)],
                init,
                uncertainties: false,
            },
        )
    }

    /// Runs the minimiser, then once more from its answer with fresh memory: a restart costs
    /// one iteration at a true minimum and catches a stop on a flat stretch.
    fn minimize(
        &mut self,
        data: &Dataset,
        x0: &[f64],
        fixed: &[bool],
    ) -> crate::optim::OptimResult {
        // Precondition with the inverse Fisher diagonal at the start: curvatures of the
        // parameters differ by orders of magnitude (a staterror gamma with a 1% constraint
        // against an alpha against a free normalisation), which plain L-BFGS pays for in
        // hundreds of iterations.
        if let Some(d) = &self.fixed_preconditioner {
            self.opt.set_preconditioner(Some(d));
        } else if self.precondition && self.ev.fisher_diagonal(x0, &mut self.diag) {
            for d in self.diag.iter_mut() {
                *d = if *d > 0.0 { 1.0 / *d } else { 1.0 };
            }
            self.opt.set_preconditioner(Some(&self.diag));
        } else {
            self.opt.set_preconditioner(None);
        }
        let ev = &mut self.ev;
        let mut obj = |x: &[f64], g: &mut [f64]| ev.nll_grad_unchecked(x, data, Some(g));
        let first = self
            .opt
            .minimize(&mut obj, x0, &self.lower, &self.upper, fixed);
        // A restart from a point that met the gradient tolerance would stop there at once,
        // after one more evaluation: only a fit that stopped otherwise is restarted.
        if matches!(first.status, Status::NonFiniteStart | Status::Converged) {
            return first;
        }
        let second = self
            .opt
            .minimize(&mut obj, &first.x, &self.lower, &self.upper, fixed);
        let mut best = if second.f <= first.f {
            second
        } else {
            first.clone()
        };
        best.iterations = first.iterations + if best.f < first.f { best.iterations } else { 0 };
        best.evaluations += first.evaluations;
        best
    }

    fn add_uncertainties(&mut self, data: &Dataset, result: &mut FitResult) {
        let ev = &mut self.ev;
        let grad = |x: &[f64], g: &mut [f64]| {
            ev.nll_grad_unchecked(x, data, Some(g));
        };
        let h = hessian_from_gradient(grad, &result.pars, &self.lower, &self.upper, &result.fixed);
        let keep: Vec<usize> = (0..result.pars.len())
            .filter(|&i| !result.fixed[i])
            .collect();
        if let Some(cov) = invert_symmetric(&h, &keep) {
            result.uncertainties =
                Some((0..cov.len()).map(|i| cov[i][i].max(0.0).sqrt()).collect());
            result.covariance = Some(cov);
        }
    }
}

/// The pre-fit width of a constrained parameter (Gaussian sigma, or 1/sqrt(tau) for a
/// Poisson-constrained gamma); `None` for free parameters.
pub fn prefit_sigma(model: &Model, i: usize) -> Option<f64> {
    match model.parameters[i].constraint {
        Constraint::None => None,
        Constraint::Gaussian { sigma, .. } => Some(sigma),
        Constraint::Poisson { tau, .. } => Some(1.0 / tau.sqrt()),
    }
}

/// Fits many datasets in parallel (rayon), each from its own start (`inits[i]`, or the model's
/// inits) with the same extra fixed parameters: the entry point the GPU engines implement too.
pub fn fit_batch(
    model: &Model,
    datasets: &[Dataset],
    inits: Option<&[Vec<f64>]>,
    fixed: &[(usize, f64)],
) -> Vec<FitResult> {
    use rayon::prelude::*;
    (0..datasets.len())
        .into_par_iter()
        .map_init(
            || Fitter::new(model),
            |fitter, i| {
                fitter.fit(
                    &datasets[i],
                    &FitOptions {
                        fixed: fixed.to_vec(),
                        init: inits.map(|v| v[i].clone()),
                        uncertainties: false,
                    },
                )
            },
        )
        .collect()
}
