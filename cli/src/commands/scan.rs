//! `nextstat scan`: profile likelihood of the POI over a grid.

use crate::common::{
    parse_range, CliError, CliResult, ConvergenceArgs, GpuArgs, ModelArgs, OutputArgs, PlotArgs,
};
use nextstat::infer::profile_scan;
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// POI range, START:STOP (default: the POI's bounds).
    #[arg(long)]
    poi_range: Option<String>,
    /// Number of grid points (both ends included).
    #[arg(long, default_value_t = 21)]
    points: usize,
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
    let (lo, hi) = match &a.poi_range {
        Some(r) => parse_range(r, "--poi-range")?,
        None => model.parameters[model.poi].bounds,
    };
    if a.points < 2 {
        return Err(CliError::input("--points must be at least 2"));
    }
    let grid: Vec<f64> = (0..a.points)
        .map(|i| lo + (hi - lo) * i as f64 / (a.points - 1) as f64)
        .collect();
    let t0 = std::time::Instant::now();
    let engine = a.gpu.engine()?;
    let (free, points) = match &engine {
        None => profile_scan(&model, &model.observed, &grid),
        Some(e) => nextstat::infer::gpu::profile_scan_gpu(
            &model,
            &model.observed,
            &grid,
            &*e.session(&model)?,
        )?,
    };
    let seconds = t0.elapsed().as_secs_f64();
    let poi_name = &model.parameters[model.poi].name;
    let converged = free.converged && points.iter().all(|p| p.fit.converged);
    let rows: Vec<_> = points
        .iter()
        .map(|p| {
            json!({
                "poi": p.poi,
                "twice_nll": p.twice_nll(),
                "delta_twice_nll": p.twice_nll() - free.twice_nll(),
                "converged": p.fit.converged,
            })
        })
        .collect();
    let value = json!({
        "poi_name": poi_name,
        "free_fit": {"poi": free.pars[model.poi], "twice_nll": free.twice_nll(), "converged": free.converged},
        "points": rows,
        "converged": converged,
        "seconds": seconds,
    });
    if let Some(path) = &a.plot.plot {
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.poi, p.twice_nll() - free.twice_nll()))
            .collect();
        crate::plot::scan(path, poi_name, &xy)?;
    }
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "profile scan of {poi_name}: best fit {:.6} (2*NLL {:.6}), {} points in {:.3} s",
            free.pars[model.poi],
            free.twice_nll(),
            points.len(),
            seconds
        );
        let _ = writeln!(
            s,
            "\n{:>12}  {:>16}  {:>14}",
            poi_name, "2*NLL", "delta 2*NLL"
        );
        for p in &points {
            let flag = if p.fit.converged {
                ""
            } else {
                "  not converged"
            };
            let _ = writeln!(
                s,
                "{:>12.6}  {:>16.6}  {:>14.6}{flag}",
                p.poi,
                p.twice_nll(),
                p.twice_nll() - free.twice_nll()
            );
        }
        s
    })?;
    a.conv.check(converged, "a fit of the scan")
}
