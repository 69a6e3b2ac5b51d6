//! `nextstat hypotest`: asymptotic CLs at one POI value.

use crate::common::{
    warn_all, CliError, CliResult, ConvergenceArgs, GpuArgs, ModelArgs, OutputArgs,
};
use nextstat::infer::{hypotest, TestStat};
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The POI value to test.
    #[arg(long)]
    mu: f64,
    /// Test statistic: qtilde (default), q, or q0 (discovery; tests mu = 0).
    #[arg(long, default_value = "qtilde")]
    test_stat: String,
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    conv: ConvergenceArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let (_, model) = a.model.load()?;
    let ts: TestStat = a
        .test_stat
        .parse()
        .map_err(|e| CliError::input(format!("--test-stat: {e}")))?;
    if !a.mu.is_finite() {
        return Err(CliError::input(format!(
            "--mu {}: not a finite number",
            a.mu
        )));
    }
    let engine = a.gpu.engine()?;
    // On a GPU engine the five fits run there (two batches) and are finished in f64 on the
    // CPU, so the numbers are the CPU engine's within its fit tolerance.
    let (engine, r) = match &engine {
        None => (
            "cpu".to_string(),
            hypotest(&model, &model.observed, a.mu, ts),
        ),
        Some(e) => {
            let session = e.session(&model)?;
            let r =
                nextstat::infer::gpu::hypotest_gpu(&model, &model.observed, a.mu, ts, &*session)?;
            (
                format!("{}, f{}", session.describe(), session.precision_bits()),
                r,
            )
        }
    };
    warn_all(&r.warnings);
    let value = json!({
        "mu": r.mu,
        "test_stat": ts.to_string(),
        "cls_obs": r.cls_obs,
        "cls_exp": r.cls_exp,
        "clsb": r.clsb_obs,
        "clb": r.clb_obs,
        "q_obs": r.q_obs,
        "q_asimov": r.q_asimov,
        "converged": r.converged,
        "warnings": r.warnings,
        "engine": engine,
    });
    a.out.emit(&value, || {
        let mut s = String::new();
        let label = if ts == TestStat::Q0 { "p0" } else { "CLs" };
        let _ = writeln!(
            s,
            "asymptotic hypothesis test, {ts}, POI {} = {}",
            model.parameters[model.poi].name, r.mu
        );
        let _ = writeln!(s, "{label:<10} observed {:.6}", r.cls_obs);
        if ts != TestStat::Q0 {
            let _ = writeln!(s, "CLs+b      observed {:.6}", r.clsb_obs);
            let _ = writeln!(s, "CLb        observed {:.6}", r.clb_obs);
        }
        let _ = writeln!(
            s,
            "{label:<10} expected  -2s {:.6}  -1s {:.6}  median {:.6}  +1s {:.6}  +2s {:.6}",
            r.cls_exp[0], r.cls_exp[1], r.cls_exp[2], r.cls_exp[3], r.cls_exp[4]
        );
        let _ = writeln!(s, "q observed {:.6}, q Asimov {:.6}", r.q_obs, r.q_asimov);
        s
    })?;
    a.conv.check(r.converged, "a fit of the hypothesis test")
}
