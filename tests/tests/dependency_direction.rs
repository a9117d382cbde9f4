//! The crate graph points one way (docs/architecture.md):
//!
//! ```text
//!  infergate-crds ◀── infergate-compile ◀── infergate-operator
//!        ▲    ▲              ▲
//!        │    └── infergate-gate ◀── infergate-agent ──▶ infergate-runtime ◀── infergate-operator
//! ```
//! The pure crates (the contract, the compile functions, the admission core) never reach a server framework, an
//! HTTP client or kube's client and runtime, and the agent never links the operator. This test fails on a wrong
//! edge, naming the path that reaches it.
//!
//! Reachability comes from `cargo tree -p <crate> -e normal`, which resolves features for that crate alone.
//! `cargo metadata`'s `resolve` graph unifies features over the whole workspace, so it would show `kube-runtime`
//! under `infergate-crds` merely because the operator enables it on the shared `kube` crate; the metadata is used
//! for what it is right about: which workspace crates there are and what each one declares.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// Crates a pure crate must never reach, with why.
const FORBIDDEN_FOR_PURE: &[(&str, &str)] = &[
    ("axum", "a web server framework"),
    ("tonic", "a gRPC framework"),
    ("hyper", "an HTTP implementation"),
    ("reqwest", "an HTTP client"),
    ("kube-client", "the Kubernetes API client"),
    ("kube-runtime", "the controller runtime"),
    ("infergate-runtime", "the process runtime (servers, signals, exporters)"),
];

const PURE: &[&str] = &["infergate-crds", "infergate-compile", "infergate-gate"];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace root").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Every package `krate` reaches through normal (not dev, not build) dependencies, each with one path to it.
fn reachable(krate: &str) -> BTreeMap<String, Vec<String>> {
    let out = cargo()
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "depth", "--format", "{p}", "-p", krate])
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut paths = BTreeMap::new();
    let mut stack: Vec<String> = Vec::new();
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        let depth_end = line.find(|c: char| !c.is_ascii_digit()).unwrap_or(line.len());
        let Ok(depth) = line[..depth_end].parse::<usize>() else { continue };
        let name = line[depth_end..].split_whitespace().next().unwrap_or_default().to_string();
        stack.truncate(depth);
        stack.push(name.clone());
        paths.entry(name).or_insert_with(|| stack.clone());
    }
    paths
}

fn workspace_packages() -> BTreeSet<String> {
    let out = cargo()
        .args(["metadata", "--offline", "--locked", "--format-version", "1", "--no-deps"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    meta["packages"].as_array().expect("packages").iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

/// The offending edges of `krate`: forbidden crate -> the path that reaches it.
fn violations(krate: &str, forbidden: &[(&str, &str)]) -> Vec<String> {
    let reach = reachable(krate);
    forbidden
        .iter()
        .filter_map(|(bad, why)| {
            reach.get(*bad).map(|path| format!("{krate} reaches {bad} ({why}) via {}", path.join(" -> ")))
        })
        .collect()
}

#[test]
fn every_pure_crate_exists() {
    let packages = workspace_packages();
    for krate in PURE {
        assert!(packages.contains(*krate), "{krate} is missing from the workspace: {packages:?}");
    }
}

#[test]
fn the_contract_crate_stays_pure() {
    let v = violations("infergate-crds", FORBIDDEN_FOR_PURE);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_compile_crate_stays_pure() {
    let v = violations("infergate-compile", FORBIDDEN_FOR_PURE);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_gate_crate_stays_pure() {
    let v = violations("infergate-gate", FORBIDDEN_FOR_PURE);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_agent_never_links_the_operator() {
    let v = violations("infergate-agent", &[("infergate-operator", "the control plane")]);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn the_operator_never_links_the_agent_or_its_core() {
    let v = violations(
        "infergate-operator",
        &[("infergate-agent", "the data plane"), ("infergate-gate", "the agent's admission core")],
    );
    assert!(v.is_empty(), "{}", v.join("\n"));
}
