//! `infergate-agent`: see `infergate_agent::cli` for the subcommands.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use clap::Parser;
use infergate_agent::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One rustls provider for the process, chosen explicitly: kube and reqwest would otherwise each look for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log_format = match &cli.command {
        Command::Cluster(a) => a.common.log_format.clone(),
        Command::Standalone(a) => a.common.log_format.clone(),
    };
    infergate_agent::init_logging(&log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Standalone(args) => infergate_agent::standalone::run(args).await,
            Command::Cluster(args) => infergate_agent::cluster::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
