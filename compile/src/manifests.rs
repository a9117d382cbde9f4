//! Loading infergate manifests from YAML files and directories, for `render`, `validate` and the agent's
//! standalone mode.
//!
//! ```text
//!  paths ─▶ files (dirs: *.yaml|*.yml|*.json, sorted, recursive) ─▶ documents (multi-doc YAML)
//!        ─▶ Document { origin, value }   (non-infergate kinds such as Namespace are skipped)
//!        ─▶ ManifestSet { tiers, endpoints, policies }   (typed; namespaced kinds default to `default`)
//! ```
use infergate_crds::{ApiKeyPolicy, GROUP, InferenceEndpoint, RateTier, VERSION};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Namespace given to namespaced objects that name none, as `kubectl apply` does without `-n`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a document came from: file (or other origin) and its 1-based index in that file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.source, self.document)
    }
}

/// One infergate object as written, before typing.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub origin: Origin,
    pub kind: InfergateKind,
    pub value: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InfergateKind {
    RateTier,
    InferenceEndpoint,
    ApiKeyPolicy,
    /// A core `v1` Secret labelled `infergate.dev/upstream-credential: "true"`: an upstream's credential that an
    /// endpoint's `backend.upstream.auth` names (standalone mode reads it from the files, as the operator reads it
    /// from the cluster). Other Secrets are skipped like any foreign kind.
    Secret,
}

impl InfergateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InfergateKind::RateTier => "RateTier",
            InfergateKind::InferenceEndpoint => "InferenceEndpoint",
            InfergateKind::ApiKeyPolicy => "ApiKeyPolicy",
            InfergateKind::Secret => "Secret",
        }
    }
    pub fn namespaced(self) -> bool {
        !matches!(self, InfergateKind::RateTier)
    }
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "RateTier" => Some(InfergateKind::RateTier),
            "InferenceEndpoint" => Some(InfergateKind::InferenceEndpoint),
            "ApiKeyPolicy" => Some(InfergateKind::ApiKeyPolicy),
            _ => None,
        }
    }
}

/// The typed objects from a set of manifests.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub tiers: Vec<RateTier>,
    pub endpoints: Vec<InferenceEndpoint>,
    pub policies: Vec<ApiKeyPolicy>,
    /// Upstream-credential Secrets (labelled `infergate.dev/upstream-credential: "true"`).
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    // The cause is part of the message (and deliberately not a `source`, so `{:#}` does not print it twice).
    #[error("cannot read {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{origin}: not valid YAML: {cause}")]
    Yaml { origin: Origin, cause: serde_yaml::Error },
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },
    #[error("{path}: no .yaml, .yml or .json files found")]
    Empty { path: PathBuf },
    /// What the API server would refuse at `kubectl apply`: unknown fields, schema and CEL rules.
    #[error("{}\n({} problem(s) the API server would reject at kubectl apply; fix the fields named)", problems.join("\n"), problems.len())]
    Rejected { problems: Vec<String> },
}

impl ManifestError {
    /// Stable label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ManifestError::Io { .. } => "io",
            ManifestError::Yaml { .. } => "yaml",
            ManifestError::Invalid { .. } => "invalid",
            ManifestError::Empty { .. } => "empty",
            ManifestError::Rejected { .. } => "rejected",
        }
    }
}

/// Loads, validates (as the API server would: [`crate::validate`]) and types every infergate object under `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<ManifestSet, ManifestError> {
    into_set(validated(load_documents(paths)?)?)
}

/// Loads and validates one YAML string (`origin` names it in errors).
pub fn load_str(yaml: &str, origin: &str) -> Result<ManifestSet, ManifestError> {
    into_set(validated(documents_from_str(yaml, origin)?)?)
}

/// Every document that the API server would accept, or every problem of those it would not. Standalone mode
/// loads through this, so a typo such as `suspend: true` (for `suspended`) is an error, never ignored.
pub fn validated(docs: Vec<Document>) -> Result<Vec<Document>, ManifestError> {
    let problems: Vec<String> = docs
        .iter()
        .filter_map(|doc| crate::validate::validate_object(&doc.value).err().map(|errors| (doc, errors)))
        .flat_map(|(doc, errors)| errors.into_iter().map(move |e| format!("{}: {e}", doc.origin)))
        .collect();
    if problems.is_empty() { Ok(docs) } else { Err(ManifestError::Rejected { problems }) }
}

/// The infergate documents under `paths`, untyped (what `validate` checks against the schemas).
pub fn load_documents(paths: &[PathBuf]) -> Result<Vec<Document>, ManifestError> {
    let mut docs = vec![];
    for file in files_of(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|cause| ManifestError::Io { path: file.clone(), cause })?;
        docs.extend(documents_from_str(&text, &file.display().to_string())?);
    }
    Ok(docs)
}

/// Every manifest file under `paths`, in load order; a path that holds none is an error.
pub(crate) fn files_of(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = vec![];
    for path in paths {
        let found_before = files.len();
        collect_files(path, &mut files)?;
        if files.len() == found_before {
            return Err(ManifestError::Empty { path: path.clone() });
        }
    }
    Ok(files)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let meta = std::fs::metadata(path).map_err(|cause| ManifestError::Io { path: path.to_path_buf(), cause })?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|cause| ManifestError::Io { path: path.to_path_buf(), cause })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(entry.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Splits a multi-document YAML string and keeps the infergate objects.
pub fn documents_from_str(yaml: &str, source: &str) -> Result<Vec<Document>, ManifestError> {
    parse_documents(yaml, source, 0).map(|(docs, _)| docs)
}

/// [`documents_from_str`] for a piece of a file whose first document is number `before + 1`; also returns how
/// many YAML documents the piece held (empty ones and foreign kinds included), which is what numbers the next.
pub(crate) fn parse_documents(
    yaml: &str,
    source: &str,
    before: usize,
) -> Result<(Vec<Document>, usize), ManifestError> {
    let mut docs = vec![];
    let mut count = 0;
    for (i, de) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        count = i + 1;
        let origin = Origin { source: source.to_string(), document: before + i + 1 };
        let value: serde_json::Value = match serde::Deserialize::deserialize(de) {
            Ok(v) => v,
            Err(cause) => return Err(ManifestError::Yaml { origin, cause }),
        };
        if value.is_null() {
            continue; // an empty document (`---` at the end, or only comments)
        }
        let invalid = |message: String| ManifestError::Invalid { origin: origin.clone(), message };
        let Some(obj) = value.as_object() else {
            return Err(invalid("expected a Kubernetes object (a mapping with apiVersion and kind)".into()));
        };
        let api_version = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let kind_name = obj.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version.is_empty() || kind_name.is_empty() {
            return Err(invalid("apiVersion and kind are required".into()));
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let upstream_credential = api_version == "v1"
            && kind_name == "Secret"
            && value.pointer(&format!(
                "/metadata/labels/{}",
                infergate_crds::gateway::UPSTREAM_CREDENTIAL_LABEL.replace('/', "~1")
            )) == Some(&serde_json::Value::String("true".into()));
        if upstream_credential {
            let mut value = value;
            normalise_namespace(&mut value, InfergateKind::Secret);
            docs.push(Document { origin, kind: InfergateKind::Secret, value });
            continue;
        }
        if group != GROUP {
            continue; // Namespaces, Deployments, other Secrets...: not ours to interpret
        }
        let Some(kind) = InfergateKind::from_kind(kind_name) else {
            return Err(invalid(format!(
                "unknown kind {kind_name:?} in {GROUP}: use RateTier, InferenceEndpoint or ApiKeyPolicy"
            )));
        };
        if version != VERSION {
            return Err(invalid(format!(
                "{kind_name} has apiVersion {api_version:?}; this operator serves {GROUP}/{VERSION}"
            )));
        }
        let mut value = value;
        normalise_namespace(&mut value, kind);
        docs.push(Document { origin, kind, value });
    }
    Ok((docs, count))
}

/// Namespaced kinds default to `default`; cluster-scoped ones lose any namespace (as the API server ignores it).
fn normalise_namespace(value: &mut serde_json::Value, kind: InfergateKind) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    let meta = obj.entry("metadata").or_insert_with(|| serde_json::json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if kind.namespaced() {
        if meta.get("namespace").and_then(|n| n.as_str()).is_none_or(str::is_empty) {
            meta.insert("namespace".into(), DEFAULT_NAMESPACE.into());
        }
    } else {
        meta.remove("namespace");
    }
}

/// Types the documents; rejects duplicates (same kind, namespace and name), which `kubectl apply` would merge.
pub fn into_set(docs: Vec<Document>) -> Result<ManifestSet, ManifestError> {
    let mut set = ManifestSet::default();
    let mut seen = BTreeSet::new();
    for doc in docs {
        let (namespace, name) = identity(&doc)?;
        admit_once(&mut seen, &doc.origin, doc.kind, &namespace, &name)?;
        TypedObject::of(&doc, &shown(&namespace, &name))?.push_into(&mut set);
    }
    Ok(set)
}

/// A document's namespace and name; a nameless object is an error.
pub(crate) fn identity(doc: &Document) -> Result<(String, String), ManifestError> {
    let meta = doc.value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ManifestError::Invalid {
            origin: doc.origin.clone(),
            message: format!("{} without metadata.name: give it a name", doc.kind.as_str()),
        });
    }
    Ok((namespace, name))
}

pub(crate) fn shown(namespace: &str, name: &str) -> String {
    if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") }
}

/// Records an object's identity; the same kind, namespace and name twice is an error.
pub(crate) fn admit_once(
    seen: &mut BTreeSet<(InfergateKind, String, String)>,
    origin: &Origin,
    kind: InfergateKind,
    namespace: &str,
    name: &str,
) -> Result<(), ManifestError> {
    if seen.insert((kind, namespace.to_string(), name.to_string())) {
        return Ok(());
    }
    Err(ManifestError::Invalid {
        origin: origin.clone(),
        message: format!("{} {} is defined twice: keep one definition", kind.as_str(), shown(namespace, name)),
    })
}

/// One document as its typed object.
#[derive(Clone, Debug)]
pub(crate) enum TypedObject {
    Tier(RateTier),
    Endpoint(InferenceEndpoint),
    Policy(ApiKeyPolicy),
    Secret(k8s_openapi::api::core::v1::Secret),
}

impl TypedObject {
    pub(crate) fn of(doc: &Document, shown: &str) -> Result<Self, ManifestError> {
        Ok(match doc.kind {
            InfergateKind::RateTier => TypedObject::Tier(typed(doc, shown)?),
            InfergateKind::InferenceEndpoint => TypedObject::Endpoint(typed(doc, shown)?),
            InfergateKind::ApiKeyPolicy => TypedObject::Policy(typed(doc, shown)?),
            InfergateKind::Secret => TypedObject::Secret(typed(doc, shown)?),
        })
    }

    pub(crate) fn push_into(self, set: &mut ManifestSet) {
        match self {
            TypedObject::Tier(t) => set.tiers.push(t),
            TypedObject::Endpoint(e) => set.endpoints.push(e),
            TypedObject::Policy(p) => set.policies.push(p),
            TypedObject::Secret(s) => set.secrets.push(s),
        }
    }
}

fn typed<T: DeserializeOwned>(doc: &Document, shown: &str) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(&doc.value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Invalid {
            origin: doc.origin.clone(),
            message: format!("{} {shown}: {path}: {}", doc.kind.as_str(), e.into_inner()),
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const MIXED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: speech}
---
apiVersion: infergate.dev/v1alpha1
kind: RateTier
metadata: {name: free, namespace: ignored}
spec: {gpuSecondsPerMinute: 6, burstGpuSeconds: 12}
---
# only a comment
---
apiVersion: infergate.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: app}
spec: {tier: free, secretName: app-key, scopes: [{endpoint: e}]}
"#;

    #[test]
    fn skips_foreign_kinds_and_defaults_the_namespace() {
        let set = load_str(MIXED, "mixed.yaml").unwrap();
        assert_eq!(set.tiers.len(), 1);
        assert_eq!(set.tiers[0].metadata.namespace, None);
        assert_eq!(set.policies[0].metadata.namespace.as_deref(), Some("default"));
        assert!(set.endpoints.is_empty());
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let bad = "apiVersion: infergate.dev/v1alpha1\nkind: RateTier\nmetadata: {name: t}\nspec: {gpuSecondsPerMinute: lots, burstGpuSeconds: 1}\n";
        let err = load_str(&format!("{MIXED}---\n{bad}"), "x.yaml").unwrap_err().to_string();
        assert!(err.starts_with("x.yaml (document 5): RateTier t: spec.gpuSecondsPerMinute:"), "{err}");

        let dup = format!(
            "{MIXED}---\napiVersion: infergate.dev/v1alpha1\nkind: RateTier\nmetadata: {{name: free}}\nspec: {{gpuSecondsPerMinute: 1, burstGpuSeconds: 1}}\n"
        );
        let err = load_str(&dup, "d.yaml").unwrap_err().to_string();
        assert!(err.contains("RateTier free is defined twice"), "{err}");

        let err =
            load_str("apiVersion: infergate.dev/v1\nkind: RateTier\nmetadata: {name: t}\n", "v.yaml").unwrap_err();
        assert!(err.to_string().contains("this operator serves infergate.dev/v1alpha1"), "{err}");
        let err = load_str("apiVersion: infergate.dev/v1alpha1\nkind: Tier\n", "k.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown kind \"Tier\""), "{err}");
        let err = load_str("a: [", "y.yaml").unwrap_err();
        assert_eq!(err.category(), "yaml");
        assert!(err.to_string().starts_with("y.yaml (document 1): not valid YAML"), "{err}");
    }
}
