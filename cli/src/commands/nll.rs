//! `nextstat nll`: the NLL (and gradient) at given parameter values.

use crate::common::{named, CliError, CliResult, GpuArgs, ModelArgs, OutputArgs, ParArgs};
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    pars: ParArgs,
    /// Also compute the analytic gradient.
    #[arg(long)]
    grad: bool,
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> CliResult {
    let (_, model) = a.model.load()?;
    let pars = a.pars.resolve(&model)?;
    // The likelihood can be undefined at the given point (a non-positive rate): say which
    // workspace the channel and bin in the message belong to.
    let at_file = |e: nextstat::Error| CliError::input(format!("{}: {e}", model.source));
    let engine = a.gpu.engine()?;
    // The CPU checks the point first, so an undefined likelihood gets the precise message.
    let (cpu_nll, cpu_grad) = if a.grad {
        let (v, g) = model.nll_grad(&pars).map_err(at_file)?;
        (v, Some(g))
    } else {
        (model.nll(&pars).map_err(at_file)?, None)
    };
    let (engine, nll, grad) = match &engine {
        None => ("cpu".to_string(), cpu_nll, cpu_grad),
        Some(e) => gpu_eval(e, &model, &pars, a.grad)?,
    };
    let mut value = json!({
        "nll": nll,
        "twice_nll": 2.0 * nll,
        "engine": engine,
        "parameters": named(&model, &pars),
    });
    if let Some(g) = &grad {
        value["grad"] = named(&model, g);
    }
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(s, "NLL (-logpdf)  {nll:.10}");
        let _ = writeln!(s, "2 * NLL        {:.10}", 2.0 * nll);
        if let Some(g) = &grad {
            let w = model
                .parameters
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(4)
                .max(9);
            let _ = writeln!(
                s,
                "\n{:<w$}  {:>14}  {:>14}",
                "parameter", "value", "dNLL/dpar"
            );
            for (p, (v, d)) in model.parameters.iter().zip(pars.iter().zip(g)) {
                let _ = writeln!(s, "{:<w$}  {:>14.6}  {:>14.6e}", p.name, v, d);
            }
        }
        s
    })
}

/// NLL (and gradient) on a GPU engine.
fn gpu_eval(
    engine: &nextstat::device::Engine,
    model: &nextstat::Model,
    pars: &[f64],
    grad: bool,
) -> CliResult<(String, f64, Option<Vec<f64>>)> {
    let session = engine.session(model)?;
    let mut r = session.nll_grad_batch(&[pars], &[&model.observed])?;
    let (v, g) = r.pop().ok_or_else(|| CliError {
        message: "the GPU returned no result".into(),
        code: 1,
    })?;
    let name = format!("{}, f{}", session.describe(), session.precision_bits());
    Ok((name, v, grad.then_some(g)))
}
