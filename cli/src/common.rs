//! Pieces every command shares: loading a model, parameter assignments, output.

use clap::Args;
use nextstat::{CompileOptions, InterpCodes, Model, Workspace};
use std::path::PathBuf;

/// A failure of a command: what to print and the exit code.
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl From<nextstat::Error> for CliError {
    fn from(e: nextstat::Error) -> Self {
        // Every library error is about the input the user gave us.
        CliError {
            message: e.to_string(),
            code: 2,
        }
    }
}

impl CliError {
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 2,
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Options that pick and build a model.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// pyhf JSON workspace.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Measurement to use (default: the first in the workspace).
    #[arg(long)]
    pub measurement: Option<String>,
    /// Interpolation codes, e.g. `normsys=code1,histosys=code0` (default code4 / code4p).
    #[arg(long, default_value = "")]
    pub interp: String,
}

impl ModelArgs {
    pub fn load(&self) -> CliResult<(Workspace, Model)> {
        let ws = Workspace::from_path(&self.input)?;
        let interp: InterpCodes = self
            .interp
            .parse()
            .map_err(|e| CliError::input(format!("--interp '{}': {e}", self.interp)))?;
        let model = Model::from_workspace(
            &ws,
            &CompileOptions {
                measurement: self.measurement.clone(),
                interp,
            },
        )?;
        Ok((ws, model))
    }
}

/// Options that set parameter values.
#[derive(Args, Debug)]
pub struct ParArgs {
    /// Parameter values, `name=value` (repeatable, or comma-separated).
    #[arg(long = "pars", value_delimiter = ',')]
    pub pars: Vec<String>,
    /// JSON file with an object of parameter name to value (an array sets a vector set).
    #[arg(long)]
    pub pars_file: Option<PathBuf>,
}

impl ParArgs {
    /// The model's inits with the file's and then the command line's assignments applied.
    pub fn resolve(&self, model: &Model) -> CliResult<Vec<f64>> {
        let mut pars = model.init();
        if let Some(path) = &self.pars_file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::input(format!("cannot read {shown}: {e}")))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| CliError::input(format!("{shown}: malformed JSON: {e}")))?;
            model.set_params_from_json(&mut pars, &value, &shown)?;
        }
        for item in &self.pars {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| CliError::input(format!("--pars '{item}': expected name=value")))?;
            let v: f64 = value.trim().parse().map_err(|_| {
                CliError::input(format!("--pars '{item}': '{value}' is not a number"))
            })?;
            model
                .set_param(&mut pars, name.trim(), v)
                .map_err(|e| CliError::input(format!("--pars '{item}': {e}")))?;
        }
        Ok(pars)
    }
}

/// Options for where results go.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Print a JSON object instead of a table (keys documented in docs/cli-json.md).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl OutputArgs {
    /// Prints `table()` or the JSON value, and writes the JSON to `--output` when given.
    pub fn emit(&self, value: &serde_json::Value, table: impl FnOnce() -> String) -> CliResult {
        let text = serde_json::to_string_pretty(value).map_err(|e| CliError {
            message: format!("cannot encode JSON: {e}"),
            code: 1,
        })?;
        if let Some(path) = &self.output {
            std::fs::write(path, format!("{text}\n")).map_err(|e| CliError {
                message: format!("cannot write {}: {e}", path.display()),
                code: 1,
            })?;
        }
        let out = if self.json {
            format!("{text}\n")
        } else {
            table()
        };
        use std::io::Write;
        match std::io::stdout().lock().write_all(out.as_bytes()) {
            // A reader that stopped reading (`| head`) is not an error of ours.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError {
                message: format!("cannot write to standard output: {e}"),
                code: 1,
            }),
            _ => Ok(()),
        }
    }
}

/// A JSON object of parameter name to value, in the model's order.
pub fn named(model: &Model, values: &[f64]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = model
        .parameters
        .iter()
        .zip(values)
        .map(|(p, v)| (p.name.clone(), serde_json::json!(v)))
        .collect();
    serde_json::Value::Object(map)
}

/// Parameters to hold fixed in fits.
#[derive(Args, Debug)]
pub struct FixArgs {
    /// Hold a parameter at a value in every fit, `name=value` (repeatable or comma-separated).
    #[arg(long = "fix", value_delimiter = ',')]
    pub fix: Vec<String>,
}

impl FixArgs {
    pub fn resolve(&self, model: &Model) -> CliResult<Vec<(usize, f64)>> {
        self.fix
            .iter()
            .map(|item| {
                let (name, value) = item.split_once('=').ok_or_else(|| {
                    CliError::input(format!("--fix '{item}': expected name=value"))
                })?;
                let v: f64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| {
                        CliError::input(format!("--fix '{item}': '{value}' is not a finite number"))
                    })?;
                let i = model
                    .param_index(name.trim())
                    .map_err(|e| CliError::input(format!("--fix '{item}': {e}")))?;
                Ok((i, v))
            })
            .collect()
    }
}

/// What to do when a fit does not converge.
#[derive(Args, Debug)]
pub struct ConvergenceArgs {
    /// Exit 0 even when a fit did not converge (the output still says so).
    #[arg(long)]
    pub allow_nonconverged: bool,
}

/// Exit code of a run whose fits did not all converge (unless --allow-nonconverged).
pub const EXIT_NOT_CONVERGED: i32 = 3;

impl ConvergenceArgs {
    /// After the output is printed: an error (exit 3) when something did not converge.
    pub fn check(&self, converged: bool, what: &str) -> CliResult {
        if converged || self.allow_nonconverged {
            if !converged {
                eprintln!("warning: {what} did not converge (allowed by --allow-nonconverged)");
            }
            return Ok(());
        }
        Err(CliError {
            message: format!(
                "{what} did not converge (use --allow-nonconverged to accept the result)"
            ),
            code: EXIT_NOT_CONVERGED,
        })
    }
}

/// Where to draw a plot.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Draw the result as an SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Parses `START:STOP`.
pub fn parse_range(text: &str, option: &str) -> CliResult<(f64, f64)> {
    let bad = || CliError::input(format!("{option} '{text}': expected START:STOP, e.g. 0:3"));
    let (a, b) = text.split_once(':').ok_or_else(bad)?;
    let a: f64 = a.trim().parse().map_err(|_| bad())?;
    let b: f64 = b.trim().parse().map_err(|_| bad())?;
    if !(a.is_finite() && b.is_finite() && a < b) {
        return Err(bad());
    }
    Ok((a, b))
}

/// Prints library warnings on stderr.
pub fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// The worker threads of a command's CPU work: `threads` of them, or one per core.
pub fn worker_pool(threads: Option<usize>) -> CliResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| CliError {
            message: format!("cannot start worker threads: {e}"),
            code: 1,
        })
}

/// Hands a GPU engine to the process's exit instead of dropping it, once a command's output is
/// written: the driver reclaims the device's memory with the process, and wgpu's orderly
/// teardown of a Vulkan device took 56 ms on the H200 (5% of a 10,000-toy tHu run of
/// `hypotest-toys --gpu metal`) for nothing.
pub fn leave_for_exit(engine: Option<nextstat::device::Engine>) {
    std::mem::forget(engine);
}

/// `--gpu`: which engine does the command's likelihood work, shared by every command that
/// can run on a GPU so they all parse and fall back the same way.
#[derive(Args, Debug)]
pub struct GpuArgs {
    /// Engine: cpu (f64, the default), metal/wgpu (f32 WGSL through wgpu; fits are finished
    /// and test statistics re-evaluated in f64 on the CPU), cuda, cuda:N or cuda:N,M (f64 CUDA,
    /// builds with --features cuda; several devices split the work), or auto (the best GPU
    /// engine there is, else the CPU, saying so).
    #[arg(long, default_value = "cpu")]
    pub gpu: String,
}

impl GpuArgs {
    /// The engine `--gpu` asks for: `None` for the CPU engine; `auto` takes the best GPU
    /// engine there is (CUDA, then wgpu) and says when it falls back.
    pub fn engine(&self) -> CliResult<Option<nextstat::device::Engine>> {
        use nextstat::device::{DeviceRequest, Engine};
        let gpu = &self.gpu;
        let request: DeviceRequest = gpu
            .parse()
            .map_err(|e| CliError::input(format!("--gpu '{gpu}': {e}")))?;
        Ok(Engine::open(request, &mut |note| eprintln!("{note}"))?)
    }
}
