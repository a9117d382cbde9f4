//! `infergate-operator`: see `infergate_operator::cli` for the subcommands.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    infergate_operator::cli::main()
}
