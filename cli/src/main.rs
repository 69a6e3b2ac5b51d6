//! `nextstat`: the command-line face of the nextstat library.
//!
//! Exit codes: 0 success; 2 bad input (a workspace, an option or a value the program cannot
//! use: the message names the file and the JSON path); 1 anything else.

mod commands;
mod common;

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
    /// Show a workspace's channels, bins, samples, parameters and POI.
    Inspect(commands::inspect::Args),
    /// Evaluate the negative log-likelihood (pyhf's -logpdf) and optionally its gradient.
    Nll(commands::nll::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Nll(a) => commands::nll::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", e.message);
        std::process::exit(e.code);
    }
}
