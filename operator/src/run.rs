//! `infergate-operator run`: the kube-runtime controllers around the pure `compile` functions.
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The operator's own namespace: gateway-config shards and the leader Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "infergate-system")]
    pub namespace: String,
    /// Serves /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,
    /// Hold a Lease so that only one replica writes. Disable only for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    #[arg(long, default_value = "infergate-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "infergate-operator-local")]
    pub pod_name: String,
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`run` is being built")
}
