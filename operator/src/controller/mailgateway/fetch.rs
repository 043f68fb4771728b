//! The inputs of a MailGateway's decision, all from caches: the domains it serves and
//! its live Service and StatefulSet.

use super::super::context::{Context, Error};
use super::super::ownership::{self, Claim, strongest};
use super::super::placement::{claim_winner, gateway_key, namespace_allowed};
use crate::api::validate::normalize_domain;
use crate::api::{MailDomain, MailGateway};
use crate::manifests::gateway::GatewayNames;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// How many MailDomains the gateway relays.
    pub served: usize,
    /// How many of them an operator before MailRelays relayed (`status.relayConfigMap`)
    /// and have no MailRelay yet.
    pub unmigrated: usize,
    /// The address of the gateway's load balancer, once it has one.
    pub load_balancer_ip: Option<IpAddr>,
    /// The gateway's StatefulSet as last seen: its ready replicas.
    pub ready_replicas: i32,
    /// Its replicas and pods; None before it exists.
    pub running: Option<Running>,
    /// Whether the gateway ConfigMap of an operator before the gateway's MailRelay is there.
    pub legacy_config: bool,
    /// Whether every replica runs the StatefulSet's current pod template.
    pub rolled_out: bool,
    /// Whether the server serves `policy/v1` PodDisruptionBudgets.
    pub pdb_served: bool,
    /// Image of gateways that do not name their own.
    pub default_image: String,
    /// The owner reference every child carries.
    pub owner: OwnerReference,
    /// What each replica's agent reports, by replica (pod) name.
    pub agents: Vec<super::super::agents::AgentReport>,
    /// What the agents ask of whoever reads their `/status`.
    pub agent_token: String,
    /// Why the StatefulSet could not create a pod, lately (its `FailedCreate` Event), while
    /// pods are missing.
    pub pods_refused: Option<String>,
}

/// The gateway's StatefulSet as last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// Its `spec.replicas`.
    pub replicas: i32,
    /// How many pods it has (`status.replicas`).
    pub pods: i32,
}

impl Running {
    fn of(stateful_set: &StatefulSet) -> Self {
        Self {
            replicas: stateful_set
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            pods: stateful_set.status.as_ref().map_or(0, |s| s.replicas),
        }
    }
}

/// The gateway's StatefulSet as the cache holds it.
fn stateful_set(gateway: &MailGateway, ctx: &Context) -> Option<Arc<StatefulSet>> {
    let names = GatewayNames::of(&gateway.name_any());
    ctx.gateway_workloads.get(
        &ObjectRef::<StatefulSet>::new(&names.workload)
            .within(&gateway.namespace().unwrap_or_default()),
    )
}

/// The gateway's StatefulSet's replicas and pods; None when it does not exist.
pub fn running(gateway: &MailGateway, ctx: &Context) -> Option<Running> {
    stateful_set(gateway, ctx).as_deref().map(Running::of)
}

pub fn fetch(gateway: &MailGateway, ctx: &Context) -> Result<Inputs, Error> {
    let owner = gateway
        .controller_owner_ref(&())
        .ok_or_else(|| Error::NotNamespaced(gateway.name_any()))?;
    let namespace = gateway.namespace().unwrap_or_default();
    let names = GatewayNames::of(&gateway.name_any());
    let service = ctx
        .gateway_services
        .get(&ObjectRef::new(&names.workload).within(&namespace));
    let stateful_set = stateful_set(gateway, ctx);
    let served = served_domains(gateway, ctx);
    Ok(Inputs {
        owner,
        served: served.len(),
        unmigrated: served
            .iter()
            .filter_map(|domain| domain.status.as_ref())
            .filter(|status| status.relay_config_map.is_some() && status.relay.is_none())
            .count(),
        load_balancer_ip: gateway
            .spec
            .service
            .load_balancer_ip
            .as_deref()
            .or_else(|| service.as_deref().and_then(load_balancer_address))
            .and_then(|ip| ip.parse().ok()),
        ready_replicas: stateful_set
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        running: stateful_set.as_deref().map(Running::of),
        legacy_config: ctx
            .gateway_configs
            .get(&namespace, &names.legacy_config)
            .is_some(),
        rolled_out: stateful_set.as_deref().is_some_and(rolled_out),
        pdb_served: ctx.pdb_served,
        default_image: ctx.settings.gateway_image.clone(),
        agents: Vec::new(),
        agent_token: String::new(),
        pods_refused: None,
    })
}

/// How long a `FailedCreate` Event of the StatefulSet says why pods are missing.
const REFUSAL_MEMORY: i64 = 30 * 60;

/// While the StatefulSet has fewer pods than it wants: the message of its latest
/// `FailedCreate` Event of the last half hour (the StatefulSet controller says nowhere
/// else why it could not create a pod, for example refused by Pod Security admission or
/// a quota). One list request, only in that state.
pub async fn pods_refused(
    gateway: &MailGateway,
    ctx: &Context,
    running: Option<Running>,
) -> Result<Option<String>, Error> {
    if running.is_none_or(|running| running.pods >= running.replicas) {
        return Ok(None);
    }
    let namespace = gateway.namespace().unwrap_or_default();
    let selector = format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={},reason=FailedCreate",
        GatewayNames::of(&gateway.name_any()).workload
    );
    let events = Api::<Event>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().fields(&selector))
        .await?;
    let now = Timestamp::now().as_second();
    Ok(events
        .items
        .iter()
        .filter_map(|event| {
            let at = event
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(event.event_time.as_ref().map(|t| t.0))?
                .as_second();
            (now - at <= REFUSAL_MEMORY).then_some((at, event))
        })
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, event)| event.message.clone()))
}

/// Whether the StatefulSet's controller has seen its current spec and every replica runs
/// its current revision.
fn rolled_out(stateful_set: &StatefulSet) -> bool {
    let (Some(spec), Some(status)) = (&stateful_set.spec, &stateful_set.status) else {
        return false;
    };
    let replicas = spec.replicas.unwrap_or(1);
    status.observed_generation.is_some()
        && status.observed_generation == stateful_set.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas.unwrap_or(0) >= replicas
        && status.replicas == replicas
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
            let claim = ownership::claim(gateway, &namespace, &normalized, &domain);
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
