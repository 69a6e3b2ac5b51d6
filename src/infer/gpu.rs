//! Scans, rankings, asymptotic hypothesis tests and upper limits with their fits on a GPU
//! engine: every refit of a scan or a ranking, and the fits of the asymptotic tests, are items
//! of batches on the device. NLLs come from an f64 engine, or are re-evaluated in f64 on the
//! CPU from the fitted parameters, and a device fit that did not converge is finished on the
//! CPU.

use super::asymptotics::{asimov_mu, tested_mu, AsymptoticCalculator, HypotestResult, TestStat};
use super::limits::{check_test_stat, upper_limit_with, UpperLimit};
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
        // an f64 engine's own NLL, else one evaluation on the CPU
        let nll = fit
            .nll
            .map_or_else(|| Evaluator::new(model).nll(&fit.pars, data), Ok);
        if let Ok(nll) = nll {
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

/// A device fit finished in f64 on the CPU. An f32 engine's fits are continued by the CPU
/// fitter from the device's parameters, whatever their status: the asymptotic formulas use
/// NLL differences of a few fits, and an f32 minimum (gradient within 2e-3) moves a test
/// statistic by more than CLs can afford, while the continuation costs the CPU a few
/// iterations. An f64 engine's converged fits are used as they are ([`complete`]).
fn finish(
    session: &dyn BatchSession,
    fitter: &mut Fitter,
    data: &Dataset,
    fit: &GpuFit,
    fixed: &[(usize, f64)],
) -> FitResult {
    let model = fitter.model();
    if session.precision_bits() >= 64 {
        return complete(model, fitter, data, fit, fixed);
    }
    // a fit that left the domain restarts where the CPU engine would
    let init = fit
        .pars
        .iter()
        .all(|x| x.is_finite())
        .then(|| fit.pars.clone());
    fitter.fit(
        data,
        &FitOptions {
            fixed: fixed.to_vec(),
            init,
            uncertainties: false,
        },
    )
}

/// The model's inits with the POI at `mu` (where the CPU engine starts a conditional fit).
fn start_at(model: &Model, mu: Option<f64>) -> Vec<f64> {
    let mut s = model.init();
    if let Some(mu) = mu {
        s[model.poi] = mu;
    }
    s
}

/// The fits of an asymptotic calculator on the device, in two batches: on the data, the free
/// fit, the conditional fit that generates the Asimov dataset and the conditional fits at
/// `mus`; then on the Asimov dataset, the free fit and the conditional fits at `mus`. Returns
/// the calculator and, per value of `mus`, its two conditional fits (data, Asimov).
fn calculator_gpu<'m>(
    model: &'m Model,
    data: &Dataset,
    test_stat: TestStat,
    session: &dyn BatchSession,
    fitter: &mut Fitter,
    mus: &[f64],
) -> Result<(AsymptoticCalculator<'m>, Vec<(FitResult, FitResult)>)> {
    let poi = model.poi;
    let held: Vec<f64> = mus.iter().map(|&mu| tested_mu(test_stat, mu)).collect();
    let opts = session.fit_options();
    let h0 = preconditioner(model, &model.init())?;
    let none = u32::MAX;
    // on the data: free, conditional at the Asimov POI value, conditional at each tested value
    let mut starts = vec![
        start_at(model, None),
        start_at(model, Some(asimov_mu(test_stat))),
    ];
    let mut extra = vec![none, poi as u32];
    for &mu in &held {
        starts.push(start_at(model, Some(mu)));
        extra.push(poi as u32);
    }
    let on_data = session.fit_variants(data, &starts, &extra, &h0, &opts)?;
    if on_data.len() != starts.len() {
        return Err(Error::Length {
            what: "device fits of the data".into(),
            expected: starts.len(),
            got: on_data.len(),
        });
    }
    let free_data = finish(session, fitter, data, &on_data[0], &[]);
    let asimov_fit = finish(
        session,
        fitter,
        data,
        &on_data[1],
        &[(poi, asimov_mu(test_stat))],
    );
    let asimov = AsymptoticCalculator::asimov_for(model, &asimov_fit);
    // on the Asimov dataset: free, conditional at each tested value
    let mut starts = vec![start_at(model, None)];
    let mut extra = vec![none];
    for &mu in &held {
        starts.push(start_at(model, Some(mu)));
        extra.push(poi as u32);
    }
    let on_asimov = session.fit_variants(&asimov, &starts, &extra, &h0, &opts)?;
    if on_asimov.len() != starts.len() {
        return Err(Error::Length {
            what: "device fits of the Asimov dataset".into(),
            expected: starts.len(),
            got: on_asimov.len(),
        });
    }
    let free_asimov = finish(session, fitter, &asimov, &on_asimov[0], &[]);
    let conditional = held
        .iter()
        .enumerate()
        .map(|(k, &mu)| {
            (
                finish(session, fitter, data, &on_data[2 + k], &[(poi, mu)]),
                finish(session, fitter, &asimov, &on_asimov[1 + k], &[(poi, mu)]),
            )
        })
        .collect();
    let calc = AsymptoticCalculator::from_fits(
        Fitter::new(model),
        data,
        test_stat,
        free_data,
        asimov_fit,
        free_asimov,
    );
    Ok((calc, conditional))
}

/// Hypothesis tests at `mus` from a calculator: the conditional fits to the data and to the
/// Asimov dataset at every value, as one batch on the device, finished in f64.
fn hypotests_gpu(
    calc: &AsymptoticCalculator,
    session: &dyn BatchSession,
    fitter: &mut Fitter,
    mus: &[f64],
) -> Result<Vec<HypotestResult>> {
    let model = fitter.model();
    let poi = model.poi;
    let held: Vec<f64> = mus
        .iter()
        .map(|&mu| tested_mu(calc.test_stat(), mu))
        .collect();
    let k = held.len();
    let starts: Vec<Vec<f64>> = held
        .iter()
        .chain(&held)
        .map(|&mu| start_at(model, Some(mu)))
        .collect();
    let data: Vec<&Dataset> = std::iter::repeat_n(calc.data(), k)
        .chain(std::iter::repeat_n(calc.asimov(), k))
        .collect();
    let mut fixed = model.fixed();
    fixed[poi] = true;
    let h0 = preconditioner(model, &model.init())?;
    let refs: Vec<&[f64]> = starts.iter().map(|s| s.as_slice()).collect();
    let fits = session.fit_batch(&data, &refs, &fixed, &h0, &session.fit_options())?;
    if fits.len() != 2 * k {
        return Err(Error::Length {
            what: "device fits of the hypothesis tests".into(),
            expected: 2 * k,
            got: fits.len(),
        });
    }
    Ok((0..k)
        .map(|i| {
            let at = [(poi, held[i])];
            let cd = finish(session, fitter, calc.data(), &fits[i], &at);
            let ca = finish(session, fitter, calc.asimov(), &fits[k + i], &at);
            calc.hypotest_from_fits(mus[i], &cd, &ca)
        })
        .collect())
}

/// The asymptotic hypothesis test at `mu` ([`super::hypotest`]) with its five fits on the
/// device in two batches (on the data: free, Asimov-generating and conditional; on the Asimov
/// dataset: free and conditional), each finished in f64 on the CPU: the same numbers as the
/// CPU engine's within its fit tolerance.
pub fn hypotest_gpu(
    model: &Model,
    data: &Dataset,
    mu: f64,
    test_stat: TestStat,
    session: &dyn BatchSession,
) -> Result<HypotestResult> {
    let mut fitter = Fitter::new(model);
    let (calc, mut cond) = calculator_gpu(model, data, test_stat, session, &mut fitter, &[mu])?;
    let (cd, ca) = cond.pop().ok_or_else(|| Error::Length {
        what: "conditional fits".into(),
        expected: 1,
        got: 0,
    })?;
    Ok(calc.hypotest_from_fits(mu, &cd, &ca))
}

/// The CLs upper limits ([`super::upper_limit`]) with the fits on the device: the calculator's
/// fits in two batches, the bracketing grid as one batch, then each lockstep step of the six
/// root searches as one batch; every fit finished in f64 on the CPU.
pub fn upper_limit_gpu(
    model: &Model,
    data: &Dataset,
    alpha: f64,
    test_stat: TestStat,
    session: &dyn BatchSession,
) -> Result<UpperLimit> {
    check_test_stat(test_stat)?;
    let mut fitter = Fitter::new(model);
    let (calc, _) = calculator_gpu(model, data, test_stat, session, &mut fitter, &[])?;
    upper_limit_with(model, alpha, true, |mus| {
        hypotests_gpu(&calc, session, &mut fitter, mus)
    })
}
