//! `nextstat bench nll`: the time of one NLL + gradient evaluation through a session, and of
//! batches of them, on an engine (and the CPU's beside it).
//!
//! One item is the latency a differentiable layer or an optimizer sees: a call with one
//! parameter vector and the observed data, back to back. Larger batches show the throughput.
//! The session (the model's upload) is made once, outside the timed calls; each batch size is
//! called for 0.2 s as a warm-up and then `--repeats` times, and the median call is reported. The
//! CPU engine evaluates one item on the calling thread (one core) and larger batches over the
//! worker threads.

use crate::commands::bench::{median, open_engine, parse_sizes};
use crate::common::{CliError, CliResult, GpuArgs, ModelArgs, OutputArgs};
use nextstat::{Dataset, Evaluator, Model};
use serde_json::{json, Value};
use std::fmt::Write;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Items per call to time, comma-separated.
    #[arg(long, default_value = "1,100,1000")]
    batches: String,
    /// Timed calls per batch size (after 0.2 s of warm-up calls); the median is reported.
    #[arg(long, default_value_t = 201)]
    repeats: usize,
    /// Also time the CPU f64 engine (when --gpu names another engine).
    #[arg(long)]
    cpu: bool,
    /// Worker threads of the CPU engine's batches (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    // The engine to time (cpu times the CPU engine).
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// One batch size's timings.
struct Timing {
    items: usize,
    /// Median seconds per call.
    seconds: f64,
}

/// One engine's timings.
struct Series {
    label: String,
    requested: String,
    precision_bits: u32,
    engine_open: Option<f64>,
    session_upload: Option<f64>,
    /// The NLL of the first item (the model's inits), a check against the other engines.
    first_nll: f64,
    timings: Vec<Timing>,
}

/// `n` parameter vectors: the inits with the POI moved a little per item (inside its bounds),
/// so that no two items of a batch are the same.
fn items(model: &Model, n: usize) -> Vec<Vec<f64>> {
    let (lo, hi) = model.bounds()[model.poi];
    (0..n)
        .map(|i| {
            let mut p = model.init();
            p[model.poi] = (p[model.poi] + 1e-6 * i as f64).clamp(lo, hi);
            p
        })
        .collect()
}

/// How long each batch size is called before its timed calls: processors (CPU cores and GPUs)
/// raise their clocks only under sustained load, and one warm-up call left the CPU engine's
/// single item at 20 µs on the GPU machine's host, where a long loop runs it in 12 µs.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(200);

/// Calls `call` for [`WARM_UP`] (at least once), then `repeats` times timed; the median
/// seconds per call.
fn time_calls(repeats: usize, mut call: impl FnMut() -> CliResult<f64>) -> CliResult<f64> {
    let t = Instant::now();
    while {
        call()?;
        t.elapsed() < WARM_UP
    } {}
    let mut runs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        call()?;
        runs.push(t.elapsed().as_secs_f64());
    }
    Ok(median(&runs))
}

/// An NLL that is not finite is an error: a timing of a failed evaluation means nothing.
fn finite(v: f64, what: &str) -> CliResult<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CliError {
            message: format!("{what}: the NLL at the model's inits is {v}"),
            code: 1,
        })
    }
}

pub fn run(a: Args) -> CliResult {
    let sizes: Vec<usize> = parse_sizes(&a.batches, "--batches", "item")?
        .into_iter()
        .map(|n| n as usize)
        .collect();
    if a.repeats == 0 {
        return Err(CliError::input("--repeats must be at least 1"));
    }
    let (_, model) = a.model.load()?;
    let pool = crate::common::worker_pool(a.threads)?;
    let threads = pool.current_num_threads();
    let largest = sizes.last().copied().unwrap_or(1);
    let pars = items(&model, largest);
    let refs: Vec<&[f64]> = pars.iter().map(|p| p.as_slice()).collect();
    let data: Vec<&Dataset> = vec![&model.observed; largest];

    let time_cpu = |requested: &str| -> CliResult<Series> {
        let mut ev = Evaluator::new(&model);
        let mut grad = vec![0.0; model.n_params()];
        let first_nll = finite(ev.nll_grad(refs[0], data[0], &mut grad)?, "cpu")?;
        let mut timings = Vec::new();
        for &b in &sizes {
            let seconds = if b == 1 {
                time_calls(a.repeats, || Ok(ev.nll_grad(refs[0], data[0], &mut grad)?))?
            } else {
                let batch: Vec<(&[f64], &Dataset)> = refs[..b]
                    .iter()
                    .zip(&data[..b])
                    .map(|(p, d)| (*p, *d))
                    .collect();
                pool.install(|| {
                    time_calls(a.repeats, || {
                        let r = model.nll_grad_batch(&batch);
                        Ok(r.first()
                            .map_or(0.0, |x| x.as_ref().map_or(f64::NAN, |v| v.0)))
                    })
                })?
            };
            timings.push(Timing { items: b, seconds });
        }
        Ok(Series {
            label: format!("cpu (f64; one item on one core, batches on {threads} threads)"),
            requested: requested.to_string(),
            precision_bits: 64,
            engine_open: None,
            session_upload: None,
            first_nll,
            timings,
        })
    };

    let mut series = Vec::new();
    let (engine, engine_open) = open_engine(&a.gpu, a.cpu)?;
    match &engine {
        None => series.push(time_cpu(&a.gpu.gpu)?),
        Some(engine) => {
            let t = Instant::now();
            let session = engine.session(&model)?;
            let session_upload = t.elapsed().as_secs_f64();
            let label = session.describe();
            let first = session.nll_grad_batch(&refs[..1], &data[..1])?;
            let first_nll = finite(first.first().map_or(f64::NAN, |x| x.0), &label)?;
            let mut timings = Vec::new();
            for &b in &sizes {
                let seconds = time_calls(a.repeats, || {
                    let r = session.nll_grad_batch(&refs[..b], &data[..b])?;
                    Ok(r.first().map_or(f64::NAN, |x| x.0))
                })?;
                timings.push(Timing { items: b, seconds });
            }
            series.push(Series {
                label,
                requested: a.gpu.gpu.clone(),
                precision_bits: session.precision_bits(),
                engine_open: Some(engine_open),
                session_upload: Some(session_upload),
                first_nll,
                timings,
            });
        }
    }
    if a.cpu && engine.is_some() {
        series.push(time_cpu("cpu")?);
    }
    let value = result_json(&a, &model, threads, &series);
    a.out.emit(&value, || table(&a, &model, &series))
}

fn result_json(a: &Args, model: &Model, threads: usize, series: &[Series]) -> Value {
    json!({
        "input": a.model.input.display().to_string(),
        "measurement": model.measurement,
        "n_params": model.n_params(),
        "n_bins": model.n_bins(),
        "repeats": a.repeats,
        "threads": threads,
        "engines": series.iter().map(|s| json!({
            "engine": s.label,
            "requested": s.requested,
            "precision_bits": s.precision_bits,
            "engine_open_seconds": s.engine_open,
            "session_upload_seconds": s.session_upload,
            "nll_first_item": s.first_nll,
            "batches": s.timings.iter().map(|t| json!({
                "items": t.items,
                "seconds_per_call": t.seconds,
                "seconds_per_item": t.seconds / t.items as f64,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn table(a: &Args, model: &Model, series: &[Series]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "NLL + gradient on {} ({} parameters, {} bins): median of {} call(s) after a warm-up",
        a.model.input.display(),
        model.n_params(),
        model.n_bins(),
        a.repeats
    );
    for e in series {
        let _ = writeln!(s);
        let mut head = e.label.clone();
        if let (Some(open), Some(up)) = (e.engine_open, e.session_upload) {
            let _ = write!(
                head,
                ": engine opened in {open:.3} s, model uploaded in {up:.3} s"
            );
        }
        let _ = writeln!(s, "{head}; NLL at the inits {:.9}", e.first_nll);
        let _ = writeln!(
            s,
            "{:>10} {:>14} {:>14}",
            "items", "µs per call", "µs per item"
        );
        for t in &e.timings {
            let _ = writeln!(
                s,
                "{:>10} {:>14.2} {:>14.3}",
                t.items,
                1e6 * t.seconds,
                1e6 * t.seconds / t.items as f64
            );
        }
    }
    s
}
