//! Validation of infergate objects against the *generated* CRD schemas, as the API server does on
//! `kubectl apply`: structural OpenAPI checks (types, required, enums, patterns, bounds, unknown fields) written
//! here over the schema JSON, then the CEL rules (`x-kubernetes-validations`) through kube's client-side
//! evaluator. Messages follow the API server's wording (`Required value`, `Unsupported value`, `should match`,
//! `unknown field`) and add what to fix.
//!
//! ```text
//!  object ─▶ root (apiVersion/kind/metadata) ─▶ structural walk over openAPIV3Schema ─┬─▶ errors
//!                                      no type errors? ─▶ CEL (kube::core::cel) ───────┘
//! ```
use crate::manifests::InfergateKind;
use infergate_crds::{GROUP, VERSION};
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

struct KindSchema {
    schema: Value,
    compiled: CompiledSchema,
}

static SCHEMAS: LazyLock<BTreeMap<InfergateKind, KindSchema>> = LazyLock::new(|| {
    infergate_crds::crdgen::all()
        .into_iter()
        .map(|(_, crd)| {
            let kind = InfergateKind::from_kind(&crd.spec.names.kind).expect("crdgen yields infergate kinds");
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(|s| serde_json::to_value(s).expect("CRD schemas serialize"))
                .expect("generated CRDs carry an openAPIV3Schema");
            let compiled = compile_schema(&schema);
            (kind, KindSchema { schema, compiled })
        })
        .collect()
});

/// Compiled `pattern`s, shared across calls (the same dozen patterns are checked over and over).
static PATTERNS: LazyLock<Mutex<BTreeMap<String, Option<Regex>>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Validates one object. Objects outside `infergate.dev` are not ours to judge and pass. Every message names
/// the object (`Kind namespace/name`) and the field.
pub fn validate_object(object: &Value) -> Result<(), Vec<String>> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group != GROUP {
        return Ok(());
    }
    let Some(kind) = InfergateKind::from_kind(kind_name) else {
        return Err(vec![format!(
            "unknown kind {kind_name:?} in {GROUP}: use RateTier, InferenceEndpoint or ApiKeyPolicy"
        )]);
    };
    let meta = object.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default();
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or_default();
    let shown = match (kind.namespaced() && !namespace.is_empty(), name.is_empty()) {
        (_, true) => format!("{} (unnamed)", kind.as_str()),
        (true, false) => format!("{} {namespace}/{name}", kind.as_str()),
        (false, false) => format!("{} {name}", kind.as_str()),
    };
    let mut issues = vec![];
    if version != VERSION {
        issues.push(Issue::new(
            "apiVersion",
            format!("Unsupported value: {api_version:?}: use {GROUP}/{VERSION}"),
            true,
        ));
    }
    check_metadata(kind, meta, &mut issues);

    let entry = &SCHEMAS[&kind];
    let Some(obj) = object.as_object() else {
        return Err(vec![format!("{shown}: expected an object")]);
    };
    // The root: apiVersion/kind/metadata are the API machinery's; status is dropped on create (subresource).
    let root = &entry.schema;
    let props = root.get("properties").and_then(Value::as_object);
    for (key, value) in obj {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            continue;
        }
        match props.and_then(|p| p.get(key)) {
            Some(sub) => check(sub, value, key, &mut issues),
            None => issues.push(unknown_field(key, key, props)),
        }
    }
    for req in required(root) {
        if !obj.contains_key(req) {
            issues.push(Issue::new(req, format!("Required value: add {req}"), false));
        }
    }

    // The API server skips CEL when a value has the wrong type (the rules could not be evaluated meaningfully).
    if !issues.iter().any(|i| i.blocking) {
        let mut for_cel = object.clone();
        if let Some(o) = for_cel.as_object_mut() {
            o.remove("status");
        }
        if let Err(errors) = Validator::new().validate_compiled(&entry.compiled, &for_cel, None) {
            let structural: Vec<String> = issues.iter().map(|i| i.path.clone()).collect();
            for e in errors.iter() {
                // A rule that could not even evaluate (e.g. `duration("30d")`) over a field that already has a
                // structural error adds noise, not information: the structural message says what to fix.
                let evaluation_failed = !matches!(e.kind, kube::core::cel::ErrorKind::ValidationFailure);
                if evaluation_failed && structural.iter().any(|p| p.starts_with(&e.field_path)) {
                    continue;
                }
                let path = if e.field_path.is_empty() { "metadata.name".to_string() } else { e.field_path.clone() };
                // A root rule reports on the object itself; name the field the rule is about where we can.
                let path = if path == "metadata.name" && e.rule.contains("self.spec.") {
                    e.rule
                        .split("self.spec.")
                        .nth(1)
                        .map(|r| {
                            let field: String = r.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
                            format!("spec.{field}")
                        })
                        .unwrap_or(path)
                } else {
                    path
                };
                if !issues.iter().any(|i| i.path == path && i.message == e.message) {
                    issues.push(Issue::new(&path, e.message.clone(), false));
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues.into_iter().map(|i| format!("{shown}: {}: {}", i.path, i.message)).collect())
    }
}

struct Issue {
    path: String,
    message: String,
    /// A type error: the API server does not evaluate CEL rules then.
    blocking: bool,
}

impl Issue {
    fn new(path: &str, message: String, blocking: bool) -> Self {
        Issue { path: path.to_string(), message, blocking }
    }
}

fn check_metadata(kind: InfergateKind, meta: Option<&Value>, issues: &mut Vec<Issue>) {
    static DNS_SUBDOMAIN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap());
    static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
    let Some(meta) = meta.and_then(Value::as_object) else {
        issues.push(Issue::new("metadata.name", "Required value: name is required".into(), false));
        return;
    };
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => issues.push(Issue::new("metadata.name", "Required value: name is required".into(), false)),
        Some(n) if n.len() > 253 || !DNS_SUBDOMAIN.is_match(n) => issues.push(Issue::new(
            "metadata.name",
            format!(
                "Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                 characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
            false,
        )),
        Some(_) => {}
    }
    if kind.namespaced() {
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str) {
            if ns.len() > 63 || !DNS_LABEL.is_match(ns) {
                issues.push(Issue::new(
                    "metadata.namespace",
                    format!("Invalid value: {ns:?}: a namespace is a lowercase RFC 1123 label (a-z, 0-9, '-')"),
                    false,
                ));
            }
        }
    }
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value for a message. Strings that look like API keys are never echoed back.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.starts_with("sk_") => "\"<redacted: looks like an API key>\"".to_string(),
        Value::String(s) if s.len() > 80 => {
            format!("{:?}…", s.chars().take(80).collect::<String>())
        }
        Value::Array(a) => format!("[{} item(s)]", a.len()),
        Value::Object(_) => "{...}".to_string(),
        other => other.to_string(),
    }
}

fn check(schema: &Value, value: &Value, path: &str, issues: &mut Vec<Issue>) {
    let get = |k: &str| schema.get(k);
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    if value.is_null() {
        if get("nullable").and_then(Value::as_bool) != Some(true) && get("type").is_some() {
            let ty = get("type").and_then(Value::as_str).unwrap_or("a value");
            issues.push(Issue::new(
                path,
                format!("Invalid value: null: {path} in body must be of type {ty}: set a value or remove the field"),
                true,
            ));
        }
        return;
    }
    let preserve = get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    if get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            issues.push(Issue::new(
                path,
                format!("Invalid value: {}: {path} in body must be an integer or a string", shown(value)),
                true,
            ));
        }
        return;
    }
    let Some(ty) = get("type").and_then(Value::as_str) else {
        return; // untyped (preserve-unknown-fields) subtree
    };
    let actual = type_name(value);
    let type_ok = match ty {
        "number" => actual == "number" || actual == "integer",
        "integer" => actual == "integer" || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => actual == other,
    };
    if !type_ok {
        issues.push(Issue::new(
            path,
            format!("Invalid value: {}: {path} in body must be of type {ty}: {actual}", shown(value)),
            true,
        ));
        return;
    }
    if let Some(allowed) = get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            issues.push(Issue::new(
                path,
                format!("Unsupported value: {}: supported values: {}", shown(value), list.join(", ")),
                false,
            ));
        }
    }
    match value {
        Value::Object(obj) => check_object(schema, obj, path, preserve, issues),
        Value::Array(items) => {
            if let Some(max) = num("maxItems").filter(|m| items.len() as f64 > *m) {
                issues.push(Issue::new(
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                    false,
                ));
            }
            if let Some(min) = num("minItems").filter(|m| (items.len() as f64) < *m) {
                issues.push(Issue::new(
                    path,
                    format!("Invalid value: {}: {path} in body should have at least {min} items", items.len()),
                    false,
                ));
            }
            if let Some(item_schema) = get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), issues);
                }
            }
        }
        Value::String(s) => {
            let chars = s.chars().count() as f64;
            if let Some(max) = num("maxLength").filter(|m| chars > *m) {
                issues.push(Issue::new(path, format!("Too long: may not be more than {max} bytes"), false));
            }
            if let Some(min) = num("minLength").filter(|m| chars < *m) {
                issues.push(Issue::new(
                    path,
                    format!("Invalid value: {}: {path} in body should be at least {min} chars long", shown(value)),
                    false,
                ));
            }
            if let Some(pattern) = get("pattern").and_then(Value::as_str) {
                let mut cache = PATTERNS.lock().unwrap_or_else(|p| p.into_inner());
                let re = cache.entry(pattern.to_string()).or_insert_with(|| Regex::new(pattern).ok());
                if re.as_ref().is_some_and(|re| !re.is_match(s)) {
                    let hint = pattern_hint(pattern, s);
                    issues.push(Issue::new(
                        path,
                        format!("Invalid value: {}: {path} in body should match '{pattern}'{hint}", shown(value)),
                        false,
                    ));
                }
            }
            if get("format").and_then(Value::as_str) == Some("date-time")
                && chrono::DateTime::parse_from_rfc3339(s).is_err()
            {
                issues.push(Issue::new(
                    path,
                    format!(
                        "Invalid value: {}: {path} in body must be of type date-time: use RFC 3339, e.g. 2027-06-30T00:00:00Z",
                        shown(value)
                    ),
                    false,
                ));
            }
        }
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or_default();
            let exclusive_min = get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let exclusive_max = get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = num("minimum") {
                if v < min || (exclusive_min && v == min) {
                    let op = if exclusive_min { "greater than" } else { "greater than or equal to" };
                    issues.push(Issue::new(
                        path,
                        format!("Invalid value: {v}: {path} in body should be {op} {min}"),
                        false,
                    ));
                }
            }
            if let Some(max) = num("maximum") {
                if v > max || (exclusive_max && v == max) {
                    let op = if exclusive_max { "less than" } else { "less than or equal to" };
                    issues.push(Issue::new(
                        path,
                        format!("Invalid value: {v}: {path} in body should be {op} {max}"),
                        false,
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, obj: &Map<String, Value>, path: &str, preserve: bool, issues: &mut Vec<Issue>) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, value) in obj {
        let sub_path = format!("{path}.{key}");
        match (props.and_then(|p| p.get(key)), additional) {
            (Some(sub), _) => check(sub, value, &sub_path, issues),
            (None, Some(add)) => check(add, value, &sub_path, issues),
            (None, None) if preserve => {}
            (None, None) => issues.push(unknown_field(&sub_path, key, props)),
        }
    }
    for req in required(schema) {
        if !obj.contains_key(req) {
            issues.push(Issue::new(&format!("{path}.{req}"), format!("Required value: add {path}.{req}"), false));
        }
    }
}

fn unknown_field(path: &str, key: &str, props: Option<&Map<String, Value>>) -> Issue {
    let suggestion = props
        .into_iter()
        .flat_map(|p| p.keys())
        .map(|k| (edit_distance(k, key), k))
        .filter(|(d, k)| *d <= 3.max(key.len() / 3) && *d < k.len())
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    Issue::new(path, format!("unknown field {path:?}: remove it or fix its spelling{suggestion}"), false)
}

fn pattern_hint(pattern: &str, value: &str) -> &'static str {
    if pattern == infergate_crds::duration::PATTERN {
        ": use a Go duration such as 30s, 15m, 24h or 720h (there is no unit for days)"
    } else if pattern.starts_with("^kid_") {
        if value.starts_with("sk_") {
            ": put the key id (kid_ + 16 hex characters, see status.keys), never the key itself"
        } else {
            ": use a key id as shown in status.keys (kid_ + 16 hex characters)"
        }
    } else {
        ""
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: Value) -> Value {
        json!({"apiVersion": "infergate.dev/v1alpha1", "kind": "ApiKeyPolicy",
               "metadata": {"name": "x", "namespace": "checkout"}, "spec": spec})
    }

    #[test]
    fn a_good_object_passes_and_foreign_objects_are_not_judged() {
        let ok = policy(json!({"tier": "free", "secretName": "k", "scopes": [{"endpoint": "e"}],
                                "rotation": {"every": "720h", "overlap": "24h"}}));
        assert_eq!(validate_object(&ok), Ok(()));
        assert_eq!(validate_object(&json!({"apiVersion": "v1", "kind": "Namespace"})), Ok(()));
    }

    #[test]
    fn messages_name_object_field_and_fix() {
        let bad = policy(json!({"tier": "free", "secretName": "k", "scopes": [{"endpoint": "e"}],
                                 "rotation": {"every": "24h", "overlap": "48h"}, "suspend": true,
                                 "revocations": [{"keyId": "sk_live_abcdef", "reason": "r", "requestedBy": "me"}]}));
        let errors = validate_object(&bad).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("ApiKeyPolicy checkout/x: spec.suspend: unknown field \"spec.suspend\": remove it or fix its spelling (did you mean \"suspended\"?)"), "{all}");
        assert!(all.contains("ApiKeyPolicy checkout/x: spec.revocations[0].keyId: Invalid value: \"<redacted: looks like an API key>\""), "{all}");
        assert!(all.contains("never the key itself"), "{all}");
        assert!(!all.contains("sk_live_abcdef"), "{all}");
        assert!(all.contains("rotation.overlap must be shorter than rotation.every"), "{all}");
    }

    #[test]
    fn type_errors_skip_cel_like_the_api_server() {
        let bad = json!({"apiVersion": "infergate.dev/v1alpha1", "kind": "RateTier", "metadata": {"name": "t"},
                         "spec": {"gpuSecondsPerMinute": "six", "burstGpuSeconds": -1}});
        let errors = validate_object(&bad).unwrap_err();
        assert_eq!(errors, vec!["RateTier t: spec.gpuSecondsPerMinute: Invalid value: \"six\": spec.gpuSecondsPerMinute in body must be of type number: string".to_string()]);
    }
}
