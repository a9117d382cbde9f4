//! `infergate-agent standalone`: the operator's pure `compile` over local manifests, served on localhost.
//!
//! ```text
//!  start: built-in endpoints in the manifests ─▶ models::autofetch (missing weights only; --no-fetch-models)
//!  -f files (or the embedded quickstart) ─▶ manifest_cache::load_paths_cached (changed documents only)
//!     ─▶ compile(World, key Secrets kept in memory) ─▶ Snapshot::build(shards) ─▶ gateway.apply
//!     ─▶ new keys printed once (or --keys-out, 0600, rewritten only when a key changed)
//!  file change (notified, or the mtime poll) / SIGHUP / next scheduled wake-up ─▶ the same again; open streams of keys that are
//!  now revoked, expired or suspended are closed by gateway.apply
//! ```
//! The key Secrets and shards the operator would keep in Kubernetes are kept in memory and passed back to every
//! compile, so keys survive reloads and a revocation added to a file revokes the key that was printed. With
//! `--state-file` they are also kept in one file (0600, replaced atomically, read under a lock before every
//! compile): a restart keeps every key, and agents started with the same file serve the same keys.
use crate::cli::StandaloneArgs;
use crate::file_events::FileEvents;
use crate::gateway::Gateway;
use crate::serve::Listeners;
use crate::snapshot::{Snapshot, SnapshotOptions};
use anyhow::Context;
use chrono::{DateTime, Utc};
use infergate_compile::manifests;
use infergate_compile::{CompileMemo, OsKeys, World, compile_incremental};
use infergate_crds::gateway::{Shard, ShardKind};
use infergate_crds::key::ApiKey;
use infergate_crds::{NamespacedName, secret_keys};
use k8s_openapi::api::core::v1::Secret;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The README's quickstart, served when no `-f` is given.
pub const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    if args.fetch_models {
        let models_dir = crate::builtin::ModelsDir::resolve(args.common.models_dir.as_deref());
        crate::models::autofetch(&needed_models(&args.files), &models_dir).await;
    }
    let scheme = if args.common.tls_cert.is_some() || args.tls_self_signed { "https" } else { "http" };
    let gateway = crate::build_gateway(&args.common, format!("{scheme}://{}", args.http_addr))?;
    let mut state = State {
        files: args.files.clone(),
        state_file: args.state_file.clone(),
        keys_out: args.keys_out.clone(),
        keys_out_written: false,
        secrets: BTreeMap::new(),
        shards: Vec::new(),
        revisions: HashMap::new(),
        printed: BTreeSet::new(),
        options: SnapshotOptions { environment: args.common.environment, ..SnapshotOptions::default() },
        fingerprint: Vec::new(),
        next_wake: None,
        ring: None,
        ring_next_check: None,
        manifests: infergate_compile::manifest_cache::ManifestCache::default(),
        keys_to_show: false,
        memo: CompileMemo::default(),
    };
    state.reload(&gateway).context("cannot load the manifests")?;
    let watcher = {
        let gateway = Arc::clone(&gateway);
        let interval = args.poll_interval;
        tokio::spawn(async move { state.watch(&gateway, interval).await })
    };
    let mut listeners = Listeners::new(args.http_addr, args.grpc_addr, args.admin_addr, &args.common);
    if args.tls_self_signed {
        let dir = std::env::temp_dir().join(format!("infergate-tls-{}", std::process::id()));
        let (settings, fingerprint) = crate::doors::tls::self_signed(&dir)?;
        // For the person who started the agent: where the certificate is, to trust it, and what it hashes to.
        println!("TLS: self-signed certificate for localhost at {} (SHA-256 {fingerprint})", settings.cert.display());
        listeners.tls = Some(settings);
    }
    let result = crate::serve::serve(gateway, listeners).await;
    watcher.abort();
    result
}

/// The models the built-in endpoints in the manifests load. Manifests that do not load need nothing here: the
/// first reload reports them.
fn needed_models(files: &[PathBuf]) -> BTreeSet<&'static str> {
    let set = if files.is_empty() {
        manifests::load_str(QUICKSTART, "embedded examples/quickstart.yaml")
    } else {
        manifests::load_paths(files)
    };
    let Ok(set) = set else { return BTreeSet::new() };
    let mut needed: BTreeSet<&'static str> = set
        .endpoints
        .iter()
        .filter_map(|e| e.spec.backend.builtin.map(|b| (b, e.spec.backend.size)))
        .flat_map(|(b, size)| crate::models::models_for(b, size).iter().copied())
        .collect();
    // Redaction of names and places needs the NER model (a request can also ask for it; that one is fetched
    // with `models fetch --model pii-ner`).
    let redactions = set
        .endpoints
        .iter()
        .filter_map(|e| e.spec.redaction.as_ref())
        .chain(set.policies.iter().filter_map(|p| p.spec.redaction.as_ref()));
    if redactions.into_iter().any(|r| crate::redaction::needs_ner(&r.entities)) {
        needed.insert("pii-ner");
    }
    needed
}

struct State {
    files: Vec<PathBuf>,
    /// Where the key Secrets and shards persist across restarts (and between agents sharing it).
    state_file: Option<PathBuf>,
    keys_out: Option<PathBuf>,
    /// Whether this process has created `keys_out` (later writes replace the agent's own file).
    keys_out_written: bool,
    /// Key Secrets by policy, as the operator would keep them in the cluster.
    secrets: BTreeMap<NamespacedName, Secret>,
    /// The shards of the last compile: the record of retiring and revoked keys, as the operator's shards are.
    shards: Vec<Shard>,
    /// The revision of each shard in `shards`: a reload re-hashes only the shards that changed (a revision hashes
    /// the shard's whole JSON; for thousands of policies that was a tenth of a reload).
    revisions: HashMap<(ShardKind, Option<NamespacedName>), String>,
    /// Key ids already shown, so each key is printed once.
    printed: BTreeSet<String>,
    options: SnapshotOptions,
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    next_wake: Option<DateTime<Utc>>,
    /// The session-token signing ring, as the operator keeps it in its Secret: in memory, and in the state file
    /// when there is one (agents sharing the file sign with one ring and verify each other's tokens).
    ring: Option<infergate_token::KeyRing>,
    /// When the ring next needs a rotation step.
    ring_next_check: Option<DateTime<Utc>>,
    /// What the last reload parsed: a reload parses, validates and types only the documents that changed.
    manifests: infergate_compile::manifest_cache::ManifestCache,
    /// The key Secrets changed since the keys were last shown (another agent's, read from the state file).
    keys_to_show: bool,
    /// What the last compile can lend the next: a reload compiles only the policies whose inputs changed.
    memo: CompileMemo,
}

impl State {
    /// Reloads the manifests; a change that does not validate leaves the running config in place and is named by
    /// `/readyz` until a good change replaces it.
    fn reload(&mut self, gateway: &Gateway) -> anyhow::Result<()> {
        let result = self.load_and_apply(gateway);
        match &result {
            Ok(()) => gateway.set_config_problem(None),
            Err(err) => gateway.set_config_problem(Some(format!("{err:#}").replace('\n', " "))),
        }
        result
    }

    /// The watched paths: the manifests, and the state file another agent may rewrite.
    fn watched(&self) -> Vec<PathBuf> {
        self.files.iter().cloned().chain(self.state_file.clone()).collect()
    }

    fn load_and_apply(&mut self, gateway: &Gateway) -> anyhow::Result<()> {
        // Agents sharing a state file compile one at a time, each from the latest file: a key one of them
        // issues is the key the others serve.
        let _lock = match &self.state_file {
            Some(path) => {
                let lock = state::lock(path)?;
                if let Some(saved) = state::read(path)? {
                    let first = self.shards.is_empty() && self.secrets.is_empty();
                    let secrets: BTreeMap<_, _> = saved
                        .secrets
                        .into_iter()
                        .map(|k| (NamespacedName::new(k.namespace, k.name), k.secret))
                        .collect();
                    self.keys_to_show |= secrets != self.secrets;
                    self.secrets = secrets;
                    self.shards = saved.shards;
                    self.revisions.clear();
                    if let Some(stored) = &saved.signing {
                        let ring = infergate_token::KeyRing::from_stored(stored)
                            .map_err(|e| anyhow::anyhow!("--state-file {}: signing keys: {e}", path.display()))?;
                        self.ring = Some(ring);
                    }
                    if first && self.keys_out.is_none() {
                        // Printed when they were issued (by this agent before a restart, or by another one).
                        self.printed.extend(self.current_keys().values().map(|k| k.id().to_string()));
                    }
                }
                Some(lock)
            }
            None => None,
        };
        self.rotate_ring(gateway)?;
        let result = self.compile_and_apply(gateway);
        if let Some(path) = &self.state_file {
            let secrets = self
                .secrets
                .iter()
                .map(|(p, secret)| state::KeySecret {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    secret: secret.clone(),
                })
                .collect();
            let signing = self.ring.as_ref().map(infergate_token::KeyRing::to_stored);
            let saved = state::Saved { secrets, shards: self.shards.clone(), signing };
            state::write(path, &saved)?;
        }
        self.fingerprint = fingerprint(&self.watched());
        result
    }

    /// One step of the signing-key schedule (bootstrapping the ring on first start), under the state-file lock
    /// when there is one, so agents sharing the file rotate once between them.
    fn rotate_ring(&mut self, gateway: &Gateway) -> anyhow::Result<()> {
        let (ring, changed, next_check) =
            crate::tokens::rotate(self.ring.take(), gateway.tokens.rotation(), Utc::now());
        if changed {
            let kids: Vec<&str> = ring.keys().iter().map(infergate_token::SigningKey::kid).collect();
            tracing::info!(signing_keys = ?kids, "session-token signing keys updated");
        }
        gateway.tokens.set_ring(ring.clone())?;
        self.ring = Some(ring);
        self.ring_next_check = Some(next_check);
        Ok(())
    }

    fn compile_and_apply(&mut self, gateway: &Gateway) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let set = if self.files.is_empty() {
            manifests::load_str(QUICKSTART, "embedded examples/quickstart.yaml")?
        } else {
            infergate_compile::manifest_cache::load_paths_cached(&self.files, &mut self.manifests)?
        };
        let loaded = started.elapsed();
        let secrets: Vec<&Secret> = self.secrets.values().collect();
        let world = world(&set, &secrets, &self.shards);
        let mut desired = compile_incremental(&world, &mut OsKeys, &mut self.memo);
        let compiled = started.elapsed();
        drop(secrets);
        let mut keys_changed = false;
        for (policy, outcome) in &mut desired.policies {
            outcome.audit.iter().for_each(infergate_compile::AuditRecord::log);
            if outcome.shard.is_none() {
                let why = failing(&outcome.status.conditions);
                tracing::warn!(policy = %policy, problems = %why, "policy is not ready; its keys are refused");
            }
            // Moved, not copied: the outcomes are dropped below, and at 10k policies a copy per reload showed.
            if let Some(secret) = outcome.key_secret.take()
                && self.secrets.get(policy) != Some(&secret)
            {
                self.secrets.insert(policy.clone(), secret);
                keys_changed = true;
            }
        }
        // Policies that disappeared from the files take their keys with them.
        let before = self.secrets.len();
        self.secrets.retain(|p, _| desired.policies.contains_key(p));
        keys_changed |= self.secrets.len() != before;
        for (endpoint, outcome) in &desired.endpoints {
            if outcome.shard.is_none() {
                let why = failing(&outcome.status.conditions);
                tracing::warn!(endpoint = %endpoint, problems = %why, "endpoint is not ready; requests to it are refused");
            }
        }
        let revisions = self.revisions_of(&desired.shards);
        let (snapshot, warnings) = Snapshot::build_revised(
            desired.shards.iter().zip(revisions.iter().map(|(_, revision)| revision.as_str())),
            self.options.clone(),
        );
        for w in warnings {
            tracing::warn!(problem = %w.0, "gateway config");
        }
        let built = started.elapsed();
        let (revision, key_count, endpoints) =
            (snapshot.revision.clone(), snapshot.key_count(), snapshot.endpoints().len());
        self.next_wake = desired.next_wake;
        self.shards = desired.shards;
        self.revisions = revisions.into_iter().collect();
        // Live first (a revocation closes streams now), then the new keys are shown: the keys file is rewritten
        // (and synced) only when a key changed.
        gateway.apply(snapshot);
        if keys_changed || self.keys_to_show || self.keys_out.is_some() && !self.keys_out_written {
            self.announce_keys().context("the new config is live, but its keys could not be shown")?;
            self.keys_to_show = false;
        }
        tracing::info!(
            revision = %revision,
            keys = key_count,
            endpoints,
            load_ms = loaded.as_millis() as u64,
            compile_ms = (compiled - loaded).as_millis() as u64,
            compiled = self.memo.last_compiled,
            parsed = self.manifests.last_parsed,
            build_ms = (built - compiled).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "config applied"
        );
        Ok(())
    }

    /// Compiles once more and discards the result, so that the memo holds every policy. The first compile after
    /// a start issues the keys, and an outcome is remembered only once its inputs are its outputs; without this,
    /// the first change after a start (a revocation) would compile every policy again (~0.5 s at 10k policies).
    fn warm_memo(&mut self) {
        let Ok(set) = infergate_compile::manifest_cache::load_paths_cached(&self.files, &mut self.manifests) else {
            return; // the next reload reports it
        };
        let secrets: Vec<&Secret> = self.secrets.values().collect();
        let _ = compile_incremental(&world(&set, &secrets, &self.shards), &mut OsKeys, &mut self.memo);
    }

    /// Each of `shards` with its revision: the one already known when the shard equals the one it replaces.
    #[allow(clippy::type_complexity)]
    fn revisions_of(&self, shards: &[Shard]) -> Vec<((ShardKind, Option<NamespacedName>), String)> {
        let key = |s: &Shard| (s.kind(), s.owner().cloned());
        let previous: HashMap<_, &Shard> = self.shards.iter().map(|s| (key(s), s)).collect();
        shards
            .iter()
            .map(|shard| {
                let k = key(shard);
                let known = match (previous.get(&k), self.revisions.get(&k)) {
                    (Some(old), Some(revision)) if *old == shard => Some(revision.clone()),
                    _ => None,
                };
                let revision = known.unwrap_or_else(|| shard.revision());
                (k, revision)
            })
            .collect()
    }

    /// The current key of every policy.
    fn current_keys(&self) -> BTreeMap<String, ApiKey> {
        let mut current = BTreeMap::new();
        for (policy, secret) in &self.secrets {
            let Some(key) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(secret_keys::API_KEY))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
                .and_then(|s| ApiKey::parse(s.trim()).ok())
            else {
                continue;
            };
            current.insert(policy.to_string(), key);
        }
        current
    }

    /// Prints each new key once, or rewrites `--keys-out` with every current key.
    fn announce_keys(&mut self) -> anyhow::Result<()> {
        let current = self.current_keys();
        match &self.keys_out {
            Some(path) => {
                let doc: BTreeMap<&String, serde_json::Value> = current
                    .iter()
                    .map(|(p, k)| (p, serde_json::json!({"keyId": k.id().to_string(), "key": k.expose()})))
                    .collect();
                write_private(path, &serde_json::to_vec_pretty(&doc)?, !self.keys_out_written)
                    .with_context(|| format!("cannot write --keys-out {}", path.display()))?;
                self.keys_out_written = true;
                for (policy, key) in &current {
                    if self.printed.insert(key.id().to_string()) {
                        tracing::info!(policy = %policy, key_id = %key.id(), path = %path.display(), "key issued; written to --keys-out");
                    }
                }
            }
            None => {
                let mut out = std::io::stdout().lock();
                for (policy, key) in &current {
                    if self.printed.insert(key.id().to_string()) {
                        // The one place a key is shown: stdout, once, for the person who started the agent.
                        writeln!(out, "ApiKeyPolicy {policy}: key {} = {}", key.id(), key.expose())?;
                    }
                }
                out.flush()?;
            }
        }
        Ok(())
    }

    async fn watch(mut self, gateway: &Gateway, interval: std::time::Duration) {
        if !self.files.is_empty() {
            self.warm_memo();
        }
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut events = if self.files.is_empty() { None } else { FileEvents::watch(&self.watched()) };
        loop {
            let written = async {
                match events.as_mut() {
                    Some(e) => e.next().await,
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            // A notified write is checked like a poll (the fingerprint decides), only sooner.
            let forced = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = written => false,
                _ = hup => true,
            };
            let due = [self.next_wake, self.ring_next_check].into_iter().flatten().any(|at| Utc::now() >= at);
            if !forced && !due && fingerprint(&self.watched()) == self.fingerprint {
                continue;
            }
            if let Err(err) = self.reload(gateway) {
                gateway.metrics.config_errors.inc();
                tracing::error!(error = %format!("{err:#}"), "manifests could not be applied; keeping the previous config");
            }
        }
    }
}

/// The world one compile sees: the files' objects, and the key Secrets and shards kept from the last compile.
fn world<'a>(set: &'a manifests::ManifestSet, secrets: &'a [&'a Secret], shards: &'a [Shard]) -> World<'a> {
    World {
        tiers: &set.tiers,
        endpoints: &set.endpoints,
        policies: &set.policies,
        key_secrets: secrets,
        upstream_secrets: &set.secrets,
        shards,
        operator_namespace: None,
        agents: &[],
        now: Utc::now(),
    }
}

/// The conditions that are `False`, as `Type: message; ...`: why an object is not served.
fn failing(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    let why: Vec<String> =
        conditions.iter().filter(|c| c.status == "False").map(|c| format!("{}: {}", c.type_, c.message)).collect();
    why.join("; ")
}

/// `--state-file`: the key Secrets and shards the operator would keep in Kubernetes, as one JSON file.
mod state {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Saved {
        pub secrets: Vec<KeySecret>,
        pub shards: Vec<Shard>,
        /// The session-token signing ring (private keys: the file is 0600 already for the API keys).
        /// Absent in files written before tokens existed; the first start after that bootstraps one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub signing: Option<infergate_token::StoredRing>,
    }

    /// A policy's key Secret.
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct KeySecret {
        pub namespace: String,
        pub name: String,
        pub secret: Secret,
    }

    /// An exclusive lock on `PATH.lock`, held while one agent reads, compiles and writes.
    pub fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
        let lock_path =
            path.with_file_name(format!("{}.lock", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options
            .open(&lock_path)
            .with_context(|| format!("cannot open the --state-file lock {}", lock_path.display()))?;
        file.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(file)
    }

    pub fn read(path: &Path) -> anyhow::Result<Option<Saved>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read --state-file {}", path.display())),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)?.permissions().mode();
            anyhow::ensure!(
                mode & 0o077 == 0,
                "--state-file {} holds API keys and is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let saved = serde_json::from_slice(&bytes).with_context(|| {
            format!("--state-file {} is not an infergate state file; move it away to start afresh", path.display())
        })?;
        Ok(Some(saved))
    }

    pub fn write(path: &Path, saved: &Saved) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(saved)?;
        if std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_private(path, &bytes, false).with_context(|| format!("cannot write --state-file {}", path.display()))
    }
}

/// Modification time and size of every file under `paths`, to notice edits without a filesystem watcher.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    walk(&e.path(), out);
                }
            }
        }
        Ok(m) => out.push((path.to_path_buf(), m.modified().ok(), m.len())),
        Err(_) => out.push((path.to_path_buf(), None, 0)),
    }
}

/// Writes the keys file, readable by its owner only.
///
/// Every write goes to a fresh sibling created with `O_EXCL` (so a file or symlink planted at a predictable
/// temporary name is never written through) and mode 0600. The first write of the process then links it into
/// place, which fails when anything, a symlink included, already sits at `path`: the agent never overwrites a
/// file it did not create. Later writes rename over the file the agent created, which replaces a symlink put
/// there meanwhile instead of following it.
fn write_private(path: &Path, bytes: &[u8], first: bool) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("keys");
    let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // `create_new` is O_CREAT|O_EXCL, which fails on an existing symlink without following it: the same
        // guarantee O_NOFOLLOW gives, without an architecture-specific flag value.
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    let placed = written.map_err(anyhow::Error::from).and_then(|()| {
        if first {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "{} already exists; the agent only writes a keys file it creates itself: remove it or pass \
                         another --keys-out path",
                        path.display()
                    )
                } else {
                    e.into()
                }
            })
        } else {
            std::fs::rename(&tmp, path).map_err(Into::into)
        }
    });
    let _ = std::fs::remove_file(&tmp);
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_gate::testing::{key, mk_endpoint, mk_policy};

    #[test]
    fn a_reload_rehashes_only_the_shards_that_changed() {
        let policy = |n: u8| mk_policy(&format!("app-{n}")).key(&key(n)).shard();
        let endpoint = mk_endpoint("e", "whisper-1").shard();
        let mut state = State {
            files: vec![],
            state_file: None,
            keys_out: None,
            keys_out_written: false,
            secrets: BTreeMap::new(),
            shards: vec![endpoint.clone(), policy(1), policy(2)],
            revisions: HashMap::new(),
            printed: BTreeSet::new(),
            options: SnapshotOptions::default(),
            fingerprint: vec![],
            next_wake: None,
            ring: None,
            ring_next_check: None,
            manifests: infergate_compile::manifest_cache::ManifestCache::default(),
            keys_to_show: false,
            memo: CompileMemo::default(),
        };
        let first = state.revisions_of(&state.shards.clone());
        assert!(first.iter().zip(&state.shards).all(|((_, r), s)| *r == s.revision()));
        // Mark the known revisions, so a reused one can be told from a recomputed one.
        state.revisions = first.into_iter().map(|(k, r)| (k, format!("known-{r}"))).collect();

        let changed = mk_policy("app-2").key(&key(2)).suspended().shard();
        let next = vec![endpoint.clone(), policy(1), changed.clone(), policy(3)];
        let revisions: Vec<String> = state.revisions_of(&next).into_iter().map(|(_, r)| r).collect();
        assert_eq!(revisions[0], format!("known-{}", endpoint.revision()), "unchanged: reused");
        assert_eq!(revisions[1], format!("known-{}", policy(1).revision()), "unchanged: reused");
        assert_eq!(revisions[2], changed.revision(), "changed: hashed again");
        assert_eq!(revisions[3], policy(3).revision(), "new: hashed");
    }
}
