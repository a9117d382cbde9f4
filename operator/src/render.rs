//! `infergate-operator crds` and `infergate-operator render`: print generated artefacts.
//!
//! `render` is `helm template` for the operator: load manifests, validate them like the API server, run the
//! very `compile` the reconciler runs, and print what would be written. Key material is never printed: the key
//! Secret shows `<generated>` where the plaintext would be; shards hold only digests anyway.
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use infergate_compile::manifests::{self, ManifestSet};
use infergate_compile::{self as compile, Desired, KeySource, OsKeys, World};
use infergate_crds::gateway::{SHARD_DATA_KEY, Shard};
use infergate_crds::secret_keys;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The namespace shards are shown in (the chart's default install namespace).
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "infergate-system";
/// What `render` prints in place of a plaintext key.
pub const GENERATED: &str = "<generated>";

pub fn print_crds(out_dir: Option<&Path>) -> anyhow::Result<()> {
    match out_dir {
        Some(dir) => {
            for (file, crd) in infergate_crds::crdgen::all() {
                std::fs::write(dir.join(file), infergate_crds::crdgen::to_yaml(&crd))?;
            }
        }
        None => {
            for (_, crd) in infergate_crds::crdgen::all() {
                print!("---\n{}", infergate_crds::crdgen::to_yaml(&crd));
            }
        }
    }
    Ok(())
}

pub fn render(files: &[PathBuf], now: Option<&str>) -> anyhow::Result<()> {
    let now = match now {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--now {s:?} is not an RFC 3339 time; use e.g. 2026-01-01T00:00:00Z"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let docs = manifests::load_documents(files)?;
    let problems: Vec<String> = docs
        .iter()
        .filter_map(|d| infergate_compile::validate::validate_object(&d.value).err().map(|e| (d, e)))
        .flat_map(|(d, errors)| errors.into_iter().map(move |e| format!("{}: {e}", d.origin)))
        .collect();
    if !problems.is_empty() {
        anyhow::bail!(
            "the manifests would be rejected by the API server; fix these first:\n  {}",
            problems.join("\n  ")
        );
    }
    let set = manifests::into_set(docs)?;
    print!("{}", render_set(&set, now, &mut OsKeys, DEFAULT_OPERATOR_NAMESPACE));
    Ok(())
}

/// Compiles a manifest set as of `now` with no existing Secrets (a fresh cluster) and renders the result.
pub fn render_set(set: &ManifestSet, now: DateTime<Utc>, keys: &mut dyn KeySource, operator_namespace: &str) -> String {
    let world = World {
        tiers: &set.tiers,
        endpoints: &set.endpoints,
        policies: &set.policies,
        key_secrets: &[],
        upstream_secrets: &set.secrets,
        shards: &[],
        operator_namespace: Some(operator_namespace),
        agents: &[],
        now,
    };
    render_desired(&compile::compile(&world, keys), now, operator_namespace)
}

pub fn render_desired(desired: &Desired, now: DateTime<Utc>, operator_namespace: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# infergate-operator render, as of {}. Key material is shown as {GENERATED}.",
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    for (at, outcome) in &desired.policies {
        match &outcome.key_secret {
            Some(secret) => doc(&mut out, &format!("key Secret of ApiKeyPolicy {at}"), redacted_key_secret(secret)),
            None => {
                let _ = writeln!(out, "---\n# ApiKeyPolicy {at}: no key Secret would be written (see its status)");
            }
        }
    }
    for shard in &desired.shards {
        let owner = shard.owner().map(ToString::to_string).unwrap_or_default();
        let what = format!("gateway-config shard of {} {owner}", shard_kind_name(shard));
        doc(&mut out, &what, readable_shard_secret(shard, operator_namespace));
    }
    for (name, status) in &desired.tiers {
        doc(&mut out, &format!("status of RateTier {name}"), status_doc("RateTier", None, name, status));
    }
    for (at, outcome) in &desired.endpoints {
        let what = format!("status of InferenceEndpoint {at}");
        doc(&mut out, &what, status_doc("InferenceEndpoint", Some(&at.namespace), &at.name, &outcome.status));
    }
    for (at, outcome) in &desired.policies {
        let what = format!("status of ApiKeyPolicy {at}");
        doc(&mut out, &what, status_doc("ApiKeyPolicy", Some(&at.namespace), &at.name, &outcome.status));
    }
    let events: Vec<_> = desired
        .endpoints
        .values()
        .flat_map(|e| e.events.iter())
        .chain(desired.policies.values().flat_map(|p| p.events.iter()))
        .collect();
    if !events.is_empty() {
        out.push_str("---\n# Events the operator would emit:\n");
        for e in events {
            let ns = e.regarding.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
            let level = if e.warning { "Warning" } else { "Normal" };
            let _ = writeln!(out, "#   {level} {} {} {ns}{}: {}", e.reason, e.regarding.kind, e.regarding.name, e.note);
        }
    }
    if let Some(t) = desired.next_wake {
        let _ = writeln!(out, "# Next scheduled reconcile: {}", t.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    out
}

fn doc(out: &mut String, what: &str, value: Value) {
    let yaml = serde_yaml::to_string(&value).expect("rendered objects serialize to YAML");
    let _ = write!(out, "---\n# {what}\n{yaml}");
}

fn shard_kind_name(shard: &Shard) -> &'static str {
    match shard {
        Shard::Policy(_) => "ApiKeyPolicy",
        Shard::Endpoint(_) => "InferenceEndpoint",
        Shard::Signing(_) => "the installation (signing keys)",
    }
}

/// The key Secret with its data replaced by `stringData` that shows the key id and `<generated>`.
fn redacted_key_secret(secret: &Secret) -> Value {
    let mut value = serde_json::to_value(secret).expect("Secrets serialize");
    let key_id = secret
        .data
        .as_ref()
        .and_then(|d| d.get(secret_keys::KEY_ID))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("data");
        obj.insert("stringData".into(), json!({ secret_keys::API_KEY: GENERATED, secret_keys::KEY_ID: key_id }));
    }
    value
}

/// The shard Secret with its JSON shown as readable `stringData` (an equivalent, appliable form).
fn readable_shard_secret(shard: &Shard, operator_namespace: &str) -> Value {
    let secret = infergate_compile::publish::shard_secret(shard, operator_namespace);
    let mut value = serde_json::to_value(&secret).expect("Secrets serialize");
    let pretty = serde_json::to_string_pretty(shard).expect("shards serialize");
    if let Some(obj) = value.as_object_mut() {
        obj.remove("data");
        obj.insert("stringData".into(), json!({ SHARD_DATA_KEY: format!("{pretty}\n") }));
    }
    value
}

fn status_doc(kind: &str, namespace: Option<&str>, name: &str, status: &impl serde::Serialize) -> Value {
    let mut metadata = json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": format!("{}/{}", infergate_crds::GROUP, infergate_crds::VERSION),
        "kind": kind,
        "metadata": metadata,
        "status": status,
    })
}
