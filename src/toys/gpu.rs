//! Toy ensembles on the WGSL engine: toys drawn (with `--gpu-sample-toys`) and fitted on the
//! device in lockstep, then every toy's test statistic evaluated in f64 on the CPU from the
//! fitted parameters, so that f32 costs speed, not answers.

use super::generate::ToyGenerator;
use super::hypotest::{
    test_statistic, Baseline, Ensembles, ToyOptions, ENSEMBLE_BACKGROUND_ONLY,
    ENSEMBLE_SIGNAL_PLUS_BACKGROUND,
};
use crate::cpu::Evaluator;
use crate::device::{BatchSession, GpuFit};
use crate::infer::{FitResult, Fitter, TestStat};
use crate::model::Model;
use crate::optim::Status;
use crate::{Error, Result};
use rayon::prelude::*;

/// Phase B on the device. `sample_on_device` keeps the toys on the GPU (they are drawn there);
/// otherwise they are drawn on the CPU and uploaded. Toys are the same integers either way.
pub fn run_ensembles_gpu(
    model: &Model,
    base: &Baseline,
    mu: f64,
    opts: &ToyOptions,
    session: &dyn BatchSession,
    sample_on_device: bool,
) -> Result<Ensembles> {
    let tested = if opts.test_stat == TestStat::Q0 {
        0.0
    } else {
        mu
    };
    let mut out = Vec::new();
    for (ensemble, gen_pars) in [
        (ENSEMBLE_SIGNAL_PLUS_BACKGROUND, &base.cond_mu.pars),
        (ENSEMBLE_BACKGROUND_ONLY, &base.cond_bkg.pars),
    ] {
        let gen = ToyGenerator::new(model, gen_pars)?;
        let h0 = Fitter::new(model)
            .inverse_fisher_diagonal(gen_pars)
            .ok_or_else(|| {
                Error::Device("the generating point has a non-positive expected rate".into())
            })?;
        let gopts = session.fit_options();
        let (free, cond) = if sample_on_device {
            session.fit_device_toys(
                &gen,
                opts.seed,
                ensemble,
                opts.first_toy,
                opts.n_toys,
                gen_pars,
                tested,
                &h0,
                &gopts,
            )?
        } else {
            let toys: Vec<_> = (opts.first_toy..opts.first_toy + opts.n_toys)
                .map(|t| gen.generate(opts.seed, ensemble, t))
                .collect();
            let data: Vec<_> = toys.iter().collect();
            let mut start_cond = gen_pars.clone();
            start_cond[model.poi] = tested;
            let mut fixed_cond = model.fixed();
            fixed_cond[model.poi] = true;
            let free = session.fit_batch(
                &data,
                &vec![gen_pars.as_slice(); data.len()],
                &model.fixed(),
                &h0,
                &gopts,
            )?;
            let cond = session.fit_batch(
                &data,
                &vec![start_cond.as_slice(); data.len()],
                &fixed_cond,
                &h0,
                &gopts,
            )?;
            (free, cond)
        };
        // The test statistics in f64 on the CPU, from the fitted parameters and the toys
        // regenerated there (the same integers as on the device).
        // A device fit that did not converge (f32 rounding can stall a few) is finished on the
        // CPU in f64 from where it stopped; only a fit that fails there too counts as failed.
        let qs: Vec<Option<f64>> = (0..opts.n_toys as usize)
            .into_par_iter()
            .map_init(
                || (Evaluator::new(model), Fitter::new(model)),
                |(ev, fitter), i| {
                    let toy = gen.generate(opts.seed, ensemble, opts.first_toy + i as u64);
                    let f = finish(ev, fitter, &toy, &free[i], None)?;
                    let c = finish(ev, fitter, &toy, &cond[i], Some((model.poi, tested)))?;
                    Some(test_statistic(model, &f, &c, mu, opts.test_stat))
                },
            )
            .collect();
        out.push(qs);
    }
    let background_only = out.pop().unwrap_or_default();
    let signal_plus_background = out.pop().unwrap_or_default();
    Ok(Ensembles {
        signal_plus_background,
        background_only,
    })
}

/// A device fit as a [`FitResult`] with its NLL in f64; a fit that did not converge on the
/// device is continued on the CPU from its parameters. `None` when that fails too.
fn finish(
    ev: &mut Evaluator,
    fitter: &mut Fitter,
    data: &crate::model::Dataset,
    fit: &GpuFit,
    fixed_poi: Option<(usize, f64)>,
) -> Option<FitResult> {
    if !fit.status.converged() {
        let r = fitter.fit(
            data,
            &crate::infer::FitOptions {
                fixed: fixed_poi.into_iter().collect(),
                init: Some(fit.pars.clone()),
                uncertainties: false,
            },
        );
        return r.converged.then_some(r);
    }
    let nll = ev.nll(&fit.pars, data).ok()?;
    Some(FitResult {
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
    })
}
