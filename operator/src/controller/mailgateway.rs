//! MailGateway → StatefulSet, Services, PodDisruptionBudget, agent RBAC and the gateway
//! ConfigMap; status says how many replicas serve and how many domains they relay.

use super::context::{Context, Error};
use super::ownership::{Claim, strongest};
use super::placement::{claim_winner, gateway_key, namespace_allowed};
use super::write::{apply_if_changed, namespace_of, write_status};
use crate::api::conditions::{CONFIGURED, Desired, READY};
use crate::api::gateway::MailGatewayStatus;
use crate::api::validate::normalize_domain;
use crate::api::{MailDomain, MailGateway};
use crate::manifests::gateway::GatewayBuild;
use crate::render::gateway_configmap_data;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_secs(30);

pub async fn reconcile(gateway: Arc<MailGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&gateway, &ctx).await;
    ctx.metrics
        .observe_reconcile("MailGateway", started.elapsed(), result.as_ref().err());
    result
}

pub fn error_policy(gateway: Arc<MailGateway>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(mailgateway = %gateway.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[tracing::instrument(skip_all, fields(mailgateway = %gateway.name_any(), namespace = gateway.namespace().unwrap_or_default()))]
async fn reconcile_inner(gateway: &MailGateway, ctx: &Context) -> Result<Action, Error> {
    if gateway.metadata.deletion_timestamp.is_some() {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = namespace_of(gateway)?;
    let name = gateway.name_any();
    if let Err(problems) = gateway.spec.validate() {
        let desired = [Desired::new(
            READY,
            false,
            "InvalidSpec",
            problems.to_string(),
        )];
        write_status(gateway, gateway.status.as_ref(), ctx, &desired, |_| {}).await?;
        return Ok(Action::await_change());
    }
    let Some(owner) = gateway.controller_owner_ref(&()) else {
        return Err(Error::NotNamespaced(name));
    };
    let build = GatewayBuild {
        gateway,
        name: &name,
        namespace: &namespace,
        owner,
        default_image: &ctx.settings.gateway_image,
    };

    let served = served_domains(gateway, ctx);

    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let service = apply_if_changed(&services, &build.service(), &[]).await?;
    apply_if_changed(&services, &build.headless_service(), &[]).await?;
    let load_balancer_ip = gateway
        .spec
        .service
        .load_balancer_ip
        .as_deref()
        .or_else(|| load_balancer_address(&service))
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let config = gateway_configmap_data(&name, &gateway.spec, load_balancer_ip)?;
    apply_if_changed(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace),
        &build.config_map(config),
        &["data"],
    )
    .await?;
    apply_if_changed(
        &Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace),
        &build.service_account(),
        &[],
    )
    .await?;
    apply_if_changed(
        &Api::<Role>::namespaced(ctx.client.clone(), &namespace),
        &build.role(),
        &[],
    )
    .await?;
    apply_if_changed(
        &Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace),
        &build.role_binding(),
        &[],
    )
    .await?;
    if ctx.pdb_served {
        apply_if_changed(
            &Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace),
            &build.pod_disruption_budget(),
            &[],
        )
        .await?;
    }
    let stateful_set = apply_if_changed(
        &Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace),
        &build.stateful_set(),
        &[],
    )
    .await?;

    let ready_replicas = stateful_set
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let wanted = gateway.spec.replicas;
    let children = if ctx.pdb_served {
        "StatefulSet, Services, PodDisruptionBudget, agent RBAC and gateway ConfigMap applied"
    } else {
        "StatefulSet, Services, agent RBAC and gateway ConfigMap applied (no PodDisruptionBudget: policy/v1 is not served)"
    };
    let ready = if ready_replicas >= wanted {
        Desired::new(
            READY,
            true,
            "AllReplicasReady",
            format!("{ready_replicas}/{wanted} replicas ready"),
        )
    } else {
        Desired::new(
            READY,
            false,
            "ReplicasNotReady",
            format!("{ready_replicas}/{wanted} replicas ready"),
        )
    };
    let desired = [Desired::new(CONFIGURED, true, "Applied", children), ready];
    let domain_count = served.len() as i32;
    write_status(
        gateway,
        gateway.status.as_ref(),
        ctx,
        &desired,
        |status: &mut MailGatewayStatus| {
            status.ready_replicas = Some(ready_replicas);
            status.domains = Some(domain_count);
        },
    )
    .await?;
    Ok(Action::requeue(ctx.settings.resync))
}

fn load_balancer_address(service: &Service) -> Option<&str> {
    service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .as_deref()
}

/// The MailDomains this gateway relays: valid, from an allowed namespace, and the holder
/// of their domain's claim. One pass over the domains (claims grouped by domain), so a
/// gateway with many thousands of domains costs linear time.
fn served_domains(gateway: &MailGateway, ctx: &Context) -> Vec<Arc<MailDomain>> {
    let key = (gateway.namespace().unwrap_or_default(), gateway.name_any());
    let mut allowed_namespaces: HashMap<String, bool> = HashMap::new();
    let mut claims: BTreeMap<String, Vec<(Arc<MailDomain>, Claim)>> = BTreeMap::new();
    for domain in ctx.domains.state() {
        if gateway_key(&domain).as_ref() != Some(&key)
            || domain.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Ok(normalized) = normalize_domain(&domain.spec.domain) else {
            continue;
        };
        let namespace = domain.namespace().unwrap_or_default();
        let allowed_here = match allowed_namespaces.get(&namespace) {
            Some(known) => *known,
            None => {
                let labels = ctx
                    .namespaces
                    .get(&ObjectRef::new(&namespace))
                    .map(|ns| ns.metadata.labels.clone().unwrap_or_default());
                let verdict = namespace_allowed(gateway, &namespace, labels.as_ref());
                allowed_namespaces.insert(namespace.clone(), verdict);
                verdict
            }
        };
        if allowed_here {
            let claim = super::ownership::claim(gateway, &namespace, &normalized, &domain);
            claims.entry(normalized).or_default().push((domain, claim));
        }
    }
    // An invalid winner keeps its claim (its last config still serves) but is not counted.
    let mut served = vec![];
    for claimants in claims.values() {
        let holders = strongest(claimants.iter().map(|(d, claim)| (d.as_ref(), *claim)));
        let Some(winner) = claim_winner(holders) else {
            continue;
        };
        if winner.spec.validate().is_ok()
            && let Some((held, _)) = claimants
                .iter()
                .find(|(d, _)| std::ptr::eq(d.as_ref(), winner))
        {
            served.push(held.clone());
        }
    }
    served
}
