//! `nextstat bench toys`: how the time per toy of a toy-based test changes with the batch size
//! (and `nextstat bench nll`, in `bench_nll.rs`).
//!
//! What is timed at each size N is phase B of `hypotest-toys` with N toys per hypothesis: both
//! ensembles, every toy fitted twice (free and with the POI held), the test statistics in f64.
//! On a GPU engine the toys are drawn on the device (`--gpu-sample-toys`). The baseline fits,
//! opening the engine and uploading the model happen once, outside the timed region, and are
//! reported on their own; one warm-up run at the smallest size precedes the timed runs.

use crate::common::{CliError, CliResult, GpuArgs, ModelArgs, OutputArgs, PlotArgs};
use nextstat::infer::TestStat;
use nextstat::toys::{self, Ensembles, ToyOptions};
use serde_json::{json, Value};
use std::fmt::Write;
use std::io::IsTerminal;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Time per toy of a toy-based test (phase B of hypotest-toys) against the batch size.
    Toys(ToysArgs),
    /// Time of one NLL + gradient through a session (the latency), and of batches of them.
    Nll(super::bench_nll::Args),
}

#[derive(clap::Args, Debug)]
pub struct ToysArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Toys per hypothesis to time, comma-separated.
    #[arg(long, default_value = "100,300,1000,3000,10000,30000,100000")]
    sizes: String,
    /// The POI value tested.
    #[arg(long, default_value_t = 1.0)]
    mu: f64,
    /// Random seed of the toys (the same toys at every repeat).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test statistic: qtilde (default), q, or q0.
    #[arg(long, default_value = "qtilde")]
    test_stat: String,
    /// Timed runs per size; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Also time the CPU f64 engine at each size (when --gpu names another engine).
    #[arg(long)]
    cpu: bool,
    /// Time the CPU engine only at sizes up to N (it is slow at large ones).
    #[arg(long, value_name = "N")]
    cpu_max: Option<u64>,
    /// Worker threads of the CPU work (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    // The engine to time (cpu times the CPU engine).
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    plot: PlotArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(c: Command) -> CliResult {
    match c {
        Command::Toys(a) => toys_bench(a),
        Command::Nll(a) => super::bench_nll::run(a),
    }
}

/// A list of sizes (`--sizes`, `--batches`: option `flag`, each a number of `unit`s, "toy" or
/// "item"): positive integers, sorted, each once.
pub(crate) fn parse_sizes(text: &str, flag: &str, unit: &str) -> CliResult<Vec<u64>> {
    let mut sizes = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let n: u64 = item.parse().map_err(|_| {
            CliError::input(format!(
                "{flag} '{text}': '{item}' is not a number of {unit}s (expected e.g. 100,1000,10000)"
            ))
        })?;
        if n == 0 {
            return Err(CliError::input(format!(
                "{flag} '{text}': every size must be at least 1 {unit}"
            )));
        }
        sizes.push(n);
    }
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

/// One size's timings.
struct Point {
    n_toys: u64,
    /// Every timed run, in seconds.
    runs: Vec<f64>,
    median: f64,
    failed: usize,
}

impl Point {
    /// Toys of both hypotheses.
    fn toys(&self) -> u64 {
        2 * self.n_toys
    }
    fn seconds_per_toy(&self) -> f64 {
        self.median / self.toys() as f64
    }
}

/// One engine's curve.
struct Series {
    label: String,
    requested: String,
    precision_bits: u32,
    engine_open: Option<f64>,
    session_upload: Option<f64>,
    warmup_toys: u64,
    warmup_seconds: f64,
    points: Vec<Point>,
}

/// The engine a bench command times (`None`: the CPU's) and the seconds opening it took;
/// `--cpu` with the CPU engine already asked for times it once, and says so.
pub(crate) fn open_engine(
    gpu: &GpuArgs,
    also_cpu: bool,
) -> CliResult<(Option<nextstat::device::Engine>, f64)> {
    let t = Instant::now();
    let engine = gpu.engine()?;
    let seconds = t.elapsed().as_secs_f64();
    if also_cpu && engine.is_none() {
        eprintln!("note: --cpu: the engine timed is already the CPU's; timing it once");
    }
    Ok((engine, seconds))
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn failed(ens: &Ensembles) -> usize {
    ens.signal_plus_background
        .iter()
        .chain(&ens.background_only)
        .filter(|q| q.is_none())
        .count()
}

/// Times `phase_b` at the smallest size once (warm-up), then `repeats` times at every size.
fn time_sizes(
    sizes: &[u64],
    repeats: usize,
    label: &str,
    progress: bool,
    phase_b: &dyn Fn(u64) -> CliResult<Ensembles>,
) -> CliResult<(u64, f64, Vec<Point>)> {
    let warmup_toys = sizes.first().copied().unwrap_or(1);
    if progress {
        eprintln!("{label}: warm-up, {warmup_toys} toys per hypothesis");
    }
    let t = Instant::now();
    phase_b(warmup_toys)?;
    let warmup_seconds = t.elapsed().as_secs_f64();
    let mut points = Vec::with_capacity(sizes.len());
    for &n in sizes {
        if progress {
            eprintln!("{label}: {n} toys per hypothesis, {repeats} run(s)");
        }
        let mut runs = Vec::with_capacity(repeats);
        let mut worst = 0;
        for _ in 0..repeats {
            let t = Instant::now();
            let ens = phase_b(n)?;
            runs.push(t.elapsed().as_secs_f64());
            worst = worst.max(failed(&ens));
        }
        points.push(Point {
            n_toys: n,
            median: median(&runs),
            runs,
            failed: worst,
        });
    }
    Ok((warmup_toys, warmup_seconds, points))
}

/// The CPU engine's sizes: those up to `--cpu-max`.
fn cpu_sizes(sizes: &[u64], cpu_max: Option<u64>) -> CliResult<Vec<u64>> {
    let kept: Vec<u64> = sizes
        .iter()
        .copied()
        .filter(|&n| cpu_max.is_none_or(|m| n <= m))
        .collect();
    if kept.is_empty() {
        return Err(CliError::input(format!(
            "--cpu-max {}: below every size in --sizes, so the CPU engine would time nothing",
            cpu_max.unwrap_or(0)
        )));
    }
    Ok(kept)
}

fn toys_bench(a: ToysArgs) -> CliResult {
    let sizes = parse_sizes(&a.sizes, "--sizes", "toy")?;
    if a.repeats == 0 {
        return Err(CliError::input("--repeats must be at least 1"));
    }
    if !a.mu.is_finite() {
        return Err(CliError::input("--mu: not a finite number"));
    }
    let ts: TestStat = a
        .test_stat
        .parse()
        .map_err(|e| CliError::input(format!("--test-stat: {e}")))?;
    let (_, model) = a.model.load()?;
    let pool = crate::common::worker_pool(a.threads)?;
    let threads = pool.current_num_threads();
    let cpu_label = format!("cpu (f64, {threads} threads)");
    let progress = !a.out.json && std::io::stderr().is_terminal();

    let t = Instant::now();
    let base = pool.install(|| toys::baseline(&model, &model.observed, a.mu, ts));
    let baseline_seconds = t.elapsed().as_secs_f64();

    let options = |n: u64| ToyOptions {
        seed: a.seed,
        first_toy: 0,
        n_toys: n,
        test_stat: ts,
    };
    let cpu_phase_b = |n: u64| -> CliResult<Ensembles> {
        Ok(pool.install(|| toys::run_ensembles(&model, &base, a.mu, &options(n), &|| {}))?)
    };
    let time_cpu = |requested: &str| -> CliResult<Series> {
        let sizes = cpu_sizes(&sizes, a.cpu_max)?;
        let (warmup_toys, warmup_seconds, points) =
            time_sizes(&sizes, a.repeats, &cpu_label, progress, &cpu_phase_b)?;
        Ok(Series {
            label: cpu_label.clone(),
            requested: requested.to_string(),
            precision_bits: 64,
            engine_open: None,
            session_upload: None,
            warmup_toys,
            warmup_seconds,
            points,
        })
    };

    let mut series = Vec::new();
    let (engine, engine_open) = open_engine(&a.gpu, a.cpu)?;
    match &engine {
        None => series.push(time_cpu(&a.gpu.gpu)?),
        Some(engine) => {
            // The session is opened and used inside the pool (it is not shared across threads;
            // the f64 finishing of the fits runs on the pool's workers).
            let gpu = pool.install(|| -> CliResult<Series> {
                let t = Instant::now();
                let session = engine.session(&model)?;
                let session_upload = t.elapsed().as_secs_f64();
                let label = session.describe();
                let gpu_phase_b = |n: u64| -> CliResult<Ensembles> {
                    Ok(toys::gpu::run_ensembles_gpu(
                        &model,
                        &base,
                        a.mu,
                        &options(n),
                        &*session,
                        true,
                    )?)
                };
                let (warmup_toys, warmup_seconds, points) =
                    time_sizes(&sizes, a.repeats, &label, progress, &gpu_phase_b)?;
                Ok(Series {
                    label,
                    requested: a.gpu.gpu.clone(),
                    precision_bits: session.precision_bits(),
                    engine_open: Some(engine_open),
                    session_upload: Some(session_upload),
                    warmup_toys,
                    warmup_seconds,
                    points,
                })
            })?;
            series.push(gpu);
        }
    }
    if a.cpu && engine.is_some() {
        series.push(time_cpu("cpu")?);
    }

    let input = a.model.input.display().to_string();
    let file_name = a
        .model
        .input
        .file_name()
        .map_or_else(|| input.clone(), |f| f.to_string_lossy().into_owned());
    let header = Header {
        input,
        file_name,
        measurement: model.measurement.clone(),
        mu: a.mu,
        test_stat: ts,
        seed: a.seed,
        repeats: a.repeats,
        threads,
        baseline_seconds,
    };
    if let Some(path) = &a.plot.plot {
        let curves: Vec<(String, Vec<(f64, f64)>)> = series
            .iter()
            .map(|s| {
                let pts = s
                    .points
                    .iter()
                    .map(|p| (p.n_toys as f64, 1e6 * p.seconds_per_toy()))
                    .collect();
                (s.label.clone(), pts)
            })
            .collect();
        crate::plot::bench_toys(path, &header.file_name, &curves)?;
    }
    let value = result_json(&header, &series);
    a.out.emit(&value, || table(&header, &series))
}

struct Header {
    input: String,
    file_name: String,
    measurement: String,
    mu: f64,
    test_stat: TestStat,
    seed: u64,
    repeats: usize,
    threads: usize,
    baseline_seconds: f64,
}

fn result_json(h: &Header, series: &[Series]) -> Value {
    let engines: Vec<Value> = series
        .iter()
        .map(|s| {
            let sizes: Vec<Value> = s
                .points
                .iter()
                .map(|p| {
                    json!({
                        "n_toys": p.n_toys,
                        "toys": p.toys(),
                        "fits": 4 * p.n_toys,
                        "seconds": p.median,
                        "seconds_runs": p.runs,
                        "seconds_per_toy": p.seconds_per_toy(),
                        "toys_per_second": p.toys() as f64 / p.median,
                        "failed_fits": p.failed,
                    })
                })
                .collect();
            json!({
                "engine": s.label,
                "requested": s.requested,
                "precision_bits": s.precision_bits,
                "engine_open_seconds": s.engine_open,
                "session_upload_seconds": s.session_upload,
                "warmup": {"n_toys": s.warmup_toys, "seconds": s.warmup_seconds},
                "sizes": sizes,
            })
        })
        .collect();
    json!({
        "input": h.input,
        "measurement": h.measurement,
        "mu": h.mu,
        "test_stat": h.test_stat.to_string(),
        "seed": h.seed,
        "repeats": h.repeats,
        "threads": h.threads,
        "baseline_seconds": h.baseline_seconds,
        "engines": engines,
    })
}

fn table(h: &Header, series: &[Series]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "toy throughput on {}: phase B of hypotest-toys ({}, mu = {}, seed {}), median of {} run(s)",
        h.file_name, h.test_stat, h.mu, h.seed, h.repeats
    );
    let _ = writeln!(
        s,
        "baseline fits (once, not timed below): {:.4} s",
        h.baseline_seconds
    );
    for e in series {
        let _ = writeln!(s);
        let mut setup = Vec::new();
        if let Some(t) = e.engine_open {
            setup.push(format!("engine opened in {t:.3} s"));
        }
        if let Some(t) = e.session_upload {
            setup.push(format!("model uploaded in {t:.3} s"));
        }
        setup.push(format!(
            "warm-up ({} toys per hypothesis) {:.3} s",
            e.warmup_toys, e.warmup_seconds
        ));
        let _ = writeln!(s, "{}: {}", e.label, setup.join(", "));
        let _ = writeln!(
            s,
            "{:>12} {:>10} {:>12} {:>12} {:>12} {:>8}",
            "toys/hypo", "fits", "median s", "µs/toy", "toys/s", "failed"
        );
        for p in &e.points {
            let _ = writeln!(
                s,
                "{:>12} {:>10} {:>12.4} {:>12.1} {:>12.0} {:>8}",
                p.n_toys,
                4 * p.n_toys,
                p.median,
                1e6 * p.seconds_per_toy(),
                p.toys() as f64 / p.median,
                p.failed
            );
        }
    }
    let _ = writeln!(
        s,
        "\nper size N: 2N toys (N per hypothesis), each fitted twice (4N fits); µs/toy = median / 2N"
    );
    s
}
