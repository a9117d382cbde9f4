//! `kubectl-infergate`: the kubectl plugin for infergate's day two (`kubectl infergate keys|usage|status`).
//!
//! ```text
//!  cli (clap) ─▶ commands ─┬─▶ cluster (kube client: policies, Leases, shard Secrets; merge patch, SSA)
//!                          ├─▶ admin (agents' GET /usage)
//!                          └─▶ keys · agents (pure decisions) ─▶ table | JSON
//! ```
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod admin;
mod agents;
mod cli;
mod cluster;
mod commands;
mod error;
mod keys;
mod table;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The workspace compiles one rustls provider (ring); kube's client and reqwest both ask for the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
