//! What a reconcile reports besides the objects it writes: Kubernetes Events and audit log lines.
//!
//! ```text
//!  Outcome.events ─▶ publish_events ─▶ events.k8s.io/v1 Event (per spec, in the object's namespace)
//!  Outcome.audit  ─▶ AuditRecord::log ─▶ one JSON log line with `audit=true`
//! ```
//! Both carry key ids only, never key material (the compile step never puts a key in them).
use super::context::Context;
use infergate_compile::{EventSpec, ObjectRef};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;

impl Context {
    /// Creates one `events.k8s.io/v1` Event per spec. Not kube's `Recorder`: `compile` already emits only on
    /// state changes, so the Recorder's series de-duplication has nothing to do, and its cache would hold every
    /// Event for minutes (thousands of them on a cold start over thousands of policies).
    pub(super) async fn publish_events(&self, events: &[EventSpec]) {
        for spec in events {
            let now = k8s_openapi::jiff::Timestamp::now();
            let namespace = spec.regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
            let event = KubeEvent {
                metadata: ObjectMeta {
                    name: Some(format!("{}.{:x}", spec.regarding.name, now.as_nanosecond())),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                event_time: Some(MicroTime(now)),
                type_: Some(if spec.warning { "Warning" } else { "Normal" }.to_string()),
                reason: Some(spec.reason.to_string()),
                note: Some(spec.note.clone()),
                action: Some("Reconcile".to_string()),
                regarding: Some(object_reference(&spec.regarding)),
                reporting_controller: Some(self.reporter.controller.clone()),
                reporting_instance: Some(
                    self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
                ),
                ..Default::default()
            };
            let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &namespace);
            // An Event is a courtesy: failing to write one must not fail (and repeat) the reconcile.
            if let Err(err) = api.create(&Default::default(), &event).await {
                tracing::warn!(reason = spec.reason, object = %spec.regarding.name, error = %err, "could not publish Event");
            }
        }
    }
}

fn object_reference(r: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/{}", infergate_crds::GROUP, infergate_crds::VERSION)),
        kind: Some(r.kind.to_string()),
        name: Some(r.name.clone()),
        namespace: r.namespace.clone(),
        uid: r.uid.clone(),
        ..Default::default()
    }
}
