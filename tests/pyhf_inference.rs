//! Fits and asymptotic inference against pyhf 0.7.6 (numpy backend, scipy at a tight tolerance;
//! tests/data/pyhf_infer_reference.json from tests/pyhf/make_infer_reference.py):
//! 2*NLL at the minimum within 1e-6 (or lower than pyhf's: a better minimum, reported), best-fit
//! POI within 1e-4, CLs observed and expected within 1e-5, upper limits within 1e-3 relative,
//! fixed-POI fits (the tHu scan) within 1e-4 or lower.

mod common;
use common::*;
use nextstat::infer::{hypotest, profile_scan, upper_limit, Fitter, TestStat};
use nextstat::InterpCodes;
use serde_json::Value;

fn reference() -> Option<Value> {
    let path = repo().join("tests/data/pyhf_infer_reference.json");
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn model_of(case: &Value) -> Option<nextstat::Model> {
    let m = case["model"].as_str().unwrap();
    let path = match m.strip_prefix("shared:") {
        Some(f) => workspaces_dir()?.join(f),
        None => repo().join(m),
    };
    let interp: InterpCodes = format!(
        "normsys={},histosys={}",
        case["interp"]["normsys"].as_str().unwrap(),
        case["interp"]["histosys"].as_str().unwrap()
    )
    .parse()
    .unwrap();
    Some(load(&path, case["measurement"].as_str(), interp))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn mle_matches_pyhf() {
    let Some(reference) = reference() else {
        panic!("tests/data/pyhf_infer_reference.json missing")
    };
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let Some(model) = model_of(case) else {
            continue;
        };
        let name = format!("{} [{}]", case["model"], case["measurement"]);
        let ours = Fitter::new(&model).fit_free(&model.observed);
        assert!(
            ours.converged,
            "{name}: fit did not converge: {:?}",
            ours.status
        );
        let theirs = f(&case["mle"]["twice_nll"]);
        let d = ours.twice_nll() - theirs;
        if d < -1e-6 {
            eprintln!(
                "{name}: our minimum is lower than pyhf's by {:.3e} (2*NLL)",
                -d
            );
        } else {
            assert!(
                d.abs() <= 1e-6,
                "{name}: 2*NLL {} vs pyhf {theirs}",
                ours.twice_nll()
            );
            let poi = f(&case["mle"]["bestfit"][&model.parameters[model.poi].name]);
            assert!(
                (ours.pars[model.poi] - poi).abs() <= 1e-4,
                "{name}: POI {} vs pyhf {poi}",
                ours.pars[model.poi]
            );
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} cases");
}

#[test]
fn fixed_poi_fits_and_scans_match_pyhf() {
    let Some(reference) = reference() else {
        panic!("reference missing")
    };
    for case in reference["cases"].as_array().unwrap() {
        let Some(model) = model_of(case) else {
            continue;
        };
        let fits = case["fixed_poi_fits"].as_array().unwrap();
        let grid: Vec<f64> = fits.iter().map(|e| f(&e["poi"])).collect();
        let (_, points) = profile_scan(&model, &model.observed, &grid);
        for (e, p) in fits.iter().zip(&points) {
            // pyhf writes +inf (null here) where the likelihood is undefined at that POI (a
            // signal-only bin with events at mu = 0): we must not report a converged fit there.
            let Some(theirs) = e["twice_nll"].as_f64() else {
                assert!(
                    !(p.fit.converged && p.twice_nll().is_finite()),
                    "{} mu={}: pyhf's likelihood is undefined here but we report a converged fit",
                    case["model"],
                    p.poi
                );
                continue;
            };
            assert!(
                p.fit.converged,
                "{} mu={}: not converged",
                case["model"], p.poi
            );
            assert!(
                p.twice_nll() <= theirs + 1e-4,
                "{} mu={}: 2*NLL {} is above pyhf's {theirs}: not the minimum",
                case["model"],
                p.poi,
                p.twice_nll()
            );
            if p.twice_nll() < theirs - 1e-4 {
                eprintln!(
                    "{} mu={}: lower than pyhf by {:.2e}",
                    case["model"],
                    p.poi,
                    theirs - p.twice_nll()
                );
            }
        }
    }
}

#[test]
fn asymptotic_cls_matches_pyhf() {
    let Some(reference) = reference() else {
        panic!("reference missing")
    };
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let Some(model) = model_of(case) else {
            continue;
        };
        for h in case["hypotest"].as_array().unwrap() {
            let mu = f(&h["mu"]);
            let ts: TestStat = h["test_stat"].as_str().unwrap().parse().unwrap();
            let ours = hypotest(&model, &model.observed, mu, ts);
            let label = format!("{} {ts} mu={mu}", case["model"]);
            assert!(
                (ours.cls_obs - f(&h["cls_obs"])).abs() <= 1e-5,
                "{label}: CLs {} vs pyhf {}",
                ours.cls_obs,
                h["cls_obs"]
            );
            for (k, e) in h["cls_exp"].as_array().unwrap().iter().enumerate() {
                assert!(
                    (ours.cls_exp[k] - f(e)).abs() <= 1e-5,
                    "{label}: CLs_exp[{k}] {} vs pyhf {e}",
                    ours.cls_exp[k]
                );
            }
            checked += 1;
        }
        if let Some(q0) = case.get("q0").filter(|v| v.is_object()) {
            let ours = hypotest(&model, &model.observed, 0.0, TestStat::Q0);
            match q0.get("p0_obs").and_then(Value::as_f64) {
                Some(p0) => assert!(
                    (ours.cls_obs - p0).abs() <= 1e-5,
                    "{} q0: p0 {} vs pyhf {p0}",
                    case["model"],
                    ours.cls_obs
                ),
                // pyhf: NaN (a fit with an undefined likelihood); we must say so, not claim a result
                None => assert!(
                    !ours.converged && !ours.warnings.is_empty(),
                    "{} q0: pyhf's p0 is undefined, ours ({}) claims convergence",
                    case["model"],
                    ours.cls_obs
                ),
            }
        }
    }
    assert!(checked >= 10, "only {checked} hypotests");
}

#[test]
fn upper_limits_match_pyhf() {
    let Some(reference) = reference() else {
        panic!("reference missing")
    };
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let Some(ul) = case
            .get("upper_limit")
            .filter(|v| v.get("obs").is_some_and(Value::is_number))
        else {
            continue;
        };
        let Some(model) = model_of(case) else {
            continue;
        };
        let ours = upper_limit(&model, &model.observed, f(&ul["level"]), TestStat::QTilde).unwrap();
        let label = case["model"].to_string();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        assert!(
            rel(ours.obs, f(&ul["obs"])) <= 1e-3,
            "{label}: observed limit {} vs pyhf {}",
            ours.obs,
            ul["obs"]
        );
        for (k, e) in ul["exp"].as_array().unwrap().iter().enumerate() {
            assert!(
                rel(ours.exp[k], f(e)) <= 1e-3,
                "{label}: expected limit [{k}] {} vs pyhf {e}",
                ours.exp[k]
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} upper limits");
}
