//! The drift loop: every interval (jittered) each domain the reconciler registered is
//! checked, a bounded number at a time. Observations are cached; only a domain whose
//! observation changed is handed back to the reconciler, so an unchanged domain costs its
//! DNS queries (and probes) and no API request at all.

use super::check::{CheckSettings, Expectation, Observation, ReplicaSource, observe};
use super::metrics::DriftMetrics;
use crate::api::MailDomain;
use crate::net::Network;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the drift loop runs.
#[derive(Clone, Debug)]
pub struct DriftSettings {
    pub interval: Duration,
    /// Domains checked at the same time.
    pub concurrency: usize,
    /// Time limit of one DNS query.
    pub dns_timeout: Duration,
    pub checks: CheckSettings,
}

struct Entry {
    expectation: Expectation,
    observation: Option<Observation>,
}

type Key = ObjectRef<MailDomain>;

/// The registry of what to check and what was seen, shared by the loop and the reconciler.
pub struct Drift {
    settings: DriftSettings,
    network: Network,
    replicas: Arc<dyn ReplicaSource>,
    entries: Mutex<HashMap<Key, Entry>>,
    metrics: DriftMetrics,
}

/// What one cycle did.
#[derive(Debug, Default)]
pub struct CycleReport {
    pub checked: usize,
    pub changed: Vec<Key>,
    pub took: Duration,
}

impl Drift {
    /// Checks against the real network.
    pub fn new(
        settings: DriftSettings,
        replicas: Arc<dyn ReplicaSource>,
        metrics: DriftMetrics,
    ) -> Self {
        let network = Network::real(settings.dns_timeout);
        Self::with_network(settings, network, replicas, metrics)
    }

    /// Checks through `network` (a test's fakes, for example).
    pub fn with_network(
        settings: DriftSettings,
        network: Network,
        replicas: Arc<dyn ReplicaSource>,
        metrics: DriftMetrics,
    ) -> Self {
        Self {
            network,
            replicas,
            settings,
            entries: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers (or updates) what a domain should look like. A changed expectation drops
    /// the old observation's probe parts only when the next cycle replaces them.
    pub fn expect(&self, key: Key, expectation: Expectation) {
        let mut entries = self.entries();
        match entries.get_mut(&key) {
            Some(entry) => entry.expectation = expectation,
            None => {
                entries.insert(
                    key,
                    Entry {
                        expectation,
                        observation: None,
                    },
                );
            }
        }
    }

    pub fn forget(&self, key: &Key) {
        self.entries().remove(key);
    }

    /// The latest observation of a domain, if one was made.
    pub fn observation(&self, key: &Key) -> Option<Observation> {
        self.entries().get(key)?.observation.clone()
    }

    /// Checks every registered domain once and returns those whose observation changed.
    pub async fn cycle(&self) -> CycleReport {
        let started = Instant::now();
        let work: Vec<(Key, Expectation)> = self
            .entries()
            .iter()
            .map(|(key, entry)| (key.clone(), entry.expectation.clone()))
            .collect();
        let checked = work.len();
        let results: Vec<(Key, Expectation, Observation)> = futures::stream::iter(work)
            .map(|(key, expectation)| async move {
                let observation = observe(
                    &self.network,
                    &self.settings.checks,
                    self.replicas.as_ref(),
                    &expectation,
                )
                .await;
                (key, expectation, observation)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut changed = vec![];
        {
            let mut entries = self.entries();
            for (key, expectation, observation) in results {
                self.metrics.observe_check(&observation);
                // A domain removed or re-registered meanwhile keeps its newer state.
                let Some(entry) = entries.get_mut(&key) else {
                    continue;
                };
                if entry.expectation != expectation {
                    continue;
                }
                if entry.observation.as_ref() != Some(&observation) {
                    entry.observation = Some(observation);
                    changed.push(key);
                }
            }
        }
        let took = started.elapsed();
        self.metrics.observe_cycle(checked, took);
        CycleReport {
            checked,
            changed,
            took,
        }
    }

    /// Runs cycles until `shutdown`, sending each changed domain to `changed`. Domains no
    /// longer in `exists` are forgotten.
    pub async fn run(
        self: Arc<Self>,
        exists: impl Fn(&Key) -> bool + Send,
        changed: futures::channel::mpsc::UnboundedSender<Key>,
    ) {
        loop {
            // ±10 %: replicas and restarts do not line up their checks.
            let jitter = 0.9 + fastrand::f64() * 0.2;
            tokio::time::sleep(self.settings.interval.mul_f64(jitter)).await;
            self.entries().retain(|key, _| exists(key));
            let report = self.cycle().await;
            tracing::debug!(
                checked = report.checked,
                changed = report.changed.len(),
                took_ms = report.took.as_millis() as u64,
                "drift cycle"
            );
            for key in report.changed {
                if changed.unbounded_send(key).is_err() {
                    return;
                }
            }
        }
    }
}
