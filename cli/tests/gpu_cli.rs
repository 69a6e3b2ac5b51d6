//! `--gpu` and `parity` end to end. The WGSL engine runs wherever wgpu finds an adapter (Mesa's
//! lavapipe in CI); without one these tests say so and pass, unless NEXTSTAT_REQUIRE_WGPU=1.

mod common;
use common::{example, gpu_available, nextstat};
use serde_json::Value;

#[test]
fn nll_on_the_wgsl_engine_matches_the_cpu() {
    if !gpu_available() {
        return;
    }
    let run = |gpu: &str| -> Value {
        let out = nextstat(&[
            "nll",
            "--input",
            &example("counting.json"),
            "--pars",
            "mu=1.3",
            "--grad",
            "--json",
            "--gpu",
            gpu,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (cpu, gpu) = (run("cpu"), run("metal"));
    assert_eq!(cpu["engine"], "cpu");
    assert!(gpu["engine"].as_str().unwrap().starts_with("metal"));
    let (a, b) = (cpu["nll"].as_f64().unwrap(), gpu["nll"].as_f64().unwrap());
    assert!((a - b).abs() <= 2e-6 * a.abs(), "{a} vs {b}");
    // `auto` picks the best engine there is: CUDA (f64) where a CUDA build finds a driver,
    // else the WGSL engine; either way it gives that engine's answer
    let auto = run("auto");
    let engine = auto["engine"].as_str().unwrap_or_default();
    let expected = if engine.starts_with("cuda") { a } else { b };
    assert!(
        (auto["nll"].as_f64().unwrap() - expected).abs() <= 1e-12 * expected.abs(),
        "auto ({engine}): {} vs {expected}",
        auto["nll"]
    );
}

#[test]
fn unknown_or_missing_engines_are_input_errors() {
    let mut cases = vec![
        ("tpu", "unknown engine"),
        ("cuda:x", "expected cuda:N"),
        ("cuda:0,1,2,3,4,5,6,7,8", "between 1 and 8"),
    ];
    // A build without the CUDA engine says how to get it (builds with it are tested by
    // tests/cuda_*.rs and, without a driver, by missing_cuda_driver_is_an_input_error).
    if cfg!(not(feature = "cuda")) {
        cases.extend([
            ("cuda", "rebuild with --features cuda"),
            ("cuda:1", "rebuild with --features cuda"),
        ]);
    }
    for (gpu, phrase) in cases {
        let out = nextstat(&["nll", "--input", &example("counting.json"), "--gpu", gpu]);
        assert_eq!(out.status.code(), Some(2), "{gpu}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(phrase),
            "{gpu}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn parity_reports_every_check_within_tolerance() {
    if !gpu_available() {
        return;
    }
    let out = nextstat(&[
        "parity",
        "--input",
        &example("shapes.json"),
        "--points",
        "8",
        "--n-toys",
        "64",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let e = &v["engines"][0];
    assert_eq!(e["available"], true);
    let checks = e["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6);
    for c in checks {
        assert!(
            c["max_diff"].as_f64().unwrap() <= c["tolerance"].as_f64().unwrap(),
            "{c}"
        );
    }
}

/// Toy-based CLs with the fits on the WGSL engine (toys drawn on the CPU, or on the device
/// with --gpu-sample-toys): every toy's test statistic within 1e-3 of the CPU engine's on the
/// same toys, and CLs within 1e-3.
#[test]
fn hypotest_toys_on_the_wgsl_engine_match_the_cpu() {
    if !gpu_available() {
        return;
    }
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "hypotest-toys",
            "--input",
            "",
            "--mu",
            "1.5",
            "--n-toys",
            "200",
            "--seed",
            "9",
            "--keep-toys",
            "--json",
        ];
        let input = example("counting.json");
        args[2] = &input;
        args.extend_from_slice(extra);
        let out = nextstat(&args);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let cpu = run(&["--gpu", "cpu"]);
    for extra in [
        &["--gpu", "metal"][..],
        &["--gpu", "metal", "--gpu-sample-toys"][..],
    ] {
        let gpu = run(extra);
        for key in ["signal_plus_background", "background_only"] {
            let (a, b) = (
                cpu["toys"][key].as_array().unwrap(),
                gpu["toys"][key].as_array().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                let (x, y) = (
                    x.as_f64().expect("cpu toy fit"),
                    y.as_f64().expect("gpu toy fit"),
                );
                assert!(
                    (x - y).abs() <= 1e-3 * x.abs().max(1.0),
                    "{extra:?} {key} toy {k}: q {y} vs CPU {x}"
                );
            }
        }
        let (c, g) = (
            cpu["cls_obs"].as_f64().unwrap(),
            gpu["cls_obs"].as_f64().unwrap(),
        );
        assert!(
            (c - g).abs() <= 1e-3 || extra.len() == 3,
            "{extra:?}: CLs {g} vs CPU {c}"
        );
    }
    let out = nextstat(&[
        "hypotest-toys",
        "--input",
        &example("counting.json"),
        "--mu",
        "1",
        "--gpu-sample-toys",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--gpu-sample-toys without a GPU engine is an input error"
    );
}

/// `scan` and `ranking` with `--gpu metal` give the CPU's numbers (within f32 fits' 1e-3).
#[test]
fn scan_and_ranking_on_the_wgsl_engine() {
    if !gpu_available() {
        return;
    }
    let run = |args: &[&str]| -> Value {
        let out = nextstat(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let input = example("counting.json");
    let c = run(&[
        "scan",
        "--input",
        &input,
        "--poi-range",
        "0:2",
        "--points",
        "5",
        "--json",
        "--gpu",
        "cpu",
    ]);
    let g = run(&[
        "scan",
        "--input",
        &input,
        "--poi-range",
        "0:2",
        "--points",
        "5",
        "--json",
        "--gpu",
        "metal",
    ]);
    for (x, y) in c["points"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["points"].as_array().unwrap())
    {
        let (x, y) = (
            x["twice_nll"].as_f64().unwrap(),
            y["twice_nll"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-3, "scan: {y} vs CPU {x}");
    }
    let c = run(&["ranking", "--input", &input, "--json", "--gpu", "cpu"]);
    let g = run(&["ranking", "--input", &input, "--json", "--gpu", "metal"]);
    for e in c["ranking"].as_array().unwrap() {
        let other = g["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == e["name"])
            .unwrap();
        let (x, y) = (
            e["postfit_up"].as_f64().unwrap(),
            other["postfit_up"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-3, "{}: {y} vs CPU {x}", e["name"]);
    }
}

#[test]
fn fit_on_the_wgsl_engine_matches_the_cpu() {
    if !gpu_available() {
        return;
    }
    let run = |gpu: &str| -> Value {
        let out = nextstat(&[
            "fit",
            "--input",
            &example("shapes.json"),
            "--json",
            "--gpu",
            gpu,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (c, g) = (run("cpu"), run("metal"));
    assert!((c["twice_nll"].as_f64().unwrap() - g["twice_nll"].as_f64().unwrap()).abs() <= 1e-6);
    assert!(
        (c["bestfit"]["mu"].as_f64().unwrap() - g["bestfit"]["mu"].as_f64().unwrap()).abs() <= 1e-4
    );
}

/// A build with the CUDA engine on a machine without the NVIDIA driver or NVRTC: `--gpu cuda`
/// exits with code 2 and names what is missing, and `devices` says why CUDA is unavailable.
/// (With a driver, tests/cuda_engine.rs and the GPU machine's runs cover the engine itself.)
#[test]
#[cfg(feature = "cuda")]
fn missing_cuda_driver_is_an_input_error() {
    let out = nextstat(&["devices", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    if v["cuda"]["available"] == true {
        eprintln!("skipping: this machine has a CUDA driver");
        return;
    }
    let reason = v["cuda"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not found") || reason.contains("no CUDA device"),
        "{reason}"
    );
    let out = nextstat(&["nll", "--input", &example("counting.json"), "--gpu", "cuda"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--gpu metal or --gpu cpu") || err.contains("no CUDA device"),
        "{err}"
    );
}
