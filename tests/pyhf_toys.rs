//! Toy distributions against pyhf 0.7.6's `ToyCalculator` (tests/data/pyhf_toys_reference.json,
//! from tests/pyhf/make_toys_reference.py). pyhf draws other random numbers, so distributions
//! are compared: two-sample Kolmogorov-Smirnov per ensemble, and CLs within the combined Monte
//! Carlo uncertainty.

mod common;
use common::*;
use nextstat::infer::TestStat;
use nextstat::toys::{self, ToyOptions};
use serde_json::Value;

/// Two-sample KS statistic and its asymptotic p-value (conservative with ties).
fn ks_2samp(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let mut d: f64 = 0.0;
    for &x in a.iter().chain(&b) {
        let fa = a.partition_point(|&v| v <= x) as f64 / n;
        let fb = b.partition_point(|&v| v <= x) as f64 / m;
        d = d.max((fa - fb).abs());
    }
    let en = (n * m / (n + m)).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    let mut p = 0.0;
    for j in 1..200 {
        let term = 2.0 * (-1f64).powi(j - 1) * (-2.0 * (j as f64).powi(2) * lambda * lambda).exp();
        p += term;
        if term.abs() < 1e-12 {
            break;
        }
    }
    (d, p.clamp(0.0, 1.0))
}

#[test]
fn toy_distributions_match_pyhf() {
    let Some(dir) = workspaces_dir() else { return };
    let text = std::fs::read_to_string(repo().join("tests/data/pyhf_toys_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let file = case["model"]
            .as_str()
            .unwrap()
            .strip_prefix("shared:")
            .unwrap();
        let model = load(&dir.join(file), None, Default::default());
        let mu = case["mu"].as_f64().unwrap();
        let n = case["ntoys"].as_u64().unwrap();
        let base = toys::baseline(&model, &model.observed, mu, TestStat::QTilde);
        let q_ref = case["q_obs"].as_f64().unwrap();
        assert!(
            (base.q_obs - q_ref).abs() < 1e-5 * q_ref.max(1.0),
            "{file}: q_obs {} vs pyhf {q_ref}",
            base.q_obs
        );
        let opts = ToyOptions {
            seed: 2026,
            first_toy: 0,
            n_toys: n,
            test_stat: TestStat::QTilde,
        };
        let ens = toys::run_ensembles(&model, &base, mu, &opts, &|| {}).unwrap();
        for (key, ours) in [
            ("signal_plus_background", &ens.signal_plus_background),
            ("background_only", &ens.background_only),
        ] {
            let theirs: Vec<f64> = case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ours: Vec<f64> = ours.iter().flatten().copied().collect();
            assert_eq!(ours.len() as u64, n, "{file} {key}: failed toy fits");
            let (d, p) = ks_2samp(&ours, &theirs);
            eprintln!("{file} {key}: KS D = {d:.4}, p = {p:.3}");
            assert!(
                p > 1e-3,
                "{file} {key}: KS D = {d}, p = {p}: distributions differ from pyhf's"
            );
        }
        let ours = toys::pvalues(base.q_obs, &ens, TestStat::QTilde);
        let (clsb, clb) = (
            case["clsb"].as_f64().unwrap(),
            case["clb"].as_f64().unwrap(),
        );
        let theirs = case["cls_obs"].as_f64().unwrap();
        let nf = n as f64;
        let their_err = theirs
            * ((clsb * (1.0 - clsb) / nf) / clsb.powi(2) + (clb * (1.0 - clb) / nf) / clb.powi(2))
                .sqrt();
        let combined = (ours.cls_err.powi(2) + their_err.powi(2)).sqrt();
        eprintln!(
            "{file}: CLs {:.4} +- {:.4} vs pyhf {theirs:.4} +- {their_err:.4}",
            ours.cls, ours.cls_err
        );
        assert!(
            (ours.cls - theirs).abs() < 3.0 * combined,
            "{file}: CLs {} vs pyhf {theirs} (combined sigma {combined})",
            ours.cls
        );
    }
}

#[test]
fn ks_detects_a_shift() {
    let a: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
    let b: Vec<f64> = a.iter().map(|x| x + 0.1).collect();
    assert!(ks_2samp(&a, &b).1 < 1e-3);
    assert!(ks_2samp(&a, &a).1 > 0.99);
}
