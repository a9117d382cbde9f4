//! The command line. kubectl runs `kubectl-infergate` for `kubectl infergate ...` with the remaining arguments and
//! the caller's environment, so the kubeconfig is found as kubectl finds it (`KUBECONFIG`, `~/.kube/config`).
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The operator's namespace in the chart's examples; the release namespace in general.
const DEFAULT_OPERATOR_NAMESPACE: &str = "infergate-system";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-infergate",
    bin_name = "kubectl infergate",
    version,
    about = "infergate day-two commands: API keys (list, rotate, revoke), per-key GPU usage, agent config status",
    long_about = "infergate day-two commands: API keys (list, rotate, revoke), per-key GPU usage, agent config \
                  status.\n\nInstalled on PATH as `kubectl-infergate`, it runs as `kubectl infergate ...` and uses \
                  the same kubeconfig as kubectl (KUBECONFIG or ~/.kube/config, current context). It never reads \
                  or prints key material: keys are named by their key id."
)]
pub struct Cli {
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Output format: an aligned table for people, or JSON for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List, rotate and revoke the API keys of ApiKeyPolicies.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// GPU-seconds and open streams per key of one ApiKeyPolicy, from the agents' admin `/usage`.
    Usage(UsageArgs),
    /// Which agents enforce the latest gateway config, from the agents' Leases.
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Key ids of each ApiKeyPolicy with their state (active, retiring, revoking, revoked, expired, suspended),
    /// when each was issued and until when a retiring key still works.
    List(ListArgs),
    /// Ask the operator to rotate a policy's key now: a new key is issued into the policy's Secret and the current
    /// one keeps working until the end of the rotation overlap.
    Rotate(RotateArgs),
    /// Revoke one key of a policy: adds it to `spec.revocations` by server-side apply with the field manager
    /// `kubectl-infergate`, leaving revocations made by others (GitOps, kubectl apply) alone.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Namespace of the policies (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Policies of every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The ApiKeyPolicy's name.
    pub policy: String,
    /// Namespace of the policy (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The ApiKeyPolicy's name.
    pub policy: String,
    /// The key id to revoke (`kid_` and 16 hex characters), as `keys list` shows. Never the key itself.
    pub key_id: String,
    /// Why, for the audit trail (status, Events, the operator's audit log).
    #[arg(long)]
    pub reason: String,
    /// Who asks, for the audit trail. Default: the user the API server says you are, else the kubeconfig user.
    #[arg(long)]
    pub requested_by: Option<String>,
    /// Namespace of the policy (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// The ApiKeyPolicy's name; its keys (status.keys and revoked keys) are the ones shown.
    pub policy: String,
    /// Namespace of the policy (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// An agent's admin URL, e.g. `http://10.0.3.7:9090` (repeatable). Default: every agent with a Lease that
    /// carries its address, at --admin-port.
    #[arg(long = "agent", value_name = "URL")]
    pub agents: Vec<String>,
    /// File holding the agents' admin bearer token (the chart's agent.admin token).
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// The agents' admin port for agents whose Lease does not publish one (agents publish theirs; the chart's
    /// agent.ports.admin).
    #[arg(long, default_value_t = 9090)]
    pub admin_port: u16,
    /// Namespace of the operator and of the agents' Leases.
    #[arg(long, env = "INFERGATE_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
    /// How long to wait for each agent, in seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Namespace of the operator and of the agents' Leases.
    #[arg(short = 'n', long, env = "INFERGATE_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Namespace of the gateway-config Secrets, when the operator runs with --config-namespace (default: --namespace).
    #[arg(long)]
    pub config_namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn revoke_requires_a_reason() {
        let err =
            Cli::try_parse_from(["kubectl-infergate", "keys", "revoke", "app", "kid_00000000000000aa"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--reason"), "{err}");
    }

    #[test]
    fn list_takes_a_namespace_or_all_namespaces_not_both() {
        let err = Cli::try_parse_from(["kubectl-infergate", "keys", "list", "-n", "a", "-A"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let cli = Cli::try_parse_from(["kubectl-infergate", "keys", "list", "-A", "-o", "json"]).unwrap();
        assert_eq!(cli.output, Output::Json);
        assert!(matches!(cli.command, Command::Keys(KeysCommand::List(ListArgs { all_namespaces: true, .. }))));
    }

    #[test]
    fn agents_are_repeatable() {
        let cli = Cli::try_parse_from([
            "kubectl-infergate",
            "usage",
            "app",
            "--agent",
            "http://a:9090",
            "--agent",
            "http://b:9090",
        ])
        .unwrap();
        let Command::Usage(args) = cli.command else { panic!("usage") };
        assert_eq!(args.agents, ["http://a:9090", "http://b:9090"]);
        assert_eq!(args.admin_port, 9090);
    }
}
