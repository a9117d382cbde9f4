//! Command-line entry points. Argument parsing lives here; each subcommand's work lives in its own module.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "infergate-operator",
    version,
    about = "infergate operator: API keys, rotation, revocation and gateway config from three CRDs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the three CustomResourceDefinitions as YAML (what `charts/infergate/crds/` holds).
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Show what the operator would create for local manifests (key material shown as `<generated>`).
    Render {
        /// Manifest files or directories (YAML, multi-document).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Evaluate as of this instant (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Validate manifests against the generated schemas, CEL rules included, like the API server would.
    Validate {
        #[arg(short = 'f', long = "filename", required_unless_present = "stdin_jsonl")]
        files: Vec<PathBuf>,
        /// Read one JSON object per stdin line and answer `{"ok":bool,"errors":[...]}` per line (for API stand-ins).
        #[arg(long, conflicts_with = "files")]
        stdin_jsonl: bool,
    },
    /// Run the operator against the cluster in the current kubeconfig / service account.
    Run(crate::run::RunArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir } => crate::render::print_crds(out_dir.as_deref()),
        Command::Render { files, now } => crate::render::render(&files, now.as_deref()),
        Command::Validate { stdin_jsonl: true, .. } => crate::validate::serve_stdin(),
        Command::Validate { files, .. } => crate::validate::validate_files(&files),
        Command::Run(args) => return crate::run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
