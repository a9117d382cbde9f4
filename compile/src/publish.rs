//! Turns compile outputs into the gateway-config Secrets the operator applies in its own namespace.
//!
//! ```text
//!  Shard (policy or endpoint) ─▶ shard_secret ─▶ Secret <shard name>  (operator namespace)
//!                                                 labels: component=gateway-config, shard-kind, owner-*
//!                                                 data:   shard JSON (names its owner exactly)
//! ```
//! Shards carry **no ownerReferences**. Their owners cannot own them: an ApiKeyPolicy or InferenceEndpoint in
//! namespace A cannot own an object in the operator's namespace (owner references are namespace-local), and
//! RateTiers are not shard owners at all. So the reconciler removes them itself: when an owner's delete event
//! arrives it deletes the shard by its deterministic name ([`infergate_crds::gateway::shard_secret_name`]), and
//! after every (re)list it sweeps the shards it watches (selected by [`infergate_crds::gateway::SHARD_SELECTOR`])
//! and deletes those whose owner, as named in the shard JSON, no longer exists. The JSON is the record used
//! because an owner label may be shortened (see [`label_value`]); the owner labels
//! (`infergate.dev/owner-namespace`, `infergate.dev/owner-name`, `infergate.dev/shard-kind`) are for people and
//! `kubectl get -l`.
use infergate_crds::gateway::{SHARD_DATA_KEY, Shard};
use infergate_crds::{annotations, labels};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The Secret that carries one shard, in the operator's namespace.
pub fn shard_secret(shard: &Shard, operator_namespace: &str) -> Secret {
    let mut lbl = BTreeMap::new();
    lbl.insert(labels::COMPONENT.to_string(), labels::GATEWAY_CONFIG.to_string());
    lbl.insert(labels::SHARD_KIND.to_string(), shard.kind().as_str().to_string());
    if let Some(owner) = shard.owner() {
        lbl.insert(labels::OWNER_NAMESPACE.to_string(), label_value(&owner.namespace));
        lbl.insert(labels::OWNER_NAME.to_string(), label_value(&owner.name));
    }
    lbl.insert(labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string());
    let json = shard.to_json();
    let mut ann = BTreeMap::new();
    ann.insert(annotations::SHARD_REVISION.to_string(), infergate_crds::gateway::revision_of(&json));
    let mut data = BTreeMap::new();
    data.insert(SHARD_DATA_KEY.to_string(), ByteString(json));
    Secret {
        metadata: ObjectMeta {
            name: Some(shard.secret_name()),
            namespace: Some(operator_namespace.to_string()),
            labels: Some(lbl),
            annotations: Some(ann),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }
}

/// Object names may be 253 characters, label values only 63. Longer names become their first 46 characters,
/// `-`, and 16 hex characters of their SHA-256: still unique, still deterministic, still a valid label value.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
    let head: String = name.chars().take(46).collect();
    format!("{}-{digest}", head.trim_end_matches(['-', '.', '_']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_crds::NamespacedName;
    use infergate_crds::gateway::{EndpointShard, SHARD_SCHEMA_VERSION};

    fn endpoint_shard() -> Shard {
        Shard::Endpoint(EndpointShard {
            schema_version: SHARD_SCHEMA_VERSION,
            endpoint: NamespacedName::new("speech", "vad"),
            generation: 3,
            model: "silero-vad-v6".into(),
            features: vec![infergate_crds::endpoint::Feature::Vad],
            environment: Default::default(),
            backend: infergate_crds::endpoint::BackendSpec {
                builtin: Some(infergate_crds::endpoint::BuiltinModel::Vad),
                size: None,
                upstream: None,
            },
            cost: Default::default(),
            limits: Default::default(),
            fallback: None,
            node_selector: None,
            serving_nodes: None,
            verify_threshold: None,
            upstream_credential: None,
            redaction: None,
        })
    }

    #[test]
    fn shard_secret_is_labelled_for_agents_and_for_garbage_collection() {
        let shard = endpoint_shard();
        let secret = shard_secret(&shard, "infergate-system");
        assert_eq!(secret.metadata.name.as_deref(), Some(shard.secret_name().as_str()));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("infergate-system"));
        let lbl = secret.metadata.labels.clone().unwrap();
        let expected: BTreeMap<String, String> = [
            ("app.kubernetes.io/managed-by", "infergate-operator"),
            ("infergate.dev/component", "gateway-config"),
            ("infergate.dev/owner-name", "vad"),
            ("infergate.dev/owner-namespace", "speech"),
            ("infergate.dev/shard-kind", "endpoint"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(lbl, expected);
        assert!(secret.metadata.owner_references.is_none());
        let data = &secret.data.unwrap()[SHARD_DATA_KEY];
        assert_eq!(Shard::from_json(&data.0).unwrap(), shard);
        assert_eq!(secret.metadata.annotations.unwrap()[annotations::SHARD_REVISION], shard.revision());
    }

    #[test]
    fn long_names_become_valid_unique_label_values() {
        let a = format!("{}a", "x".repeat(100));
        let b = format!("{}b", "x".repeat(100));
        assert_eq!(label_value("short"), "short");
        assert!(label_value(&a).len() <= 63);
        assert_ne!(label_value(&a), label_value(&b));
        assert_eq!(label_value(&a), label_value(&a));
    }
}
