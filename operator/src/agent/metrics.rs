//! The agent's Prometheus metrics and probe answers.

use super::queue::DomainQueue;
use super::retire::Retirement;
use crate::telemetry::Endpoints;
use crate::telemetry::StatusAnswer;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use subtle::ConstantTimeEq;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
}

/// What an agent's `/status` says: messages its replica still holds, per domain it no
/// longer relays (deleted, withdrawn or moved); what its queue holds per recipient domain
/// at the last read; and, while a scale-in removes the replica, how far it has delivered
/// its queue. Read by the operator.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusReport {
    pub draining: BTreeMap<String, u64>,
    /// Absent from an agent older than this field, as from one whose queue is empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queued: BTreeMap<String, DomainQueue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<Retirement>,
}

/// A copy of what `value` holds, also after a panic while it was locked (the figures
/// are replaced whole, never left half written).
fn copied<T: Clone>(value: &Mutex<T>) -> T {
    value
        .lock()
        .map(|held| held.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
}

pub struct AgentMetrics {
    registry: Registry,
    generation: Gauge,
    domains: Gauge,
    reloads: Counter,
    load_errors: Family<ReasonLabels, Counter>,
    queue_messages: Family<DomainLabels, Gauge>,
    queue_oldest_age: Family<DomainLabels, Gauge>,
    draining_messages: Family<DomainLabels, Gauge>,
    /// The last queue read's figures, for `/status`.
    queued: Mutex<BTreeMap<String, DomainQueue>>,
    loaded: AtomicBool,
    postfix_running: AtomicBool,
    /// The last draining figures, for `/status`.
    draining: Mutex<BTreeMap<String, u64>>,
    /// Set while a scale-in removes this replica.
    retirement: Mutex<Option<Retirement>>,
    /// Why the last queue read of a running Postfix got no answer; `None` once one does.
    postfix_unanswered: Mutex<Option<String>>,
    stopped: AtomicBool,
    /// The token `/status` asks of its reader: the gateway MailRelay's, once loaded.
    status_token: Mutex<Option<String>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mx_agent");
        let generation = Gauge::default();
        let domains = Gauge::default();
        let reloads = Counter::default();
        let load_errors = Family::<ReasonLabels, Counter>::default();
        let queue_messages = Family::<DomainLabels, Gauge>::default();
        let queue_oldest_age = Family::<DomainLabels, Gauge>::default();
        let draining_messages = Family::<DomainLabels, Gauge>::default();
        registry.register(
            "config_generation",
            "Configurations loaded into Postfix since the agent started",
            generation.clone(),
        );
        registry.register(
            "domains",
            "Domains relayed by the loaded configuration",
            domains.clone(),
        );
        registry.register(
            "postfix_reloads",
            "Postfix reloads (main.cf, master.cf or a cidr table changed)",
            reloads.clone(),
        );
        registry.register(
            "load_errors",
            "MailRelays refused or loads that failed; the last good configuration keeps serving",
            load_errors.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in the Postfix queue, by recipient domain",
            queue_messages.clone(),
        );
        registry.register(
            "queue_oldest_message_age_seconds",
            "Age of the oldest queued message, by recipient domain",
            queue_oldest_age.clone(),
        );
        registry.register(
            "draining_messages",
            "Messages queued for domains this replica no longer relays (deleted, withdrawn or moved), still delivered to their primary; the domain's route goes when this is 0",
            draining_messages.clone(),
        );
        Self {
            registry,
            generation,
            domains,
            reloads,
            load_errors,
            queue_messages,
            queue_oldest_age,
            draining_messages,
            queued: Mutex::new(BTreeMap::new()),
            loaded: AtomicBool::new(false),
            postfix_running: AtomicBool::new(false),
            postfix_unanswered: Mutex::new(None),
            draining: Mutex::new(BTreeMap::new()),
            retirement: Mutex::new(None),
            stopped: AtomicBool::new(false),
            status_token: Mutex::new(None),
        }
    }
}

impl AgentMetrics {
    pub fn loaded(&self, domains: usize, reloaded: bool) {
        self.generation.inc();
        self.domains.set(i64::try_from(domains).unwrap_or(i64::MAX));
        self.reloaded(reloaded);
        self.loaded.store(true, Ordering::Relaxed);
    }

    pub fn reloaded(&self, reloaded: bool) {
        if reloaded {
            self.reloads.inc();
        }
    }

    pub fn load_error(&self, reason: &str) {
        self.load_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Whether the Postfix master runs, as last seen by the supervision loop.
    pub fn set_postfix_running(&self, running: bool) {
        self.postfix_running.store(running, Ordering::Relaxed);
    }

    /// Whether a running Postfix answered the last queue read (`Err`: why not).
    pub fn set_postfix_answer(&self, answer: Result<(), String>) {
        if let Ok(mut unanswered) = self.postfix_unanswered.lock() {
            *unanswered = answer.err();
        }
    }

    fn postfix_unanswered(&self) -> Option<String> {
        copied(&self.postfix_unanswered)
    }

    pub fn stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The token the gateway's MailRelay names: `/status` answers whoever presents it.
    pub fn set_status_token(&self, token: Option<String>) {
        let mut held = self
            .status_token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *held = token;
    }

    /// Whether a scale-in removes this replica, and how far its queue is delivered.
    pub fn set_retirement(&self, retirement: Option<Retirement>) {
        if let Ok(mut kept) = self.retirement.lock() {
            *kept = retirement;
        }
    }

    /// Replaces the draining figures; domains whose route went drop out of the output.
    pub fn set_draining(&self, draining: &BTreeMap<String, u64>) {
        if let Ok(mut kept) = self.draining.lock() {
            kept.clone_from(draining);
        }
        self.draining_messages.clear();
        for (domain, messages) in draining {
            self.draining_messages
                .get_or_create(&DomainLabels {
                    domain: domain.clone(),
                })
                .set(i64::try_from(*messages).unwrap_or(i64::MAX));
        }
    }

    /// Replaces the queue figures; domains no longer queued drop out of the output.
    pub fn set_queue(&self, queue: &BTreeMap<String, DomainQueue>, now: u64) {
        let Ok(mut previous) = self.queued.lock() else {
            return;
        };
        for domain in previous.keys() {
            let labels = DomainLabels {
                domain: domain.clone(),
            };
            self.queue_messages.remove(&labels);
            self.queue_oldest_age.remove(&labels);
        }
        for (domain, figures) in queue {
            let labels = DomainLabels {
                domain: domain.clone(),
            };
            self.queue_messages
                .get_or_create(&labels)
                .set(i64::try_from(figures.messages).unwrap_or(i64::MAX));
            self.queue_oldest_age
                .get_or_create(&labels)
                .set(i64::try_from(now.saturating_sub(figures.oldest_arrival)).unwrap_or(i64::MAX));
        }
        previous.clone_from(queue);
    }
}

impl Endpoints for AgentMetrics {
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn health(&self) -> Result<&'static str, &'static str> {
        if self.stopped.load(Ordering::Relaxed) {
            Err("the configuration loop or a MailRelay watch stopped\n")
        } else {
            Ok("ok\n")
        }
    }

    /// Ready means mail can be taken: the configuration is loaded and Postfix runs. The
    /// pod's readiness comes from here, so Postfix's SMTP port is never probed (a probe
    /// connection costs three mail log lines).
    fn readiness(&self) -> Result<&'static str, &'static str> {
        if copied(&self.retirement).is_some() {
            Err("a scale-in removes this replica: it takes no new mail and delivers its queue\n")
        } else if !self.loaded.load(Ordering::Relaxed) {
            Err("the first configuration is not loaded yet\n")
        } else if !self.postfix_running.load(Ordering::Relaxed) {
            Err("Postfix is not running\n")
        } else if self.postfix_unanswered().is_some() {
            Err("Postfix runs but does not answer (see /healthz/postfix)\n")
        } else {
            Ok("ok: configuration loaded, Postfix running\n")
        }
    }

    /// Only for the gateway's token: the report names domains and quotes the primaries'
    /// deferral reasons, which often hold recipient addresses.
    fn status(&self, bearer: Option<&str>) -> Option<StatusAnswer> {
        let Some(token) = copied(&self.status_token) else {
            return Some(StatusAnswer::Unavailable(
                "the gateway's MailRelay is not loaded yet: no token to check /status against\n",
            ));
        };
        let presented = bearer.unwrap_or_default().as_bytes();
        if !bool::from(presented.ct_eq(token.as_bytes())) {
            return Some(StatusAnswer::Unauthorized);
        }
        serde_json::to_string(&StatusReport {
            draining: copied(&self.draining),
            queued: copied(&self.queued),
            retiring: copied(&self.retirement),
        })
        .ok()
        .map(StatusAnswer::Report)
    }

    /// `postfix`: fails while a running Postfix leaves queue reads unanswered (hung, or
    /// stuck on its volume), so that the kubelet restarts the Postfix container.
    fn part_health(&self, part: &str) -> Option<Result<String, String>> {
        (part == "postfix").then(|| match self.postfix_unanswered() {
            None => Ok("ok\n".into()),
            Some(why) => Err(format!("Postfix does not answer: {why}\n")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_answers_only_the_gateways_token() {
        let metrics = AgentMetrics::default();
        assert!(matches!(
            metrics.status(Some("anything")),
            Some(StatusAnswer::Unavailable(_))
        ));
        let token = "0123456789abcdef0123456789abcdef";
        metrics.set_status_token(Some(token.into()));
        for refused in [
            None,
            Some(""),
            Some("0123456789abcdef0123456789abcdee"),
            Some("0123456789abcdef0123456789abcdef0"),
            Some("0123456789abcdef"),
        ] {
            assert_eq!(
                metrics.status(refused),
                Some(StatusAnswer::Unauthorized),
                "{refused:?}"
            );
        }
        let Some(StatusAnswer::Report(json)) = metrics.status(Some(token)) else {
            panic!("the token is refused");
        };
        assert!(
            serde_json::from_str::<StatusReport>(&json).is_ok(),
            "{json}"
        );
    }
}
