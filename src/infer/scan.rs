//! Profile-likelihood scans of the POI, parallel over points.
//!
//! Every point is fitted twice, from the model's inits and from the free fit's parameters with
//! the POI moved to the point, and keeps the lower minimum; then once more from each neighbour's
//! answer, so that one bad local minimum cannot survive next to good ones.

use super::mle::{FitResult, Fitter};
use crate::model::{Dataset, Model};
use rayon::prelude::*;

/// One point of a scan.
#[derive(Debug, Clone)]
pub struct ScanPoint {
    pub poi: f64,
    /// The conditional fit at this POI value.
    pub fit: FitResult,
}

impl ScanPoint {
    pub fn twice_nll(&self) -> f64 {
        self.fit.twice_nll()
    }
}

/// Scans the POI over `grid`; returns the free fit and one conditional fit per point.
pub fn profile_scan(model: &Model, data: &Dataset, grid: &[f64]) -> (FitResult, Vec<ScanPoint>) {
    let free = Fitter::new(model).fit_free(data);
    let poi = model.poi;
    let mut first: Vec<FitResult> = grid
        .par_iter()
        .map_init(
            || Fitter::new(model),
            |fitter, &mu| {
                let cold = fitter.fit_fixed_poi(data, mu, None);
                let mut start = free.pars.clone();
                start[poi] = mu;
                let warm = fitter.fit_fixed_poi(data, mu, Some(start));
                better(cold, warm)
            },
        )
        .collect();
    // Neighbour pass: restart each point from its neighbours' solutions.
    let starts: Vec<Vec<Vec<f64>>> = (0..grid.len())
        .map(|i| {
            let mut v = Vec::new();
            if i > 0 {
                v.push(first[i - 1].pars.clone());
            }
            if i + 1 < grid.len() {
                v.push(first[i + 1].pars.clone());
            }
            v
        })
        .collect();
    first = first
        .into_par_iter()
        .zip(starts)
        .zip(grid.par_iter())
        .map_init(
            || Fitter::new(model),
            |fitter, ((best, starts), &mu)| {
                let mut best = best;
                for mut s in starts {
                    s[poi] = mu;
                    let f = fitter.fit_fixed_poi(data, mu, Some(s));
                    best = better(best, f);
                }
                best
            },
        )
        .collect();
    let points = grid
        .iter()
        .zip(first)
        .map(|(&poi, fit)| ScanPoint { poi, fit })
        .collect();
    (free, points)
}

/// The fit with the lower NLL, preferring a converged one.
fn better(a: FitResult, b: FitResult) -> FitResult {
    match (a.converged, b.converged) {
        (true, false) => a,
        (false, true) => b,
        _ => {
            if b.nll < a.nll {
                b
            } else {
                a
            }
        }
    }
}
