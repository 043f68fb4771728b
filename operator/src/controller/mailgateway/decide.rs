//! The MailGateway decision: its children, and the conditions that say whether they are
//! applied and every replica is ready. Pure.

use super::fetch::Inputs;
use crate::api::MailGateway;
use crate::api::conditions::{CONFIGURED, Desired, READY};
use crate::api::gateway::{NotificationMode, Notifications};
use crate::api::validate::parse_next_hop;
use crate::manifests::gateway::GatewayBuild;
use crate::render::{RenderError, gateway_configmap_data};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;

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
    pub config: ConfigMap,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    /// Only where `policy/v1` is served.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub stateful_set: StatefulSet,
    pub conditions: Vec<Desired>,
    pub served: usize,
    pub ready_replicas: i32,
    /// Where notifications go, for `status.notifications`.
    pub notifications: String,
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
    let config = match gateway_configmap_data(&name, &gateway.spec, inputs.load_balancer_ip) {
        Ok(config) => config,
        Err(error) => return render_failed(&error),
    };
    let (ready_replicas, wanted) = (inputs.ready_replicas, gateway.spec.replicas);
    let applied = if inputs.pdb_served {
        "StatefulSet, Services, PodDisruptionBudget, agent RBAC and gateway ConfigMap applied"
    } else {
        "StatefulSet, Services, agent RBAC and gateway ConfigMap applied (no PodDisruptionBudget: policy/v1 is not served)"
    };
    let replicas = format!("{ready_replicas}/{wanted} replicas ready");
    let ready = if ready_replicas >= wanted {
        Desired::new(READY, true, "AllReplicasReady", replicas)
    } else {
        Desired::new(READY, false, "ReplicasNotReady", replicas)
    };
    Decision::Apply(Box::new(Children {
        service: build.service(),
        headless: build.headless_service(),
        config: build.config_map(config),
        service_account: build.service_account(),
        role: build.role(),
        role_binding: build.role_binding(),
        pod_disruption_budget: inputs.pdb_served.then(|| build.pod_disruption_budget()),
        stateful_set: build.stateful_set(),
        conditions: vec![Desired::new(CONFIGURED, true, "Applied", applied), ready],
        served: inputs.served,
        ready_replicas,
        notifications: notifications_summary(&gateway.spec.notifications),
    }))
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
