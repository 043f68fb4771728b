//! What every reconcile shares: settings, caches, the API client, the Event recorder, and
//! the error type.

use super::claims::ClaimIndex;
use super::digests::DataDigests;
pub use super::error::Error;
use super::listed::Listed;
use super::metrics::Metrics;
use super::status::Transition;
use crate::api::{DNSProvider, MailDomain, MailGateway};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "mx-operator";
/// Holds a MailDomain until its children outside its namespace (and DNS records) are gone.
pub const FINALIZER: &str = "mx-operator.io/cleanup";

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of gateways that do not name their own.
    pub gateway_image: String,
    /// How often every object is looked at again although nothing changed.
    pub resync: Duration,
    /// MailDomains reconciled at the same time. Unbounded, thousands of reconciles pile up
    /// on a slow API server: memory grows and requests time out and are retried.
    pub concurrency: u16,
    /// Drift checks (DNS, SMTP probes, departure); `None` turns them off.
    pub drift: Option<crate::drift::DriftSettings>,
    /// Where ownership proofs (TXT records) are looked up; none, no proof is found.
    pub resolvers: Vec<std::net::SocketAddr>,
    /// How often the gateways' agents are asked what their queues hold, for the
    /// MailDomains' `status.queue`; `None` turns it off.
    pub queue_poll: Option<Duration>,
    /// How recipient sources are synced beside the reconciles.
    pub sources: super::sources::SyncSettings,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub domains: Store<MailDomain>,
    pub gateways: Store<MailGateway>,
    /// Whether the server serves `policy/v1` PodDisruptionBudgets (Kubernetes 1.21+).
    pub pdb_served: bool,
    /// Namespaces' labels, for gateways that admit MailDomains by namespace selector.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets' names and resource versions (no data, labels or annotations): a synced
    /// source is asked again when a Secret it is read with changes.
    pub secret_versions: Store<PartialObjectMeta<Secret>>,
    /// DNSProviders, read when a domain's MX record is published.
    pub providers: Store<DNSProvider>,
    /// The MailRelays as the operator last saw them (as digests), compared before each
    /// write.
    pub relays: Arc<DataDigests>,
    /// The gateways' children, likewise.
    pub gateway_services: Store<Service>,
    /// The gateways' pods, trimmed: their replicas and agents.
    pub gateway_pods: Store<k8s_openapi::api::core::v1::Pod>,
    /// Gateway ConfigMaps of operators before the gateway's MailRelay, removed once
    /// every replica's agent reads the MailRelay.
    pub gateway_configs: Arc<DataDigests>,
    /// The gateways' own MailRelays (main.cf and master.cf).
    pub gateway_relays: Arc<DataDigests>,
    /// Each gateway's agent token, as its MailRelay holds it.
    pub agent_tokens: super::agent_tokens::AgentTokens,
    pub gateway_workloads: Store<StatefulSet>,
    pub gateway_accounts: Store<ServiceAccount>,
    pub gateway_roles: Store<Role>,
    pub gateway_bindings: Store<RoleBinding>,
    /// Empty where `policy/v1` is not served.
    pub gateway_budgets: Store<PodDisruptionBudget>,
    /// MailDomains by the domain they claim.
    pub claims: Arc<ClaimIndex>,
    /// The drift checks' registry, when drift is on.
    pub drift: Option<Arc<crate::drift::Drift>>,
    /// DNS lookups (ownership proofs) and RFC 2136 updates.
    pub network: crate::net::Network,
    /// What each gateway drains, as its last reconcile read it.
    pub draining: super::draining::DrainingIndex,
    /// What each gateway's queues hold per domain, as the last queue poll read it.
    pub queues: super::queues::QueueIndex,
    /// The recipient sources MailDomains name: their lists in force and last attempts.
    pub sources: Arc<super::sources::SourceSyncs>,
    /// MailDomains to reconcile because what a gateway holds for them (draining, or
    /// queued) changed.
    pub held_triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<MailDomain>>,
    /// The status last written per object, until the cache holds it (see
    /// [`Context::written_on`]).
    pub written: Arc<WrittenStatus>,
    /// The watches each controller's decisions read, waited for before each reconcile.
    pub listed: Listings,
}

/// See [`Listed`].
#[derive(Clone, Default)]
pub struct Listings {
    /// The gateways, namespaces, Secrets' versions, DNSProviders and MailRelays.
    pub domain_inputs: Vec<Listed>,
    /// The MailDomains and the gateways' children.
    pub gateway_inputs: Vec<Listed>,
}

/// An object: kind, namespace, name.
pub type ObjectKey = (String, String, String);

/// A status written on a resource version of its object.
type Written = (Option<String>, serde_json::Value);

/// Statuses the operator wrote that its cache may not hold yet, by object: the object's
/// resource version the write was made on, and what was written.
#[derive(Default)]
pub struct WrittenStatus(Mutex<HashMap<ObjectKey, Written>>);

impl WrittenStatus {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Written>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What was written on `version` of the object, while the cache still holds that
    /// version (the reconcile that follows a status write often starts before the watch
    /// has delivered it); `None` once the cache has moved on.
    pub fn written_on(
        &self,
        key: &ObjectKey,
        version: &Option<String>,
    ) -> Option<serde_json::Value> {
        let mut entries = self.entries();
        match entries.get(key) {
            Some((base, status)) if base == version => Some(status.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn remember(&self, key: ObjectKey, version: Option<String>, status: serde_json::Value) {
        self.entries().insert(key, (version, status));
    }

    /// Another write changed the status (an RFC 2136 intent): nothing remembered holds.
    pub fn forget(&self, key: &ObjectKey) {
        self.entries().remove(key);
    }

    /// The watch delivered `version` of the object (`None`: its deletion): once that is
    /// not the version a write was made on, the cache holds the write or something newer.
    /// Forgetting here, not only at the object's next reconcile, keeps the memo to the
    /// writes the watch has not delivered yet; at 10,000 converging domains, statuses
    /// waiting for their next reconcile were megabytes.
    pub fn observe(&self, key: &ObjectKey, version: Option<&str>) {
        let mut entries = self.entries();
        if entries
            .get(key)
            .is_some_and(|(base, _)| version.is_none() || base.as_deref() != version)
        {
            entries.remove(key);
        }
    }
}

impl Context {
    /// Records what `gateway` drains now, and sends round the MailDomains of every domain
    /// whose figures changed: their `status.draining` reads them from `draining`.
    pub fn draining_changed(
        &self,
        gateway: super::draining::GatewayKey,
        now: Vec<crate::api::gateway::DrainingDomain>,
    ) {
        self.reconcile_claimants(self.draining.record(gateway, now));
    }

    /// Sends round the MailDomains that claim any of `domains` (normalized).
    pub fn reconcile_claimants(&self, domains: Vec<String>) {
        for domain in domains {
            for key in self.claims.claimants(&domain) {
                // A closed channel means the controller is stopping.
                let _ = self.held_triggers.unbounded_send(key);
            }
        }
    }

    /// Returns once the watches a MailDomain's decision reads have listed.
    pub(crate) async fn domain_caches_listed(&self) {
        Listed::all(&self.listed.domain_inputs).await;
    }

    /// Likewise for a MailGateway: its domains (which it counts) and its children.
    pub(crate) async fn gateway_caches_listed(&self) {
        Listed::all(&self.listed.gateway_inputs).await;
    }

    /// Publishes one Event per transition; a failed publish is logged, never fatal.
    pub(crate) async fn publish(
        &self,
        object: &impl Resource<DynamicType = ()>,
        transitions: Vec<Transition>,
    ) {
        for transition in transitions {
            let event = Event {
                type_: transition.type_,
                reason: transition.reason,
                note: Some(transition.message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(%error, "publishing an Event failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ObjectKey {
        ("MailDomain".into(), "tenant".into(), "example".into())
    }

    #[test]
    fn a_written_status_is_forgotten_once_the_watch_delivers_a_newer_version() {
        let written = WrittenStatus::default();
        written.remember(key(), Some("1".into()), json!({"domain": "example.com"}));
        written.observe(&key(), Some("1"));
        assert_eq!(
            written.written_on(&key(), &Some("1".into())),
            Some(json!({"domain": "example.com"})),
            "the cache still holds the version the write was made on"
        );
        written.observe(&key(), Some("2"));
        assert_eq!(written.written_on(&key(), &Some("1".into())), None);

        written.remember(key(), Some("2".into()), json!({}));
        written.observe(&key(), None);
        assert_eq!(
            written.written_on(&key(), &Some("2".into())),
            None,
            "deleted"
        );
    }
}
