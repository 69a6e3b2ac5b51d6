//! `nextstat upper-limit`: CLs upper limits on the POI, observed and expected.

use crate::common::{
    CliError, CliResult, ConvergenceArgs, GpuArgs, ModelArgs, OutputArgs, PlotArgs,
};
use nextstat::infer::{upper_limit, TestStat};
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// CLs level (0.05 for 95% CL).
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Test statistic: qtilde (default) or q.
    #[arg(long, default_value = "qtilde")]
    test_stat: String,
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
    let ts: TestStat = a
        .test_stat
        .parse()
        .map_err(|e| CliError::input(format!("--test-stat: {e}")))?;
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        return Err(CliError::input(format!(
            "--alpha {}: must be between 0 and 1",
            a.alpha
        )));
    }
    let engine = a.gpu.engine()?;
    let t0 = std::time::Instant::now();
    // On a GPU engine every hypothesis test's fits run there (the bracketing grid as one
    // batch, each step of the root searches as one batch), finished in f64 on the CPU.
    let (engine, ul) = match &engine {
        None => (
            "cpu".to_string(),
            upper_limit(&model, &model.observed, a.alpha, ts)?,
        ),
        Some(e) => {
            let session = e.session(&model)?;
            let ul = nextstat::infer::gpu::upper_limit_gpu(
                &model,
                &model.observed,
                a.alpha,
                ts,
                &*session,
            )?;
            (
                format!("{}, f{}", session.describe(), session.precision_bits()),
                ul,
            )
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let poi_name = &model.parameters[model.poi].name;
    let scan: Vec<_> = ul
        .tests
        .iter()
        .map(|t| json!({"mu": t.mu, "cls_obs": t.cls_obs, "cls_exp": t.cls_exp}))
        .collect();
    let value = json!({
        "poi_name": poi_name,
        "alpha": a.alpha,
        "test_stat": ts.to_string(),
        "obs": ul.obs,
        "exp": ul.exp,
        "converged": ul.converged,
        "scan": scan,
        "seconds": seconds,
        "engine": engine,
    });
    if let Some(path) = &a.plot.plot {
        crate::plot::brazil(path, poi_name, &ul)?;
    }
    a.out.emit(&value, || {
        let mut s = String::new();
        let cl = (1.0 - a.alpha) * 100.0;
        let _ = writeln!(s, "{cl:.0}% CL upper limit on {poi_name} (CLs, asymptotic, {ts}; {} hypothesis tests, {:.3} s)", ul.tests.len(), seconds);
        let _ = writeln!(s, "observed      {:.6}", ul.obs);
        for (k, label) in ["expected -2s", "expected -1s", "expected     ", "expected +1s", "expected +2s"].iter().enumerate() {
            let _ = writeln!(s, "{label:<13} {:.6}", ul.exp[k]);
        }
        s
    })?;
    a.conv
        .check(ul.converged, "a fit of the upper-limit search")
}
