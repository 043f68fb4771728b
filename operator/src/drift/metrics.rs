//! The drift checks' metrics: checks by outcome and the last cycle.

use super::check::Observation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: &'static str,
    result: String,
}

/// Drift figures: checks by outcome and the last cycle.
#[derive(Clone, Default)]
pub struct DriftMetrics {
    checks: Family<CheckLabels, Counter>,
    cycle_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    cycle_domains: Gauge,
}

impl DriftMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
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
        metrics
    }

    /// One domain's drift checks, by outcome.
    pub fn observe_check(&self, observation: &Observation) {
        let count = |check: &'static str, result: &str| {
            self.checks
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

    pub fn observe_cycle(&self, domains: usize, took: Duration) {
        self.cycle_seconds.set(took.as_secs_f64());
        self.cycle_domains.set(domains as i64);
    }
}
