//! The operator's metrics: reconciles, MailDomains by state and by condition, MX repairs, and the drift
//! checks' figures in the same registry; and the operator's `/metrics`, `/healthz` and
//! `/readyz` answers.

use super::error::Error;
use crate::api::conditions::{DEPARTED, READY};
use crate::api::{ConditionStatus, MailDomain};
use crate::drift::metrics::DriftMetrics;
use crate::telemetry::{Endpoints, Health};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: String,
    status: &'static str,
    reason: String,
}

/// One synced recipient source of one MailDomain.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    namespace: String,
    maildomain: String,
    source: String,
}

/// What status says of each synced recipient source.
#[derive(Default)]
struct SourceGauges {
    up: Family<SourceLabels, Gauge>,
    last_success: Family<SourceLabels, Gauge>,
    addresses: Family<SourceLabels, Gauge>,
    held: Family<SourceLabels, Gauge>,
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    domains: Family<StateLabels, Gauge>,
    conditions: Family<ConditionLabels, Gauge>,
    departed: Gauge,
    dns_repairs: Counter,
    domain_store: Mutex<Option<Store<MailDomain>>>,
    sources: SourceGauges,
    /// The drift checks' own figures, registered here.
    pub drift: DriftMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mx_operator");
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            domains: Family::default(),
            conditions: Family::default(),
            departed: Gauge::default(),
            dns_repairs: Counter::default(),
            domain_store: Mutex::new(None),
            sources: SourceGauges::default(),
            drift: DriftMetrics::register(&mut registry),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles finished, by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            metrics.durations.clone(),
        );
        registry.register(
            "maildomains",
            "MailDomains by the reason of their Ready condition",
            metrics.domains.clone(),
        );
        registry.register(
            "maildomain_conditions",
            "MailDomains by each status condition's type, status and reason; what alerts on a lasting failure (DnsSynced False: MX not published or not repaired) use",
            metrics.conditions.clone(),
        );
        registry.register(
            "dns_drift_repairs",
            "MX records of ours restored after they were removed or changed behind the operator's back",
            metrics.dns_repairs.clone(),
        );
        registry.register(
            "maildomains_departed",
            "MailDomains whose public MX no longer names their gateway (Departed=True)",
            metrics.departed.clone(),
        );
        for (name, help, family) in [
            (
                "recipient_source_up",
                "Whether the last sync of a MailDomain's recipient source (ldap, http) succeeded (1) or failed (0), as its status says",
                &metrics.sources.up,
            ),
            (
                "recipient_source_last_success_timestamp_seconds",
                "When the list in force of a MailDomain's recipient source was read",
                &metrics.sources.last_success,
            ),
            (
                "recipient_source_addresses",
                "Addresses in the list in force of a MailDomain's recipient source",
                &metrics.sources.addresses,
            ),
            (
                "recipient_source_shrink_held",
                "1 while a synced list is held because it shrank past recipients.maxShrink",
                &metrics.sources.held,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, kind: &str, took: Duration, error: Option<&Error>) {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            let labels = ErrorLabels {
                kind: kind.to_string(),
                reason: error.metric_label().to_string(),
            };
            self.errors.get_or_create(&labels).inc();
        }
    }

    pub fn observe_dns_repair(&self) {
        self.dns_repairs.inc();
    }

    /// Domains are counted from this cache when metrics are scraped, so the figures are
    /// never out of date.
    pub fn count_domains_from(&self, store: Store<MailDomain>) {
        if let Ok(mut slot) = self.domain_store.lock() {
            *slot = Some(store);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.refresh_domain_counts();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn refresh_domain_counts(&self) {
        let Ok(slot) = self.domain_store.lock() else {
            return;
        };
        let Some(store) = slot.as_ref() else { return };
        self.domains.clear();
        self.conditions.clear();
        for family in [
            &self.sources.up,
            &self.sources.last_success,
            &self.sources.addresses,
            &self.sources.held,
        ] {
            family.clear();
        }
        let state = store.state();
        let departed = state
            .iter()
            .filter(|d| {
                d.condition(DEPARTED)
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
            .count();
        self.departed.set(departed as i64);
        for domain in state {
            self.domains
                .get_or_create(&StateLabels {
                    state: domain_state(&domain),
                })
                .inc();
            self.count_sources(&domain);
            let conditions = domain.status.iter().flat_map(|s| &s.conditions);
            for condition in conditions {
                self.conditions
                    .get_or_create(&ConditionLabels {
                        condition: condition.type_.clone(),
                        status: condition.status.as_str(),
                        reason: condition.reason.clone(),
                    })
                    .inc();
            }
        }
    }
}

impl Metrics {
    fn count_sources(&self, domain: &MailDomain) {
        let sources = domain.status.iter().flat_map(|s| &s.recipient_sources);
        for source in sources {
            let labels = SourceLabels {
                namespace: domain.metadata.namespace.clone().unwrap_or_default(),
                maildomain: domain.metadata.name.clone().unwrap_or_default(),
                source: source.source.clone(),
            };
            let gauges = &self.sources;
            gauges
                .up
                .get_or_create(&labels)
                .set(i64::from(source.reason.is_none()));
            if let Some(at) = &source.last_success {
                gauges
                    .last_success
                    .get_or_create(&labels)
                    .set(at.0.as_second());
            }
            if let Some(addresses) = source.addresses {
                gauges.addresses.get_or_create(&labels).set(addresses);
            }
            gauges
                .held
                .get_or_create(&labels)
                .set(i64::from(source.held.is_some()));
        }
    }
}

/// `Ready`, or the reason a domain is not ready (`Conflict`, `InvalidSpec`, ...).
fn domain_state(domain: &MailDomain) -> String {
    match domain.condition(READY) {
        Some(c) if c.status == ConditionStatus::True => "Ready".into(),
        Some(c) => c.reason.clone(),
        None => "Pending".into(),
    }
}

/// The operator's endpoints.
pub struct OperatorEndpoints {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Endpoints for OperatorEndpoints {
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics.encode()
    }

    fn health(&self) -> Result<&'static str, &'static str> {
        if self.health.is_broken() {
            Err("a controller loop stopped\n")
        } else {
            Ok("ok\n")
        }
    }

    fn readiness(&self) -> Result<&'static str, &'static str> {
        let health = &self.health;
        if health.is_broken() || !health.is_connected() {
            Err("not connected to the API server\n")
        } else if health.is_leader() {
            Ok("ok: leading\n")
        } else {
            Ok("ok: standby\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_counted() {
        let metrics = Metrics::default();
        metrics.observe_reconcile("MailDomain", Duration::from_millis(3), None);
        let error = Error::NotNamespaced("x".into());
        metrics.observe_reconcile("MailDomain", Duration::from_millis(3), Some(&error));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("mx_operator_reconciles_total{kind=\"MailDomain\"} 2"),
            "{text}"
        );
        assert!(text.contains("mx_operator_reconcile_errors_total{kind=\"MailDomain\",reason=\"not_namespaced\"} 1"), "{text}");
        assert!(
            text.contains("mx_operator_reconcile_duration_seconds_count{kind=\"MailDomain\"} 2"),
            "{text}"
        );
    }

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": "",
                           "lastTransitionTime": "2026-12-01T00:00:00Z"})
    }

    #[test]
    fn domains_are_counted_by_each_condition_from_the_cache_at_every_scrape() {
        let with = |name: &str, dns: &str, reason: &str| {
            crate::api::fixtures::domain(serde_json::json!({
                "metadata": {"name": name, "uid": name},
                "status": {"conditions": [condition("Ready", "True", "Relayed"),
                                          condition("DnsSynced", dns, reason)]}}))
        };
        let (store, mut writer) = kube::runtime::reflector::store();
        let event = kube::runtime::watcher::Event::Apply;
        writer.apply_watcher_event(&event(with("a", "False", "Refused")));
        writer.apply_watcher_event(&event(with("b", "False", "Refused")));
        writer.apply_watcher_event(&event(with("c", "True", "Published")));
        let metrics = Metrics::default();
        metrics.count_domains_from(store);
        let text = metrics.encode().unwrap();
        let line = |labels: &str, count: u32| {
            format!("mx_operator_maildomain_conditions{{{labels}}} {count}\n")
        };
        for expected in [
            line(
                r#"condition="DnsSynced",status="False",reason="Refused""#,
                2,
            ),
            line(
                r#"condition="DnsSynced",status="True",reason="Published""#,
                1,
            ),
            line(r#"condition="Ready",status="True",reason="Relayed""#, 3),
        ] {
            assert!(text.contains(&expected), "{expected} in\n{text}");
        }

        writer.apply_watcher_event(&event(with("a", "True", "Published")));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&line(
                r#"condition="DnsSynced",status="False",reason="Refused""#,
                1
            )),
            "{text}"
        );
    }

    #[test]
    fn recipient_sources_are_shown_from_each_domains_status() {
        let domain = crate::api::fixtures::domain(serde_json::json!({
        "metadata": {"name": "shop", "namespace": "mail", "uid": "shop"},
        "status": {"recipientSources": [
            {"source": "ldap", "addresses": 30158, "lastSuccess": "2026-12-01T00:00:00Z"},
            {"source": "http", "addresses": 1000, "lastSuccess": "2026-12-01T00:00:00Z",
             "reason": "Unreachable", "message": "refused",
             "held": {"id": "abc", "addresses": 10, "at": "2026-12-01T00:01:00Z"}},
        ]}}));
        let (store, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(domain));
        let metrics = Metrics::default();
        metrics.count_domains_from(store);
        let text = metrics.encode().unwrap();
        let labels =
            |source: &str| format!(r#"{{namespace="mail",maildomain="shop",source="{source}"}}"#);
        for expected in [
            format!("mx_operator_recipient_source_up{} 1", labels("ldap")),
            format!("mx_operator_recipient_source_up{} 0", labels("http")),
            format!(
                "mx_operator_recipient_source_addresses{} 30158",
                labels("ldap")
            ),
            format!(
                "mx_operator_recipient_source_last_success_timestamp_seconds{} 1796083200",
                labels("ldap")
            ),
            format!(
                "mx_operator_recipient_source_shrink_held{} 1",
                labels("http")
            ),
            format!(
                "mx_operator_recipient_source_shrink_held{} 0",
                labels("ldap")
            ),
        ] {
            assert!(
                text.contains(&format!("{expected}\n")),
                "{expected} in\n{text}"
            );
        }
    }
}
