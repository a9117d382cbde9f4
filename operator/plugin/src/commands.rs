//! Each command: read through [`Cluster`] (and the agents), decide with the pure functions of `keys` and `agents`,
//! print a table or JSON. Nothing is decided here that a unit test cannot reach through those modules.
use crate::admin;
use crate::agents::{self, UsageScope};
use crate::cli::{Cli, Command, KeysCommand, ListArgs, Output, RevokeArgs, RotateArgs, StatusArgs, UsageArgs};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::keys::{self, FIELD_MANAGER, RevokePlan};
use crate::table::{self, Table};
use chrono::Utc;
use infergate_crds::NamespacedName;
use infergate_crds::gateway::lease;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;

pub async fn run(cli: Cli) -> Result<(), Error> {
    let cluster = Cluster::connect(cli.context.clone()).await?;
    let out = cli.output;
    match cli.command {
        Command::Keys(KeysCommand::List(args)) => list(&cluster, args, out).await,
        Command::Keys(KeysCommand::Rotate(args)) => rotate(&cluster, args, out).await,
        Command::Keys(KeysCommand::Revoke(args)) => revoke(&cluster, args, out).await,
        Command::Usage(args) => usage(&cluster, args, out).await,
        Command::Status(args) => status(&cluster, args, out).await,
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("plain data serializes"));
}

fn target(cluster: &Cluster, namespace: Option<String>, name: &str) -> NamespacedName {
    NamespacedName::new(namespace.unwrap_or_else(|| cluster.default_namespace.clone()), name)
}

async fn list(cluster: &Cluster, args: ListArgs, out: Output) -> Result<(), Error> {
    let namespace = (!args.all_namespaces).then(|| args.namespace.unwrap_or_else(|| cluster.default_namespace.clone()));
    let mut policies = cluster.policies(namespace.as_deref()).await?;
    policies.sort_by_key(|p| (p.namespace(), p.name_any()));
    let now = Utc::now();
    let rows: Vec<keys::KeyRow> = policies.iter().flat_map(|p| keys::key_rows(p, now)).collect();
    if out == Output::Json {
        print_json(&rows);
        return Ok(());
    }
    if rows.is_empty() {
        match &namespace {
            Some(ns) => eprintln!("No ApiKeyPolicies found in namespace {ns}."),
            None => eprintln!("No ApiKeyPolicies found."),
        }
        return Ok(());
    }
    let mut headers = vec!["POLICY", "KEY ID", "STATE", "ISSUED", "RETIRING UNTIL", "REVOKED"];
    if namespace.is_none() {
        headers.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&headers);
    for r in rows {
        let mut cells = vec![
            r.policy,
            table::text(r.key_id.as_deref()),
            r.state.as_str().to_string(),
            table::time(r.issued_at),
            table::time(r.retiring_until),
            table::time(r.revoked_at),
        ];
        if namespace.is_none() {
            cells.insert(0, r.namespace);
        }
        t.row(cells);
    }
    print!("{}", t.render());
    Ok(())
}

async fn rotate(cluster: &Cluster, args: RotateArgs, out: Output) -> Result<(), Error> {
    let at = target(cluster, args.namespace, &args.policy);
    let policy = cluster.policy(&at).await?;
    let previous = policy.status.as_ref().and_then(|s| s.current_key_id.clone());
    let (value, patch) = keys::rotation_patch(Utc::now());
    cluster.patch_metadata(&at, &patch).await?;
    let annotation = infergate_crds::annotations::ROTATE_REQUESTED_AT;
    if out == Output::Json {
        print_json(
            &json!({"policy": at.to_string(), "annotation": annotation, "value": value, "previousKeyId": previous}),
        );
        return Ok(());
    }
    let retiring = previous.map_or_else(String::new, |id| format!("; {id} keeps working until the end of the overlap"));
    println!(
        "apikeypolicy {at}: rotation requested ({annotation}={value}): the operator issues a new key into Secret {}{retiring}",
        policy.spec.secret_name
    );
    Ok(())
}

async fn revoke(cluster: &Cluster, args: RevokeArgs, out: Output) -> Result<(), Error> {
    let at = target(cluster, args.namespace, &args.policy);
    let policy = cluster.policy(&at).await?;
    // Checked before asking who we are: a typo should not cost a round trip.
    keys::plan_revocation(&policy, &args.key_id, &args.reason, "-")?;
    let requested_by = match args.requested_by.filter(|r| !r.trim().is_empty()) {
        Some(who) => who,
        None => cluster.who_am_i().await.ok_or_else(|| {
            Error::Usage(
                "cannot tell who you are (no username from the API server or the kubeconfig): pass --requested-by"
                    .into(),
            )
        })?,
    };
    let (revocation, changed) = match keys::plan_revocation(&policy, &args.key_id, &args.reason, &requested_by)? {
        RevokePlan::AlreadyListed(listed) => (listed, false),
        RevokePlan::Apply(items) => {
            cluster.apply(&at, &keys::revocation_apply(&at, &items)).await?;
            (items.last().cloned().expect("the plan ends with the new revocation"), true)
        }
    };
    if out == Output::Json {
        print_json(&json!({
            "policy": at.to_string(), "keyId": revocation.key_id, "reason": revocation.reason,
            "requestedBy": revocation.requested_by, "fieldManager": FIELD_MANAGER, "changed": changed,
        }));
    } else if changed {
        println!(
            "apikeypolicy {at}: key {} revoked (reason: {}; requested by {}); the operator takes it out of the gateway \
             config and replaces it if it was the current key. Follow it with `kubectl infergate keys list -n {}`.",
            revocation.key_id, revocation.reason, revocation.requested_by, at.namespace
        );
    } else {
        println!(
            "apikeypolicy {at}: key {} is already listed in spec.revocations (requested by {}: {}); nothing changed.",
            revocation.key_id, revocation.requested_by, revocation.reason
        );
    }
    Ok(())
}

/// Where to ask: `--agent` URLs, else every agent whose Lease carries its address.
async fn agent_urls(cluster: &Cluster, args: &UsageArgs) -> Result<Vec<String>, Error> {
    if !args.agents.is_empty() {
        return Ok(args.agents.clone());
    }
    let leases = cluster.agent_leases(&args.operator_namespace).await?;
    let mut urls: Vec<String> = leases
        .iter()
        .filter_map(|l| infergate_operator::reconcile::agent_report(l).address)
        .map(|a| {
            let host = if a.ip.contains(':') { format!("[{}]", a.ip) } else { a.ip };
            // The port the agent publishes on its Lease; --admin-port for agents that do not publish one.
            format!("http://{host}:{}", a.admin.unwrap_or(args.admin_port))
        })
        .collect();
    urls.sort();
    urls.dedup();
    if urls.is_empty() {
        return Err(Error::NoAgents { namespace: args.operator_namespace.clone() });
    }
    Ok(urls)
}

async fn usage(cluster: &Cluster, args: UsageArgs, out: Output) -> Result<(), Error> {
    let at = target(cluster, args.namespace.clone(), &args.policy);
    let policy = cluster.policy(&at).await?;
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| Error::TokenFile { path: path.display().to_string(), source })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let urls = agent_urls(cluster, &args).await?;
    let answers = admin::fetch_all(&urls, token.as_deref(), Duration::from_secs(args.timeout)).await;
    let now = Utc::now();
    let policy_keys: Vec<(String, String)> = keys::key_rows(&policy, now)
        .into_iter()
        .filter_map(|r| Some((r.key_id?, r.state.as_str().to_string())))
        .collect();
    let reports: Vec<agents::UsageReport> = answers.iter().filter_map(|(_, a)| a.as_ref().ok().cloned()).collect();
    let failures: Vec<(&String, &String)> =
        answers.iter().filter_map(|(u, a)| a.as_ref().err().map(|e| (u, e))).collect();
    let (scope, rows) = agents::usage_rows(&policy_keys, &reports);
    if out == Output::Json {
        let agents: Vec<_> = answers
            .iter()
            .map(|(url, a)| match a {
                Ok(r) => json!({"url": url, "revision": r.revision, "scope": r.scope}),
                Err(e) => json!({"url": url, "error": e}),
            })
            .collect();
        print_json(&json!({"policy": at.to_string(), "scope": scope, "agents": agents, "keys": rows}));
    } else {
        let mut t = Table::new(&["KEY ID", "STATE", "GPU-SECONDS", "OPEN STREAMS"]);
        for r in &rows {
            t.row(vec![r.key_id.clone(), r.state.clone(), format!("{:.3}", r.gpu_seconds), r.open_streams.to_string()]);
        }
        if rows.is_empty() {
            eprintln!("apikeypolicy {at} has no keys yet; see its Ready condition.");
        } else {
            print!("{}", t.render());
        }
        let how = match scope {
            UsageScope::Global => "global: the shared counter store's totals",
            UsageScope::Agent => "agent: summed over the agents",
        };
        println!("{} of {} agent(s) answered (scope {how})", reports.len(), answers.len());
    }
    for (url, error) in &failures {
        eprintln!("agent {url}: {error}");
    }
    if failures.is_empty() { Ok(()) } else { Err(Error::PartialUsage { failed: failures.len(), total: answers.len() }) }
}

async fn status(cluster: &Cluster, args: StatusArgs, out: Output) -> Result<(), Error> {
    let config_namespace = args.config_namespace.as_deref().unwrap_or(&args.namespace);
    let leases = cluster.agent_leases(&args.namespace).await?;
    let shards = cluster.shards(config_namespace).await?;
    let latest = agents::latest_revision(&shards);
    let reports: Vec<_> = leases
        .iter()
        .map(|l| {
            let applied_at = l.annotations().get(lease::CONFIG_APPLIED_AT).cloned();
            (infergate_operator::reconcile::agent_report(l), applied_at)
        })
        .collect();
    let now = Utc::now();
    let (rows, summary) = agents::agent_rows(&reports, &latest, now);
    if out == Output::Json {
        print_json(&json!({"latestRevision": latest, "agents": rows, "summary": summary}));
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("No agent Leases found in namespace {}.", args.namespace);
    } else {
        let mut t = Table::new(&["NODE", "REVISION", "UP-TO-DATE", "STATE", "RENEWED", "APPLIED"]);
        for r in &rows {
            t.row(vec![
                r.node.clone(),
                table::text(r.revision.as_deref()),
                if r.up_to_date { "yes" } else { "no" }.to_string(),
                if r.live { "live" } else { "stale" }.to_string(),
                table::age(r.renewed_at, now),
                table::text(r.applied_at.as_deref()),
            ]);
        }
        print!("{}", t.render());
    }
    println!("{}", summary.line());
    Ok(())
}
