//! Placement: an endpoint with a `nodeSelector` is served only by the agents on matching nodes, and clients reach
//! it through a Service of its own whose EndpointSlices list exactly those agents.
//!
//! ```text
//!  agent Lease ─ address {ip, http, grpc}, serves [namespace/name, ...], renewTime
//!  InferenceEndpoint with nodeSelector ─▶ Service ig-<name>-<hash> (no selector; operator namespace)
//!                                        └▶ EndpointSlice per port pair: the fresh agents that serve it
//! ```
//! Why a Service per endpoint rather than agents forwarding to each other: the cluster's own load balancing
//! reaches the right node directly (no second hop holding an audio stream open, no agent-to-agent trust or
//! credentials), and a request for such a model that still lands on another agent through the shared gateway
//! Service gets `421 served_elsewhere` naming this Service, which says exactly what to change.
use crate::AgentReport;
use chrono::{DateTime, Duration, Utc};
use infergate_crds::gateway::endpoint_service_name;
use infergate_crds::{InferenceEndpoint, NamespacedName};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// `infergate.dev/component` of the Services and EndpointSlices this module describes (their orphans are found by it).
pub const COMPONENT: &str = "endpoint-service";
/// The Service ports clients use: the gateway Service's defaults.
pub const HTTP_PORT: i32 = 8080;
pub const GRPC_PORT: i32 = 50051;

/// Where an agent listens, from its Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct AgentAddress {
    pub ip: String,
    pub http: u16,
    pub grpc: u16,
    /// The admin port (`/usage`, `/status`); absent on Leases of agents older than the field.
    #[serde(default)]
    pub admin: Option<u16>,
}

/// One endpoint's Service and its slices.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointService {
    pub service: Service,
    pub slices: Vec<EndpointSlice>,
}

/// The Services and EndpointSlices for every endpoint that has a `nodeSelector`, in `namespace`. Agents whose
/// Lease has not been renewed within [`crate::AGENT_STALE_AFTER_SECS`] are left out.
pub fn endpoint_services(
    endpoints: &[&InferenceEndpoint],
    agents: &[AgentReport],
    namespace: &str,
    now: DateTime<Utc>,
) -> Vec<EndpointService> {
    let fresh: Vec<(&AgentReport, &AgentAddress)> = agents
        .iter()
        .filter(|a| a.renewed_at.is_some_and(|t| now - t <= Duration::seconds(crate::AGENT_STALE_AFTER_SECS)))
        .filter_map(|a| a.address.as_ref().map(|address| (a, address)))
        .collect();
    let mut out = Vec::new();
    for endpoint in endpoints.iter().filter(|e| e.spec.node_selector.is_some()) {
        let owner = NamespacedName::new(
            endpoint.metadata.namespace.clone().unwrap_or_default(),
            endpoint.metadata.name.clone().unwrap_or_default(),
        );
        let label = owner.to_string();
        let name = endpoint_service_name(&owner);
        let labels = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
            let mut labels: BTreeMap<String, String> = [
                ("app.kubernetes.io/managed-by", "infergate-operator"),
                (infergate_crds::labels::COMPONENT, COMPONENT),
                (infergate_crds::labels::OWNER_NAME, owner.name.as_str()),
                (infergate_crds::labels::OWNER_NAMESPACE, owner.namespace.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            labels
        };
        let service = Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels(&[])),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                // No selector: the EndpointSlices below are the membership.
                ports: Some(vec![service_port("http", HTTP_PORT), service_port("grpc", GRPC_PORT)]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let mut by_ports: BTreeMap<(u16, u16), Vec<(&AgentReport, &AgentAddress)>> = BTreeMap::new();
        for (agent, address) in fresh.iter().filter(|(a, _)| a.serves.iter().any(|s| *s == label)) {
            by_ports.entry((address.http, address.grpc)).or_default().push((agent, address));
        }
        let slices = by_ports
            .into_iter()
            .map(|((http, grpc), members)| EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{http}-{grpc}")),
                    namespace: Some(namespace.to_string()),
                    labels: Some(labels(&[
                        ("kubernetes.io/service-name", name.as_str()),
                        ("endpointslice.kubernetes.io/managed-by", "infergate-operator"),
                    ])),
                    ..ObjectMeta::default()
                },
                address_type: if members.iter().all(|(_, a)| a.ip.contains(':')) { "IPv6" } else { "IPv4" }.into(),
                endpoints: members
                    .iter()
                    .map(|(agent, address)| Endpoint {
                        addresses: vec![address.ip.clone()],
                        conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
                        node_name: Some(agent.node.clone()),
                        ..Endpoint::default()
                    })
                    .collect(),
                ports: Some(vec![slice_port("http", http), slice_port("grpc", grpc)]),
            })
            .collect();
        out.push(EndpointService { service, slices });
    }
    out
}

/// The nodes (by name, sorted) whose labels match an endpoint's `nodeSelector`; `None` without a selector.
pub fn serving_nodes<'a>(
    selector: Option<&BTreeMap<String, String>>,
    nodes: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Option<Vec<String>> {
    let selector = selector?;
    let mut names: Vec<String> = nodes
        .into_iter()
        .filter(|(_, labels)| infergate_crds::gateway::selector_matches(Some(selector), labels))
        .map(|(name, _)| name.to_string())
        .collect();
    names.sort();
    Some(names)
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort { name: Some(name.into()), port, protocol: Some("TCP".into()), ..ServicePort::default() }
}

fn slice_port(name: &str, port: u16) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(i32::from(port)),
        protocol: Some("TCP".into()),
        ..EndpointPort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate_crds::InferenceEndpointSpec;

    fn endpoint(name: &str, selector: Option<&str>) -> InferenceEndpoint {
        let mut spec: InferenceEndpointSpec = serde_json::from_value(serde_json::json!({
            "model": "whisper-1", "features": ["transcribe"],
            "backend": {"upstream": {"url": "http://whisper.speech.svc:8000/v1", "allowPrivateNetwork": true}},
        }))
        .unwrap();
        spec.node_selector = selector.map(|gpu| [("gpu".to_string(), gpu.to_string())].into_iter().collect());
        let mut e = InferenceEndpoint::new(name, spec);
        e.metadata.namespace = Some("speech".into());
        e
    }

    fn agent(node: &str, ip: &str, http: u16, serves: &[&str], renewed: DateTime<Utc>) -> AgentReport {
        AgentReport {
            node: node.into(),
            address: Some(AgentAddress { ip: ip.into(), http, grpc: 50051, admin: None }),
            serves: serves.iter().map(|s| s.to_string()).collect(),
            renewed_at: Some(renewed),
            ..AgentReport::default()
        }
    }

    #[test]
    fn an_endpoint_is_served_on_the_nodes_its_selector_matches() {
        let labels = |gpu: &str| -> BTreeMap<String, String> { [("gpu".to_string(), gpu.to_string())].into() };
        let (a, b, none) = (labels("a100"), labels("h100"), BTreeMap::new());
        let nodes = [("node-b", &b), ("node-a", &a), ("node-x", &none), ("node-a2", &a)];
        assert_eq!(serving_nodes(None, nodes), None);
        assert_eq!(serving_nodes(Some(&labels("a100")), nodes), Some(vec!["node-a".into(), "node-a2".into()]));
        assert_eq!(serving_nodes(Some(&labels("tpu")), nodes), Some(vec![]));
    }

    #[test]
    fn each_selected_endpoint_gets_a_service_listing_exactly_its_fresh_agents() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (a, b, plain) = (endpoint("stt-a", Some("a100")), endpoint("stt-b", Some("h100")), endpoint("any", None));
        let agents = vec![
            agent("node-a", "10.0.0.1", 8080, &["speech/stt-a", "speech/any"], now),
            agent("node-b", "10.0.0.2", 8080, &["speech/stt-b", "speech/any"], now),
            agent("node-b2", "10.0.0.3", 9080, &["speech/stt-b"], now),
            agent("gone", "10.0.0.9", 8080, &["speech/stt-b"], now - Duration::hours(1)),
        ];
        let out = endpoint_services(&[&a, &b, &plain], &agents, "infergate", now);
        assert_eq!(out.len(), 2, "only endpoints with a nodeSelector get a Service");
        let members = |s: &EndpointService| -> Vec<(String, i32, String)> {
            s.slices
                .iter()
                .flat_map(|slice| {
                    let http = slice.ports.as_ref().unwrap()[0].port.unwrap();
                    slice.endpoints.iter().map(move |e| (e.addresses[0].clone(), http, e.node_name.clone().unwrap()))
                })
                .collect()
        };
        assert_eq!(
            out[0].service.metadata.name.as_deref(),
            Some(endpoint_service_name(&NamespacedName::new("speech", "stt-a")).as_str())
        );
        assert_eq!(members(&out[0]), vec![("10.0.0.1".into(), 8080, "node-a".into())]);
        assert_eq!(
            members(&out[1]),
            vec![("10.0.0.2".into(), 8080, "node-b".into()), ("10.0.0.3".into(), 9080, "node-b2".into())],
            "one slice per port pair; the stale agent is left out"
        );
        let service = &out[1].service;
        assert_eq!(service.metadata.namespace.as_deref(), Some("infergate"));
        assert!(service.spec.as_ref().unwrap().selector.is_none());
        let slice = &out[1].slices[0];
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
            *service.metadata.name.as_ref().unwrap()
        );
    }
}
