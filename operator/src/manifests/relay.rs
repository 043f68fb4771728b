//! The MailRelay of one domain: what the gateway's agents load into Postfix.

use super::common_labels;
use crate::api::MailRelay;
use crate::render::RELAY_GATEWAY_LABEL;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Names the MailDomain (`namespace/name`) a MailRelay belongs to; cross-namespace
/// children cannot carry an owner reference, so this is how they are traced back.
pub const OWNER_ANNOTATION: &str = "mx-operator.io/maildomain";

/// Name of the MailRelay of `domain` (normalized; punycode is a valid object name).
pub fn relay_name(domain: &str) -> String {
    format!("relay-{domain}")
}

/// The domain of the MailRelay named `name` (see [`relay_name`]).
pub fn relayed_domain(name: &str) -> &str {
    name.strip_prefix("relay-").unwrap_or_default()
}

/// Name of shard `index` of `count` of `domain`'s recipients (see `render::shards`). No
/// relay's name has this shape: those start with `relay-`.
pub fn shard_name(domain: &str, index: usize, count: usize) -> String {
    format!("recipients-{index}-of-{count}.{domain}")
}

/// Whether `name` is the name of one of `domain`'s shards, of any count.
pub fn is_shard_of(name: &str, domain: &str) -> bool {
    name.strip_prefix("recipients-")
        .and_then(|rest| rest.strip_suffix(domain))
        .and_then(|place| place.strip_suffix('.'))
        .and_then(|place| place.split_once("-of-"))
        .is_some_and(|(index, count)| {
            index.parse::<usize>().is_ok() && count.parse::<usize>().is_ok()
        })
}

/// Where a MailRelay lives and whom it belongs to.
pub struct RelayTarget<'a> {
    pub gateway_namespace: &'a str,
    pub gateway_name: &'a str,
    pub domain: &'a str,
    pub owner_namespace: &'a str,
    pub owner_name: &'a str,
    /// Set when the MailDomain lives in the gateway's namespace.
    pub owner_reference: Option<OwnerReference>,
}

/// The MailRelay holding `data` from the renderer.
pub fn mail_relay(target: &RelayTarget, data: BTreeMap<String, String>) -> MailRelay {
    named_relay(target, relay_name(target.domain), data)
}

/// The shard MailRelays holding `shards`' data from the renderer, by index.
pub fn shard_relays(target: &RelayTarget, shards: Vec<BTreeMap<String, String>>) -> Vec<MailRelay> {
    let count = shards.len();
    shards
        .into_iter()
        .enumerate()
        .map(|(index, data)| named_relay(target, shard_name(target.domain, index, count), data))
        .collect()
}

fn named_relay(target: &RelayTarget, name: String, data: BTreeMap<String, String>) -> MailRelay {
    let mut labels = common_labels("relay-config", target.gateway_name);
    labels.insert(
        RELAY_GATEWAY_LABEL.to_string(),
        target.gateway_name.to_string(),
    );
    MailRelay::new(
        ObjectMeta {
            name: Some(name),
            namespace: Some(target.gateway_namespace.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                OWNER_ANNOTATION.to_string(),
                format!("{}/{}", target.owner_namespace, target.owner_name),
            )])),
            owner_references: target.owner_reference.clone().map(|r| vec![r]),
            ..Default::default()
        },
        data,
    )
}

/// The owning MailDomain (`namespace`, `name`) of a MailRelay, from its annotation.
pub fn relay_owner(relay: &ObjectMeta) -> Option<(String, String)> {
    let owner = relay.annotations.as_ref()?.get(OWNER_ANNOTATION)?;
    let (namespace, name) = owner.split_once('/')?;
    Some((namespace.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_is_labelled_and_traceable() {
        let target = RelayTarget {
            gateway_namespace: "mail",
            gateway_name: "edge",
            domain: "xn--bcher-kva.example",
            owner_namespace: "tenant-a",
            owner_name: "buecher",
            owner_reference: None,
        };
        let cm = mail_relay(&target, BTreeMap::from([("k".into(), "v".into())]));
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some("relay-xn--bcher-kva.example")
        );
        assert_eq!(cm.metadata.namespace.as_deref(), Some("mail"));
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()[RELAY_GATEWAY_LABEL],
            "edge"
        );
        assert_eq!(
            relay_owner(&cm.metadata),
            Some(("tenant-a".into(), "buecher".into()))
        );
        assert!(cm.metadata.owner_references.is_none());
    }

    #[test]
    fn shard_names_are_recognized_by_their_domain_only() {
        let name = shard_name("example.com", 3, 8);
        assert_eq!(name, "recipients-3-of-8.example.com");
        assert!(is_shard_of(&name, "example.com"));
        for (other, domain) in [
            (name.as_str(), "le.com"),
            (name.as_str(), "com"),
            ("recipients-3-of-8.sub.example.com", "example.com"),
            ("relay-example.com", "example.com"),
            ("recipients-x-of-8.example.com", "example.com"),
        ] {
            assert!(!is_shard_of(other, domain), "{other} of {domain}");
        }
    }
}
