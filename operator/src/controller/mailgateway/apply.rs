//! Applies a MailGateway's children, each only when the live object, as the caches hold
//! it, lacks a wanted field (the gateway ConfigMap is compared by digest).

use super::super::context::{Context, Error};
use super::super::write::{apply_configmap_unless_cached, apply_unless_current};
use super::decide::Children;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<(), Error> {
    child(ctx, namespace, &children.service, &ctx.gateway_services).await?;
    child(ctx, namespace, &children.headless, &ctx.gateway_services).await?;
    let config = ctx
        .gateway_configs
        .get(namespace, &children.config.name_any());
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    apply_configmap_unless_cached(&api, &children.config, config).await?;
    ctx.gateway_configs.written(&children.config);
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
    child(
        ctx,
        namespace,
        &children.stateful_set,
        &ctx.gateway_workloads,
    )
    .await?;
    Ok(())
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
