//! The inference commands end to end: documented JSON keys, plots, --output, exit codes.

mod common;
use common::{example, tmp};
use serde_json::Value;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nextstat"))
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn fit_json_has_documented_keys_and_draws_pulls() {
    let plot = tmp("pulls.svg");
    let out = bin()
        .args([
            "fit",
            "--input",
            &example("counting.json"),
            "--json",
            "--plot",
        ])
        .arg(&plot)
        .output()
        .unwrap();
    let v = json(&out);
    for key in [
        "twice_nll",
        "bestfit",
        "uncertainties",
        "converged",
        "correlation",
        "pulls",
        "status",
        "iterations",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(v["converged"], true);
    assert!(v["bestfit"]["mu"].as_f64().unwrap() > 0.5);
    assert!(v["uncertainties"]["mu"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("staterror_SR[0]"));
}

#[test]
fn fixed_parameters_and_output_file() {
    let file = tmp("fit.json");
    let out = bin()
        .args([
            "fit",
            "--input",
            &example("counting.json"),
            "--fix",
            "mu=2.0",
            "--output",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["bestfit"]["mu"], 2.0);
    assert!(v["fixed"].as_array().unwrap().iter().any(|n| n == "mu"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("(POI, fixed)"), "{table}");
}

#[test]
fn hypotest_scan_upper_limit_ranking_json() {
    let h = json(
        &bin()
            .args([
                "hypotest",
                "--input",
                &example("counting.json"),
                "--mu",
                "1",
                "--json",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(h["cls_exp"].as_array().unwrap().len(), 5);
    let cls = h["cls_obs"].as_f64().unwrap();
    assert!(cls > 0.0 && cls <= 1.0);

    let plot = tmp("scan.svg");
    let s = json(
        &bin()
            .args([
                "scan",
                "--input",
                &example("counting.json"),
                "--poi-range",
                "0:3",
                "--points",
                "7",
                "--json",
                "--plot",
            ])
            .arg(&plot)
            .output()
            .unwrap(),
    );
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 7);
    assert_eq!(points[0]["poi"], 0.0);
    assert!(points
        .iter()
        .all(|p| p["twice_nll"].as_f64().unwrap()
            >= s["free_fit"]["twice_nll"].as_f64().unwrap() - 1e-9));
    assert!(plot.exists());

    let plot = tmp("brazil.svg");
    let u = json(
        &bin()
            .args([
                "upper-limit",
                "--input",
                &example("counting.json"),
                "--json",
                "--plot",
            ])
            .arg(&plot)
            .output()
            .unwrap(),
    );
    let exp: Vec<f64> = u["exp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(exp.len(), 5);
    assert!(
        exp.windows(2).all(|w| w[0] < w[1]),
        "expected band ordered: {exp:?}"
    );
    assert!(u["obs"].as_f64().unwrap() > 0.0);
    assert!(plot.exists());

    let plot = tmp("ranking.svg");
    let r = json(
        &bin()
            .args([
                "ranking",
                "--input",
                &example("counting.json"),
                "--json",
                "--plot",
            ])
            .arg(&plot)
            .output()
            .unwrap(),
    );
    assert!(!r["ranking"].as_array().unwrap().is_empty());
    assert!(plot.exists());
}

#[test]
fn nonconverged_fit_exits_3_unless_allowed() {
    // Holding the only normalisation at 0 leaves bins with observed events and no expected
    // events: the likelihood is undefined, so the fit cannot converge.
    let ws = r#"{"channels":[{"name":"SR","samples":[{"name":"s","data":[5.0],
      "modifiers":[{"name":"mu","type":"normfactor","data":null}]}]}],
      "observations":[{"name":"SR","data":[4.0]}],
      "measurements":[{"name":"m","config":{"poi":"mu","parameters":[]}}],"version":"1.0.0"}"#;
    let path = tmp("zero.json");
    std::fs::write(&path, ws).unwrap();
    let out = bin()
        .args(["fit", "--input"])
        .arg(&path)
        .args(["--fix", "mu=0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not converge"));
    let out = bin()
        .args(["fit", "--input"])
        .arg(&path)
        .args(["--fix", "mu=0", "--allow-nonconverged", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["converged"], false);
}

#[test]
fn bad_options_exit_2() {
    for args in [
        vec!["hypotest", "--mu", "1", "--test-stat", "qq"],
        vec!["scan", "--poi-range", "3:1"],
        vec!["scan", "--points", "1"],
        vec!["upper-limit", "--alpha", "1.5"],
        vec!["fit", "--fix", "nope=1"],
        vec!["fit", "--fix", "mu"],
    ] {
        let out = bin()
            .args(&args[..1])
            .args(["--input", &example("counting.json")])
            .args(&args[1..])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
