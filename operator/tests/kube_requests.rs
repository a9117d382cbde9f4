//! The exact requests the reconciler sends, checked with tower-test: a mocked HTTP service stands where the API
//! server would be, so each test sees method, path, query and body byte for byte and answers with a canned object.
//! (The end-to-end behaviour against a real-ish API is in tests/python/test_operator_e2e.py.)
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use http::{Method, Request, Response};
use infergate_crds::{ApiKeyPolicy, ApiKeyPolicyStatus, RateTier, RateTierStatus};
use infergate_operator::kube_apply;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::BTreeMap;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Takes the next request, returns (method, path with query, JSON body), and answers with `reply`.
async fn expect_request(handle: &mut Handle, status: u16, reply: Value) -> (Method, String, Value, String) {
    let (request, send) = handle.next_request().await.expect("the client sent no request");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let content_type =
        request.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
    );
    (method, uri, body, content_type)
}

fn policy_json(status: Value) -> Value {
    json!({
        "apiVersion": "infergate.dev/v1alpha1",
        "kind": "ApiKeyPolicy",
        "metadata": {"name": "checkout-voice", "namespace": "checkout", "resourceVersion": "7", "generation": 3},
        "spec": {"tier": "pro", "secretName": "checkout-key", "scopes": [{"endpoint": "whisper"}]},
        "status": status,
    })
}

#[tokio::test]
async fn policy_status_is_server_side_applied_on_the_status_subresource() {
    let (client, mut handle) = mock_client();
    let status = ApiKeyPolicyStatus {
        observed_generation: Some(3),
        current_key_id: Some("kid_0123456789abcdef".into()),
        ..Default::default()
    };
    let api: Api<ApiKeyPolicy> = Api::namespaced(client, "checkout");
    let task = tokio::spawn(async move { kube_apply::apply_status(&api, "checkout-voice", &status).await });
    let reply = policy_json(json!({"observedGeneration": 3, "currentKeyId": "kid_0123456789abcdef"}));
    let (method, uri, body, content_type) = expect_request(&mut handle, 200, reply).await;
    assert_eq!(method, Method::PATCH);
    assert_eq!(
        uri,
        "/apis/infergate.dev/v1alpha1/namespaces/checkout/apikeypolicies/checkout-voice/status?&force=true&fieldManager=infergate-operator"
    );
    assert_eq!(content_type, "application/apply-patch+yaml");
    // Only apiVersion, kind and status: the operator never claims a spec field.
    assert_eq!(
        body,
        json!({
            "apiVersion": "infergate.dev/v1alpha1",
            "kind": "ApiKeyPolicy",
            "status": {"observedGeneration": 3, "currentKeyId": "kid_0123456789abcdef"},
        })
    );
    let written = task.await.unwrap().expect("the patch succeeds");
    assert_eq!(written.status.unwrap().current_key_id.as_deref(), Some("kid_0123456789abcdef"));
}

#[tokio::test]
async fn cluster_scoped_tier_status_goes_to_the_cluster_path() {
    let (client, mut handle) = mock_client();
    let api: Api<RateTier> = Api::all(client);
    let status = RateTierStatus { observed_generation: Some(1), conditions: vec![], policies: 2 };
    let task = tokio::spawn(async move { kube_apply::apply_status(&api, "pro", &status).await });
    let reply = json!({
        "apiVersion": "infergate.dev/v1alpha1", "kind": "RateTier",
        "metadata": {"name": "pro", "resourceVersion": "2"},
        "spec": {"gpuSecondsPerMinute": 60.0, "burstGpuSeconds": 120.0},
        "status": {"observedGeneration": 1, "policies": 2},
    });
    let (method, uri, body, _) = expect_request(&mut handle, 200, reply).await;
    assert_eq!(method, Method::PATCH);
    assert_eq!(uri, "/apis/infergate.dev/v1alpha1/ratetiers/pro/status?&force=true&fieldManager=infergate-operator");
    assert_eq!(
        body,
        json!({"apiVersion": "infergate.dev/v1alpha1", "kind": "RateTier", "status": {"observedGeneration": 1, "policies": 2}})
    );
    task.await.unwrap().unwrap();
}

fn key_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("checkout-key".into()),
            namespace: Some("checkout".into()),
            labels: Some(BTreeMap::from([("infergate.dev/component".to_string(), "api-key".to_string())])),
            // Server-owned fields a stale copy may carry; they must not be sent.
            resource_version: Some("41".into()),
            uid: Some("00000000-0000-0000-0000-000000000001".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("key-id".to_string(), ByteString(b"kid_0123456789abcdef".to_vec()))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn key_secret_is_server_side_applied_without_server_owned_metadata() {
    let (client, mut handle) = mock_client();
    let api: Api<Secret> = Api::namespaced(client, "checkout");
    let task = tokio::spawn(async move { kube_apply::apply_secret(&api, &key_secret()).await });
    let reply = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "checkout-key", "namespace": "checkout", "resourceVersion": "42"}});
    let (method, uri, body, content_type) = expect_request(&mut handle, 200, reply).await;
    assert_eq!(method, Method::PATCH);
    assert_eq!(uri, "/api/v1/namespaces/checkout/secrets/checkout-key?&force=true&fieldManager=infergate-operator");
    assert_eq!(content_type, "application/apply-patch+yaml");
    assert_eq!(
        body,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "checkout-key",
                "namespace": "checkout",
                "labels": {"infergate.dev/component": "api-key"},
            },
            // base64 of "kid_0123456789abcdef"
            "data": {"key-id": "a2lkXzAxMjM0NTY3ODlhYmNkZWY="},
            "type": "Opaque",
        })
    );
    let written = task.await.unwrap().unwrap();
    assert_eq!(written.metadata.resource_version.as_deref(), Some("42"));
}

#[tokio::test]
async fn a_new_key_secret_is_created_not_applied() {
    let (client, mut handle) = mock_client();
    let api: Api<Secret> = Api::namespaced(client, "checkout");
    let task = tokio::spawn(async move { kube_apply::create_secret(&api, &key_secret()).await });
    let reply = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "checkout-key", "namespace": "checkout", "resourceVersion": "1"}});
    let (method, uri, body, content_type) = expect_request(&mut handle, 201, reply).await;
    assert_eq!(method, Method::POST);
    assert_eq!(uri, "/api/v1/namespaces/checkout/secrets?&fieldManager=infergate-operator");
    assert_eq!(content_type, "application/json");
    assert_eq!(
        body,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "checkout-key",
                "namespace": "checkout",
                "labels": {"infergate.dev/component": "api-key"},
            },
            "data": {"key-id": "a2lkXzAxMjM0NTY3ODlhYmNkZWY="},
            "type": "Opaque",
        })
    );
    assert_eq!(task.await.unwrap().unwrap().metadata.resource_version.as_deref(), Some("1"));
}

#[tokio::test]
async fn creating_over_an_existing_secret_fails_with_already_exists() {
    let (client, mut handle) = mock_client();
    let api: Api<Secret> = Api::namespaced(client, "checkout");
    let task = tokio::spawn(async move { kube_apply::create_secret(&api, &key_secret()).await });
    let reply = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409,
                       "message": "secrets \"checkout-key\" already exists"});
    let (method, ..) = expect_request(&mut handle, 409, reply).await;
    assert_eq!(method, Method::POST);
    match task.await.unwrap() {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected 409 AlreadyExists, got {other:?}"),
    }
}

#[tokio::test]
async fn shard_delete_treats_not_found_as_done() {
    let (client, mut handle) = mock_client();
    let api: Api<Secret> = Api::namespaced(client, "infergate-system");
    let task =
        tokio::spawn(async move { kube_apply::delete_secret(&api, "infergate-cfg-policy-0011223344556677").await });
    let reply = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                       "message": "secrets \"infergate-cfg-policy-0011223344556677\" not found"});
    let (method, uri, _, _) = expect_request(&mut handle, 404, reply).await;
    assert_eq!(method, Method::DELETE);
    assert_eq!(uri, "/api/v1/namespaces/infergate-system/secrets/infergate-cfg-policy-0011223344556677?");
    assert!(!task.await.unwrap().expect("a missing shard counts as deleted"), "nothing was deleted");
}

#[tokio::test]
async fn other_delete_failures_are_reported() {
    let (client, mut handle) = mock_client();
    let api: Api<Secret> = Api::namespaced(client, "infergate-system");
    let task =
        tokio::spawn(async move { kube_apply::delete_secret(&api, "infergate-cfg-policy-0011223344556677").await });
    let reply = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": "forbidden"});
    expect_request(&mut handle, 403, reply).await;
    assert!(task.await.unwrap().is_err());
}
