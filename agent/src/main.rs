//! `infergate-agent`: see `infergate_agent::cli` for the subcommands.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use clap::Parser;
use infergate_agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = cli.command.telemetry().clone();
    infergate_runtime::main("infergate-agent", &telemetry, move || async move {
        match cli.command {
            Command::Standalone(args) => infergate_agent::standalone::run(args).await,
            Command::Cluster(args) => infergate_agent::cluster::run(args).await,
            Command::Models(command) => infergate_agent::models::run(command).await,
        }
    })
}
