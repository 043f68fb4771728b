//! Writes that happen only when something changed: server-side apply of children that lack
//! a wanted field, and status applied only when it differs.

use super::context::{Context, Error, FIELD_MANAGER, ObjectKey};
use super::digests::{DataObject, Digest, managed_digest};
use super::status;
use crate::api::Condition;
use crate::api::conditions::Desired;
use crate::api::validate::quantity_nanos;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Server-side applies `desired` unless the live object already has every field of it,
/// so a steady-state resync makes no write request. `exact` names top-level fields that
/// must match exactly (a ConfigMap's `data`, where a removed key matters).
pub(crate) async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: &K,
    exact: &[&str],
) -> Result<(), Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let live = api.get_opt(&name).await?;
    apply_unless_current(api, desired, exact, live.as_ref()).await?;
    Ok(())
}

/// Like [`apply_if_changed`], compared with `live` as a cache holds it (`None`: absent).
/// Returns the applied object, or `None` when `live` already had everything. A cache that
/// lags behind costs at most one needless apply, which changes nothing.
pub(crate) async fn apply_unless_current<K>(
    api: &Api<K>,
    desired: &K,
    exact: &[&str],
    live: Option<&K>,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let mut foreign_keys = serde_json::Map::new();
    if let Some(live) = live {
        let (want, have) = (encode(desired)?, encode(live)?);
        if has_all(&want, &have, exact) {
            return Ok(None);
        }
        foreign_keys = keys_to_remove(&want, &have, exact);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(desired)).await?;
    tracing::info!(
        kind = K::kind(&Default::default()).as_ref(),
        name,
        "applied"
    );
    if foreign_keys.is_empty() {
        return Ok(Some(applied));
    }
    // Server-side apply leaves keys another manager added (a hand edit); an exact field
    // must not keep them.
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    Ok(Some(
        api.patch(
            &name,
            &params,
            &Patch::Merge(serde_json::Value::Object(foreign_keys)),
        )
        .await?,
    ))
}

/// Applies `desired` (a ConfigMap or MailRelay) unless `cached` (the live object's
/// [`managed_digest`]) shows it unchanged. When the cache shows a difference, the live
/// object is read, so that keys added by hand are found and removed.
pub(crate) async fn apply_data_unless_cached<K>(
    api: &Api<K>,
    desired: &K,
    cached: Option<Digest>,
) -> Result<(), Error>
where
    K: DataObject + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    match cached {
        None => {
            apply_unless_current(api, desired, &["data"], None).await?;
        }
        Some(live) if live != managed_digest(desired) => {
            apply_if_changed(api, desired, &["data"]).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

fn encode<K: Resource + Serialize>(object: &K) -> Result<serde_json::Value, Error> {
    serde_json::to_value(object).map_err(|source| Error::Encode {
        kind: std::any::type_name::<K>(),
        name: object.meta().name.clone().unwrap_or_default(),
        source,
    })
}

/// Whether `have` has every field of `want`, and the `exact` fields equal.
fn has_all(want: &serde_json::Value, have: &serde_json::Value, exact: &[&str]) -> bool {
    exact.iter().all(|field| want.get(field) == have.get(field)) && is_subset(want, have)
}

/// A merge patch that deletes the keys of each `exact` object field that `have` holds and
/// `want` does not.
fn keys_to_remove(
    want: &serde_json::Value,
    have: &serde_json::Value,
    exact: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    let mut patch = serde_json::Map::new();
    for field in exact {
        let Some(live) = have.get(field).and_then(|v| v.as_object()) else {
            continue;
        };
        let wanted = want.get(field).and_then(|v| v.as_object());
        let extra: serde_json::Map<_, _> = live
            .keys()
            .filter(|key| !wanted.is_some_and(|w| w.contains_key(*key)))
            .map(|key| (key.clone(), serde_json::Value::Null))
            .collect();
        if !extra.is_empty() {
            patch.insert(field.to_string(), serde_json::Value::Object(extra));
        }
    }
    patch
}

/// Whether every field of `want` is in `have` with the same value (`have` may hold more,
/// such as fields the server sets). Resource quantities (under `requests` and `limits`)
/// are compared as amounts: the server stores `0.5` as `500m`.
fn is_subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(want), Value::Object(have)) => want.iter().all(|(key, value)| {
            have.get(key).is_some_and(|live| match key.as_str() {
                "requests" | "limits" => same_quantities(value, live),
                _ => is_subset(value, live),
            })
        }),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (want, have) => want == have,
    }
}

/// Whether every quantity of `want` is in `have`, the same amount however spelt.
fn same_quantities(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    let (Some(want), Some(have)) = (want.as_object(), have.as_object()) else {
        return is_subset(want, have);
    };
    want.iter().all(|(name, amount)| {
        have.get(name).is_some_and(|live| {
            amount == live
                || matches!((amount.as_str(), live.as_str()), (Some(a), Some(b))
                    if quantity_nanos(a).is_ok_and(|a| quantity_nanos(b) == Ok(a)))
        })
    })
}

/// An object of a namespaced kind, as the writes here take it.
pub(crate) trait NamespacedObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
{
}

impl<K> NamespacedObject for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
{
}

/// A status with conditions, written by [`write_status`].
pub(crate) trait ConditionedStatus:
    Clone + Default + PartialEq + Serialize + DeserializeOwned
{
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>, observed_generation: Option<i64>);
}

macro_rules! conditioned_status {
    ($($status:ty),*) => {$(
        impl ConditionedStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<Condition>, observed_generation: Option<i64>) {
                self.conditions = conditions;
                self.observed_generation = observed_generation;
            }
        }
    )*};
}
conditioned_status!(
    crate::api::MailDomainStatus,
    crate::api::MailGatewayStatus,
    crate::api::dnsprovider::DNSProviderStatus
);

/// Writes status (server-side apply of the status subresource) only when it differs from
/// what is stored, and publishes an Event for each condition that changed status or reason.
pub(crate) async fn write_status<K, S>(
    object: &K,
    current: Option<&S>,
    ctx: &Context,
    desired: &[Desired],
    fill: impl FnOnce(&mut S),
) -> Result<(), Error>
where
    K: NamespacedObject,
    S: ConditionedStatus,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object
        .meta()
        .namespace
        .clone()
        .ok_or_else(|| Error::NotNamespaced(name.clone()))?;
    let key = status_key(object);
    let version = object.meta().resource_version.clone();
    // A status this operator wrote on the very version the cache still holds is the
    // current one: comparing with the older cached status would write it again.
    let current = ctx
        .written
        .written_on(&key, &version)
        .and_then(|written| serde_json::from_value::<S>(written).ok())
        .or_else(|| current.cloned())
        .unwrap_or_default();
    let generation = object.meta().generation;
    let now = Time(Timestamp::now());
    let mut next = current.clone();
    next.set_conditions(
        status::merge(current.conditions(), desired, generation, &now),
        generation,
    );
    fill(&mut next);
    if next == current {
        return Ok(());
    }
    apply_status(
        &Api::<K>::namespaced(ctx.client.clone(), &namespace),
        &name,
        &next,
    )
    .await?;
    if let Ok(written) = serde_json::to_value(&next) {
        ctx.written.remember(key, version, written);
    }
    ctx.publish(
        object,
        status::transitions(current.conditions(), next.conditions()),
    )
    .await;
    Ok(())
}

/// A write a reconcile called for failed with `error`: condition `type_` says so
/// (`ApplyFailed`, the API server's words, and `then`: what still holds), not only the log
/// and the retries. Best effort: a status that cannot be written either is logged. An
/// answer that only asks to try again (a conflict, throttling) leaves the condition as it
/// is: the retry passes, and Ready would only flap.
pub(crate) async fn report_apply_failure<K, S>(
    object: &K,
    current: Option<&S>,
    ctx: &Context,
    type_: &'static str,
    error: &Error,
    then: &str,
) where
    K: NamespacedObject,
    S: ConditionedStatus,
{
    if error.is_retry_request() {
        return;
    }
    let failed = Desired::new(
        type_,
        false,
        "ApplyFailed",
        format!("{}; {then}", error.readable()),
    );
    if let Err(status_error) = write_status(object, current, ctx, &[failed], |_| {}).await {
        tracing::warn!(%status_error, "the failure could not be written to status either");
    }
}

/// The key of an object's remembered status write: kind, namespace, name.
pub(crate) fn status_key<K: Resource<DynamicType = ()>>(object: &K) -> ObjectKey {
    (
        K::kind(&()).to_string(),
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

/// Server-side applies `status` as the whole status of object `name`: the operator's
/// field manager owns all of it, so a field left out is removed.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Adds `finalizer` to the object's finalizers unless it holds it already.
pub(crate) async fn hold_finalizer<K: NamespacedObject>(
    object: &K,
    ctx: &Context,
    namespace: &str,
    finalizer: &str,
) -> Result<(), Error> {
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.into());
    set_finalizers(object, ctx, namespace, finalizers).await
}

/// Removes `finalizer` from the object's finalizers; the others stay.
pub(crate) async fn release_finalizer<K: NamespacedObject>(
    object: &K,
    ctx: &Context,
    namespace: &str,
    finalizer: &str,
) -> Result<(), Error> {
    let remaining = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(object, ctx, namespace, remaining).await
}

/// Replaces an object's finalizers, guarded by the resource version the decision was made
/// on: a finalizer another controller added meanwhile is not dropped.
async fn set_finalizers<K>(
    object: &K,
    ctx: &Context,
    namespace: &str,
    finalizers: Vec<String>,
) -> Result<(), Error>
where
    K: NamespacedObject,
{
    patch_metadata(
        object,
        ctx,
        namespace,
        serde_json::json!({"finalizers": finalizers, "resourceVersion": object.resource_version()}),
    )
    .await
}

/// Merge-patches an object's own metadata (finalizers, annotations).
pub(crate) async fn patch_metadata<K>(
    object: &K,
    ctx: &Context,
    namespace: &str,
    metadata: serde_json::Value,
) -> Result<(), Error>
where
    K: NamespacedObject,
{
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": metadata})),
        )
        .await?;
    Ok(())
}

/// The namespace of an object that must have one.
pub(crate) fn namespace_of(object: &impl ResourceExt) -> Result<String, Error> {
    object
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(object.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn foreign_keys_of_exact_fields_are_removed() {
        let want = json!({"data": {"a": "1"}, "metadata": {"labels": {"x": "1"}}});
        let have = json!({"data": {"a": "2", "injected": "x"}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let patch = keys_to_remove(&want, &have, &["data"]);
        assert_eq!(
            serde_json::Value::Object(patch),
            json!({"data": {"injected": null}})
        );
    }

    #[test]
    fn subset_ignores_server_fields_but_not_changes() {
        let have = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1"}}, "data": {"k": "v"}});
        assert!(is_subset(
            &json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            &have
        ));
        assert!(!is_subset(
            &json!({"metadata": {"labels": {"x": "2"}}}),
            &have
        ));
        assert!(!is_subset(&json!({"data": {"k": "v", "new": "1"}}), &have));
        assert!(!is_subset(&json!({"list": [1]}), &json!({"list": [1, 2]})));
    }

    #[test]
    fn a_quantity_the_server_respelt_is_current_and_a_changed_one_is_not() {
        let stored = json!({"spec": {"containers": [{"resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "512Mi"}}}]}});
        let written = json!({"spec": {"containers": [{"resources": {
            "requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "0.5Gi"}}}]}});
        assert!(is_subset(&written, &stored));
        let raised = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "0.6"}}}]}});
        assert!(!is_subset(&raised, &stored));
        let added = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1"}}}]}});
        assert!(!is_subset(&added, &stored));
        // Elsewhere a string is a string: "1k" is not "1000".
        assert!(!is_subset(
            &json!({"data": {"n": "1k"}}),
            &json!({"data": {"n": "1000"}})
        ));
    }
}
