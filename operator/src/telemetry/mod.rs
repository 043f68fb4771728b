//! Logs, metrics and health endpoints of the operator.

mod server;

pub use server::{Endpoints, Health, OperatorEndpoints, serve};

use crate::api::conditions::READY;
use crate::api::{ConditionStatus, MailDomain};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
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
struct CheckLabels {
    check: &'static str,
    result: String,
}

/// Drift figures: checks by outcome, the last cycle, repairs and departed domains.
struct DriftMetrics {
    checks: Family<CheckLabels, Counter>,
    cycle_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    cycle_domains: Gauge,
    dns_repairs: Counter,
    departed: Gauge,
}

impl DriftMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            checks: Family::default(),
            cycle_seconds: Gauge::default(),
            cycle_domains: Gauge::default(),
            dns_repairs: Counter::default(),
            departed: Gauge::default(),
        };
        registry.register(
            "drift_checks",
            "Drift checks by check (public_mx, authoritative_mx, gateway_probe, primary) and result",
            metrics.checks.clone(),
        );
        registry.register(
            "drift_cycle_seconds",
            "How long the last drift cycle over all domains took",
            metrics.cycle_seconds.clone(),
        );
        registry.register(
            "drift_cycle_domains",
            "Domains checked in the last drift cycle",
            metrics.cycle_domains.clone(),
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
        metrics
    }
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    domains: Family<StateLabels, Gauge>,
    domain_store: Mutex<Option<Store<MailDomain>>>,
    drift: DriftMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mx_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let domains = Family::<StateLabels, Gauge>::default();
        registry.register(
            "reconciles",
            "Reconciles finished, by kind",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            durations.clone(),
        );
        registry.register(
            "maildomains",
            "MailDomains by the reason of their Ready condition",
            domains.clone(),
        );
        let drift = DriftMetrics::register(&mut registry);
        Self {
            registry,
            reconciles,
            errors,
            durations,
            domains,
            domain_store: Mutex::new(None),
            drift,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(
        &self,
        kind: &str,
        took: Duration,
        error: Option<&crate::controller::Error>,
    ) {
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

    /// One domain's drift checks, by outcome.
    pub fn observe_drift_check(&self, observation: &crate::drift::Observation) {
        let count = |check: &'static str, result: &str| {
            self.drift
                .checks
                .get_or_create(&CheckLabels {
                    check,
                    result: result.to_string(),
                })
                .inc();
        };
        count("public_mx", observation.public.reason());
        match observation.authoritative_ok {
            Some(true) => count("authoritative_mx", "Present"),
            Some(false) => count("authoritative_mx", "Missing"),
            None => {}
        }
        if let Some(verdict) = &observation.acceptance {
            count("gateway_probe", verdict.reason);
        }
        if let Some(verdict) = &observation.primary {
            count("primary", verdict.reason);
        }
    }

    pub fn observe_drift_cycle(&self, domains: usize, took: Duration) {
        self.drift.cycle_seconds.set(took.as_secs_f64());
        self.drift.cycle_domains.set(domains as i64);
    }

    pub fn observe_dns_repair(&self) {
        self.drift.dns_repairs.inc();
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
        let state = store.state();
        let departed = state
            .iter()
            .filter(|d| {
                d.condition(crate::drift::DEPARTED)
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
            .count();
        self.drift.departed.set(departed as i64);
        for domain in state {
            self.domains
                .get_or_create(&StateLabels {
                    state: domain_state(&domain),
                })
                .inc();
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

/// Logs as JSON lines (or plain text for a terminal), filtered by `RUST_LOG`.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        // Colour codes only on a terminal, not in log files.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_counted() {
        let metrics = Metrics::default();
        metrics.observe_reconcile("MailDomain", Duration::from_millis(3), None);
        let error = crate::controller::Error::NotNamespaced("x".into());
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
}
