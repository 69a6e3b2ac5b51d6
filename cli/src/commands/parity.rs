//! `nextstat parity`: every available engine against the CPU f64 engine on this machine, on
//! the user's own model: NLL and gradient at random points, and toys drawn on the device. Each
//! check prints its largest difference next to its tolerance; any excess exits with code 1.

use crate::common::{CliError, CliResult, ModelArgs, OutputArgs};
use nextstat::device::{BatchSession, CudaOrdinals, Device, DeviceRequest, Engine};
use nextstat::model::ParamKind;
use nextstat::toys::ToyGenerator;
use nextstat::Evaluator;
use nextstat::Model;
use serde_json::json;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Random parameter points for the NLL and gradient checks.
    #[arg(long, default_value_t = 32)]
    points: usize,
    /// Toys drawn on each engine and compared with the CPU engine's.
    #[arg(long, default_value_t = 256)]
    n_toys: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    out: OutputArgs,
}

struct Check {
    name: &'static str,
    max_diff: f64,
    tolerance: f64,
}

/// splitmix64 in (0, 1): reproducible points from the seed.
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E3779B97F4A7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

pub fn run(a: Args) -> CliResult {
    let (_, model) = a.model.load()?;
    let mut state = a.seed;
    let mut points = vec![model.init()];
    while points.len() < a.points.max(1) {
        let p: Vec<f64> = model
            .parameters
            .iter()
            .map(|q| {
                if q.fixed {
                    q.init
                } else if q.kind == ParamKind::Systematic {
                    -2.0 + 4.0 * uniform(&mut state)
                } else {
                    let (lo, hi) = (q.bounds.0.max(0.7), q.bounds.1.min(1.4));
                    lo + (hi - lo) * uniform(&mut state)
                }
            })
            .collect();
        if model.nll(&p).is_ok() {
            points.push(p);
        }
    }
    let mut ev = Evaluator::new(&model);
    let cpu: Vec<(f64, Vec<f64>)> = points
        .iter()
        .map(|p| {
            let mut g = vec![0.0; p.len()];
            let v = ev.nll_grad(p, &model.observed, &mut g)?;
            Ok((v, g))
        })
        .collect::<nextstat::Result<_>>()?;

    let mut engines = Vec::new();
    for (label, request) in [
        ("metal (wgpu)", Device::Wgpu),
        ("cuda", Device::Cuda(CudaOrdinals::ALL)),
    ] {
        let engine = match Engine::open(DeviceRequest::Exact(request), &mut |_| {}) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                engines.push(json!({"engine": label, "available": false, "reason": e.to_string()}));
                continue;
            }
        };
        let session = engine.session(&model)?;
        let checks = check_engine(&model, &points, &cpu, &*session, &a)?;
        engines.push(json!({
            "engine": label,
            "available": true,
            "adapter": session.describe(),
            "precision_bits": session.precision_bits(),
            "checks": checks.iter().map(|c| json!({"check": c.name, "max_diff": c.max_diff, "tolerance": c.tolerance, "ok": c.max_diff <= c.tolerance})).collect::<Vec<_>>(),
            // Every command runs its fits on GPU engines; these are compared with the CPU by
            // their own tests (tests/wgpu_limits.rs, tests/wgpu_fit.rs, cli/tests/) rather
            // than here.
            "not_yet_on_this_engine": [],
            "not_checked_here": ["scan", "ranking", "hypotest", "upper-limit"],
        }));
    }
    let ok = engines.iter().all(|e| {
        e["checks"]
            .as_array()
            .is_none_or(|c| c.iter().all(|x| x["ok"] == true))
    });
    let value = json!({"points": points.len(), "n_toys": a.n_toys, "seed": a.seed, "engines": engines, "ok": ok});
    a.out.emit(&value, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "parity against the CPU f64 engine: {} points, {} toys, seed {}",
            points.len(),
            a.n_toys,
            a.seed
        );
        for e in value["engines"].as_array().into_iter().flatten() {
            if e["available"] == false {
                let _ = writeln!(
                    s,
                    "\n{}: not available ({})",
                    e["engine"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or("")
                );
                continue;
            }
            let _ = writeln!(
                s,
                "\n{} on {}",
                e["engine"].as_str().unwrap_or(""),
                e["adapter"].as_str().unwrap_or("")
            );
            let _ = writeln!(
                s,
                "  {:<36} {:>12} {:>12}",
                "check", "max diff", "tolerance"
            );
            for c in e["checks"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "  {:<36} {:>12.3e} {:>12.1e}  {}",
                    c["check"].as_str().unwrap_or(""),
                    c["max_diff"].as_f64().unwrap_or(f64::NAN),
                    c["tolerance"].as_f64().unwrap_or(f64::NAN),
                    if c["ok"] == true { "ok" } else { "EXCEEDED" }
                );
            }
            let list = |key: &str| {
                let names: Vec<&str> = e[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                names.join(", ")
            };
            let missing = list("not_yet_on_this_engine");
            let _ = writeln!(
                s,
                "  not yet on this engine: {}; on it but not checked here: {}",
                if missing.is_empty() { "none" } else { &missing },
                list("not_checked_here")
            );
        }
        s
    })?;
    if ok {
        Ok(())
    } else {
        Err(CliError {
            message: "an engine differs from the CPU engine beyond its tolerance".into(),
            code: 1,
        })
    }
}

/// The checks of one engine against the CPU engine's values `cpu` at `points`, with tolerances
/// fit for the engine's float width (the parity bounds for f32 and f64).
fn check_engine(
    model: &Model,
    points: &[Vec<f64>],
    cpu: &[(f64, Vec<f64>)],
    session: &dyn BatchSession,
    a: &Args,
) -> CliResult<Vec<Check>> {
    let f64_engine = session.precision_bits() == 64;
    let tol = |f32_tol: f64, f64_tol: f64| if f64_engine { f64_tol } else { f32_tol };
    let refs: Vec<&[f64]> = points.iter().map(|p| p.as_slice()).collect();
    let data: Vec<_> = points.iter().map(|_| &model.observed).collect();
    let gpu = session.nll_grad_batch(&refs, &data)?;
    let (mut dn, mut dg) = (0.0f64, 0.0f64);
    for ((v, g), (cv, cg)) in gpu.iter().zip(cpu) {
        dn = dn.max((v - cv).abs() / cv.abs().max(1.0));
        let scale = cg.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for (x, y) in g.iter().zip(cg) {
            dg = dg.max((x - y).abs() / y.abs().max(scale));
        }
    }
    let gen = ToyGenerator::new(model, &model.init())?;
    let (_, toys) = session.sample_toys(&gen, a.seed, 0, 0, a.n_toys)?;
    let (nb, na) = (model.n_bins(), model.observed.aux.len());
    let poisson: Vec<usize> = model
        .layout
        .poisson
        .iter()
        .map(|t| t.aux as usize)
        .collect();
    let (mut count_mismatch, mut dgauss) = (0usize, 0.0f64);
    for t in 0..a.n_toys as usize {
        let c = gen.generate(a.seed, 0, t as u64);
        let row = &toys[t * (nb + na)..(t + 1) * (nb + na)];
        count_mismatch += (0..nb).filter(|&b| row[b] != c.main[b]).count();
        for j in 0..na {
            let (x, y) = (row[nb + j], c.aux[j]);
            if poisson.contains(&j) {
                count_mismatch += usize::from(x != y);
            } else {
                dgauss = dgauss.max((x - y).abs() / (1.0 + y.abs()));
            }
        }
    }
    // a fit of the observed data
    let mut fitter = nextstat::infer::Fitter::new(model);
    let cpu_fit = fitter.fit_free(&model.observed);
    let h0 = fitter
        .inverse_fisher_diagonal(&model.init())
        .unwrap_or_else(|| vec![1.0; model.n_params()]);
    let init = model.init();
    let gpu_fit = session
        .fit_batch(
            &[&model.observed],
            &[&init],
            &model.fixed(),
            &h0,
            &session.fit_options(),
        )?
        .remove(0);
    let gpu_twice_nll = 2.0 * model.nll(&gpu_fit.pars).unwrap_or(f64::INFINITY);
    let fit_diff = if gpu_fit.status.converged() {
        (gpu_twice_nll - cpu_fit.twice_nll())
            .abs()
            .max((gpu_fit.pars[model.poi] - cpu_fit.pars[model.poi]).abs())
    } else {
        f64::INFINITY
    };
    // a small toy ensemble, toys drawn and fitted on the device
    let mu = cpu_fit.pars[model.poi].max(0.0) + 1.0;
    let base = nextstat::toys::baseline(
        model,
        &model.observed,
        mu,
        nextstat::infer::TestStat::QTilde,
    );
    let topts = nextstat::toys::ToyOptions {
        seed: a.seed,
        first_toy: 0,
        n_toys: (a.n_toys as u64).min(128),
        test_stat: nextstat::infer::TestStat::QTilde,
    };
    let ens_cpu = nextstat::toys::run_ensembles(model, &base, mu, &topts, &|| {})?;
    let ens_gpu = nextstat::toys::gpu::run_ensembles_gpu(model, &base, mu, &topts, session, true)?;
    let mut dq = 0.0f64;
    for (x, y) in ens_cpu
        .signal_plus_background
        .iter()
        .chain(&ens_cpu.background_only)
        .zip(
            ens_gpu
                .signal_plus_background
                .iter()
                .chain(&ens_gpu.background_only),
        )
    {
        dq = dq.max(match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() / x.abs().max(1.0),
            (None, None) => 0.0,
            _ => f64::INFINITY,
        });
    }
    Ok(vec![
        Check {
            name: "NLL, relative",
            max_diff: dn,
            tolerance: tol(2e-6, 1e-12),
        },
        Check {
            name: "gradient, relative to its scale",
            max_diff: dg,
            tolerance: tol(1e-4, 1e-10),
        },
        Check {
            name: "toy counts differing (integers)",
            max_diff: count_mismatch as f64,
            tolerance: 0.0,
        },
        Check {
            name: "Gaussian auxiliary data, relative",
            max_diff: dgauss,
            tolerance: tol(3e-5, 1e-12),
        },
        Check {
            name: "fit: 2*NLL and POI, absolute",
            max_diff: fit_diff,
            tolerance: tol(1e-3, 1e-8),
        },
        Check {
            name: "toy test statistics, relative",
            max_diff: dq,
            tolerance: tol(1e-3, 1e-8),
        },
    ])
}
