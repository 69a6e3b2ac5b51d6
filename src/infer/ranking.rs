//! Nuisance-parameter ranking (impacts): the shift of the fitted POI when one parameter is held
//! at its post-fit value +-1 sigma (post-fit impact) or its pre-fit value +-1 pre-fit sigma
//! (pre-fit impact) and everything else refitted; parallel over parameters.

use super::mle::{prefit_sigma, FitOptions, FitResult, Fitter};
use crate::model::{Dataset, Model};
use crate::{Error, Result};
use rayon::prelude::*;

/// Impacts of one parameter on the POI.
#[derive(Debug, Clone)]
pub struct RankingEntry {
    pub index: usize,
    pub name: String,
    /// Post-fit value and uncertainty of the parameter.
    pub bestfit: f64,
    pub uncertainty: f64,
    /// Pull (bestfit - prefit centre) / prefit sigma, for constrained parameters.
    pub pull: Option<f64>,
    /// POI shifts with the parameter at bestfit + sigma and bestfit - sigma.
    pub postfit_up: f64,
    pub postfit_down: f64,
    /// POI shifts with the parameter at its pre-fit centre +- pre-fit sigma (constrained only).
    pub prefit_up: Option<f64>,
    pub prefit_down: Option<f64>,
    /// True when every refit converged.
    pub converged: bool,
}

impl RankingEntry {
    /// The size used to order the ranking: the larger post-fit impact.
    pub fn size(&self) -> f64 {
        self.postfit_up.abs().max(self.postfit_down.abs())
    }
}

/// The nominal fit of a ranking with its post-fit uncertainties, and the parameters to rank
/// (every free parameter but the POI).
pub(crate) fn nominal_fit(
    fitter: &mut Fitter,
    data: &Dataset,
) -> Result<(FitResult, Vec<f64>, Vec<usize>)> {
    let model = fitter.model();
    let nominal = fitter.fit(
        data,
        &FitOptions {
            uncertainties: true,
            ..FitOptions::default()
        },
    );
    let sigma = nominal.uncertainties.clone().ok_or_else(|| {
        Error::Usage("the Hessian at the best fit is not positive definite, so post-fit uncertainties (and the ranking) are undefined".into())
    })?;
    let candidates = (0..model.n_params())
        .filter(|&i| i != model.poi && !nominal.fixed[i])
        .collect();
    Ok((nominal, sigma, candidates))
}

/// The free fit (with uncertainties) and the ranking of every free non-POI parameter, largest
/// post-fit impact first.
pub fn ranking(model: &Model, data: &Dataset) -> Result<(FitResult, Vec<RankingEntry>)> {
    let (nominal, sigma, candidates) = nominal_fit(&mut Fitter::new(model), data)?;
    let poi = model.poi;
    let muhat = nominal.pars[poi];
    // The covariance at the best fit is the inverse Hessian there; with parameter i held, its
    // Schur complement is the refits' initial inverse Hessian: they start at the best fit,
    // and take nearly Newton steps from there.
    let covariance: Option<Vec<f64>> = nominal.covariance.as_ref().map(|c| c.concat());
    let n = model.n_params();
    let mut entries: Vec<RankingEntry> = candidates
        .par_iter()
        .map_init(
            || Fitter::new(model),
            |fitter, &i| {
                let held = covariance
                    .as_ref()
                    .and_then(|c| crate::optim::inverse_without(c, n, i));
                fitter.set_dense_preconditioner(held.as_deref());
                let (lo, hi) = model.parameters[i].bounds;
                let mut converged = true;
                let mut shift = |value: f64| -> f64 {
                    let f = fitter.fit(
                        data,
                        &FitOptions {
                            fixed: vec![(i, value.clamp(lo, hi))],
                            init: Some(nominal.pars.clone()),
                            uncertainties: false,
                        },
                    );
                    converged &= f.converged;
                    f.pars[poi] - muhat
                };
                let b = nominal.pars[i];
                let postfit_up = shift(b + sigma[i]);
                let postfit_down = shift(b - sigma[i]);
                let centre = model.parameters[i].init_centre();
                let (prefit_up, prefit_down, pull) = match prefit_sigma(model, i) {
                    Some(s) => (
                        Some(shift(centre + s)),
                        Some(shift(centre - s)),
                        Some((b - centre) / s),
                    ),
                    None => (None, None, None),
                };
                RankingEntry {
                    index: i,
                    name: model.parameters[i].name.clone(),
                    bestfit: b,
                    uncertainty: sigma[i],
                    pull,
                    postfit_up,
                    postfit_down,
                    prefit_up,
                    prefit_down,
                    converged,
                }
            },
        )
        .collect();
    entries.sort_by(|a, b| b.size().total_cmp(&a.size()));
    Ok((nominal, entries))
}
