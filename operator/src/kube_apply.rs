//! The only writes the operator makes, each one request: create of a key Secret, server-side apply of a Secret,
//! server-side apply of a `status`, delete of a Secret. All use the fixed field manager [`FIELD_MANAGER`]; the
//! applies use `force`, because the operator is the sole owner of these fields and must win over a stale owner
//! after a hand edit. A key Secret is created, never applied, the first time: an apply would take over an
//! object of that name that appeared in the meantime, a create fails with `409 AlreadyExists` instead.
//! The exact requests are pinned by `operator/tests/kube_requests.rs` (tower-test).
use infergate_crds::FIELD_MANAGER;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side-applies a Secret built by `compile`/`publish`. Server-owned metadata is dropped first: a
/// resourceVersion would turn the apply into a compare-and-swap, and managedFields must not be sent at all.
pub async fn apply_secret(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    let secret = without_server_metadata(secret);
    let name = secret.metadata.name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(&secret)).await
}

fn without_server_metadata(secret: &Secret) -> Secret {
    let mut secret = secret.clone();
    let meta = &mut secret.metadata;
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.managed_fields = None;
    meta.generation = None;
    secret
}

/// Creates a key Secret that does not exist yet (the first write for a policy). Fails with `409 AlreadyExists`
/// when an object of that name exists, whoever owns it: it is never taken over.
pub async fn create_secret(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.to_string()) };
    api.create(&params, &without_server_metadata(secret)).await
}

/// Server-side-applies `status` on the `/status` subresource. The body names only `apiVersion`, `kind` and
/// `status`, so the operator never claims (or clobbers) a `spec` field.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body)).await
}

/// Deletes a Secret; one that is already gone counts as deleted. Returns whether this call deleted it.
pub async fn delete_secret(api: &Api<Secret>, name: &str) -> Result<bool, kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
