//! `nextstat fit`: maximum-likelihood fit with uncertainties, correlations and pulls.

use crate::common::{
    named, CliResult, ConvergenceArgs, FixArgs, GpuArgs, ModelArgs, OutputArgs, PlotArgs,
};
use nextstat::infer::mle::prefit_sigma;
use nextstat::infer::{FitOptions, Fitter};
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    fix: FixArgs,
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    conv: ConvergenceArgs,
    #[command(flatten)]
    plot: PlotArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let (_, model) = a.model.load()?;
    let fixed = a.fix.resolve(&model)?;
    let engine = a.gpu.engine()?;
    let t0 = std::time::Instant::now();
    let mut fitter = Fitter::new(&model);
    // On the GPU: the device minimises from the inits (f32); the CPU continues from there in f64
    // (a few iterations) and computes the Hessian.
    let mut init = model.init();
    if let Some(e) = &engine {
        let mut start = model.init();
        let mut mask = model.fixed();
        for &(i, v) in &fixed {
            start[i] = v;
            mask[i] = true;
        }
        let h0 = fitter
            .inverse_fisher_diagonal(&start)
            .unwrap_or_else(|| vec![1.0; model.n_params()]);
        let session = e.session(&model)?;
        let gpu = session
            .fit_batch(
                &[&model.observed],
                &[&start],
                &mask,
                &h0,
                &session.fit_options(),
            )?
            .remove(0);
        init = gpu.pars;
    }
    let fit = fitter.fit(
        &model.observed,
        &FitOptions {
            fixed,
            init: Some(init),
            uncertainties: true,
        },
    );
    let seconds = t0.elapsed().as_secs_f64();
    let unc = fit
        .uncertainties
        .clone()
        .unwrap_or_else(|| vec![f64::NAN; model.n_params()]);
    let pulls: Vec<(String, f64, f64)> = model
        .parameters
        .iter()
        .enumerate()
        .filter(|(i, _)| !fit.fixed[*i])
        .filter_map(|(i, p)| {
            let s = prefit_sigma(&model, i)?;
            let c = p.init_centre();
            Some((p.name.clone(), (fit.pars[i] - c) / s, unc[i] / s))
        })
        .collect();
    let mut value = json!({
        "twice_nll": fit.twice_nll(),
        "nll": fit.nll,
        "converged": fit.converged,
        "status": fit.status.describe(),
        "iterations": fit.iterations,
        "grad_norm": fit.grad_norm,
        "poi": model.parameters[model.poi].name,
        "bestfit": named(&model, &fit.pars),
        "uncertainties": named(&model, &unc),
        "fixed": model.parameters.iter().zip(&fit.fixed).filter(|(_, f)| **f).map(|(p, _)| p.name.clone()).collect::<Vec<_>>(),
        "pulls": pulls.iter().map(|(n, p, e)| json!({"name": n, "pull": p, "constraint": e})).collect::<Vec<_>>(),
        "seconds": seconds,
    });
    match fit.correlation() {
        Some(c) => value["correlation"] = json!({"names": model.par_names(), "matrix": c}),
        None => value["correlation"] = json!(null),
    }
    if let Some(path) = &a.plot.plot {
        crate::plot::pulls(path, &pulls)?;
    }
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fit {} after {} iterations ({:.3} s)",
            fit.status.describe(),
            fit.iterations,
            seconds
        );
        let _ = writeln!(s, "2*NLL at minimum  {:.8}", fit.twice_nll());
        if fit.uncertainties.is_none() {
            let _ = writeln!(
                s,
                "note: the Hessian is not positive definite; no uncertainties"
            );
        }
        let w = model
            .parameters
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(9)
            .max(9);
        let _ = writeln!(
            s,
            "\n{:<w$}  {:>13}  {:>11}",
            "parameter", "value", "uncertainty"
        );
        for (i, p) in model.parameters.iter().enumerate() {
            let note = match (i == model.poi, fit.fixed[i]) {
                (true, true) => "  (POI, fixed)",
                (true, false) => "  (POI)",
                (false, true) => "  (fixed)",
                _ => "",
            };
            let u = if fit.fixed[i] {
                "-".to_string()
            } else {
                format!("{:.6}", unc[i])
            };
            let _ = writeln!(s, "{:<w$}  {:>13.6}  {:>11}{note}", p.name, fit.pars[i], u);
        }
        s
    })?;
    a.conv.check(fit.converged, "the fit")
}
