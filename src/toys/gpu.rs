//! Toy ensembles on a GPU engine: toys drawn (with `--gpu-sample-toys`) and fitted on the
//! device, then every toy's test statistic taken in f64: from an f64 engine's own NLLs, or,
//! for an f32 engine, evaluated on the CPU from the fitted parameters, so that f32 costs
//! speed, not answers.

use super::generate::ToyGenerator;
use super::hypotest::{
    statistic_of, Baseline, Ensembles, ToyOptions, ENSEMBLE_BACKGROUND_ONLY,
    ENSEMBLE_SIGNAL_PLUS_BACKGROUND,
};
use crate::cpu::Evaluator;
use crate::device::{BatchSession, DeviceToyEnsemble, GpuFit, GpuFitOptions};
use crate::infer::{Fitter, TestStat};
use crate::model::{Dataset, Model};
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
    let specs = [
        (ENSEMBLE_SIGNAL_PLUS_BACKGROUND, &base.cond_mu.pars),
        (ENSEMBLE_BACKGROUND_ONLY, &base.cond_bkg.pars),
    ];
    let mut gens = Vec::with_capacity(2);
    let mut h0s = Vec::with_capacity(2);
    let mut wholes = Vec::with_capacity(2);
    for (_, gen_pars) in specs {
        gens.push(ToyGenerator::new(model, gen_pars)?);
        let mut fitter = Fitter::new(model);
        h0s.push(fitter.inverse_fisher_diagonal(gen_pars).ok_or_else(|| {
            Error::Device("the generating point has a non-positive expected rate".into())
        })?);
        // the fits' whole initial inverse Hessians (where the information is positive
        // definite; the diagonal alone otherwise)
        wholes.push(super::hypotest::toy_inverse_fisher(&mut fitter, gen_pars));
    }
    let mut trace = crate::trace::Trace::start("toys on the device");
    // Every toy of both ensembles drawn on the host: in parallel, each toy from its own
    // counter (the same integers as on the device).
    let draw_on_host = || -> Vec<Vec<Dataset>> {
        specs
            .iter()
            .zip(&gens)
            .map(|((ensemble, _), gen)| {
                (opts.first_toy..opts.first_toy + opts.n_toys)
                    .into_par_iter()
                    .map(|t| gen.generate(opts.seed, *ensemble, t))
                    .collect()
            })
            .collect()
    };
    // Drawn on the host unless asked for on the device.
    let host_toys: Vec<Vec<Dataset>> = if sample_on_device {
        Vec::new()
    } else {
        let toys = draw_on_host();
        trace.mark("toys drawn on the host");
        toys
    };
    // Both fits of every toy of both ensembles as one batch on the device.
    let ensembles: Vec<DeviceToyEnsemble> = specs
        .iter()
        .zip(&gens)
        .zip(&h0s)
        .enumerate()
        .map(|(e, (((ensemble, gen_pars), gen), h0))| DeviceToyEnsemble {
            gen,
            ensemble: *ensemble,
            start: gen_pars.as_slice(),
            inverse_diagonal: h0,
            host_toys: host_toys.get(e).map(|t| t.as_slice()),
            dense: wholes[e]
                .as_ref()
                .map(|w| [w[0].as_slice(), w[1].as_slice()]),
        })
        .collect();
    // a converged fit's NLL and POI make its test statistic: the engine may leave the other
    // parameters on the device
    let lean = GpuFitOptions {
        keep_pars: false,
        ..session.fit_options()
    };
    // An f32 engine's test statistics are evaluated on the CPU, on the host's copy of each
    // toy: toys drawn on the device are drawn on the host too, while the device fits them
    // (the host threads would only wait for the device otherwise).
    let copies_needed = sample_on_device && session.precision_bits() < 64;
    let (fits, copies) = std::thread::scope(|s| {
        let drawing = copies_needed.then(|| s.spawn(draw_on_host));
        let fits = session.fit_device_toy_ensembles(
            &ensembles,
            opts.seed,
            opts.first_toy,
            opts.n_toys,
            tested,
            &lean,
        );
        let copies = drawing.map(|d| {
            d.join()
                .map_err(|_| Error::Device("drawing the toys' host copies failed".into()))
        });
        (fits, copies)
    });
    let fits = fits?;
    let copies = copies.transpose()?.unwrap_or_default();
    let host_toys = if sample_on_device { copies } else { host_toys };
    trace.mark("toys fitted");
    let on_cpu = std::sync::atomic::AtomicUsize::new(0);
    // device fits that stopped short of convergence and were continued on the CPU
    let continued = std::sync::atomic::AtomicUsize::new(0);
    let mut out = Vec::with_capacity(2);
    for (e, (((ensemble, _), gen), (free, cond))) in specs.iter().zip(&gens).zip(&fits).enumerate()
    {
        // The test statistics in f64: an f64 engine's converged fits carry their NLL; else
        // the NLL is evaluated on the CPU from the fitted parameters and the toy regenerated
        // there (the same integers as on the device). A device fit that did not converge (f32
        // rounding can stall a few) is finished on the CPU in f64 from where it stopped; only
        // a fit that fails there too counts as failed.
        let qs: Vec<Option<f64>> = (0..opts.n_toys as usize)
            .into_par_iter()
            // each rayon job makes its own tools (an evaluator: 0.2 ms for tHu): jobs of at
            // least 64 toys, and no more than four per thread, keep that from adding up when
            // the work is split finely
            .with_min_len((opts.n_toys as usize / (4 * rayon::current_num_threads())).max(64))
            .map_init(
                // made only by a job that meets a toy to redo on the CPU (rare with f64)
                || None::<(Evaluator, Option<Fitter>, Vec<f64>)>,
                |tools, i| {
                    let (f, c) = (&free[i], &cond[i]);
                    // an f64 engine's converged fits carry their NLL and POI: nothing to redo
                    if let (Some(fnll), Some(cnll)) = (converged_nll(f), converged_nll(c)) {
                        return Some(statistic_of(fnll, cnll, f.poi, mu, opts.test_stat));
                    }
                    // the fitter only where a device fit must be continued (0.2 ms each)
                    let (ev, fitter, pars) =
                        tools.get_or_insert_with(|| (Evaluator::new(model), None, Vec::new()));
                    on_cpu.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // the host's toy, or the device's drawn again here (the same integers)
                    let drawn;
                    let toy = match host_toys.get(e) {
                        Some(toys) => &toys[i],
                        None => {
                            drawn = gen.generate(opts.seed, *ensemble, opts.first_toy + i as u64);
                            &drawn
                        }
                    };
                    let unfinished = [f, c].iter().filter(|x| !x.status.converged()).count();
                    continued.fetch_add(unfinished, std::sync::atomic::Ordering::Relaxed);
                    let (fnll, muhat) = finish(ev, fitter, pars, toy, f, None)?;
                    let (cnll, _) = finish(ev, fitter, pars, toy, c, Some((model.poi, tested)))?;
                    Some(statistic_of(fnll, cnll, muhat, mu, opts.test_stat))
                },
            )
            .collect();
        out.push(qs);
    }
    trace.mark_with(|| {
        format!(
            "test statistics ({} toys with a fit finished or evaluated on the CPU, {} device \
             fits continued there)",
            on_cpu.load(std::sync::atomic::Ordering::Relaxed),
            continued.load(std::sync::atomic::Ordering::Relaxed)
        )
    });
    let background_only = out.pop().unwrap_or_default();
    let signal_plus_background = out.pop().unwrap_or_default();
    Ok(Ensembles {
        signal_plus_background,
        background_only,
    })
}

/// A device fit's NLL in f64 and its POI: the device's own for a converged f64 fit;
/// evaluated on the CPU at the fitted parameters for a converged f32 fit; and for a fit that
/// did not converge on the device, those of the fit continued on the CPU from where it
/// stopped. `None` when that fails too.
fn finish<'m>(
    ev: &mut Evaluator<'m>,
    fitter: &mut Option<Fitter<'m>>,
    pars: &mut Vec<f64>,
    data: &crate::model::Dataset,
    fit: &GpuFit,
    fixed_poi: Option<(usize, f64)>,
) -> Option<(f64, f64)> {
    if let Some(nll) = converged_nll(fit) {
        return Some((nll, fit.poi));
    }
    if !fit.status.converged() {
        let model = ev.model();
        let r = fitter.get_or_insert_with(|| Fitter::new(model)).fit(
            data,
            &crate::infer::FitOptions {
                fixed: fixed_poi.into_iter().collect(),
                init: Some(fit.pars.clone()),
                uncertainties: false,
            },
        );
        return r.converged.then(|| (r.nll, r.pars[ev.model().poi]));
    }
    fit.pars_into(pars);
    Some((ev.nll(pars, data).ok()?, fit.poi))
}

/// The NLL of a converged device fit that carries one (f64 engines).
fn converged_nll(fit: &GpuFit) -> Option<f64> {
    fit.nll.filter(|_| fit.status.converged())
}
