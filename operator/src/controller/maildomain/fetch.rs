//! Everything a MailDomain's decision depends on, gathered before anything is decided:
//! from the operator's caches, plus the reads no cache holds (the referenced recipient
//! lists, the synced sources when a sync is due, and an ownership proof's TXT record while
//! the claim is unproved).

use super::super::context::{Context, Error};
use super::super::digests::Digest;
use super::super::ownership;
use super::super::placement::{
    gateway_key, namespace_allowed, primary_addresses_checked, primary_refused, rivals,
};
use super::super::sources::{Reach, Source, SourceSecret, read_source_secret};
use crate::api::gateway::NamespacesFrom;
use crate::api::validate::{normalize_domain, normalize_host};
use crate::api::{DNSProvider, KeyRef, MailDomain, MailGateway};
use crate::drift::Observation;
use crate::manifests::gateway::GatewayNames;
use crate::recipients::extract::SourceError;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The inputs of one decision.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// The domain's own namespace.
    pub namespace: String,
    /// The gateway (`namespace`, `name`) the domain names, and the gateway when it exists.
    pub gateway_key: (String, String),
    pub gateway: Option<Arc<MailGateway>>,
    /// Labels of the domain's and its rivals' namespaces, where the gateway admits
    /// namespaces by label (a namespace that does not exist has none).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Other MailDomains claiming the same domain at the same gateway.
    pub rivals: Vec<Arc<MailDomain>>,
    /// The TXT strings at the ownership proof's record (`Err`: the lookup failed); looked
    /// up only while the gateway asks for a proof this claim has not shown yet.
    pub ownership_txt: Option<Result<Vec<String>, String>>,
    /// The referenced recipient lists, in spec order (ConfigMap, then Secret).
    pub lists: Vec<ListSource>,
    /// The sources the operator syncs (directory, HTTP): their lists in force and last
    /// attempts.
    pub sources: Vec<super::super::sources::SourceState>,
    /// Whether drift checks run, and what the last one saw of this domain.
    pub drift_on: bool,
    pub observation: Option<Observation>,
    /// How often every domain is looked at again.
    pub resync: Duration,
    /// The MailRelay at the domain's gateway, as the cache holds it.
    pub relay_live: Option<Digest>,
    /// Whether every replica of the gateway runs the pod template last applied (its
    /// StatefulSet rolled out): no agent of an operator before MailRelays is left to read a
    /// relay ConfigMap.
    pub agents_read_relays: bool,
    /// The DNSProvider the domain names, if it exists.
    pub provider: Option<Arc<DNSProvider>>,
    /// The addresses of the gateway's Service (cluster IP, load balancer), as last seen.
    pub gateway_addresses: Vec<String>,
    /// What gateways hold for the domain: its own gateway's queue, and what gateways that
    /// no longer relay it still hold.
    pub held: HeldMail,
    /// What a tenant's host-name primary resolves to, where its addresses are checked;
    /// empty when it does not resolve (its mail then waits in the queue).
    pub primary_addresses: Vec<std::net::IpAddr>,
}

/// Mail gateways hold for a domain, as their agents last reported it.
#[derive(Clone, Debug, Default)]
pub struct HeldMail {
    /// For `status.queue`.
    pub queue: Option<crate::api::domain::QueuedMail>,
    /// For `status.draining`.
    pub draining: Vec<crate::api::domain::DrainingAt>,
}

/// A referenced recipient list: its object's metadata and the key's text, if they exist.
#[derive(Clone, Debug)]
pub struct ListSource {
    pub kind: &'static str,
    pub reference: KeyRef,
    /// `None`: the object does not exist; else its metadata and what its key holds.
    pub found: Option<(ObjectMeta, ListText)>,
}

/// What the key of a referenced list holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListText {
    Text(String),
    /// No such key, or its bytes are not UTF-8.
    Unreadable,
    /// UTF-16 (a Secret's bytes that start with its byte-order mark).
    Utf16,
    /// A Secret without the label that lets recipient sources read it.
    NotOptedIn,
}

impl ListText {
    /// A Secret's bytes: UTF-8 text, or why not.
    fn of_bytes(bytes: &[u8]) -> Self {
        if crate::recipients::without_bom(bytes).is_err() {
            return Self::Utf16;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_string()),
            Err(_) => Self::Unreadable,
        }
    }
}

pub async fn fetch(domain: &MailDomain, ctx: &Context) -> Result<Inputs, Error> {
    let namespace = domain
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(domain.name_any()))?;
    let gateway_key = gateway_key(domain).ok_or_else(|| Error::NotNamespaced(domain.name_any()))?;
    let (gateway_namespace, gateway_name) = &gateway_key;
    let gateway = ctx
        .gateways
        .get(&ObjectRef::<MailGateway>::new(gateway_name).within(gateway_namespace));
    let normalized = normalize_domain(&domain.spec.domain).ok();
    let mut inputs = Inputs {
        namespace: namespace.clone(),
        gateway_key: gateway_key.clone(),
        drift_on: ctx.drift.is_some(),
        observation: ctx
            .drift
            .as_ref()
            .and_then(|d| d.observation(&ObjectRef::from_obj(domain))),
        resync: ctx.settings.resync,
        held: normalized
            .as_deref()
            .map(|normalized| HeldMail {
                queue: ctx.queues.at(&gateway_key, normalized),
                draining: ctx.draining.at(normalized, |(namespace, name)| {
                    ctx.gateways
                        .get(&ObjectRef::new(name).within(namespace))
                        .is_some()
                }),
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    // An invalid spec or a missing gateway is decided from this much; nothing is read
    // from the network for it.
    let (Some(gateway), Some(normalized), true) =
        (gateway, normalized, domain.spec.validate().is_ok())
    else {
        return Ok(inputs);
    };
    inputs.rivals = rivals(&ctx.domains, &ctx.claims, domain, &normalized);
    if gateway.spec.allowed_domains.from == NamespacesFrom::Selector {
        let asked = inputs.rivals.iter().filter_map(|r| r.namespace());
        for asked in asked.chain([namespace.clone()]) {
            let key = ObjectRef::new(&asked);
            if let Some(found) = ctx.namespaces.get(&key) {
                let labels = found.metadata.labels.clone().unwrap_or_default();
                inputs.namespace_labels.insert(asked, labels);
            }
        }
    }
    if let Some(proof) = ownership::required(&gateway, &namespace, &normalized)
        && !ownership::proved(domain, &proof)
    {
        let found = ctx
            .network
            .resolver
            .txt_any(&ctx.settings.resolvers, &proof.record)
            .await;
        inputs.ownership_txt = Some(found);
    }
    let primary = normalize_host(&domain.spec.primary.host).unwrap_or_default();
    if primary_addresses_checked(&gateway, &namespace, &primary) {
        match ctx
            .network
            .resolver
            .addresses_any(&ctx.settings.resolvers, &primary)
            .await
        {
            Ok(addresses) => inputs.primary_addresses = addresses,
            Err(error) => {
                tracing::debug!(%error, %primary, "the primary's addresses could not be looked up")
            }
        }
    }
    inputs.lists = lists(domain, ctx, &namespace).await?;
    // Sources are asked only for domains the gateway admits, and only where they may be.
    let labels = inputs.namespace_labels.get(&namespace);
    if namespace_allowed(&gateway, &namespace, labels) {
        let mut refusals = vec![];
        for source in Source::named(&domain.spec.recipients) {
            let refused = source_refused(&gateway, &namespace, &source).await;
            refusals.push((source.kind(), refused));
        }
        let reach = Reach {
            client: ctx.client.clone(),
            network: ctx.network.clone(),
            domains: ctx.domains.clone(),
            secrets: ctx.secret_versions.clone(),
        };
        inputs.sources = ctx.sources.states(domain, &reach, &normalized, |source| {
            let refused = refusals.iter().find(|(kind, _)| *kind == source.kind());
            refused.and_then(|(_, refused)| refused.clone())
        });
    }
    inputs.relay_live = ctx.relays.get(
        gateway_namespace,
        &crate::manifests::relay::relay_name(&normalized),
    );
    inputs.agents_read_relays = ctx
        .gateway_workloads
        .get(&ObjectRef::new(&GatewayNames::of(gateway_name).workload).within(gateway_namespace))
        // None while a StatefulSet is replaced, its pods (and their agents) kept.
        .is_some_and(|workload| rolled_out(&workload));
    inputs.provider = super::dns::provider(domain, ctx);
    inputs.gateway_addresses = ctx
        .gateway_services
        .get(&ObjectRef::new(&GatewayNames::of(gateway_name).workload).within(gateway_namespace))
        .map(|service| service_addresses(&service))
        .unwrap_or_default();
    inputs.gateway = Some(gateway);
    Ok(inputs)
}

/// Why the operator may not ask `source` for a domain of `namespace`, if it may not:
/// credentials that would travel in the clear, or (for domains from other namespaces than
/// the gateway's) a host the primaries' rules refuse, checked by the addresses the system
/// resolver gives, as the connection will use them.
async fn source_refused(
    gateway: &MailGateway,
    namespace: &str,
    source: &Source,
) -> Option<SourceError> {
    if let Some(insecure) = source.insecure_credentials() {
        return Some(insecure);
    }
    if gateway.namespace().as_deref() == Some(namespace) {
        return None;
    }
    let Some((host, port)) = url_host(source.url()) else {
        return Some(SourceError::NotAllowed("the URL names no host".into()));
    };
    let host = normalize_host(&host).unwrap_or(host);
    let mut addresses = vec![];
    if primary_addresses_checked(gateway, namespace, &host) {
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        match tokio::time::timeout(Duration::from_secs(5), lookup).await {
            Ok(Ok(found)) => addresses = found.map(|address| address.ip()).collect(),
            // What cannot be checked is not asked.
            _ => {
                return Some(SourceError::NotAllowed(format!(
                    "{host} could not be resolved to check where it points"
                )));
            }
        }
    }
    primary_refused(gateway, namespace, &host, &addresses).map(SourceError::NotAllowed)
}

/// The host (without brackets) and port of a source URL.
fn url_host(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        "ldaps" => 636,
        _ => 389,
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Whether every pod of `workload` runs its current template.
fn rolled_out(workload: &StatefulSet) -> bool {
    let Some(status) = &workload.status else {
        return false;
    };
    let wanted = workload.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation >= workload.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas.unwrap_or_default() >= wanted
        && status.replicas == wanted
}

fn service_addresses(service: &Service) -> Vec<String> {
    let spec = service.spec.iter().flat_map(|spec| {
        spec.cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .chain(spec.external_ips.iter().flatten())
    });
    let ingress = service
        .status
        .iter()
        .filter_map(|status| status.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .flat_map(|ingress| ingress.ip.iter().chain(ingress.hostname.iter()));
    spec.chain(ingress)
        .filter(|address| address.as_str() != "None")
        .cloned()
        .collect()
}

/// The referenced lists, read from the API server: caching every ConfigMap and Secret of
/// the cluster with its data would put every credential into the operator's memory.
async fn lists(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
) -> Result<Vec<ListSource>, Error> {
    let spec = &domain.spec.recipients;
    let mut lists = vec![];
    if let Some(reference) = &spec.config_map_ref {
        let found = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&reference.name)
            .await?
            .map(|cm| {
                let text = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key).cloned());
                (
                    cm.metadata,
                    text.map_or(ListText::Unreadable, ListText::Text),
                )
            });
        lists.push(ListSource {
            kind: "ConfigMap",
            reference: reference.clone(),
            found,
        });
    }
    if let Some(reference) = &spec.secret_ref {
        let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
        let read = read_source_secret(&api, &ctx.secret_versions, namespace, &reference.name);
        let found = match read.await? {
            SourceSecret::Missing => None,
            SourceSecret::NotOptedIn(metadata) => Some((metadata, ListText::NotOptedIn)),
            SourceSecret::Readable(secret) => {
                let text = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key))
                    .map_or(ListText::Unreadable, |bytes| ListText::of_bytes(&bytes.0));
                Some((secret.metadata, text))
            }
        };
        lists.push(ListSource {
            kind: "Secret",
            reference: reference.clone(),
            found,
        });
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_urls_host_and_port_are_read_as_a_connection_would() {
        let table = [
            (
                "https://lists.example.com/u.txt",
                Some(("lists.example.com", 443)),
            ),
            (
                "http://lists.example.com:8080/u?x=1",
                Some(("lists.example.com", 8080)),
            ),
            ("ldap://127.0.0.1", Some(("127.0.0.1", 389))),
            ("ldaps://ldap.example.com", Some(("ldap.example.com", 636))),
            ("http://[::1]:8080/u", Some(("::1", 8080))),
            (
                "https://[::ffff:127.0.0.1]/u",
                Some(("::ffff:127.0.0.1", 443)),
            ),
            ("http://user:pw@10.0.0.1/u", Some(("10.0.0.1", 80))),
            ("http://lists.example.com:notaport/u", None),
            ("http:///u", None),
            ("lists.example.com/u", None),
        ];
        for (url, expected) in table {
            let found = url_host(url);
            let found = found.as_ref().map(|(host, port)| (host.as_str(), *port));
            assert_eq!(found, expected, "{url}");
        }
    }

    #[test]
    fn a_secrets_bytes_are_text_utf16_or_unreadable() {
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a@example.com\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let cases: [(&[u8], ListText); 5] = [
            (b"a@example.com\n", ListText::Text("a@example.com\n".into())),
            (
                b"\xEF\xBB\xBFa@example.com\n",
                ListText::Text("\u{feff}a@example.com\n".into()),
            ),
            (&utf16le, ListText::Utf16),
            (b"\xFE\xFF\x00a", ListText::Utf16),
            (b"a@example.com\xFF\n", ListText::Unreadable),
        ];
        for (bytes, want) in cases {
            assert_eq!(ListText::of_bytes(bytes), want, "{bytes:?}");
        }
    }
}
