//! `nextstat hypotest-toys` and `nextstat merge-toys`: toy-based CLs, and the merge of shards.

use crate::common::{CliError, CliResult, GpuArgs, ModelArgs, OutputArgs, PlotArgs};
use nextstat::infer::TestStat;
use nextstat::model::Model;
use nextstat::toys::{self, Baseline, Ensembles, ToyOptions, ToyPValues};
use serde_json::{json, Value};
use std::fmt::Write;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The POI value to test.
    #[arg(long)]
    mu: f64,
    /// Toys per hypothesis (ignored with --toy-range).
    #[arg(long, default_value_t = 1000)]
    n_toys: u64,
    /// Random seed: the same seed gives the same toys on every engine and thread count.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Test statistic: qtilde (default), q, or q0.
    #[arg(long, default_value = "qtilde")]
    test_stat: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run only toys START..START+COUNT of each ensemble (a shard; merge with merge-toys).
    #[arg(long)]
    toy_range: Option<String>,
    /// Include every toy's test statistic in the JSON (always on with --toy-range).
    #[arg(long)]
    keep_toys: bool,
    /// Include the run time in the JSON (off by default so results are byte-reproducible).
    #[arg(long)]
    timing: bool,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Draw the toys on the device too (with --gpu metal): they never leave it.
    #[arg(long)]
    gpu_sample_toys: bool,
    #[command(flatten)]
    plot: PlotArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// FNV-1a of the workspace file, so merge-toys can refuse shards of different inputs.
fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn fit_summary(model: &Model, f: &nextstat::infer::FitResult) -> Value {
    json!({"twice_nll": f.twice_nll(), "poi": f.pars[model.poi], "converged": f.converged})
}

pub fn run(a: Args) -> CliResult {
    // The GPU engine opens (driver, context, kernels: a few hundred ms) while the CPU reads the
    // workspace and does the baseline fits.
    let gpu = GpuArgs {
        gpu: a.gpu.gpu.clone(),
    };
    let mut trace = nextstat::trace::Trace::start("hypotest-toys");
    let opening = std::thread::spawn(move || gpu.engine());
    let (_, model) = a.model.load()?;
    trace.mark("workspace read and compiled");
    let ts: TestStat = a
        .test_stat
        .parse()
        .map_err(|e| CliError::input(format!("--test-stat: {e}")))?;
    if !a.mu.is_finite() {
        return Err(CliError::input("--mu: not a finite number"));
    }
    let (first_toy, n_toys) = match &a.toy_range {
        Some(r) => {
            let bad = || {
                CliError::input(format!(
                    "--toy-range '{r}': expected START:COUNT with COUNT >= 1"
                ))
            };
            let (s, c) = r.split_once(':').ok_or_else(bad)?;
            let s: u64 = s.trim().parse().map_err(|_| bad())?;
            let c: u64 = c.trim().parse().map_err(|_| bad())?;
            if c == 0 {
                return Err(bad());
            }
            (s, c)
        }
        None => (0, a.n_toys),
    };
    if n_toys == 0 {
        return Err(CliError::input("--n-toys must be at least 1"));
    }
    if a.gpu_sample_toys && a.gpu.gpu == "cpu" {
        return Err(CliError::input(
            "--gpu-sample-toys draws toys on a GPU: use it with --gpu metal or --gpu cuda",
        ));
    }
    let bytes = std::fs::read(&a.model.input).unwrap_or_default();
    let opts = ToyOptions {
        seed: a.seed,
        first_toy,
        n_toys,
        test_stat: ts,
    };
    let pool = crate::common::worker_pool(a.threads)?;
    let show_progress = !a.out.json && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(2 * n_toys);
    if show_progress {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} toys, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("fitting toys");
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let t0 = std::time::Instant::now();
    let base = pool.install(|| toys::baseline(&model, &model.observed, a.mu, ts));
    trace.mark("baseline fits");
    let engine = opening.join().unwrap_or_else(|_| {
        Err(CliError {
            message: "opening the GPU engine failed".into(),
            code: 1,
        })
    });
    let engine = engine?;
    trace.mark("engine open (waited for)");
    if a.gpu_sample_toys && engine.is_none() {
        return Err(CliError::input(
            "--gpu-sample-toys draws toys on a GPU, and --gpu auto found none",
        ));
    }
    let (base, ens) = pool.install(|| -> CliResult<(Baseline, Ensembles)> {
        let ens = match &engine {
            None => toys::run_ensembles(&model, &base, a.mu, &opts, &|| bar.inc(1))?,
            Some(engine) => {
                let session = engine.session(&model)?;
                trace.mark("session (model uploaded)");
                let ens = toys::gpu::run_ensembles_gpu(
                    &model,
                    &base,
                    a.mu,
                    &opts,
                    &*session,
                    a.gpu_sample_toys,
                )?;
                bar.inc(2 * n_toys);
                ens
            }
        };
        Ok((base, ens))
    })?;
    bar.finish_and_clear();
    trace.mark("toys");
    let seconds = t0.elapsed().as_secs_f64();
    let header = Header {
        input: a.model.input.display().to_string(),
        digest: digest(&bytes),
        measurement: model.measurement.clone(),
        interp: json!({"normsys": model.interp.normsys.to_string(), "histosys": model.interp.histosys.to_string()}),
        mu: a.mu,
        test_stat: ts,
        seed: a.seed,
        q_obs: base.q_obs,
        baseline: json!({
            "free": fit_summary(&model, &base.free),
            "conditional_mu": fit_summary(&model, &base.cond_mu),
            "conditional_background": fit_summary(&model, &base.cond_bkg),
        }),
    };
    let keep = a.keep_toys || a.toy_range.is_some();
    let mut value = result_json(&header, first_toy, n_toys, &ens, keep);
    if a.timing {
        value["seconds"] = json!(seconds);
    }
    if let Some(path) = &a.plot.plot {
        crate::plot::toys(
            path,
            &model.parameters[model.poi].name,
            a.mu,
            base.q_obs,
            &ens,
        )?;
    }
    let p = toys::pvalues(base.q_obs, &ens, ts);
    a.out.emit(&value, || table(&header, &p, n_toys, seconds))?;
    trace.mark("output written");
    crate::common::leave_for_exit(engine);
    let baseline_ok = base.free.converged && base.cond_mu.converged && base.cond_bkg.converged;
    if !baseline_ok {
        return Err(CliError {
            message: "a fit to the observed data did not converge".into(),
            code: crate::common::EXIT_NOT_CONVERGED,
        });
    }
    Ok(())
}

/// What identifies a toy run (and must agree between shards).
struct Header {
    input: String,
    digest: String,
    measurement: String,
    interp: Value,
    mu: f64,
    test_stat: TestStat,
    seed: u64,
    q_obs: f64,
    baseline: Value,
}

fn result_json(h: &Header, first_toy: u64, n_toys: u64, ens: &Ensembles, keep: bool) -> Value {
    let p = toys::pvalues(h.q_obs, ens, h.test_stat);
    let mut v = json!({
        "input": h.input,
        "workspace_digest": h.digest,
        "measurement": h.measurement,
        "interp": h.interp,
        "mu": h.mu,
        "test_stat": h.test_stat.to_string(),
        "seed": h.seed,
        "first_toy": first_toy,
        "n_toys": n_toys,
        "q_obs": h.q_obs,
        "cls_obs": p.cls,
        "cls_obs_err": p.cls_err,
        "clsb": p.clsb,
        "clsb_err": p.clsb_err,
        "clb": p.clb,
        "clb_err": p.clb_err,
        "cls_exp": p.cls_exp,
        "toys_used": {"signal_plus_background": p.n_sb, "background_only": p.n_b},
        "failed_fits": {"signal_plus_background": p.failed_sb, "background_only": p.failed_b},
        "resolution": p.resolution,
        "cls_obs_upper_bound": p.cls_upper_bound,
        "baseline": h.baseline,
    });
    if keep {
        v["toys"] = json!({
            "signal_plus_background": ens.signal_plus_background,
            "background_only": ens.background_only,
        });
    }
    v
}

fn table(h: &Header, p: &ToyPValues, n_toys: u64, seconds: f64) -> String {
    let mut s = String::new();
    let label = if h.test_stat == TestStat::Q0 {
        "p0"
    } else {
        "CLs"
    };
    let _ = writeln!(
        s,
        "toy-based hypothesis test, {}, mu = {}, {n_toys} toys per hypothesis, seed {} ({:.2} s)",
        h.test_stat, h.mu, h.seed, seconds
    );
    let _ = writeln!(s, "observed test statistic  {:.6}", h.q_obs);
    let obs = match (&p.resolution, p.cls_upper_bound) {
        (Some(_), Some(b)) => format!("< {b:.4e} (no toy reached the observed value)"),
        (Some(_), None) => "undefined at this number of toys".to_string(),
        _ => format!("{:.6} ± {:.6}", p.cls, p.cls_err),
    };
    let _ = writeln!(s, "{label:<6} observed  {obs}");
    if h.test_stat != TestStat::Q0 {
        let _ = writeln!(
            s,
            "CLs+b  observed  {:.6} ± {:.6}  ({} of {} toys)",
            p.clsb, p.clsb_err, p.pass_sb, p.n_sb
        );
        let _ = writeln!(
            s,
            "CLb    observed  {:.6} ± {:.6}  ({} of {} toys)",
            p.clb, p.clb_err, p.pass_b, p.n_b
        );
    }
    let _ = writeln!(
        s,
        "{label:<6} expected  -2s {:.6}  -1s {:.6}  median {:.6}  +1s {:.6}  +2s {:.6}",
        p.cls_exp[0], p.cls_exp[1], p.cls_exp[2], p.cls_exp[3], p.cls_exp[4]
    );
    let _ = writeln!(
        s,
        "failed fits: {} signal+background, {} background-only (excluded, counted)",
        p.failed_sb, p.failed_b
    );
    if let Some(r) = &p.resolution {
        let _ = writeln!(s, "note: {r}");
    }
    s
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// JSON results of hypotest-toys runs with --toy-range (shards of one run).
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Include every toy's test statistic in the merged JSON.
    #[arg(long)]
    keep_toys: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn merge(a: MergeArgs) -> CliResult {
    let mut shards: Vec<(PathBuf, Value)> = Vec::new();
    for path in &a.shards {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::input(format!("cannot read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            CliError::input(format!(
                "{}: not a hypotest-toys JSON result: {e}",
                path.display()
            ))
        })?;
        if v.get("toys").is_none() {
            return Err(CliError::input(format!(
                "{}: has no per-toy test statistics; run hypotest-toys with --toy-range or --keep-toys",
                path.display()
            )));
        }
        shards.push((path.clone(), v));
    }
    shards.sort_by_key(|(_, v)| v["first_toy"].as_u64().unwrap_or(0));
    let (first_path, first) = &shards[0];
    for key in [
        "workspace_digest",
        "measurement",
        "interp",
        "mu",
        "test_stat",
        "seed",
        "q_obs",
        "baseline",
    ] {
        for (p, v) in &shards[1..] {
            if v[key] != first[key] {
                return Err(CliError::input(format!(
                    "{} and {} differ in '{key}' ({} vs {}): they are not shards of one run",
                    first_path.display(),
                    p.display(),
                    first[key],
                    v[key]
                )));
            }
        }
    }
    let mut expected = first["first_toy"].as_u64().unwrap_or(0);
    let start = expected;
    let mut ens = Ensembles {
        signal_plus_background: vec![],
        background_only: vec![],
    };
    for (p, v) in &shards {
        let f = v["first_toy"].as_u64().unwrap_or(u64::MAX);
        let n = v["n_toys"].as_u64().unwrap_or(0);
        if f != expected {
            return Err(CliError::input(format!(
                "{}: starts at toy {f} but toy {expected} was expected next (shards must cover a contiguous range once)",
                p.display()
            )));
        }
        expected += n;
        for (key, dst) in [
            ("signal_plus_background", &mut ens.signal_plus_background),
            ("background_only", &mut ens.background_only),
        ] {
            let list = v["toys"][key]
                .as_array()
                .ok_or_else(|| CliError::input(format!("{}: toys/{key} missing", p.display())))?;
            if list.len() as u64 != n {
                return Err(CliError::input(format!(
                    "{}: toys/{key} has {} entries, n_toys is {n}",
                    p.display(),
                    list.len()
                )));
            }
            dst.extend(list.iter().map(Value::as_f64));
        }
    }
    let ts: TestStat = first["test_stat"].as_str().unwrap_or("").parse()?;
    let header = Header {
        input: first["input"].as_str().unwrap_or("").to_string(),
        digest: first["workspace_digest"].as_str().unwrap_or("").to_string(),
        measurement: first["measurement"].as_str().unwrap_or("").to_string(),
        interp: first["interp"].clone(),
        mu: first["mu"].as_f64().unwrap_or(f64::NAN),
        test_stat: ts,
        seed: first["seed"].as_u64().unwrap_or(0),
        q_obs: first["q_obs"].as_f64().unwrap_or(f64::NAN),
        baseline: first["baseline"].clone(),
    };
    let n_toys = expected - start;
    let value = result_json(&header, start, n_toys, &ens, a.keep_toys);
    let p = toys::pvalues(header.q_obs, &ens, ts);
    a.out.emit(&value, || table(&header, &p, n_toys, 0.0))
}
