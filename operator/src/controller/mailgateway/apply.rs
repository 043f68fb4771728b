//! Applies a MailGateway's children, each only when the live object lacks a wanted field.
//! The Services, the gateway ConfigMap (by digest) and the StatefulSet are compared with
//! the caches;
//! the agent's RBAC and the PodDisruptionBudget, which the operator does not watch, with
//! a read of each.

use super::super::context::{Context, Error};
use super::super::write::{apply_configmap_unless_cached, apply_if_changed, apply_unless_current};
use super::decide::Children;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<(), Error> {
    let services = Some(&ctx.gateway_services);
    child(ctx, namespace, &children.service, &[], services).await?;
    child(ctx, namespace, &children.headless, &[], services).await?;
    let config = ctx
        .gateway_configs
        .get(&ObjectRef::new(&children.config.name_any()).within(namespace));
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
    apply_configmap_unless_cached(&api, &children.config, config.as_deref()).await?;
    child(ctx, namespace, &children.service_account, &[], None).await?;
    child(ctx, namespace, &children.role, &[], None).await?;
    child(ctx, namespace, &children.role_binding, &[], None).await?;
    if let Some(budget) = &children.pod_disruption_budget {
        child(ctx, namespace, budget, &[], None).await?;
    }
    let workloads = Some(&ctx.gateway_workloads);
    child(ctx, namespace, &children.stateful_set, &[], workloads).await?;
    Ok(())
}

/// Applies `desired` unless the live object has it: the cache's copy, or without a cache
/// the object read first.
async fn child<K>(
    ctx: &Context,
    namespace: &str,
    desired: &K,
    exact: &[&str],
    cache: Option<&Store<K>>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    match cache {
        Some(store) => {
            let live = store.get(&ObjectRef::new(&desired.name_any()).within(namespace));
            apply_unless_current(&api, desired, exact, live.as_deref()).await?;
        }
        None => {
            apply_if_changed(&api, desired, exact).await?;
        }
    }
    Ok(())
}
