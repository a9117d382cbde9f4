//! `infergate-agent cluster` (being built).
use crate::cli::ClusterArgs;

pub async fn run(_args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::bail!("cluster mode is being built")
}
