//! `infergate-operator run`: the kube-runtime controllers around the pure `compile` functions.
//!
//! ```text
//!  run ─┬─ admin server (/metrics /healthz /readyz)         ─┐
//!       ├─ leader loop: Lease every 5 s ─▶ leading? start / stop the controllers (reconcile::run_controllers)
//!       └─ SIGTERM / SIGINT ─▶ controllers drain ─▶ Lease released ─▶ admin server stops
//! ```
use crate::admin::{self, AdminState, Role, RoleCell};
use crate::leader::{self, LeaderElector};
use crate::metrics::Metrics;
use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The operator's own namespace: the leader Lease and the agents' Leases live here, and the gateway-config
    /// shards too unless `--config-namespace` names another.
    #[arg(long, env = "POD_NAMESPACE", default_value = "infergate-system")]
    pub namespace: String,
    /// Where the gateway-config shards are written (the agents read only this namespace). Default: `--namespace`.
    /// The chart sets a dedicated one, so an internet-facing agent cannot read the release namespace's Secrets.
    #[arg(long)]
    pub config_namespace: Option<String>,
    /// Serves /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub admin_addr: std::net::SocketAddr,
    /// Serve the admin port over TLS with this PEM certificate chain (re-read when it changes); needs `--tls-key`.
    /// The API-server client is unaffected: it keeps trusting the cluster CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Lowest TLS version on the admin port: `1.3` (default) or `1.2`.
    #[arg(long, value_enum, default_value_t = infergate_runtime::tls::MinVersion::Tls13)]
    pub tls_min_version: infergate_runtime::tls::MinVersion,
    /// Hold a Lease so that only one replica writes. Disable only for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    #[arg(long, default_value = "infergate-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "infergate-operator-local")]
    pub pod_name: String,
    #[command(flatten)]
    pub telemetry: infergate_runtime::telemetry::TelemetryArgs,
}

/// The whole life of `infergate-operator run`, on the shared process runtime (rustls provider, logging, OTLP).
pub fn run(args: RunArgs) -> std::process::ExitCode {
    let telemetry = args.telemetry.clone();
    infergate_runtime::main("infergate-operator", &telemetry, move || run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client from the kubeconfig or service account: {e}"))?;
    let metrics = Metrics::new();
    let role = Arc::new(RoleCell::default());
    // Stops the admin server last, after the Lease is released.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let admin_state = AdminState { metrics: metrics.clone(), role: role.clone() };
    let listener = admin::bind(args.admin_addr).await?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let settings = infergate_runtime::tls::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
                client_auth: infergate_runtime::tls::ClientAuth::Required,
                min_version: args.tls_min_version,
            };
            Some(infergate_runtime::tls::Tls::start(settings, &metrics.registry)?)
        }
        _ => None,
    };
    let admin = tokio::spawn(admin::serve(listener, admin_state, tls, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    tracing::info!(
        namespace = %args.namespace,
        admin_addr = %args.admin_addr,
        leader_election = args.leader_election,
        holder = %args.pod_name,
        "infergate operator starting"
    );

    let reporter = Reporter { controller: "infergate-operator".into(), instance: Some(args.pod_name.clone()) };
    let start_controllers = {
        let config_namespace = args.config_namespace.clone().unwrap_or_else(|| args.namespace.clone());
        let (client, namespace, metrics, role) =
            (client.clone(), args.namespace.clone(), metrics.clone(), role.clone());
        move |shutdown: watch::Receiver<bool>| {
            let (client, namespace, metrics, role, reporter) =
                (client.clone(), namespace.clone(), metrics.clone(), role.clone(), reporter.clone());
            let config_namespace = config_namespace.clone();
            role.set(Role::LeaderSyncing);
            metrics.leader.set(1);
            let on_synced = {
                let role = role.clone();
                move || role.set(Role::LeaderReady)
            };
            let shutdown = SharedShutdown(shutdown);
            tokio::spawn(crate::reconcile::run_controllers(
                client,
                namespace,
                config_namespace,
                metrics,
                reporter,
                shutdown.wait(),
                on_synced,
            ))
        }
    };

    let terminated = infergate_runtime::shutdown::Shutdown::on_signals().wait();
    tokio::pin!(terminated);
    // The controllers of this replica while it leads, and the sender that asks them to drain.
    let mut running: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)> = None;
    if !args.leader_election {
        let (tx, rx) = watch::channel(false);
        running = Some((start_controllers(rx), tx));
        terminated.await;
    } else {
        let mut elector = LeaderElector::new(
            Api::<Lease>::namespaced(client.clone(), &args.namespace),
            &args.lease_name,
            &args.pod_name,
        );
        let mut tick = tokio::time::interval(leader::RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut terminated => break,
                _ = tick.tick() => {}
            }
            let leading = elector.step().await;
            match (leading, running.is_some()) {
                (true, false) => {
                    tracing::info!(lease = %args.lease_name, "leading: starting controllers");
                    let (tx, rx) = watch::channel(false);
                    running = Some((start_controllers(rx), tx));
                }
                (false, true) => {
                    // Lost the Lease: stop writing at once, another replica may already lead. A reconcile cut
                    // short is redone by the next leader from the same inputs.
                    tracing::warn!(lease = %args.lease_name, "lost the leader lease: stopping controllers");
                    if let Some((handle, _)) = running.take() {
                        handle.abort();
                    }
                    metrics.leader.set(0);
                    role.set(Role::Standby);
                }
                (false, false) => {
                    if role.get() != Role::Standby {
                        tracing::info!(lease = %args.lease_name, "standby: another replica holds the lease");
                    }
                    role.set(Role::Standby);
                }
                (true, true) => {
                    // The controllers never end on their own while leading; if they did (a panic), start again.
                    if running.as_ref().is_some_and(|(handle, _)| handle.is_finished()) {
                        tracing::error!("controllers stopped unexpectedly: restarting them");
                        let (tx, rx) = watch::channel(false);
                        running = Some((start_controllers(rx), tx));
                    }
                }
            }
        }
        role.set(Role::ShuttingDown);
        drain(running.take()).await;
        // Only after the controllers stopped writing: the next leader starts at once instead of after 15 s. Bounded:
        // an API server that does not answer must not hold the shutdown up (the Lease then simply expires).
        if tokio::time::timeout(leader::RENEW_DEADLINE, elector.release()).await.is_err() {
            tracing::warn!(lease = %args.lease_name, "could not release the leader lease in time; it will expire");
        }
    }
    role.set(Role::ShuttingDown);
    drain(running.take()).await;
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    // Give the admin server a moment to answer in-flight probes, but never hang shutdown on it.
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    tracing::info!("infergate operator stopped");
    Ok(())
}

/// Lets in-flight reconciles finish (bounded), then stops the controllers.
async fn drain(running: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>) {
    let Some((mut handle, stop)) = running else {
        return;
    };
    let _ = stop.send(true);
    if tokio::time::timeout(Duration::from_secs(10), &mut handle).await.is_err() {
        tracing::warn!("controllers did not drain within 10 s; stopping them");
        handle.abort();
    }
}

/// A cloneable "wait for shutdown" future source, as `Controller::graceful_shutdown_on` needs `Clone + Sync`.
#[derive(Clone)]
struct SharedShutdown(watch::Receiver<bool>);

impl SharedShutdown {
    fn wait(self) -> impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static {
        let shared = futures::FutureExt::shared(Box::pin(async move {
            let mut rx = self.0;
            let _ = rx.wait_for(|s| *s).await;
        })
            as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>);
        shared
    }
}
