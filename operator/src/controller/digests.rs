//! The objects of keys and values the operator writes (MailRelays, gateway ConfigMaps),
//! cached as one digest each of what the operator manages in them. A cached copy of each object cost
//! about 2.7 KB of maps and strings even with its data reduced to a digest: 26 MiB at
//! 10,000 domains, for an answer ("is the live object what we would apply?") that 32
//! bytes give.

use crate::api::MailRelay;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What the operator manages in an object, hashed: see [`managed_digest`].
pub type Digest = [u8; 32];

/// An object whose content is a `data` map of keys and values, as a ConfigMap's.
pub trait DataObject: Resource {
    fn data(&self) -> Option<&BTreeMap<String, String>>;
}

impl DataObject for ConfigMap {
    fn data(&self) -> Option<&BTreeMap<String, String>> {
        self.data.as_ref()
    }
}

impl DataObject for MailRelay {
    fn data(&self) -> Option<&BTreeMap<String, String>> {
        self.data.as_ref()
    }
}

/// Label and annotation keys the operator sets start with one of these; keys another
/// manager adds (a hand edit, a policy engine) do not change the digest, as they do not
/// stop the live object from having everything the operator wants.
const MANAGED_PREFIXES: [&str; 2] = ["app.kubernetes.io/", "mx-operator.io/"];

/// The digest of an object's name, namespace, managed labels and annotations, owner
/// references and data. The desired and the live object are hashed alike, so equal
/// digests mean that applying the desired object would change nothing.
pub fn managed_digest(object: &impl DataObject) -> Digest {
    let mut hasher = Sha256::new();
    // Lengths first, so that no two different inputs hash the same text.
    let mut field = |text: &str| {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    let meta = object.meta();
    field(meta.namespace.as_deref().unwrap_or_default());
    field(meta.name.as_deref().unwrap_or_default());
    let empty = BTreeMap::new();
    for map in [&meta.labels, &meta.annotations] {
        let managed: Vec<_> = map
            .as_ref()
            .unwrap_or(&empty)
            .iter()
            .filter(|(key, _)| MANAGED_PREFIXES.iter().any(|p| key.starts_with(p)))
            .collect();
        field(&managed.len().to_string());
        for (key, value) in managed {
            field(key);
            field(value);
        }
    }
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    field(&owners.len().to_string());
    for owner in owners {
        for part in [&owner.api_version, &owner.kind, &owner.name, &owner.uid] {
            field(part);
        }
        field(&format!(
            "{:?}/{:?}",
            owner.controller, owner.block_owner_deletion
        ));
    }
    match object.data() {
        None => field("no data"),
        Some(data) => {
            field(&data.len().to_string());
            for (key, value) in data {
                field(key);
                field(value);
            }
        }
    }
    hasher.finalize().into()
}

/// The digests of the objects one watch sees, by namespace and name; filled from that
/// watch's events before they trigger a reconcile.
#[derive(Default)]
pub struct DataDigests {
    state: Mutex<Digests>,
}

#[derive(Default)]
struct Digests {
    live: HashMap<String, Digest>,
    /// A relist in progress: what it has seen so far, swapped in when it completes.
    relisting: Option<HashMap<String, Digest>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn key_of(object: &impl DataObject) -> String {
    key(
        object.namespace().as_deref().unwrap_or_default(),
        &object.name_any(),
    )
}

impl DataDigests {
    /// Follows one event of the watch.
    pub fn observe<K: DataObject>(&self, event: &Event<K>) {
        let mut digests = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Apply(configmap) => {
                digests
                    .live
                    .insert(key_of(configmap), managed_digest(configmap));
            }
            Event::Delete(configmap) => {
                digests.live.remove(&key_of(configmap));
            }
            Event::Init => digests.relisting = Some(HashMap::new()),
            Event::InitApply(configmap) => {
                if let Some(relisting) = digests.relisting.as_mut() {
                    relisting.insert(key_of(configmap), managed_digest(configmap));
                }
            }
            Event::InitDone => {
                // Objects deleted while the watch was down leave with the old map.
                digests.live = digests.relisting.take().unwrap_or_default();
            }
        }
    }

    /// Records an object just written, when the watch has not delivered it yet: a
    /// reconcile that runs before its event (its own status write sends the domain round)
    /// then finds it instead of writing it again. Whatever the watch delivers wins.
    pub fn written(&self, object: &impl DataObject) {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .live
            .entry(key_of(object))
            .or_insert_with(|| managed_digest(object));
    }

    /// The names of the live objects in `namespace` that `wanted` picks.
    pub fn names_in(&self, namespace: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let prefix = key(namespace, "");
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .live
            .keys()
            .filter_map(|key| key.strip_prefix(&prefix))
            .filter(|name| wanted(name))
            .map(String::from)
            .collect()
    }

    /// The digest of the live object `namespace/name`; `None` when the watch has not
    /// seen it (absent, or not listed yet).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Digest> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .live
            .get(&key(namespace, name))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmap(value: serde_json::Value) -> ConfigMap {
        let mut base = json!({
            "metadata": {
                "name": "relay-example.com",
                "namespace": "mail",
                "labels": {"app.kubernetes.io/name": "mx-gateway", "mx-operator.io/relay-for": "edge"},
                "annotations": {"mx-operator.io/maildomain": "tenant/example"},
            },
            "data": {"relay_domains": "example.com OK\n", "transport": "t"},
        });
        crate::api::fixtures::merge(&mut base, value);
        serde_json::from_value(without_nulls(base)).unwrap()
    }

    /// A `null` in an override removes the key, as in a merge patch.
    fn without_nulls(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => map
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
            other => other,
        }
    }

    #[test]
    fn a_write_counts_until_the_watch_says_otherwise() {
        let digests = DataDigests::default();
        let written = configmap(json!({}));
        digests.written(&written);
        assert_eq!(
            digests.get("mail", "relay-example.com"),
            Some(managed_digest(&written))
        );
        // The watch's view wins, and a later write does not overwrite it.
        let edited = configmap(json!({"data": {"transport": "edited"}}));
        digests.observe(&Event::Apply(edited.clone()));
        digests.written(&written);
        assert_eq!(
            digests.get("mail", "relay-example.com"),
            Some(managed_digest(&edited))
        );
    }

    #[test]
    fn the_digest_changes_with_what_the_operator_manages_only() {
        let desired = managed_digest(&configmap(json!({})));
        let live_with_server_fields = configmap(json!({"metadata": {
            "uid": "1", "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"team": "mail"}, "annotations": {"note": "hand-made"},
        }}));
        assert_eq!(managed_digest(&live_with_server_fields), desired);
        for changed in [
            json!({"data": {"transport": "u"}}),
            json!({"data": {"injected": "x"}}),
            json!({"data": {"relay_domains": "example.com OK\ntransport", "transport": null, "": "t"}}),
            json!({"data": null}),
            json!({"metadata": {"name": "relay-other.com"}}),
            json!({"metadata": {"namespace": "other"}}),
            json!({"metadata": {"labels": {"mx-operator.io/relay-for": "core"}}}),
            json!({"metadata": {"labels": {"app.kubernetes.io/name": null}}}),
            json!({"metadata": {"annotations": {"mx-operator.io/maildomain": "tenant/other"}}}),
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "name": "example", "uid": "u"}
            ]}}),
        ] {
            assert_ne!(
                managed_digest(&configmap(changed.clone())),
                desired,
                "{changed}"
            );
        }
    }

    #[test]
    fn every_key_the_operator_sets_is_managed() {
        use crate::manifests::relay::{RelayTarget, mail_relay};
        let relay = mail_relay(
            &RelayTarget {
                gateway_namespace: "mail",
                gateway_name: "edge",
                domain: "example.com",
                owner_namespace: "tenant",
                owner_name: "example",
                owner_reference: None,
            },
            BTreeMap::new(),
        );
        let gateway_object = crate::api::fixtures::gateway(json!({}));
        let gateway = crate::manifests::gateway::GatewayBuild {
            gateway: &gateway_object,
            name: "edge",
            namespace: "mail",
            owner: Default::default(),
            default_image: "mx-operator/gateway:test",
        }
        .config_relay(BTreeMap::from([("main.cf".to_string(), "x".to_string())]));
        for meta in [relay.metadata, gateway.metadata] {
            for key in meta
                .labels
                .iter()
                .chain(&meta.annotations)
                .flat_map(|m| m.keys())
            {
                assert!(
                    MANAGED_PREFIXES.iter().any(|p| key.starts_with(p)),
                    "{key} of {:?} would be left out of the digest",
                    meta.name
                );
            }
        }
    }

    #[test]
    fn digests_follow_applies_deletes_and_relists() {
        let digests = DataDigests::default();
        let a = configmap(json!({}));
        let b = configmap(json!({"metadata": {"name": "relay-b.com"}}));
        digests.observe(&Event::Apply(a.clone()));
        assert_eq!(
            digests.get("mail", "relay-example.com"),
            Some(managed_digest(&a))
        );
        let edited = configmap(json!({"data": {"transport": "u"}}));
        digests.observe(&Event::Apply(edited.clone()));
        assert_eq!(
            digests.get("mail", "relay-example.com"),
            Some(managed_digest(&edited))
        );
        digests.observe(&Event::Delete(edited));
        assert_eq!(digests.get("mail", "relay-example.com"), None);

        digests.observe(&Event::Apply(a));
        digests.observe(&Event::<ConfigMap>::Init);
        digests.observe(&Event::InitApply(b.clone()));
        assert!(
            digests.get("mail", "relay-example.com").is_some(),
            "kept until the relist is done"
        );
        digests.observe(&Event::<ConfigMap>::InitDone);
        assert_eq!(digests.get("mail", "relay-example.com"), None);
        assert_eq!(digests.get("mail", "relay-b.com"), Some(managed_digest(&b)));
    }
}
