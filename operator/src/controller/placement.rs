//! Which gateway a domain belongs to, who may attach to a gateway, who wins a contested
//! domain, and which objects a change of another object concerns. Pure, over the caches.

use crate::api::gateway::NamespacesFrom;
use crate::api::validate::{network_contains, normalize_domain};
use crate::api::{MailDomain, MailGateway};
use crate::manifests::relay::relay_owner;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The gateway (`namespace`, `name`) a MailDomain attaches to.
pub fn gateway_key(domain: &MailDomain) -> Option<(String, String)> {
    let namespace = domain
        .spec
        .gateway_ref
        .namespace
        .clone()
        .or_else(|| domain.namespace())?;
    Some((namespace, domain.spec.gateway_ref.name.clone()))
}

pub fn gateway_of(domain: &MailDomain) -> Option<ObjectRef<MailGateway>> {
    gateway_key(domain).map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
}

pub fn domains_of_gateway(
    domains: &Store<MailDomain>,
    gateway: &MailGateway,
) -> Vec<ObjectRef<MailDomain>> {
    let key = (gateway.namespace().unwrap_or_default(), gateway.name_any());
    domains
        .state()
        .iter()
        .filter(|domain| gateway_key(domain).as_ref() == Some(&key))
        .map(|domain| ObjectRef::from(domain.as_ref()))
        .collect()
}

pub fn domains_in_namespace(
    domains: &Store<MailDomain>,
    namespace: &str,
) -> Vec<ObjectRef<MailDomain>> {
    domains
        .state()
        .iter()
        .filter(|domain| domain.namespace().as_deref() == Some(namespace))
        .map(|domain| ObjectRef::from(domain.as_ref()))
        .collect()
}

/// A ConfigMap concerns the domains that read recipients from it.
pub fn domains_using_configmap(
    domains: &Store<MailDomain>,
    configmap: &ObjectMeta,
) -> Vec<ObjectRef<MailDomain>> {
    domains_referencing(domains, configmap, |domain, name| {
        let list = domain.spec.recipients.config_map_ref.as_ref();
        list.is_some_and(|r| r.name == name)
    })
}

/// The MailDomain a MailRelay belongs to: a hand edit of it is repaired.
pub fn domain_of_relay(relay: &ObjectMeta) -> Option<ObjectRef<MailDomain>> {
    relay_owner(relay).map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
}

/// A Secret concerns the domains that read recipients or a source's credentials from it.
pub fn domains_using_secret(
    domains: &Store<MailDomain>,
    secret: &ObjectMeta,
) -> Vec<ObjectRef<MailDomain>> {
    domains_referencing(domains, secret, |domain, name| {
        domain
            .spec
            .recipients
            .secret_names()
            .any(|used| used == name)
    })
}

pub fn domains_using_provider(
    domains: &Store<MailDomain>,
    provider: &ObjectMeta,
) -> Vec<ObjectRef<MailDomain>> {
    domains_referencing(domains, provider, |domain, name| {
        let dns = domain.spec.dns.as_ref();
        dns.is_some_and(|d| d.provider_ref.name == name)
    })
}

fn domains_referencing(
    domains: &Store<MailDomain>,
    object: &ObjectMeta,
    refers_to: impl Fn(&MailDomain, &str) -> bool,
) -> Vec<ObjectRef<MailDomain>> {
    let Some(name) = object.name.as_deref() else {
        return vec![];
    };
    domains
        .state()
        .iter()
        .filter(|domain| domain.metadata.namespace == object.namespace && refers_to(domain, name))
        .map(|domain| ObjectRef::from(domain.as_ref()))
        .collect()
}

/// Whether `gateway` accepts MailDomains from `domain_namespace`, whose labels are given
/// when the gateway selects namespaces by label.
pub fn namespace_allowed(
    gateway: &MailGateway,
    domain_namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let allowed = &gateway.spec.allowed_domains;
    match allowed.from {
        NamespacesFrom::Same => gateway.namespace().as_deref() == Some(domain_namespace),
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            let Some(selector) = allowed.selector.clone() else {
                return false;
            };
            let Ok(selector) = Selector::try_from(selector) else {
                return false;
            };
            namespace_labels.is_some_and(|labels| selector.matches(labels))
        }
    }
}

/// Whether the addresses of the host-name primary `host` are checked too: for domains
/// from other namespaces of a gateway without `allowedPrimaries` (whose host suffixes, when
/// set, are names the gateway's owner vouches for).
pub fn primary_addresses_checked(
    gateway: &MailGateway,
    domain_namespace: &str,
    host: &str,
) -> bool {
    gateway.spec.allowed_primaries.is_none()
        && gateway.namespace().as_deref() != Some(domain_namespace)
        && host.parse::<IpAddr>().is_err()
}

/// Why `gateway` does not deliver to the primary `host` (normalized) of a domain from
/// `domain_namespace`, if it does not: see `MailGatewaySpec::allowed_primaries`.
/// `addresses` are what a host name resolved to, where `primary_addresses_checked`.
pub fn primary_refused(
    gateway: &MailGateway,
    domain_namespace: &str,
    host: &str,
    addresses: &[IpAddr],
) -> Option<String> {
    let ip = host.parse::<IpAddr>().ok();
    match (&gateway.spec.allowed_primaries, ip) {
        (Some(allowed), Some(ip)) => (!allowed
            .networks
            .iter()
            .any(|network| network_contains(network, ip)))
        .then(|| format!("{host} is in none of spec.allowedPrimaries.networks")),
        (Some(allowed), None) => {
            let under = |suffix: &String| {
                normalize_domain(suffix)
                    .is_ok_and(|s| host == s || host.ends_with(&format!(".{s}")))
            };
            (!allowed.host_suffixes.iter().any(under))
                .then(|| format!("{host} ends in none of spec.allowedPrimaries.hostSuffixes"))
        }
        (None, _) if gateway.namespace().as_deref() == Some(domain_namespace) => None,
        (None, Some(ip)) => inside_the_host(ip).then(|| {
            format!(
                "{host} is a loopback, link-local, unspecified or multicast address, refused for domains from other namespaces"
            )
        }),
        (None, None) => {
            let internal = host == "localhost"
                || !host.contains('.')
                || [".svc", ".cluster.local", ".local", ".localhost"]
                    .iter()
                    .any(|suffix| host.ends_with(suffix));
            if internal {
                return Some(format!(
                    "{host} is a name inside the cluster or the host, refused for domains from other namespaces"
                ));
            }
            // Checked at every reconcile: a name moved inside later is refused at the next.
            addresses.iter().find(|ip| inside_the_host(**ip)).map(|ip| {
                format!(
                    "{host} resolves to {ip}, a loopback, link-local, unspecified or multicast address, refused for domains from other namespaces"
                )
            })
        }
    }
}

fn inside_the_host(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ["169.254.0.0/16", "fe80::/10"]
            .iter()
            .any(|network| network_contains(network, ip))
}

/// Among MailDomains claiming the same domain on the same gateway, the oldest wins (ties by
/// namespace and name, so every replica of the operator picks the same one).
pub fn claim_winner<'a>(
    claimants: impl IntoIterator<Item = &'a MailDomain>,
) -> Option<&'a MailDomain> {
    claimants.into_iter().min_by(|a, b| {
        let key = |d: &'a MailDomain| {
            (
                d.metadata.creation_timestamp.clone(),
                d.namespace(),
                d.name_any(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// Other MailDomains that claim the same (normalized) domain on the same gateway.
pub fn rivals(
    domains: &Store<MailDomain>,
    claims: &super::claims::ClaimIndex,
    domain: &MailDomain,
    normalized: &str,
) -> Vec<std::sync::Arc<MailDomain>> {
    let gateway = gateway_key(domain);
    claims
        .claimants(normalized)
        .iter()
        .filter_map(|key| domains.get(key))
        .filter(|other| other.metadata.uid != domain.metadata.uid)
        .filter(|other| normalize_domain(&other.spec.domain).is_ok_and(|d| d == normalized))
        .filter(|other| gateway_key(other) == gateway)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use serde_json::json;

    fn domain(namespace: &str, name: &str, created: &str, gateway_ns: Option<&str>) -> MailDomain {
        fixtures::domain(json!({
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created, "uid": format!("{namespace}/{name}")},
            "spec": {"gatewayRef": {"name": "edge", "namespace": gateway_ns}, "recipients": {"catchAll": true}},
        }))
    }

    fn gateway(from: &str, selector: Option<serde_json::Value>) -> MailGateway {
        fixtures::gateway(json!({"spec": {"allowedDomains": {"from": from, "selector": selector}}}))
    }

    #[test]
    fn gateway_defaults_to_the_domains_namespace() {
        assert_eq!(
            gateway_key(&domain("a", "x", "2026-01-01T00:00:00Z", None)),
            Some(("a".into(), "edge".into()))
        );
        assert_eq!(
            gateway_key(&domain("a", "x", "2026-01-01T00:00:00Z", Some("mail"))),
            Some(("mail".into(), "edge".into()))
        );
    }

    #[test]
    fn namespaces_allowed_by_mode() {
        assert!(namespace_allowed(&gateway("Same", None), "mail", None));
        assert!(!namespace_allowed(&gateway("Same", None), "tenant", None));
        assert!(namespace_allowed(&gateway("All", None), "tenant", None));
        let selecting = gateway(
            "Selector",
            Some(json!({"matchLabels": {"mail": "allowed"}})),
        );
        let allowed = BTreeMap::from([("mail".to_string(), "allowed".to_string())]);
        assert!(namespace_allowed(&selecting, "tenant", Some(&allowed)));
        assert!(!namespace_allowed(
            &selecting,
            "tenant",
            Some(&BTreeMap::new())
        ));
        assert!(!namespace_allowed(&selecting, "tenant", None));
    }

    #[test]
    fn primaries_a_gateway_delivers_to() {
        let open = fixtures::gateway(json!({}));
        let listed = fixtures::gateway(json!({"spec": {"allowedPrimaries": {
            "networks": ["203.0.113.0/24", "2001:db8::/32"], "hostSuffixes": ["Example.NET."]}}}));
        let only_networks =
            fixtures::gateway(json!({"spec": {"allowedPrimaries": {"networks": ["10.0.0.0/8"]}}}));
        // (gateway, domain namespace, primary host, refused)
        let cases = [
            // Unset: the gateway's own namespace may name anything.
            (&open, "mail", "127.0.0.1", false),
            (&open, "mail", "postfix.mail.svc.cluster.local", false),
            // Other namespaces: nothing inside the host or the cluster's names.
            (&open, "tenant", "127.0.0.1", true),
            (&open, "tenant", "::1", true),
            (&open, "tenant", "::ffff:127.0.0.1", true),
            (&open, "tenant", "169.254.169.254", true),
            (&open, "tenant", "fe80::1", true),
            (&open, "tenant", "0.0.0.0", true),
            (&open, "tenant", "224.0.0.1", true),
            (&open, "tenant", "localhost", true),
            (&open, "tenant", "kubernetes", true),
            (&open, "tenant", "kubernetes.default.svc", true),
            (&open, "tenant", "api.kube-system.svc.cluster.local", true),
            (&open, "tenant", "printer.local", true),
            (&open, "tenant", "mail.tenant.example", false),
            (&open, "tenant", "198.51.100.25", false),
            // Set: every namespace, only what is listed.
            (&listed, "mail", "127.0.0.1", true),
            (&listed, "tenant", "203.0.113.25", false),
            (&listed, "tenant", "2001:db8::25", false),
            (&listed, "tenant", "198.51.100.25", true),
            (&listed, "tenant", "example.net", false),
            (&listed, "tenant", "mx.example.net", false),
            (&listed, "tenant", "badexample.net", true),
            (&listed, "tenant", "example.net.evil.test", true),
            (&only_networks, "tenant", "10.1.2.3", false),
            (&only_networks, "tenant", "mx.example.net", true),
        ];
        for (gateway, namespace, host, refused) in cases {
            let why = primary_refused(gateway, namespace, host, &[]);
            assert_eq!(why.is_some(), refused, "{namespace} → {host}: {why:?}");
        }
        assert_eq!(
            primary_refused(&listed, "tenant", "198.51.100.25", &[]).as_deref(),
            Some("198.51.100.25 is in none of spec.allowedPrimaries.networks")
        );
    }

    #[test]
    fn a_tenants_host_name_primary_is_judged_by_its_addresses_too() {
        let open = fixtures::gateway(json!({}));
        let listed = fixtures::gateway(
            json!({"spec": {"allowedPrimaries": {"hostSuffixes": ["tenant.example"]}}}),
        );
        let host = "mail.tenant.example";
        assert!(primary_addresses_checked(&open, "tenant", host));
        assert!(!primary_addresses_checked(&open, "mail", host));
        assert!(!primary_addresses_checked(&open, "tenant", "198.51.100.25"));
        assert!(!primary_addresses_checked(&listed, "tenant", host));
        let public = ["198.51.100.25".parse().unwrap()];
        assert_eq!(primary_refused(&open, "tenant", host, &public), None);
        let looped = [
            "198.51.100.25".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
        ];
        assert_eq!(
            primary_refused(&open, "tenant", host, &looped).as_deref(),
            Some(
                "mail.tenant.example resolves to 127.0.0.2, a loopback, link-local, unspecified or multicast address, refused for domains from other namespaces"
            )
        );
    }

    #[test]
    fn oldest_claim_wins_then_namespace_then_name() {
        let old = domain("b", "x", "2026-01-01T00:00:00Z", Some("mail"));
        let new = domain("a", "x", "2026-02-01T00:00:00Z", Some("mail"));
        assert_eq!(
            claim_winner([&new, &old]).unwrap().namespace().as_deref(),
            Some("b")
        );
        let tie_a = domain("a", "y", "2026-01-01T00:00:00Z", Some("mail"));
        assert_eq!(
            claim_winner([&old, &tie_a]).unwrap().namespace().as_deref(),
            Some("a")
        );
    }
}
