//! A gateway's ready replicas, from the Endpoints the API server keeps for its headless
//! Service: the pods the SMTP probe asks one by one. Read from a cache (a watch of the
//! gateways' Endpoints), so a drift cycle costs no API request.

use super::check::{Replica, ReplicaSource};
use k8s_openapi::api::core::v1::Endpoints;
use kube::runtime::reflector::{ObjectRef, Store};
use std::net::{IpAddr, SocketAddr};

/// The SMTP port's name in the gateway's Services.
const SMTP_PORT_NAME: &str = "smtp";

/// The Endpoints of the gateways' Services, as a reflector keeps them.
pub struct EndpointsReplicas(pub Store<Endpoints>);

impl ReplicaSource for EndpointsReplicas {
    fn ready(&self, namespace: &str, service: &str) -> Vec<Replica> {
        self.0
            .get(&ObjectRef::new(service).within(namespace))
            .map(|endpoints| ready_replicas(&endpoints))
            .unwrap_or_default()
    }
}

/// The ready addresses of the SMTP port (not-ready ones are listed apart by the API server
/// and left out), named by their pod.
pub fn ready_replicas(endpoints: &Endpoints) -> Vec<Replica> {
    replicas_at(endpoints, SMTP_PORT_NAME, false)
}

/// Every replica's agent, ready or not: a replica that is not ready may still hold mail.
pub fn agents(endpoints: &Endpoints) -> Vec<Replica> {
    replicas_at(endpoints, crate::manifests::gateway::AGENT_PORT_NAME, true)
}

fn replicas_at(endpoints: &Endpoints, port_name: &str, not_ready_too: bool) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let Some(port) = subset
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| u16::try_from(p.port).ok())
        else {
            continue;
        };
        let not_ready = subset.not_ready_addresses.iter().flatten();
        let addresses = subset
            .addresses
            .iter()
            .flatten()
            .chain(not_ready.filter(|_| not_ready_too));
        for address in addresses {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                continue;
            };
            let name = address
                .target_ref
                .as_ref()
                .and_then(|target| target.name.clone())
                .unwrap_or_else(|| address.ip.clone());
            replicas.push(Replica {
                name,
                address: SocketAddr::new(ip, port),
            });
        }
    }
    replicas.sort();
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_addresses_of_the_smtp_port_named_by_their_pod() {
        let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge-headless", "namespace": "mail"},
            "subsets": [{
                "addresses": [
                    {"ip": "10.244.0.9", "targetRef": {"kind": "Pod", "name": "edge-1"}},
                    {"ip": "10.244.0.8", "targetRef": {"kind": "Pod", "name": "edge-0"}},
                    {"ip": "10.244.0.7"},
                ],
                "notReadyAddresses": [{"ip": "10.244.0.10", "targetRef": {"kind": "Pod", "name": "edge-2"}}],
                "ports": [{"name": "agent", "port": 8080}, {"name": "smtp", "port": 25}],
            }, {
                "addresses": [{"ip": "10.244.0.11"}],
                "ports": [{"name": "other", "port": 2525}],
            }],
        }))
        .unwrap();
        let found: Vec<(String, String)> = ready_replicas(&endpoints)
            .into_iter()
            .map(|r| (r.name, r.address.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                ("10.244.0.7".to_string(), "10.244.0.7:25".to_string()),
                ("edge-0".into(), "10.244.0.8:25".into()),
                ("edge-1".into(), "10.244.0.9:25".into()),
            ]
        );
        assert!(ready_replicas(&Endpoints::default()).is_empty());
        // The agents: not-ready replicas too, at their own port.
        let agents: Vec<String> = agents(&endpoints)
            .into_iter()
            .map(|r| format!("{} {}", r.name, r.address))
            .collect();
        assert_eq!(
            agents,
            [
                "10.244.0.7 10.244.0.7:8080",
                "edge-0 10.244.0.8:8080",
                "edge-1 10.244.0.9:8080",
                "edge-2 10.244.0.10:8080"
            ]
        );
    }
}
