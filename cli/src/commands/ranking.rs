//! `nextstat ranking`: impact of each nuisance parameter on the POI.

use crate::common::{CliResult, ConvergenceArgs, GpuArgs, ModelArgs, OutputArgs, PlotArgs};
use nextstat::infer::ranking;
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Show only the N largest impacts in the table and plot (the JSON has all).
    #[arg(long, default_value_t = 20)]
    top: usize,
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
    let t0 = std::time::Instant::now();
    let engine = a.gpu.engine()?;
    let (nominal, entries) = match &engine {
        None => ranking(&model, &model.observed)?,
        Some(e) => {
            nextstat::infer::gpu::ranking_gpu(&model, &model.observed, &*e.session(&model)?)?
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let poi = &model.parameters[model.poi].name;
    let converged = nominal.converged && entries.iter().all(|e| e.converged);
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({
                "name": e.name, "bestfit": e.bestfit, "uncertainty": e.uncertainty, "pull": e.pull,
                "postfit_up": e.postfit_up, "postfit_down": e.postfit_down,
                "prefit_up": e.prefit_up, "prefit_down": e.prefit_down, "converged": e.converged,
            })
        })
        .collect();
    let value = json!({
        "poi": poi,
        "bestfit_poi": nominal.pars[model.poi],
        "uncertainty_poi": nominal.uncertainties.as_ref().map(|u| u[model.poi]),
        "ranking": rows,
        "converged": converged,
        "seconds": seconds,
    });
    let shown = &entries[..entries.len().min(a.top)];
    if let Some(path) = &a.plot.plot {
        crate::plot::ranking(path, poi, shown)?;
    }
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "impacts on {poi} (best fit {:.6}), {} parameters in {:.3} s; largest {} shown",
            nominal.pars[model.poi],
            entries.len(),
            seconds,
            shown.len()
        );
        let w = shown.iter().map(|e| e.name.len()).max().unwrap_or(9).max(9);
        let _ = writeln!(
            s,
            "\n{:<w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}",
            "parameter", "post +1s", "post -1s", "pre +1s", "pre -1s", "pull"
        );
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:+.5}"));
        for e in shown {
            let _ = writeln!(
                s,
                "{:<w$}  {:>+10.5}  {:>+10.5}  {:>10}  {:>10}  {:>8}",
                e.name,
                e.postfit_up,
                e.postfit_down,
                opt(e.prefit_up),
                opt(e.prefit_down),
                e.pull.map_or("-".to_string(), |p| format!("{p:+.3}"))
            );
        }
        s
    })?;
    a.conv.check(converged, "a fit of the ranking")
}
