//! What each gateway's replicas hold in their queues per domain, summed over the replicas
//! and shown in the MailDomains' `status.queue` in steps: a count as a range, the oldest
//! arrival only once its age is off by more than a factor of two, the commonest deferral
//! reason. A steady queue therefore costs no status write, and a large outage one write
//! per domain per step rather than one per queue read.

use super::draining::GatewayKey;
use crate::agent::{DomainQueue, StatusReport, commonest};
use crate::api::domain::QueuedMail;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// Longest deferral reason shown; Postfix's own are far shorter, but a primary's reply
/// text is the primary's to choose.
const MAX_REASON_BYTES: usize = 256;

/// Ages below this count as this much when two are compared: a queue of fresh mail does
/// not rewrite its oldest arrival at every read.
const AGE_FLOOR_SECONDS: i64 = 60;

/// The shown queue of each domain, by gateway. A fall in one read only does not reach it:
/// each agent reports the larger of its last two reads (`agent::queue::steadied`), because
/// only the agent knows which answers come from distinct reads.
#[derive(Default)]
pub struct QueueIndex(Mutex<HashMap<GatewayKey, BTreeMap<String, QueuedMail>>>);

impl QueueIndex {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<GatewayKey, BTreeMap<String, QueuedMail>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records what `gateway`'s replicas hold now (`now`: Unix seconds); returns the
    /// domains whose shown queue changed, appeared or went.
    pub fn record(
        &self,
        gateway: GatewayKey,
        summed: &BTreeMap<String, DomainQueue>,
        now: i64,
    ) -> Vec<String> {
        let mut index = self.entries();
        let before = index.remove(&gateway).unwrap_or_default();
        let after: BTreeMap<String, QueuedMail> = summed
            .iter()
            .filter(|(_, figures)| figures.messages > 0)
            .map(|(domain, figures)| {
                let shown = shown(figures, before.get(domain), now);
                (domain.clone(), shown)
            })
            .collect();
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .filter(|domain| before.get(*domain) != after.get(*domain))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !after.is_empty() {
            index.insert(gateway, after);
        }
        changed
    }

    /// What `status.queue` of `domain` (normalized) at `gateway` shows.
    pub fn at(&self, gateway: &GatewayKey, domain: &str) -> Option<QueuedMail> {
        self.entries().get(gateway)?.get(domain).cloned()
    }

    /// Forgets a gateway that is gone: its domains' queues are no longer shown.
    pub fn forget(&self, gateway: &GatewayKey) -> Vec<String> {
        self.entries()
            .remove(gateway)
            .map(BTreeMap::into_keys)
            .map(Iterator::collect)
            .unwrap_or_default()
    }
}

/// The replicas' figures summed per domain: messages added, the oldest arrival, and the
/// reason most messages carry. `None` when a replica did not answer: a sum without it
/// would show less mail than is held, so the last complete sum stays shown.
pub fn summed<'a>(
    reports: impl IntoIterator<Item = &'a Result<StatusReport, String>>,
) -> Option<BTreeMap<String, DomainQueue>> {
    let mut sums: BTreeMap<String, DomainQueue> = BTreeMap::new();
    let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for report in reports {
        let report = report.as_ref().ok()?;
        for (domain, figures) in &report.queued {
            let sum = sums.entry(domain.clone()).or_insert(DomainQueue {
                oldest_arrival: figures.oldest_arrival,
                ..DomainQueue::default()
            });
            sum.messages += figures.messages;
            sum.oldest_arrival = sum.oldest_arrival.min(figures.oldest_arrival);
            if let Some(reason) = &figures.reason {
                *reasons
                    .entry(domain.clone())
                    .or_default()
                    .entry(reason.clone())
                    .or_default() += figures.messages;
            }
        }
    }
    for (domain, counted) in reasons {
        if let Some(sum) = sums.get_mut(&domain) {
            sum.reason = commonest(counted);
        }
    }
    Some(sums)
}

/// What `status.queue` shows for `figures`, given what it showed `before`: the oldest
/// arrival shown before is kept while it gives an age within a factor of two of the real
/// one.
pub fn shown(figures: &DomainQueue, before: Option<&QueuedMail>, now: i64) -> QueuedMail {
    let oldest = i64::try_from(figures.oldest_arrival).unwrap_or(i64::MAX);
    let kept = before
        .map(|b| b.oldest_arrival.0.as_second())
        .filter(|shown| !ages_apart(now - shown, now - oldest));
    let oldest_arrival = kept.unwrap_or(oldest);
    QueuedMail {
        messages: messages_range(figures.messages),
        oldest_arrival: Time(
            Timestamp::from_second(oldest_arrival).unwrap_or(Timestamp::UNIX_EPOCH),
        ),
        reason: figures.reason.as_deref().map(bounded_reason),
    }
}

/// `1-9`, `10-99`, `100-999`, ...: the decimal order of magnitude of `messages`.
pub fn messages_range(messages: u64) -> String {
    if messages == 0 {
        return "0".into();
    }
    let low = 10u64.pow(messages.ilog10());
    match low.checked_mul(10) {
        Some(high) => format!("{low}-{}", high - 1),
        None => format!("{low}+"),
    }
}

/// Whether two ages (seconds) differ by more than a factor of two.
fn ages_apart(a: i64, b: i64) -> bool {
    let (a, b) = (a.max(AGE_FLOOR_SECONDS), b.max(AGE_FLOOR_SECONDS));
    a > b.saturating_mul(2) || b > a.saturating_mul(2)
}

/// At most [`MAX_REASON_BYTES`], cut at a character boundary, on one line.
fn bounded_reason(reason: &str) -> String {
    let one_line: String = reason
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut end = one_line.len().min(MAX_REASON_BYTES);
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    one_line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(messages: u64, oldest_arrival: u64, reason: Option<&str>) -> DomainQueue {
        DomainQueue {
            messages,
            oldest_arrival,
            reason: reason.map(str::to_string),
        }
    }

    fn report(domains: &[(&str, DomainQueue)]) -> Result<StatusReport, String> {
        Ok(StatusReport {
            queued: domains
                .iter()
                .map(|(d, q)| (d.to_string(), q.clone()))
                .collect(),
            ..StatusReport::default()
        })
    }

    #[test]
    fn ranges_by_order_of_magnitude() {
        let table = [
            (0, "0"),
            (1, "1-9"),
            (9, "1-9"),
            (10, "10-99"),
            (99, "10-99"),
            (100, "100-999"),
            (12_345, "10000-99999"),
            (u64::MAX, "10000000000000000000+"),
        ];
        for (messages, range) in table {
            assert_eq!(messages_range(messages), range, "{messages}");
        }
    }

    #[test]
    fn replicas_add_up_and_the_reason_of_most_messages_wins() {
        let one = report(&[
            ("a.example", queued(3, 500, Some("connect refused"))),
            ("b.example", queued(1, 900, None)),
        ]);
        let two = report(&[("a.example", queued(5, 400, Some("timed out")))]);
        let sums = summed([&one, &two]).unwrap();
        assert_eq!(sums["a.example"], queued(8, 400, Some("timed out")));
        assert_eq!(sums["b.example"], queued(1, 900, None));
        let silent: Result<StatusReport, String> = Err("no answer".into());
        assert_eq!(summed([&one, &silent]), None, "a replica missing");
        assert_eq!(summed([]), Some(BTreeMap::new()));
    }

    #[test]
    fn the_oldest_arrival_moves_only_by_more_than_a_factor_of_two() {
        let now = 100_000;
        let first = shown(&queued(4, (now - 600) as u64, None), None, now);
        assert_eq!(first.oldest_arrival.0.as_second(), now - 600);
        // Age 600 s shown; the real oldest is now 1000 s old (delivered mail made a
        // younger one the oldest, or time passed): within 2×, kept.
        let kept = shown(&queued(4, (now - 1000) as u64, None), Some(&first), now);
        assert_eq!(kept.oldest_arrival, first.oldest_arrival);
        let kept = shown(&queued(4, (now - 300) as u64, None), Some(&first), now);
        assert_eq!(kept.oldest_arrival, first.oldest_arrival);
        // Off by more than 2×: rewritten.
        let moved = shown(&queued(4, (now - 250) as u64, None), Some(&first), now);
        assert_eq!(moved.oldest_arrival.0.as_second(), now - 250);
        let moved = shown(&queued(4, (now - 1300) as u64, None), Some(&first), now);
        assert_eq!(moved.oldest_arrival.0.as_second(), now - 1300);
        // Young mail: ages under a minute are a minute.
        let fresh = shown(&queued(1, (now - 5) as u64, None), None, now);
        let kept = shown(&queued(1, (now - 50) as u64, None), Some(&fresh), now);
        assert_eq!(kept.oldest_arrival, fresh.oldest_arrival);
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        let long = format!("host said: 451 {}\r\nmore", "é".repeat(300));
        let figures = queued(1, 0, Some(&long));
        let reason = shown(&figures, None, 10).reason.unwrap();
        assert!(reason.len() <= MAX_REASON_BYTES, "{}", reason.len());
        assert!(!reason.contains('\r') && !reason.contains('\n'));
        assert!(reason.starts_with("host said: 451 é"));
    }

    #[test]
    fn only_changed_steps_are_reported() {
        let index = QueueIndex::default();
        let edge = ("mail".to_string(), "edge".to_string());
        let now = 10_000;
        let sums = |a: u64, b: u64| {
            BTreeMap::from([
                ("a.example".to_string(), queued(a, 9_000, Some("refused"))),
                ("b.example".to_string(), queued(b, 9_500, None)),
            ])
        };
        assert_eq!(
            index.record(edge.clone(), &sums(3, 12), now),
            ["a.example", "b.example"]
        );
        // Counts within their ranges, a little later: nothing to write.
        assert!(
            index
                .record(edge.clone(), &sums(7, 40), now + 30)
                .is_empty()
        );
        assert_eq!(index.at(&edge, "a.example").unwrap().messages, "1-9");
        assert_eq!(
            index.record(edge.clone(), &sums(10, 40), now + 60),
            ["a.example"]
        );
        // A domain whose queue emptied goes; the gateway with nothing queued too.
        assert_eq!(
            index.record(edge.clone(), &sums(10, 0), now + 100),
            ["b.example"]
        );
        assert!(index.at(&edge, "b.example").is_none());
        assert_eq!(
            index.record(edge.clone(), &BTreeMap::new(), now + 120),
            ["a.example"]
        );
        assert!(index.forget(&edge).is_empty());
        index.record(edge.clone(), &sums(1, 1), now);
        assert_eq!(index.forget(&edge), ["a.example", "b.example"]);
    }
}
