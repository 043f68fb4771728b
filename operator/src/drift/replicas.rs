//! A gateway's replicas, from its pods: the ready ones the SMTP probe asks one by one, and
//! every one with an address whose agent the operator asks what it holds. Read from a
//! cache (a label-selected watch of the gateways' pods), so a drift cycle costs no API
//! request. Pods rather than Endpoints: core v1 Endpoints are deprecated since Kubernetes
//! 1.33, and a cluster may stop keeping them.

use super::check::{Replica, ReplicaSource};
use crate::manifests::gateway::{AGENT_PORT_NAME, INSTANCE_LABEL, SMTP_PORT_NAME};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::net::{IpAddr, SocketAddr};

/// The gateways' pods, as a reflector keeps them.
pub struct PodReplicas(pub Store<Pod>);

impl ReplicaSource for PodReplicas {
    fn ready(&self, namespace: &str, gateway: &str) -> Vec<Replica> {
        ready_replicas(&gateway_pods(&self.0, namespace, gateway))
    }
}

/// The pods of gateway `gateway` in `namespace`.
pub fn gateway_pods(pods: &Store<Pod>, namespace: &str, gateway: &str) -> Vec<Pod> {
    pods.state()
        .iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(gateway)
        })
        .map(|pod| (**pod).clone())
        .collect()
}

/// The ready pods at their SMTP port: ready, not being deleted.
pub fn ready_replicas(pods: &[Pod]) -> Vec<Replica> {
    let ready = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_ready(pod));
    replicas_at(ready, SMTP_PORT_NAME)
}

/// Every pod's agent, ready or not: a replica that is not ready may still hold mail. Pods
/// without an address (not started, or ended) have no agent to ask, and a pod being
/// deleted is left out, as Endpoints leave it out: its agent stops answering as it goes,
/// and a scale-in that had let it go must not count it as a replica to wait for again.
pub fn agents(pods: &[Pod]) -> Vec<Replica> {
    let running = pods.iter().filter(|pod| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
    });
    replicas_at(running, AGENT_PORT_NAME)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Each pod's address at the container port named `port_name`; a pod that names no such
/// port (not a gateway replica of this version) is left out.
fn replicas_at<'a>(pods: impl Iterator<Item = &'a Pod>, port_name: &str) -> Vec<Replica> {
    let mut replicas: Vec<Replica> = pods
        .filter_map(|pod| {
            let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            let port = pod
                .spec
                .iter()
                .flat_map(|spec| &spec.containers)
                .flat_map(|container| container.ports.iter().flatten())
                .find(|port| port.name.as_deref() == Some(port_name))
                .and_then(|port| u16::try_from(port.container_port).ok())?;
            Some(Replica {
                name: pod.name_any(),
                address: SocketAddr::new(ip, port),
            })
        })
        .collect();
    replicas.sort();
    replicas
}

/// What the operator keeps of a gateway pod: its name, namespace and labels, its
/// containers' named ports, its address, phase and readiness. The rest (volumes,
/// environment, managed fields) would only take memory.
pub fn trimmed(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    if let Some(spec) = pod.spec.as_mut() {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|container| k8s_openapi::api::core::v1::Container {
                name: container.name,
                ports: container.ports,
                ..Default::default()
            })
            .collect();
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers,
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            conditions: status.conditions.take().map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .collect()
            }),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "mail",
                         "labels": {"app.kubernetes.io/instance": "edge"}},
            "spec": {"containers": [
                {"name": "agent", "ports": [{"name": "agent", "containerPort": 8080}]},
                {"name": "postfix", "ports": [{"name": "smtp", "containerPort": 25}]},
            ]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn listed(replicas: Vec<Replica>) -> Vec<String> {
        replicas
            .into_iter()
            .map(|r| format!("{} {}", r.name, r.address))
            .collect()
    }

    #[test]
    fn the_probe_asks_ready_pods_and_the_operator_every_agent_of_a_pod_that_stays() {
        let mut deleting = pod("edge-3", Some("10.244.0.12"), true, "Running");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [
            pod("edge-1", Some("10.244.0.9"), true, "Running"),
            pod("edge-0", Some("10.244.0.8"), true, "Running"),
            pod("edge-2", Some("10.244.0.10"), false, "Running"),
            deleting,
            pod("edge-4", None, false, "Pending"),
            pod("edge-5", Some("10.244.0.13"), false, "Failed"),
        ];
        assert_eq!(
            listed(ready_replicas(&pods)),
            ["edge-0 10.244.0.8:25", "edge-1 10.244.0.9:25"]
        );
        assert_eq!(
            listed(agents(&pods)),
            [
                "edge-0 10.244.0.8:8080",
                "edge-1 10.244.0.9:8080",
                "edge-2 10.244.0.10:8080"
            ]
        );
        assert!(ready_replicas(&[]).is_empty());
        // A pod that names no SMTP port is not probed.
        let mut unnamed = pod("edge-9", Some("10.244.0.20"), true, "Running");
        unnamed.spec.as_mut().unwrap().containers.truncate(1);
        assert!(ready_replicas(&[unnamed.clone()]).is_empty());
        assert_eq!(listed(agents(&[unnamed])), ["edge-9 10.244.0.20:8080"]);
    }

    #[test]
    fn ports_come_from_the_pod_and_a_trimmed_pod_keeps_what_is_read() {
        let mut moved = pod("edge-0", Some("10.244.0.8"), true, "Running");
        let spec = moved.spec.as_mut().unwrap();
        spec.containers[0].ports.as_mut().unwrap()[0].container_port = 18080;
        spec.containers[0].env = Some(vec![Default::default()]);
        moved.metadata.managed_fields = Some(vec![Default::default()]);
        let before = (ready_replicas(&[moved.clone()]), agents(&[moved.clone()]));
        trimmed(&mut moved);
        assert_eq!(
            (ready_replicas(&[moved.clone()]), agents(&[moved.clone()])),
            before
        );
        assert_eq!(listed(before.1), ["edge-0 10.244.0.8:18080"]);
        assert!(moved.metadata.managed_fields.is_none());
        assert!(moved.spec.unwrap().containers[0].env.is_none());
    }
}
