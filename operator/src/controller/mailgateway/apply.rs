//! Applies a MailGateway's children, each only when the live object lacks a wanted field.
//! The Services, the gateway ConfigMap and the StatefulSet are compared with the caches;
//! the agent's RBAC and the PodDisruptionBudget, which the operator does not watch, with
//! a read of each.

use super::super::context::Context;
use super::super::context::Error;
use super::super::write::{apply_if_changed, apply_unless_current};
use super::decide::Children;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<(), Error> {
    cached(
        ctx,
        namespace,
        &ctx.gateway_services,
        &children.service,
        &[],
    )
    .await?;
    cached(
        ctx,
        namespace,
        &ctx.gateway_services,
        &children.headless,
        &[],
    )
    .await?;
    cached(
        ctx,
        namespace,
        &ctx.gateway_configs,
        &children.config,
        &["data"],
    )
    .await?;
    read_first(ctx, namespace, &children.service_account).await?;
    read_first(ctx, namespace, &children.role).await?;
    read_first(ctx, namespace, &children.role_binding).await?;
    if let Some(budget) = &children.pod_disruption_budget {
        read_first(ctx, namespace, budget).await?;
    }
    cached(
        ctx,
        namespace,
        &ctx.gateway_workloads,
        &children.stateful_set,
        &[],
    )
    .await?;
    Ok(())
}

/// Applies `desired` unless the cache's copy already has it.
async fn cached<K>(
    ctx: &Context,
    namespace: &str,
    store: &Store<K>,
    desired: &K,
    exact: &[&str],
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let live = store.get(&ObjectRef::new(&desired.name_any()).within(namespace));
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    apply_unless_current(&api, desired, exact, live.as_deref()).await?;
    Ok(())
}

/// Applies `desired` unless the live object, read first, already has it.
async fn read_first<K>(ctx: &Context, namespace: &str, desired: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    apply_if_changed(&api, desired, &[]).await?;
    Ok(())
}
