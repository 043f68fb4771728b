//! Objects the integration tests apply: MailGateway and MailDomain fixtures as JSON, and
//! server-side apply of any namespaced object.

use crate::TestNamespace;
use kube::api::{Patch, PatchParams};
pub use mx_operator::api::fixtures::merge;
use mx_operator::api::fixtures::{domain_object, gateway_object};
use serde_json::{Value, json};

/// A namespaced kind the fixtures can apply.
pub trait Fixture:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
{
}

impl<K> Fixture for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
{
}

/// Server-side applies `object` (JSON of a namespaced kind) in the test namespace.
pub async fn apply<K: Fixture>(ns: &TestNamespace, object: Value) -> K {
    try_apply(ns, object).await.expect("apply")
}

/// Like `apply`, with the API server's refusal as the error (for objects it may refuse).
pub async fn try_apply<K: Fixture>(ns: &TestNamespace, object: Value) -> Result<K, kube::Error> {
    let object: K = serde_json::from_value(object).expect("fixture");
    let name = object.meta().name.clone().expect("fixture has a name");
    ns.api::<K>()
        .patch(
            &name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&object),
        )
        .await
}

/// Server-side applies an object of any kind, given as JSON with apiVersion and kind.
pub async fn apply_dynamic(ns: &TestNamespace, object: Value) {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_lowercase());
    let api: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    );
    let name = object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let object: DynamicObject = serde_json::from_value(object).expect("fixture");
    api.patch(
        &name,
        &PatchParams::apply("test-user").force(),
        &Patch::Apply(&object),
    )
    .await
    .expect("apply");
}

/// A MailGateway `name` (two replicas, MX host `<name>.mx.example.net`) with `extra`
/// merged into its spec. Its notifications are off unless `extra` routes them: a test
/// sends nothing beyond this machine, and `Direct` would look up the senders' MX.
pub fn gateway(name: &str, extra: Value) -> Value {
    let mut spec = json!({"notifications": {"mode": "Off"}});
    merge(&mut spec, extra);
    gateway_object(name, json!({"spec": spec}))
}

/// A MailDomain on gateway `edge` with alice as its one recipient and a primary at
/// 192.0.2.25 (documentation address: nothing answers), `extra` merged into its spec.
pub fn domain(name: &str, domain: &str, extra: Value) -> Value {
    let mut spec = json!({"primary": {"host": "192.0.2.25"}});
    merge(&mut spec, extra);
    domain_object(name, domain, json!({"spec": spec}))
}

/// Gateway `edge` and `count` MailDomains `d<i>` for `d<i>.example` on it, applied at once.
pub async fn edge_and_domains(ns: &TestNamespace, count: usize) {
    apply::<mx_operator::api::MailGateway>(ns, gateway("edge", json!({}))).await;
    futures::future::join_all((0..count).map(|i| {
        apply::<mx_operator::api::MailDomain>(
            ns,
            domain(&format!("d{i}"), &format!("d{i}.example"), json!({})),
        )
    }))
    .await;
}
