//! The MailGateway decision: its children, and the conditions that say whether they are
//! applied and every replica is ready. Pure.

use super::super::agents::AgentReport;
use super::fetch::Inputs;
use super::scale::scale;
use crate::api::MailGateway;
use crate::api::MailRelay;
use crate::api::conditions::{CONFIGURED, Desired, QUEUE_DRAINED, READY};
use crate::api::gateway::{DrainingDomain, NotificationMode, Notifications};
use crate::api::validate::parse_next_hop;
use crate::manifests::gateway::{GatewayBuild, GatewayNames};
use crate::render::{RenderError, gateway_configmap_data, keys};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// What one reconcile of a MailGateway does.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The spec is invalid: only `Ready` is written; the children stay as they are.
    Invalid(Desired),
    Apply(Box<Children>),
}

/// A gateway's children, in the order they are applied, and its conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub service: Service,
    pub headless: Service,
    /// main.cf and master.cf, for the agents.
    pub config: MailRelay,
    /// The ConfigMap that carried them for agents of an earlier version, to remove now:
    /// every replica runs the current pod template, whose agent reads `config`.
    pub remove_legacy_config: Option<String>,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    /// Only where `policy/v1` is served.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub stateful_set: StatefulSet,
    pub conditions: Vec<Desired>,
    pub served: usize,
    /// Domains still carried by an older operator's relay ConfigMap only: until they have
    /// their MailRelays, the pods (whose new agents read only MailRelays) are not replaced.
    pub unmigrated: usize,
    pub ready_replicas: i32,
    /// Where notifications go, for `status.notifications`.
    pub notifications: String,
    /// Whether replicas hold mail that must be delivered before the gateway settles: for
    /// domains they no longer relay, or as replicas a scale-in removes.
    pub draining: bool,
    /// For `status.draining`: the domains no longer relayed with mail still queued.
    pub draining_domains: Vec<DrainingDomain>,
}

pub fn decide(gateway: &MailGateway, inputs: &Inputs) -> Decision {
    if let Err(problems) = gateway.spec.validate() {
        return Decision::Invalid(Desired::new(
            READY,
            false,
            "InvalidSpec",
            problems.to_string(),
        ));
    }
    let name = gateway.name_any();
    let namespace = gateway.namespace().unwrap_or_default();
    let build = GatewayBuild {
        gateway,
        name: &name,
        namespace: &namespace,
        owner: inputs.owner.clone(),
        default_image: &inputs.default_image,
    };
    let mut config = match gateway_configmap_data(&name, &gateway.spec, inputs.load_balancer_ip) {
        Ok(config) => config,
        Err(error) => return render_failed(&error),
    };
    config.insert(keys::AGENT_TOKEN.into(), inputs.agent_token.clone());
    let (ready_replicas, wanted) = (inputs.ready_replicas, gateway.spec.replicas);
    let applied = if inputs.pdb_served {
        "StatefulSet, Services, PodDisruptionBudget, agent RBAC and gateway MailRelay applied"
    } else {
        "StatefulSet, Services, agent RBAC and gateway MailRelay applied (no PodDisruptionBudget: policy/v1 is not served)"
    };
    let replicas = format!("{ready_replicas}/{wanted} replicas ready");
    let ready = if ready_replicas >= wanted {
        Desired::new(READY, true, "AllReplicasReady", replicas)
    } else if let Some(refusal) = &inputs.pods_refused {
        Desired::new(
            READY,
            false,
            "PodsRefused",
            format!(
                "{replicas}: the StatefulSet's pods are refused ({refusal}); an admission policy (Pod Security, a quota, a LimitRange, a webhook) in namespace {namespace} stops them, see docs/operations.md"
            ),
        )
    } else {
        Desired::new(READY, false, "ReplicasNotReady", replicas)
    };
    let drained = queue_drained(&inputs.agents);
    let names = GatewayNames::of(&name);
    let scale = scale(
        wanted,
        inputs.running,
        &names.workload,
        &inputs.agents,
        &gateway.spec.queue.max_queue_lifetime,
    );
    Decision::Apply(Box::new(Children {
        service: build.service(),
        headless: build.headless_service(),
        config: build.config_relay(config),
        remove_legacy_config: (inputs.legacy_config && inputs.rolled_out)
            .then(|| names.legacy_config.clone()),
        service_account: build.service_account(),
        role: build.role(inputs.legacy_config && !inputs.rolled_out),
        role_binding: build.role_binding(),
        pod_disruption_budget: inputs
            .pdb_served
            .then(|| build.pod_disruption_budget(scale.replicas - wanted)),
        stateful_set: build.stateful_set(scale.replicas),
        draining: !drained.verdict.status || scale.waiting(),
        draining_domains: draining_domains(&inputs.agents),
        conditions: vec![
            Desired::new(CONFIGURED, true, "Applied", applied),
            ready,
            drained,
            scale.condition,
        ],
        served: inputs.served,
        unmigrated: inputs.unmigrated,
        ready_replicas,
        notifications: notifications_summary(&gateway.spec.notifications),
    }))
}

/// Most draining domains a `QueueDrained` message names.
const LISTED_DRAINING: usize = 10;

/// `QueueDrained`, from what every listed replica's agent reports: which domains it no
/// longer relays still have mail queued on it, and how much.
fn queue_drained(agents: &[AgentReport]) -> Desired {
    let mut draining: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for agent in agents {
        match &agent.status {
            Ok(report) => {
                for (domain, messages) in &report.draining {
                    draining
                        .entry(domain)
                        .or_default()
                        .push(format!("{messages} on {}", agent.replica));
                }
            }
            Err(why) => unreadable.push(format!("{} ({}): {why}", agent.replica, agent.address)),
        }
    }
    let mut parts: Vec<String> = draining
        .iter()
        .take(LISTED_DRAINING)
        .map(|(domain, counts)| format!("{domain}: {}", counts.join(", ")))
        .collect();
    if draining.len() > LISTED_DRAINING {
        parts.push(format!("{} more domains", draining.len() - LISTED_DRAINING));
    }
    if !draining.is_empty() {
        return Desired::new(
            QUEUE_DRAINED,
            false,
            "MailDraining",
            format!(
                "messages queued for domains no longer relayed here, still delivered to their primaries: {}{}",
                parts.join("; "),
                if unreadable.is_empty() {
                    String::new()
                } else {
                    format!("; unreadable: {}", unreadable.join("; "))
                }
            ),
        );
    }
    if !unreadable.is_empty() {
        return Desired::new(
            QUEUE_DRAINED,
            false,
            "StatusUnreadable",
            format!(
                "the agents of replicas {} could not be asked",
                unreadable.join("; ")
            ),
        );
    }
    let message = if agents.is_empty() {
        "no pod of the gateway has an address: no replica to ask".to_string()
    } else {
        format!(
            "{} replicas asked: none holds mail for a domain it no longer relays",
            agents.len()
        )
    };
    Desired::new(QUEUE_DRAINED, true, "NothingDraining", message)
}

/// The messages every asked replica still holds per domain it no longer relays, summed.
fn draining_domains(agents: &[AgentReport]) -> Vec<DrainingDomain> {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for report in agents.iter().filter_map(|agent| agent.status.as_ref().ok()) {
        for (domain, messages) in &report.draining {
            *sums.entry(domain).or_default() += messages;
        }
    }
    sums.into_iter()
        .map(|(domain, messages)| DrainingDomain {
            domain: domain.to_string(),
            messages,
        })
        .collect()
}

/// `status.notifications`: where the senders' notifications go, in words.
fn notifications_summary(notifications: &Notifications) -> String {
    let route = match (notifications.mode, &notifications.relay_host) {
        (NotificationMode::Off, _) => {
            return "not sent: notifications.mode is Off (each is discarded and logged)".into();
        }
        (NotificationMode::RelayHost, Some(host)) => format!(
            "to the senders through relay host {}",
            parse_next_hop(host).unwrap_or_else(|_| host.clone())
        ),
        _ => "to the senders' mail servers (MX lookup, outbound port 25)".into(),
    };
    let copies = match &notifications.postmaster {
        Some(postmaster) => format!("; copies of bounce notices to {postmaster}"),
        None => String::new(),
    };
    let warnings = match &notifications.delay_warning_time {
        Some(time) => format!("; delay warnings after {time}"),
        None => String::new(),
    };
    format!("{route}{copies}{warnings}")
}

/// validate() accepted the spec, so a render error is a bug of the operator's: said where
/// the user looks, with nothing applied (the children as they are keep running).
fn render_failed(error: &RenderError) -> Decision {
    Decision::Invalid(Desired::new(
        READY,
        false,
        "RenderFailed",
        format!(
            "the gateway configuration could not be rendered: {error}; nothing was changed (a bug in mx-operator: the spec passed validation)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use serde_json::json;

    fn inputs(ready_replicas: i32, pdb_served: bool) -> Inputs {
        Inputs {
            ready_replicas,
            pdb_served,
            owner: Default::default(),
            default_image: "localhost/mx-gateway:dev".into(),
            ..Default::default()
        }
    }

    fn children(decision: Decision) -> Children {
        match decision {
            Decision::Apply(children) => *children,
            Decision::Invalid(ready) => panic!("invalid: {ready:?}"),
        }
    }

    #[test]
    fn an_invalid_gateway_reports_and_builds_nothing() {
        let invalid = fixtures::gateway(json!({"spec": {"mxHostnames": []}}));
        let Decision::Invalid(ready) = decide(&invalid, &inputs(0, true)) else {
            panic!("an invalid spec is reported");
        };
        assert_eq!(ready.verdict.reason, "InvalidSpec");
        assert!(
            ready.verdict.message.contains("spec.mxHostnames"),
            "{ready:?}"
        );
    }

    #[test]
    fn ready_only_when_every_replica_is() {
        let gateway = fixtures::gateway(json!({"spec": {"replicas": 2}}));
        let ready = |count| children(decide(&gateway, &inputs(count, true))).conditions[1].clone();
        assert_eq!(ready(1).verdict.reason, "ReplicasNotReady");
        assert_eq!(ready(1).verdict.message, "1/2 replicas ready");
        assert_eq!(ready(2).verdict.reason, "AllReplicasReady");
    }

    #[test]
    fn pods_the_api_server_refuses_are_named_with_its_words() {
        let gateway = fixtures::gateway(json!({"spec": {"replicas": 2}}));
        let refused = Inputs {
            pods_refused: Some(
                "create Pod edge-0 in StatefulSet edge failed error: pods \"edge-0\" is forbidden: violates PodSecurity \"restricted:latest\"".into(),
            ),
            ..inputs(0, true)
        };
        let ready = children(decide(&gateway, &refused)).conditions[1].clone();
        assert_eq!(ready.verdict.reason, "PodsRefused");
        assert!(
            ready.verdict.message.starts_with(
                "0/2 replicas ready: the StatefulSet's pods are refused (create Pod edge-0"
            ) && ready.verdict.message.contains("violates PodSecurity"),
            "{}",
            ready.verdict.message
        );
        // Once every replica is ready, an old refusal says nothing.
        let since = Inputs {
            ready_replicas: 2,
            ..refused
        };
        let ready = children(decide(&gateway, &since)).conditions[1].clone();
        assert_eq!(ready.verdict.reason, "AllReplicasReady");
    }

    #[test]
    fn status_says_where_notifications_go() {
        let summary = |notifications: serde_json::Value| {
            let gateway = fixtures::gateway(json!({"spec": {"notifications": notifications}}));
            children(decide(&gateway, &inputs(1, true))).notifications
        };
        assert_eq!(
            summary(json!({})),
            "to the senders' mail servers (MX lookup, outbound port 25)"
        );
        assert_eq!(
            summary(json!({"mode": "RelayHost", "relayHost": "192.0.2.25",
                "postmaster": "pm@example.net", "delayWarningTime": "4h"})),
            "to the senders through relay host [192.0.2.25]; copies of bounce notices to pm@example.net; delay warnings after 4h"
        );
        assert!(summary(json!({"mode": "Off"})).starts_with("not sent"));
    }

    #[test]
    fn queue_drained_names_what_each_replica_still_holds() {
        let report = |replica: &str, draining: &[(&str, u64)]| AgentReport {
            replica: replica.into(),
            address: ([10, 0, 0, 1], 8080).into(),
            status: Ok(crate::agent::StatusReport {
                draining: draining.iter().map(|(d, n)| (d.to_string(), *n)).collect(),
                ..Default::default()
            }),
        };
        let none = queue_drained(&[report("edge-0", &[]), report("edge-1", &[])]);
        assert_eq!(
            (none.verdict.status, none.verdict.reason),
            (true, "NothingDraining")
        );
        assert!(none.verdict.message.starts_with("2 replicas asked"));
        assert!(queue_drained(&[]).verdict.status);

        let holding = [
            report("edge-0", &[("gone.example", 200)]),
            report("edge-1", &[("gone.example", 3), ("moved.example", 1)]),
        ];
        let sums: Vec<_> = draining_domains(&holding)
            .into_iter()
            .map(|d| (d.domain, d.messages))
            .collect();
        assert_eq!(
            sums,
            [("gone.example".into(), 203), ("moved.example".into(), 1)]
        );
        let held = queue_drained(&holding);
        assert_eq!(
            (held.verdict.status, held.verdict.reason),
            (false, "MailDraining")
        );
        assert!(
            held.verdict
                .message
                .ends_with("gone.example: 200 on edge-0, 3 on edge-1; moved.example: 1 on edge-1"),
            "{}",
            held.verdict.message
        );

        let mut silent = report("edge-2", &[]);
        silent.status = Err("no answer within 3s".into());
        let unknown = queue_drained(&[report("edge-0", &[]), silent]);
        assert_eq!(
            (unknown.verdict.status, unknown.verdict.reason),
            (false, "StatusUnreadable")
        );
        assert!(
            unknown
                .verdict
                .message
                .contains("edge-2 (10.0.0.1:8080): no answer within 3s")
        );
    }

    #[test]
    fn replicas_a_held_scale_in_waits_for_do_not_use_up_the_disruption_budget() {
        let budget = |wanted: i32, running: i32| {
            let gateway = fixtures::gateway(json!({"spec": {"replicas": wanted}}));
            let mut inputs = inputs(wanted, true);
            inputs.running = Some(super::super::fetch::Running {
                replicas: running,
                pods: running,
            });
            let children = children(decide(&gateway, &inputs));
            let spec = children.pod_disruption_budget.unwrap().spec.unwrap();
            (
                children.stateful_set.spec.unwrap().replicas,
                spec.max_unavailable,
            )
        };
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
        assert_eq!(budget(3, 3), (Some(3), Some(Int(1))));
        // Two replicas retire, unready, listed nowhere: held, and two more may be down.
        assert_eq!(budget(1, 3), (Some(3), Some(Int(3))));
    }

    #[test]
    fn a_pod_disruption_budget_only_where_policy_v1_is_served() {
        let gateway = fixtures::gateway(json!({}));
        assert!(
            children(decide(&gateway, &inputs(0, true)))
                .pod_disruption_budget
                .is_some()
        );
        let old = children(decide(&gateway, &inputs(0, false)));
        assert!(old.pod_disruption_budget.is_none());
        assert!(
            old.conditions[0]
                .verdict
                .message
                .contains("policy/v1 is not served")
        );
    }
}
