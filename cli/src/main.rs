//! `nextstat`: the command-line face of the nextstat library.
//!
//! Exit codes: 0 success; 2 bad input (a workspace, an option or a value the program cannot
//! use: the message names the file and the JSON path); 3 a fit did not converge (unless
//! `--allow-nonconverged`); 1 anything else.

mod commands;
mod common;
mod plot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nextstat",
    version,
    about = "HistFactory inference for pyhf workspaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the compute devices (CPU threads, wgpu adapters) this machine offers.
    Devices(commands::devices::Args),
    /// Compare every available engine with the CPU f64 engine on a model (trust your GPU).
    Parity(commands::parity::Args),
    /// Show a workspace's channels, bins, samples, parameters and POI.
    Inspect(commands::inspect::Args),
    /// Evaluate the negative log-likelihood (pyhf's -logpdf) and optionally its gradient.
    Nll(commands::nll::Args),
    /// Maximum-likelihood fit: best fit, uncertainties, correlations, pulls.
    Fit(commands::fit::Args),
    /// Asymptotic CLs hypothesis test at one POI value.
    Hypotest(commands::hypotest::Args),
    /// Profile likelihood scan of the POI.
    Scan(commands::scan::Args),
    /// CLs upper limit on the POI, observed and expected band.
    UpperLimit(commands::upper_limit::Args),
    /// Impact of each nuisance parameter on the POI.
    Ranking(commands::ranking::Args),
    /// Toy-based CLs hypothesis test (pseudo-experiments, parallel over toys).
    HypotestToys(commands::toys::Args),
    /// Merge hypotest-toys shards (--toy-range runs) into the result of the whole run.
    MergeToys(commands::toys::MergeArgs),
    /// Benchmarks: `bench toys` times a toy-based test against the number of toys.
    #[command(subcommand)]
    Bench(commands::bench::Command),
}

fn main() {
    let mut trace = nextstat::trace::Trace::start("nextstat");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(a) => commands::devices::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Parity(a) => commands::parity::run(a),
        Command::Nll(a) => commands::nll::run(a),
        Command::Fit(a) => commands::fit::run(a),
        Command::Hypotest(a) => commands::hypotest::run(a),
        Command::Scan(a) => commands::scan::run(a),
        Command::UpperLimit(a) => commands::upper_limit::run(a),
        Command::Ranking(a) => commands::ranking::run(a),
        Command::HypotestToys(a) => commands::toys::run(a),
        Command::MergeToys(a) => commands::toys::merge(a),
        Command::Bench(c) => commands::bench::run(c),
    };
    trace.mark("command returned");
    if let Err(e) = result {
        eprintln!("error: {}", e.message);
        std::process::exit(e.code);
    }
}
