//! The workload of a MailGateway: StatefulSet, Services, PodDisruptionBudget, the agent's
//! RBAC and the gateway's own MailRelay (its main.cf and master.cf).

use super::common_labels;
use crate::api::MailRelay;
use crate::api::gateway::{MailGateway, ServiceType, TrafficPolicy};
use crate::render::GATEWAY_CONFIG_LABEL;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const SMTP_PORT: i32 = 25;
/// The SMTP port's name, in the Postfix container and the Services.
pub const SMTP_PORT_NAME: &str = "smtp";
/// The label that names a gateway pod's gateway.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Where the agent serves /healthz, /readyz and /metrics.
pub const AGENT_PORT: i32 = 8080;
/// The agent's port's name, in the pod and in the headless Service.
pub const AGENT_PORT_NAME: &str = "agent";
/// The container that runs the agent (and `mx-operator agent-queue`).
pub const AGENT_CONTAINER: &str = "agent";
const QUEUE_VOLUME: &str = "queue";
const CONFIG_VOLUME: &str = "postfix-config";
/// The Postfix configuration folder the agent writes. Not /etc/postfix: the image's
/// dynamicmaps.cf there (which registers lmdb) must stay visible.
pub const POSTFIX_CONFIG_DIR: &str = "/etc/mx-gateway/postfix";
const TLS_VOLUME: &str = "tls";

/// Names of the objects of one gateway, derived from its name.
pub struct GatewayNames {
    pub workload: String,
    pub headless: String,
    pub agent: String,
    /// The MailRelay with the gateway's main.cf and master.cf. Named apart from every
    /// domain's (`relay-…`) and shard's (`recipients-…`).
    pub config: String,
    /// The ConfigMap that carried them before, read by agents of earlier versions.
    pub legacy_config: String,
}

impl GatewayNames {
    pub fn of(gateway_name: &str) -> Self {
        Self {
            workload: gateway_name.to_string(),
            headless: format!("{gateway_name}-headless"),
            agent: format!("{gateway_name}-agent"),
            config: format!("gateway-{gateway_name}"),
            legacy_config: format!("{gateway_name}-config"),
        }
    }

    /// The queue volume (PersistentVolumeClaim) of replica `ordinal`, as the StatefulSet
    /// controller names it.
    pub fn queue_volume(&self, ordinal: i32) -> String {
        format!("{QUEUE_VOLUME}-{}-{ordinal}", self.workload)
    }
}

/// Labels that select the pods of gateway `name`.
fn pod_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "mx-gateway".to_string(),
        ),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ])
}

/// The label selector of gateway `name`'s pods, for a list.
pub fn pod_selector(name: &str) -> String {
    selector(&pod_labels(name))
}

/// The label selector of gateway `name`'s queue volumes, for a list.
pub fn queue_volume_selector(name: &str) -> String {
    selector(&common_labels("queue", name))
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything needed to build a gateway's objects.
pub struct GatewayBuild<'a> {
    pub gateway: &'a MailGateway,
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub default_image: &'a str,
}

impl GatewayBuild<'_> {
    fn metadata(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(common_labels(component, self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    /// Labels that select the gateway's pods.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        pod_labels(self.name)
    }

    fn smtp_port(&self) -> ServicePort {
        ServicePort {
            name: Some(SMTP_PORT_NAME.into()),
            port: SMTP_PORT,
            target_port: Some(IntOrString::String(SMTP_PORT_NAME.into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    /// The MailRelay with main.cf and master.cf, rendered for the gateway: a kind only
    /// the operator may write, so that nobody with rights in the gateway's namespace (the
    /// aggregated `edit` role writes ConfigMaps) can change a Postfix parameter.
    pub fn config_relay(&self, data: BTreeMap<String, String>) -> MailRelay {
        let names = GatewayNames::of(self.name);
        let mut metadata = self.metadata(&names.config, "gateway-config");
        if let Some(labels) = metadata.labels.as_mut() {
            labels.insert(GATEWAY_CONFIG_LABEL.to_string(), self.name.to_string());
        }
        MailRelay::new(metadata, data)
    }

    /// The Service senders connect to.
    pub fn service(&self) -> Service {
        let spec = &self.gateway.spec.service;
        let type_ = match spec.type_ {
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::NodePort => "NodePort",
            ServiceType::ClusterIP => "ClusterIP",
        };
        // externalTrafficPolicy only exists for Services reachable from outside.
        let traffic_policy =
            (spec.type_ != ServiceType::ClusterIP).then(|| match spec.external_traffic_policy {
                TrafficPolicy::Local => "Local".to_string(),
                TrafficPolicy::Cluster => "Cluster".to_string(),
            });
        let mut metadata = self.metadata(&GatewayNames::of(self.name).workload, "smtp");
        if !spec.annotations.is_empty() {
            metadata.annotations = Some(spec.annotations.clone());
        }
        Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                external_traffic_policy: traffic_policy,
                load_balancer_ip: spec.load_balancer_ip.clone(),
                selector: Some(self.selector_labels()),
                ports: Some(vec![self.smtp_port()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The headless Service that gives each replica a stable DNS name (the StatefulSet's
    /// `serviceName`). The operator finds the replicas from their pods, not from it.
    pub fn headless_service(&self) -> Service {
        Service {
            metadata: self.metadata(&GatewayNames::of(self.name).headless, "smtp"),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(self.selector_labels()),
                ports: Some(vec![
                    self.smtp_port(),
                    ServicePort {
                        name: Some(AGENT_PORT_NAME.into()),
                        port: AGENT_PORT,
                        target_port: Some(IntOrString::String(AGENT_PORT_NAME.into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Keeps at least all but one of the replicas that serve up during voluntary
    /// disruptions. `retiring` replicas are not ready while a scale-in waits for them, and
    /// must not use up the budget (a node drain would stall for as long as they deliver).
    pub fn pod_disruption_budget(&self, retiring: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: self.metadata(&GatewayNames::of(self.name).workload, "smtp"),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(retiring.max(0).saturating_add(1))),
                selector: Some(LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.metadata(&GatewayNames::of(self.name).agent, "agent"),
            ..Default::default()
        }
    }

    /// The agent reads, in its own namespace, the MailRelays. It cannot write anything.
    /// While the ConfigMap of an earlier version is still there (`legacy_config`), agents
    /// of that version still running may read it too (by name: no other ConfigMap).
    pub fn role(&self, legacy_config: bool) -> Role {
        let names = GatewayNames::of(self.name);
        let read = || vec!["get".into(), "list".into(), "watch".into()];
        let mut rules = vec![PolicyRule {
            api_groups: Some(vec![crate::api::GROUP.into()]),
            resources: Some(vec!["mailrelays".into()]),
            verbs: read(),
            ..Default::default()
        }];
        if legacy_config {
            rules.push(PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                resource_names: Some(vec![names.legacy_config]),
                verbs: read(),
                ..Default::default()
            });
        }
        Role {
            metadata: self.metadata(&names.agent, "agent"),
            rules: Some(rules),
        }
    }

    pub fn role_binding(&self) -> RoleBinding {
        let agent = GatewayNames::of(self.name).agent;
        RoleBinding {
            metadata: self.metadata(&agent, "agent"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: agent.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: agent,
                namespace: Some(self.namespace.to_string()),
                ..Default::default()
            }]),
        }
    }

    /// The relays: Postfix and the agent in one pod, a persistent queue per replica.
    /// `replicas` is the spec's, or more while replicas that a scale-in removes still
    /// deliver their queues.
    pub fn stateful_set(&self, replicas: i32) -> StatefulSet {
        let names = GatewayNames::of(self.name);
        let spec = &self.gateway.spec;
        let image = spec
            .image
            .clone()
            .unwrap_or_else(|| self.default_image.to_string());
        let mounts = vec![
            mount(QUEUE_VOLUME, "/var/spool/postfix"),
            mount(CONFIG_VOLUME, POSTFIX_CONFIG_DIR),
        ];
        let mut postfix_mounts = mounts.clone();
        if spec.tls.is_some() {
            postfix_mounts.push(VolumeMount {
                name: TLS_VOLUME.into(),
                mount_path: "/etc/mx-gateway/tls".into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let agent_mounts = mounts;
        let postfix = Container {
            name: "postfix".into(),
            image: Some(image.clone()),
            args: Some(vec!["postfix".into()]),
            ports: Some(vec![ContainerPort {
                name: Some(SMTP_PORT_NAME.into()),
                container_port: SMTP_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            // Its probes ask the agent: /readyz says whether Postfix runs, and a connection
            // to port 25 every few seconds would fill the mail log. /healthz/postfix fails
            // once a running Postfix leaves a queue read without output for 20 s; 40 s of
            // failures (longer than an agent restart) restart this container, so a wedged
            // Postfix is restarted within about a minute and a half.
            liveness_probe: Some(Probe {
                failure_threshold: Some(4),
                ..http_probe("/healthz/postfix", 10)
            }),
            resources: Some(
                spec.resources
                    .clone()
                    .unwrap_or_else(|| requests("100m", "128Mi")),
            ),
            security_context: Some(postfix_security_context()),
            volume_mounts: Some(postfix_mounts),
            ..Default::default()
        };
        let agent = Container {
            name: AGENT_CONTAINER.into(),
            image: Some(image),
            args: Some(vec![
                "agent".into(),
                "--gateway".into(),
                // The image's entrypoint adds --config-dir.
                self.name.to_string(),
            ]),
            // The pod's name carries its ordinal, which a scale-in may be about to remove.
            env: Some(vec![
                pod_field("POD_NAMESPACE", "metadata.namespace"),
                pod_field("POD_NAME", "metadata.name"),
            ]),
            ports: Some(vec![ContainerPort {
                name: Some(AGENT_PORT_NAME.into()),
                container_port: AGENT_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(http_probe("/readyz", 2)),
            liveness_probe: Some(http_probe("/healthz", 10)),
            resources: Some(requests("20m", "32Mi")),
            security_context: Some(postfix_security_context()),
            volume_mounts: Some(agent_mounts),
            ..Default::default()
        };
        let mut volumes = vec![Volume {
            name: CONFIG_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }];
        if let Some(tls) = &spec.tls {
            volumes.push(Volume {
                name: TLS_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(tls.secret_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let queue_claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(QUEUE_VOLUME.into()),
                labels: Some(common_labels("queue", self.name)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: spec.queue.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(spec.queue.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut pod_labels = common_labels("smtp", self.name);
        pod_labels.extend(self.selector_labels());
        StatefulSet {
            metadata: self.metadata(&names.workload, "smtp"),
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some(names.headless),
                // A scale-in removes replicas once they have delivered their queues, and
                // by then they are not ready: OrderedReady would never remove a pod that
                // is not ready. (A rolling update still replaces one pod at a time and
                // waits for each to be ready: during a held scale-in it waits for it.)
                pod_management_policy: Some("Parallel".into()),
                selector: LabelSelector {
                    match_labels: Some(self.selector_labels()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(names.agent),
                        // The agent signals the Postfix master (`postfix reload`) across containers.
                        share_process_namespace: Some(true),
                        // Time to hand queued mail on before a replica goes away.
                        termination_grace_period_seconds: Some(120),
                        security_context: Some(PodSecurityContext {
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        containers: vec![postfix, agent],
                        volumes: Some(volumes),
                        ..Default::default()
                    }),
                },
                volume_claim_templates: Some(vec![queue_claim]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// An environment variable set from the pod's own `field_path` (the downward API).
fn pod_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// By number: the kubelet resolves a port name only among the probed container's own
/// ports, and the Postfix container's probes ask the agent's.
fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(AGENT_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        ..Default::default()
    }
}

fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..Default::default()
    }
}

/// Postfix's master starts as root and drops to the `postfix` user itself; it keeps only
/// the capabilities that needs, and never gains more.
fn postfix_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(
                [
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                    "KILL",
                    "NET_BIND_SERVICE",
                    "SETGID",
                    "SETUID",
                ]
                .map(String::from)
                .to_vec(),
            ),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    /// Gateway `edge` with exactly `spec`.
    fn gateway(spec: serde_json::Value) -> MailGateway {
        let mut gateway =
            crate::api::fixtures::gateway(serde_json::json!({"metadata": {"uid": "1234"}}));
        gateway.spec = serde_json::from_value(spec).unwrap();
        gateway
    }

    fn build(gateway: &MailGateway) -> GatewayBuild<'_> {
        GatewayBuild {
            gateway,
            name: "edge",
            namespace: "mail",
            owner: gateway.controller_owner_ref(&()).unwrap(),
            default_image: "mx-operator/gateway:test",
        }
    }

    #[test]
    fn load_balancer_keeps_client_addresses() {
        let gw = gateway(
            serde_json::json!({"mxHostnames": ["mx1.example.net"], "service": {"loadBalancerIP": "203.0.113.5"}}),
        );
        let service = build(&gw).service();
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.load_balancer_ip.as_deref(), Some("203.0.113.5"));
        assert_eq!(service.metadata.owner_references.unwrap()[0].uid, "1234");
    }

    #[test]
    fn cluster_ip_services_have_no_traffic_policy() {
        let gw = gateway(
            serde_json::json!({"mxHostnames": ["mx1.example.net"], "service": {"type": "ClusterIP"}}),
        );
        assert_eq!(
            build(&gw).service().spec.unwrap().external_traffic_policy,
            None
        );
    }

    #[test]
    fn stateful_set_has_queue_claims_probes_and_no_privilege_escalation() {
        let gw = gateway(serde_json::json!({
            "mxHostnames": ["mx1.example.net"], "replicas": 3,
            "queue": {"size": "20Gi", "storageClassName": "fast"},
            "tls": {"secretName": "mx-tls"},
        }));
        let sts = build(&gw).stateful_set(gw.spec.replicas);
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("edge-headless"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "20Gi"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("edge-agent"));
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["postfix", "agent"]);
        for container in &pod.containers {
            assert_eq!(container.image.as_deref(), Some("mx-operator/gateway:test"));
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.allow_privilege_escalation, Some(false));
        }
        // Postfix's port is never probed; the agent answers for the pod, and for whether
        // Postfix itself still answers.
        assert!(pod.containers[0].readiness_probe.is_none());
        let postfix_liveness = pod.containers[0].liveness_probe.as_ref().unwrap();
        assert_eq!(
            postfix_liveness.http_get.as_ref().unwrap().path.as_deref(),
            Some("/healthz/postfix")
        );
        let agent = &pod.containers[1];
        assert_eq!(
            agent
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        assert!(
            pod.volumes.unwrap().iter().any(|v| v
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref())
                == Some("mx-tls"))
        );
    }

    /// The kubelet looks a probe's named port up among the probed container's own ports
    /// only (a name another container declares fails: `strconv.Atoi: parsing "agent"`).
    #[test]
    fn every_probe_port_resolves_in_its_own_container() {
        let gw = gateway(serde_json::json!({"mxHostnames": ["mx1.example.net"]}));
        let pod = build(&gw)
            .stateful_set(1)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let mut probes = 0;
        for container in &pod.containers {
            let declared: Vec<(Option<&str>, i32)> = container
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.as_deref(), p.container_port))
                .collect();
            for probe in [&container.liveness_probe, &container.readiness_probe]
                .into_iter()
                .flatten()
            {
                probes += 1;
                match &probe.http_get.as_ref().unwrap().port {
                    IntOrString::Int(port) => assert!(*port > 0 && *port < 65536),
                    IntOrString::String(name) => assert!(
                        declared.iter().any(|(n, _)| *n == Some(name.as_str())),
                        "{}: probe port {name} is not one of its ports {declared:?}",
                        container.name
                    ),
                }
            }
        }
        assert_eq!(probes, 3);
    }

    #[test]
    fn agent_role_reads_the_relays_only_and_the_legacy_configmap_while_it_is_there() {
        let gw = gateway(serde_json::json!({"mxHostnames": ["mx1.example.net"]}));
        let granted = |legacy| -> Vec<(String, String, String)> {
            build(&gw)
                .role(legacy)
                .rules
                .unwrap()
                .iter()
                .map(|rule| {
                    (
                        rule.resources.clone().unwrap().join(","),
                        rule.resource_names.clone().unwrap_or_default().join(","),
                        rule.verbs.join(","),
                    )
                })
                .collect()
        };
        let read = "get,list,watch".to_string();
        let relays = ("mailrelays".to_string(), String::new(), read.clone());
        assert_eq!(granted(false), std::slice::from_ref(&relays));
        assert_eq!(
            granted(true),
            [relays, ("configmaps".into(), "edge-config".into(), read)]
        );
    }

    #[test]
    fn gateway_config_is_a_mail_relay_labelled_for_the_agent() {
        let gw = gateway(serde_json::json!({"mxHostnames": ["mx1.example.net"]}));
        let relay = build(&gw).config_relay(BTreeMap::from([("main.cf".into(), "x".into())]));
        assert_eq!(relay.metadata.name.as_deref(), Some("gateway-edge"));
        let labels = relay.metadata.labels.unwrap();
        assert_eq!(labels[GATEWAY_CONFIG_LABEL], "edge");
        // Not one of the domains' relays, which the agent loads as domains.
        assert!(!labels.contains_key(crate::render::RELAY_GATEWAY_LABEL));
    }
}
