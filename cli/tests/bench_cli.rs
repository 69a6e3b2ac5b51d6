//! `nextstat bench toys` and `nextstat bench nll` end to end: the JSON objects, the tables,
//! the plot and bad input. The WGSL engine's runs need a wgpu adapter (Mesa's lavapipe in CI);
//! without one those tests say so and pass, unless NEXTSTAT_REQUIRE_WGPU=1.

mod common;
use common::{example, gpu_available, nextstat, tmp};
use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let out = nextstat(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The keys every size of every engine has, with the values they must have at `n` toys.
fn check_sizes(engine: &Value, expected: &[u64]) {
    let sizes = engine["sizes"].as_array().unwrap();
    let got: Vec<u64> = sizes
        .iter()
        .map(|s| s["n_toys"].as_u64().unwrap())
        .collect();
    assert_eq!(got, expected, "{engine}");
    for s in sizes {
        let n = s["n_toys"].as_u64().unwrap();
        assert_eq!(s["toys"].as_u64().unwrap(), 2 * n);
        assert_eq!(s["fits"].as_u64().unwrap(), 4 * n);
        let secs = s["seconds"].as_f64().unwrap();
        assert!(secs > 0.0, "{s}");
        let runs = s["seconds_runs"].as_array().unwrap();
        assert!(!runs.is_empty());
        let per_toy = s["seconds_per_toy"].as_f64().unwrap();
        assert!((per_toy - secs / (2 * n) as f64).abs() <= 1e-12 * secs.max(1.0));
        let rate = s["toys_per_second"].as_f64().unwrap();
        assert!((rate * per_toy - 1.0).abs() < 1e-9, "{s}");
        assert_eq!(s["failed_fits"].as_u64(), Some(0), "{s}");
    }
    let warm = &engine["warmup"];
    assert_eq!(warm["n_toys"].as_u64(), Some(expected[0]));
    assert!(warm["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_toys_on_the_cpu_engine_gives_json_and_a_plot() {
    let svg = tmp("bench_cpu.svg");
    let saved = tmp("bench_cpu.json");
    let v = run_json(&[
        "bench",
        "toys",
        "--input",
        &example("counting.json"),
        "--gpu",
        "cpu",
        "--sizes",
        "20,10",
        "--repeats",
        "1",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
        "--output",
        saved.to_str().unwrap(),
    ]);
    for key in [
        "input",
        "measurement",
        "mu",
        "test_stat",
        "seed",
        "repeats",
        "threads",
        "baseline_seconds",
        "engines",
    ] {
        assert!(v.get(key).is_some(), "missing '{key}' in {v}");
    }
    assert_eq!(v["mu"].as_f64(), Some(1.0));
    assert_eq!(v["seed"].as_u64(), Some(1));
    assert_eq!(v["test_stat"], "qtilde");
    assert_eq!(v["repeats"].as_u64(), Some(1));
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 1, "{v}");
    let e = &engines[0];
    assert!(e["engine"].as_str().unwrap().starts_with("cpu"), "{e}");
    assert_eq!(e["requested"], "cpu");
    assert_eq!(e["precision_bits"].as_u64(), Some(64));
    assert!(e["engine_open_seconds"].is_null());
    assert!(e["session_upload_seconds"].is_null());
    // Sizes come back sorted.
    check_sizes(e, &[10, 20]);

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "not an SVG");
    assert!(text.contains("counting.json"), "title names the model");
    assert!(text.contains("cpu (f64"), "legend names the engine");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(saved["engines"][0]["sizes"].as_array().unwrap().len(), 2);
}

#[test]
fn bench_toys_prints_a_table() {
    let out = nextstat(&[
        "bench",
        "toys",
        "-i",
        &example("counting.json"),
        "--sizes",
        "10",
        "--repeats",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("toy throughput on counting.json"), "{text}");
    assert!(text.contains("median of 2 run(s)"), "{text}");
    assert!(text.contains("µs/toy"), "{text}");
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("10"))
        .unwrap_or_else(|| panic!("no row for 10 toys in\n{text}"));
    assert_eq!(row.split_whitespace().nth(1), Some("40"), "4N fits: {row}");
}

#[test]
fn bench_toys_on_the_wgsl_engine_with_the_cpu_alongside() {
    if !gpu_available() {
        return;
    }
    let svg = tmp("bench_metal.svg");
    let v = run_json(&[
        "bench",
        "toys",
        "--input",
        &example("counting.json"),
        "--gpu",
        "metal",
        "--cpu",
        "--cpu-max",
        "10",
        "--sizes",
        "10,20",
        "--repeats",
        "1",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2, "{v}");
    let (gpu, cpu) = (&engines[0], &engines[1]);
    let label = gpu["engine"].as_str().unwrap();
    assert!(label.starts_with("metal"), "{gpu}");
    assert_eq!(gpu["requested"], "metal");
    assert_eq!(gpu["precision_bits"].as_u64(), Some(32));
    assert!(gpu["engine_open_seconds"].as_f64().unwrap() >= 0.0);
    assert!(gpu["session_upload_seconds"].as_f64().unwrap() >= 0.0);
    check_sizes(gpu, &[10, 20]);
    assert!(cpu["engine"].as_str().unwrap().starts_with("cpu"), "{cpu}");
    assert_eq!(cpu["requested"], "cpu");
    // --cpu-max 10 leaves the CPU only the size 10.
    check_sizes(cpu, &[10]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    assert!(text.contains("metal (wgpu"), "legend names the GPU engine");
    assert!(text.contains("cpu (f64"), "legend names the CPU engine");
}

#[test]
fn bad_bench_input_exits_2_with_a_clear_message() {
    let model = example("counting.json");
    let cases: &[(&[&str], &str)] = &[
        (&["--sizes", "0"], "at least 1 toy"),
        (&["--sizes", "abc"], "'abc' is not a number of toys"),
        (&["--sizes", "10,,20"], "'' is not a number of toys"),
        (&["--sizes=-5"], "'-5' is not a number of toys"),
        (&["--repeats", "0"], "--repeats must be at least 1"),
        (&["--mu", "nan"], "--mu"),
        (&["--test-stat", "t"], "--test-stat"),
        (&["--sizes", "100", "--cpu-max", "50"], "--cpu-max 50"),
        (&["--gpu", "tpu"], "unknown engine"),
    ];
    for (extra, phrase) in cases {
        let mut args = vec!["bench", "toys", "-i", &model];
        for (option, default) in [("--sizes", "10"), ("--repeats", "1")] {
            if !extra.iter().any(|x| x.starts_with(option)) {
                args.extend([option, default]);
            }
        }
        args.extend_from_slice(extra);
        let out = nextstat(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(phrase),
            "{args:?}: expected '{phrase}' in {err}"
        );
    }
    let out = nextstat(&["bench", "toys", "-i", "/no/such/ws.json", "--sizes", "10"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `bench nll`'s object for one engine: the batch sizes asked for, in order, each with a
/// positive time per call and per item that agree, and the NLL at the inits.
fn check_nll_engine(engine: &Value, expected: &[u64]) -> f64 {
    let batches = engine["batches"].as_array().unwrap();
    let got: Vec<u64> = batches
        .iter()
        .map(|b| b["items"].as_u64().unwrap())
        .collect();
    assert_eq!(got, expected, "{engine}");
    for b in batches {
        let call = b["seconds_per_call"].as_f64().unwrap();
        let item = b["seconds_per_item"].as_f64().unwrap();
        assert!(call > 0.0, "{b}");
        let n = b["items"].as_u64().unwrap() as f64;
        assert!((item * n - call).abs() <= 1e-12 * call, "{b}");
    }
    engine["nll_first_item"].as_f64().unwrap()
}

/// The NLL at the model's inits as `nextstat nll` gives it.
fn nll_at_inits(model: &str) -> f64 {
    run_json(&["nll", "--input", model, "--json"])["nll"]
        .as_f64()
        .unwrap()
}

#[test]
fn bench_nll_on_the_cpu_engine_gives_json_and_a_table() {
    let model = example("shapes.json");
    let v = run_json(&[
        "bench",
        "nll",
        "--input",
        &model,
        "--batches",
        "10,1",
        "--repeats",
        "3",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(v["repeats"].as_u64(), Some(3));
    assert_eq!(v["threads"].as_u64(), Some(2));
    assert_eq!(v["n_params"].as_u64(), Some(17));
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 1);
    assert_eq!(engines[0]["requested"], "cpu");
    assert_eq!(engines[0]["precision_bits"].as_u64(), Some(64));
    assert!(engines[0]["engine_open_seconds"].is_null());
    let nll = check_nll_engine(&engines[0], &[1, 10]);
    assert_eq!(
        nll,
        nll_at_inits(&model),
        "the CPU engine's NLL at the inits"
    );
    let out = nextstat(&[
        "bench",
        "nll",
        "-i",
        &model,
        "--batches",
        "1",
        "--repeats",
        "1",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("µs per call"), "{text}");
    assert!(text.contains("17 parameters"), "{text}");
}

#[test]
fn bench_nll_on_the_wgsl_engine_with_the_cpu_alongside() {
    if !gpu_available() {
        return;
    }
    let model = example("multi.json");
    let v = run_json(&[
        "bench",
        "nll",
        "--input",
        &model,
        "--gpu",
        "metal",
        "--cpu",
        "--batches",
        "1,5",
        "--repeats",
        "2",
        "--json",
    ]);
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    assert_eq!(engines[0]["requested"], "metal");
    assert_eq!(engines[0]["precision_bits"].as_u64(), Some(32));
    assert!(engines[0]["session_upload_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(engines[1]["requested"], "cpu");
    let gpu = check_nll_engine(&engines[0], &[1, 5]);
    let cpu = check_nll_engine(&engines[1], &[1, 5]);
    assert_eq!(cpu, nll_at_inits(&model));
    assert!(
        (gpu - cpu).abs() <= 2e-6 * cpu.abs(),
        "WGSL NLL {gpu} against the CPU's {cpu}"
    );
}

#[test]
fn bad_bench_nll_input_exits_2_with_a_clear_message() {
    let model = example("counting.json");
    let cases: &[(&[&str], &str)] = &[
        (&["--batches", "0"], "at least 1 item"),
        (&["--batches", "x"], "'x' is not a number of items"),
        (&["--repeats", "0"], "--repeats must be at least 1"),
        (&["--gpu", "tpu"], "unknown engine"),
    ];
    for (extra, phrase) in cases {
        let mut args = vec!["bench", "nll", "-i", &model];
        args.extend_from_slice(extra);
        let out = nextstat(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(phrase),
            "{args:?}: expected '{phrase}' in {err}"
        );
    }
    let out = nextstat(&["bench", "nll", "-i", "/no/such/ws.json"]);
    assert_eq!(out.status.code(), Some(2));
}
