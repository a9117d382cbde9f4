//! `infergate-agent`: see `infergate_agent::cli` for the subcommands.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use clap::Parser;
use infergate_agent::cli::{Cli, Command};

// mimalloc, not glibc malloc: a config reload at 10k policies frees ~100k small objects at once, and glibc spent
// ~40% of that reload in malloc_consolidate and friends; the request path allocates per request too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
