//! Scans and rankings with their fits on the WGSL engine: every refit of a scan or a ranking
//! is an item of one lockstep batch on the device. NLLs are re-evaluated in f64 on the CPU from
//! the fitted parameters, and a device fit that did not converge is finished on the CPU.

use super::mle::{prefit_sigma, FitOptions, FitResult, Fitter};
use super::ranking::RankingEntry;
use super::scan::ScanPoint;
use crate::cpu::Evaluator;
use crate::device::{BatchSession, GpuFit};
use crate::model::{Dataset, Model};
use crate::optim::Status;
use crate::{Error, Result};

/// A device fit as an f64 [`FitResult`]: its NLL evaluated on the CPU, or the fit finished
/// there (holding `fixed`) when the device's did not converge.
fn complete(
    model: &Model,
    fitter: &mut Fitter,
    data: &Dataset,
    fit: &GpuFit,
    fixed: &[(usize, f64)],
) -> FitResult {
    if fit.status.converged() {
        if let Ok(nll) = Evaluator::new(model).nll(&fit.pars, data) {
            return FitResult {
                pars: fit.pars.clone(),
                nll,
                converged: true,
                status: Status::Converged,
                iterations: fit.iterations as usize,
                evaluations: 0,
                grad_norm: f64::NAN,
                fixed: Vec::new(),
                uncertainties: None,
                covariance: None,
            };
        }
    }
    fitter.fit(
        data,
        &FitOptions {
            fixed: fixed.to_vec(),
            init: Some(fit.pars.clone()),
            uncertainties: false,
        },
    )
}

fn preconditioner(model: &Model, at: &[f64]) -> Result<Vec<f64>> {
    Fitter::new(model)
        .inverse_fisher_diagonal(at)
        .ok_or_else(|| Error::Device("an expected rate is not positive at the start point".into()))
}

/// A profile scan with every point fitted on the device twice (from the free fit's
/// parameters and from the inits), keeping the lower f64 minimum.
pub fn profile_scan_gpu(
    model: &Model,
    data: &Dataset,
    grid: &[f64],
    session: &dyn BatchSession,
) -> Result<(FitResult, Vec<ScanPoint>)> {
    let mut fitter = Fitter::new(model);
    let free = fitter.fit_free(data);
    let poi = model.poi;
    let mut starts = Vec::with_capacity(2 * grid.len());
    for &mu in grid {
        let mut warm = free.pars.clone();
        warm[poi] = mu;
        let mut cold = model.init();
        cold[poi] = mu;
        starts.push(warm);
        starts.push(cold);
    }
    let h0 = preconditioner(model, &free.pars)?;
    let fits = session.fit_variants(
        data,
        &starts,
        &vec![poi as u32; starts.len()],
        &h0,
        &session.fit_options(),
    )?;
    let points = grid
        .iter()
        .enumerate()
        .map(|(k, &mu)| {
            let a = complete(model, &mut fitter, data, &fits[2 * k], &[(poi, mu)]);
            let b = complete(model, &mut fitter, data, &fits[2 * k + 1], &[(poi, mu)]);
            let fit = match (a.converged, b.converged) {
                (true, false) => a,
                (false, true) => b,
                _ if b.nll < a.nll => b,
                _ => a,
            };
            ScanPoint { poi: mu, fit }
        })
        .collect();
    Ok((free, points))
}

/// The ranking with its refits (post-fit and pre-fit +-1 sigma of every free non-POI
/// parameter) as one batch on the device; the nominal fit and its Hessian in f64 on the CPU.
pub fn ranking_gpu(
    model: &Model,
    data: &Dataset,
    session: &dyn BatchSession,
) -> Result<(FitResult, Vec<RankingEntry>)> {
    let mut fitter = Fitter::new(model);
    let (nominal, sigma, candidates) = super::ranking::nominal_fit(&mut fitter, data)?;
    let poi = model.poi;
    let muhat = nominal.pars[poi];
    // per candidate: post-fit up, down, then pre-fit up, down when constrained
    let mut starts = Vec::new();
    let mut which = Vec::new();
    for &i in &candidates {
        let (lo, hi) = model.parameters[i].bounds;
        let mut values = vec![nominal.pars[i] + sigma[i], nominal.pars[i] - sigma[i]];
        if let Some(s) = prefit_sigma(model, i) {
            let c = model.parameters[i].init_centre();
            values.extend([c + s, c - s]);
        }
        for v in values {
            let mut st = nominal.pars.clone();
            st[i] = v.clamp(lo, hi);
            starts.push(st);
            which.push(i as u32);
        }
    }
    let h0 = preconditioner(model, &nominal.pars)?;
    let fits = session.fit_variants(data, &starts, &which, &h0, &session.fit_options())?;
    let mut k = 0;
    let mut entries = Vec::with_capacity(candidates.len());
    for &i in &candidates {
        let mut shift = |k: usize| {
            let f = complete(model, &mut fitter, data, &fits[k], &[(i, starts[k][i])]);
            (f.pars[poi] - muhat, f.converged)
        };
        let (up, c1) = shift(k);
        let (down, c2) = shift(k + 1);
        k += 2;
        let centre = model.parameters[i].init_centre();
        let (prefit_up, prefit_down, pull, c3) = match prefit_sigma(model, i) {
            Some(s) => {
                let (u, a) = shift(k);
                let (d, b) = shift(k + 1);
                k += 2;
                (
                    Some(u),
                    Some(d),
                    Some((nominal.pars[i] - centre) / s),
                    a && b,
                )
            }
            None => (None, None, None, true),
        };
        entries.push(RankingEntry {
            index: i,
            name: model.parameters[i].name.clone(),
            bestfit: nominal.pars[i],
            uncertainty: sigma[i],
            pull,
            postfit_up: up,
            postfit_down: down,
            prefit_up,
            prefit_down,
            converged: c1 && c2 && c3,
        });
    }
    entries.sort_by(|a, b| b.size().total_cmp(&a.size()));
    Ok((nominal, entries))
}
