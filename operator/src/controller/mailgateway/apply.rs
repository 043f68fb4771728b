//! Applies a MailGateway's children, each only when the live object, as the caches hold
//! it, lacks a wanted field (the gateway ConfigMap is compared by digest). A StatefulSet
//! change Kubernetes refuses to make in place (its volume claim templates, pod management
//! policy) is made by replacing the StatefulSet, its pods and volumes kept.

use super::super::context::{Context, Error};
use super::super::write::{apply_data_unless_cached, apply_unless_current};
use super::decide::Children;
use crate::api::MailRelay;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// What applying the children left to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    All,
    /// The StatefulSet is being replaced, for the reason given (the API server's words);
    /// the next reconcile creates it again, and it adopts the pods.
    Replacing(String),
    /// The StatefulSet is left as it is while this many domains have no MailRelay yet.
    Migrating(usize),
}

pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<Applied, Error> {
    child(ctx, namespace, &children.service, &ctx.gateway_services).await?;
    child(ctx, namespace, &children.headless, &ctx.gateway_services).await?;
    let config = ctx
        .gateway_relays
        .get(namespace, &children.config.name_any());
    let api = Api::<MailRelay>::namespaced(ctx.client.clone(), namespace);
    apply_data_unless_cached(&api, &children.config, config).await?;
    ctx.gateway_relays.written(&children.config);
    if let Some(name) = &children.remove_legacy_config {
        remove_legacy_config(ctx, namespace, name).await?;
    }
    child(
        ctx,
        namespace,
        &children.service_account,
        &ctx.gateway_accounts,
    )
    .await?;
    child(ctx, namespace, &children.role, &ctx.gateway_roles).await?;
    child(
        ctx,
        namespace,
        &children.role_binding,
        &ctx.gateway_bindings,
    )
    .await?;
    if let Some(budget) = &children.pod_disruption_budget {
        child(ctx, namespace, budget, &ctx.gateway_budgets).await?;
    }
    let name = children.stateful_set.name_any();
    let live = ctx
        .gateway_workloads
        .get(&ObjectRef::new(&name).within(namespace));
    if live
        .as_ref()
        .is_some_and(|live| live.metadata.deletion_timestamp.is_some())
    {
        return Ok(Applied::Replacing(
            "the StatefulSet is still being deleted".into(),
        ));
    }
    if live.is_some() && children.unmigrated > 0 {
        return Ok(Applied::Migrating(children.unmigrated));
    }
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace);
    match apply_unless_current(&api, &children.stateful_set, &[], live.as_deref()).await {
        Err(Error::Kube(kube::Error::Api(refusal))) if refuses_in_place(&refusal) => {
            let params = DeleteParams {
                // The pods run on, and the new StatefulSet adopts them: no mail waits.
                propagation_policy: Some(PropagationPolicy::Orphan),
                preconditions: live.and_then(|live| live.uid()).map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            api.delete(&name, &params).await?;
            tracing::info!(
                statefulset = name,
                refusal = refusal.message,
                "replacing the StatefulSet, its pods kept"
            );
            Ok(Applied::Replacing(refusal.message.clone()))
        }
        result => result.map(|_| Applied::All),
    }
}

/// Removes the gateway ConfigMap of an earlier version, which no running agent reads any
/// more: while it stayed, whoever may write ConfigMaps there could change what those
/// agents loaded.
async fn remove_legacy_config(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(
                configmap = name,
                "removed the gateway ConfigMap of an earlier version: every replica's agent reads the gateway's MailRelay"
            );
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Whether the API server refused a StatefulSet update because it changes fields it
/// keeps fixed (everything but replicas, the pod template, the update strategy and a few
/// more, depending on the version).
fn refuses_in_place(refusal: &kube::core::Status) -> bool {
    refusal.code == 422
        && refusal
            .message
            .contains("updates to statefulset spec for fields other than")
}

/// Applies `desired` unless the cache's copy already has it.
async fn child<K>(
    ctx: &Context,
    namespace: &str,
    desired: &K,
    cache: &Store<K>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    let live = cache.get(&ObjectRef::new(&desired.name_any()).within(namespace));
    apply_unless_current(&api, desired, &[], live.as_deref()).await?;
    Ok(())
}
