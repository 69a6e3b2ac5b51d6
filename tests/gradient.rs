//! The analytic gradient against central finite differences, on every model and every
//! interpolation code, at the suggested init and at random in-bounds points.

mod common;
use common::*;
use nextstat::model::ParamKind;
use nextstat::{Evaluator, Model};

/// Distance from `x` to the nearest kink of the interpolation that drives parameter `kind`;
/// finite differences across a kink measure neither side's slope.
fn near_kink(model: &Model, i: usize, x: f64, h: f64) -> bool {
    if model.parameters[i].kind != ParamKind::Systematic {
        return false;
    }
    [-1.0, 0.0, 1.0].iter().any(|k| (x - k).abs() < 2.0 * h)
}

fn check_point(model: &Model, pars: &[f64], label: &str) -> usize {
    let mut ev = Evaluator::new(model);
    let mut g = vec![0.0; pars.len()];
    let f0 = ev.nll_grad(pars, &model.observed, &mut g).unwrap();
    let mut checked = 0;
    for i in 0..pars.len() {
        let h = 1e-5 * pars[i].abs().max(1.0);
        if near_kink(model, i, pars[i], h) {
            continue;
        }
        let mut p = pars.to_vec();
        p[i] = pars[i] + h;
        let fp = ev.nll(&p, &model.observed).unwrap();
        p[i] = pars[i] - h;
        let fm = ev.nll(&p, &model.observed).unwrap();
        let fd = (fp - fm) / (2.0 * h);
        // FD truncation and rounding: h^2 f''' and eps |f| / h; scale the floor by |f|.
        let tol = 1e-6 * fd.abs().max(1e-3) + 1e-9 * f0.abs().max(1.0);
        assert!(
            (g[i] - fd).abs() <= tol,
            "{label}: d/d{} analytic {} vs finite difference {} (tol {tol})",
            model.parameters[i].name,
            g[i],
            fd
        );
        checked += 1;
    }
    checked
}

#[test]
fn gradient_matches_finite_differences_everywhere() {
    let mut total = 0;
    for path in all_models() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let heavy = name.contains("tHu");
        let codes: &[&str] = if heavy { &ALL_CODES[..1] } else { &ALL_CODES };
        for code in codes {
            let model = load(&path, None, code.parse().unwrap());
            total += check_point(&model, &model.init(), &format!("{name} {code} init"));
            let mut rng = Rng(0x5EED ^ total as u64);
            let n_points = if heavy { 2 } else { 10 };
            for k in 0..n_points {
                let pars: Vec<f64> = model
                    .parameters
                    .iter()
                    .map(|p| {
                        if p.fixed {
                            p.init
                        } else if p.kind == ParamKind::Systematic {
                            rng.uniform(-2.5, 2.5)
                        } else {
                            rng.uniform(p.bounds.0.max(0.5), p.bounds.1.min(1.8))
                        }
                    })
                    .collect();
                if model.nll(&pars).is_err() {
                    continue; // a negative rate at this point: nothing to differentiate
                }
                total += check_point(&model, &pars, &format!("{name} {code} point {k}"));
            }
        }
    }
    assert!(total > 500, "only {total} gradient components checked");
}

/// A normfactor at exactly 0 (its lower bound, where fits of the POI start) still has the
/// right derivative: the product rule cannot divide by the factor there.
#[test]
fn gradient_at_zero_normfactor() {
    for path in example_models() {
        let model = load(&path, None, Default::default());
        let mut pars = model.init();
        pars[model.poi] = 0.0;
        if model.nll(&pars).is_err() {
            continue;
        }
        let mut ev = Evaluator::new(&model);
        let mut g = vec![0.0; pars.len()];
        ev.nll_grad(&pars, &model.observed, &mut g).unwrap();
        let h = 1e-6;
        let mut p = pars.clone();
        p[model.poi] = h;
        let fp = model.nll(&p).unwrap();
        let f0 = model.nll(&pars).unwrap();
        let fd = (fp - f0) / h;
        assert!(
            (g[model.poi] - fd).abs() < 1e-4 * fd.abs().max(1.0),
            "{}: dNLL/dPOI at 0: {} vs {}",
            path.display(),
            g[model.poi],
            fd
        );
    }
}
