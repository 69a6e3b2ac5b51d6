//! `hypotest --gpu` and `upper-limit --gpu` end to end: the fits on the WGSL engine, finished in
//! f64 on the CPU, give the CPU engine's CLs within 1e-4 and limits within 1e-3, on our example
//! models and on the shared complex workspace ($NEXTSTAT_WORKSPACES, else ../shared/workspaces
//! beside the checkout). Without a wgpu adapter these tests say so and pass, unless
//! NEXTSTAT_REQUIRE_WGPU=1.

mod common;
use common::{example, gpu_available, nextstat};
use serde_json::Value;
use std::path::PathBuf;

/// Our example models and, where present, the shared complex workspace.
fn inputs() -> Vec<String> {
    let mut v: Vec<String> = ["counting.json", "multi.json", "shapes.json"]
        .iter()
        .map(|m| example(m))
        .collect();
    let dir = std::env::var_os("NEXTSTAT_WORKSPACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/workspaces")
        });
    let complex = dir.join("complex_workspace.json");
    if complex.exists() {
        v.push(complex.display().to_string());
    } else {
        eprintln!(
            "skipping the shared workspace: {} not found (set NEXTSTAT_WORKSPACES)",
            complex.display()
        );
    }
    v
}

fn run(args: &[&str]) -> Value {
    let out = nextstat(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((x - y).abs() <= tol, "{what}: {y} vs CPU {x}");
}

#[test]
fn hypotest_with_gpu_metal_matches_the_cpu() {
    if !gpu_available() {
        return;
    }
    for input in inputs() {
        for (mu, ts) in [("1.0", "qtilde"), ("0", "q0")] {
            let args = |gpu: &'static str| {
                vec![
                    "hypotest",
                    "--input",
                    input.as_str(),
                    "--mu",
                    mu,
                    "--test-stat",
                    ts,
                    "--json",
                    "--gpu",
                    gpu,
                ]
            };
            let c = run(&args("cpu"));
            let g = run(&args("metal"));
            assert_eq!(c["engine"], "cpu");
            assert!(
                g["engine"].as_str().unwrap().starts_with("metal"),
                "{}",
                g["engine"]
            );
            let what = format!("{input} {ts}");
            for key in ["cls_obs", "clsb", "clb"] {
                close(&c[key], &g[key], 1e-4, &format!("{what} {key}"));
            }
            for k in 0..5 {
                close(&c["cls_exp"][k], &g["cls_exp"][k], 1e-4, &what);
            }
            assert_eq!(c["converged"], g["converged"], "{what}");
            // the same keys, plus the engine on both
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&c), keys(&g));
        }
    }
}

#[test]
fn upper_limit_with_gpu_metal_matches_the_cpu() {
    if !gpu_available() {
        return;
    }
    for input in inputs() {
        let args = |gpu: &'static str| {
            vec![
                "upper-limit",
                "--input",
                input.as_str(),
                "--json",
                "--gpu",
                gpu,
            ]
        };
        let c = run(&args("cpu"));
        let g = run(&args("metal"));
        assert_eq!(c["engine"], "cpu");
        assert!(g["engine"].as_str().unwrap().starts_with("metal"));
        close(&c["obs"], &g["obs"], 1e-3, &format!("{input} observed"));
        for k in 0..5 {
            close(
                &c["exp"][k],
                &g["exp"][k],
                1e-3,
                &format!("{input} expected {k}"),
            );
        }
    }
    // q0 is refused on either engine
    let out = nextstat(&[
        "upper-limit",
        "--input",
        &example("counting.json"),
        "--test-stat",
        "q0",
        "--gpu",
        "metal",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
