//! The mail queue as `postqueue -j` reports it: its entries, and their sum per recipient
//! domain.

use crate::render::HELD_REASON;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One queue entry as `postqueue -j` gives it (its field names accepted as aliases), and
/// as `mx-operator queue` shows it: envelope and deferral reasons, never the content.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedMessage {
    #[serde(default, alias = "queue_id")]
    pub id: String,
    /// `active`, `deferred`, `hold`, `incoming` or `maildrop`.
    #[serde(default, alias = "queue_name")]
    pub queue: String,
    /// Unix seconds.
    #[serde(alias = "arrival_time")]
    pub arrival: u64,
    /// Bytes.
    #[serde(default, alias = "message_size")]
    pub size: u64,
    #[serde(default)]
    pub sender: String,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct QueuedRecipient {
    pub address: String,
    /// Why the last delivery attempt deferred it; absent before the first attempt.
    #[serde(
        default,
        alias = "delay_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
}

impl QueuedRecipient {
    /// The address' domain, lower-cased; `None` for a local address.
    pub fn domain(&self) -> Option<String> {
        let (_, domain) = self.address.rsplit_once('@')?;
        Some(domain.to_ascii_lowercase())
    }
}

/// Parses `postqueue -j` output (one JSON object per line): the entries, and how many
/// lines were not entries.
pub fn parse(output: &str) -> (Vec<QueuedMessage>, usize) {
    let mut messages = vec![];
    let mut unreadable = 0;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<QueuedMessage>(line) {
            Ok(message) => messages.push(message),
            Err(_) => unreadable += 1,
        }
    }
    (messages, unreadable)
}

/// Queued messages, the oldest arrival time (Unix seconds) and the commonest deferral
/// reason of one domain. Also what an agent's `/status` reports per domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainQueue {
    pub messages: u64,
    pub oldest_arrival: u64,
    /// The `delay_reason` most of the domain's queued recipients carry (the first of
    /// those in a tie, by text), if any carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One read of the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Per recipient domain; a message with recipients in two domains counts for both.
    pub domains: BTreeMap<String, DomainQueue>,
    /// Every queue entry, whatever its recipients (a local one has no domain).
    pub messages: u64,
    /// Lines that are not queue entries.
    pub unreadable: usize,
    /// The queue IDs of each domain's messages, for a release (`postqueue -i`).
    pub ids: BTreeMap<String, Vec<String>>,
    /// Domains with a recipient deferred because the domain was held ([`HELD_REASON`]).
    pub deferred_by_hold: BTreeSet<String>,
}

/// Sums up `postqueue -j` output per recipient domain. Lines that are not queue entries
/// are skipped and counted.
pub fn summarize(output: &str) -> Summary {
    let (messages, unreadable) = parse(output);
    let mut summary = Summary {
        messages: messages.len() as u64,
        unreadable,
        ..Summary::default()
    };
    let domains = &mut summary.domains;
    let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for message in messages {
        let mut seen: Vec<String> = Vec::new();
        for recipient in &message.recipients {
            let Some(domain) = recipient.domain() else {
                continue;
            };
            if recipient
                .reason
                .as_deref()
                .is_some_and(|r| r.contains(HELD_REASON))
            {
                summary.deferred_by_hold.insert(domain.clone());
            }
            if let Some(reason) = &recipient.reason {
                *reasons
                    .entry(domain.clone())
                    .or_default()
                    .entry(cause(reason).to_string())
                    .or_default() += 1;
            }
            seen.push(domain);
        }
        seen.sort_unstable();
        seen.dedup();
        for domain in seen {
            let entry = domains.entry(domain.clone()).or_insert(DomainQueue {
                oldest_arrival: message.arrival,
                ..DomainQueue::default()
            });
            entry.messages += 1;
            entry.oldest_arrival = entry.oldest_arrival.min(message.arrival);
            summary
                .ids
                .entry(domain)
                .or_default()
                .push(message.id.clone());
        }
    }
    for (domain, counted) in reasons {
        if let Some(queued) = domains.get_mut(&domain) {
            queued.reason = commonest(counted);
        }
    }
    summary
}

/// A deferral reason without Postfix's prefix for a destination it has marked down after a
/// failure (`delivery temporarily suspended: connect to ...`): the same cause, which must
/// not read as a change each time retries move recipients from one form to the other.
fn cause(reason: &str) -> &str {
    reason
        .strip_prefix("delivery temporarily suspended: ")
        .unwrap_or(reason)
}

/// What a replica reports of its queue: per domain, the larger of its last two reads.
/// Postfix's listing can miss a message that moves between its queues (deferred to active
/// for a retry) while it is listed; reported as read, one such miss would be a status
/// write down and another one up. A real fall shows one read later.
pub fn steadied(
    previous: &BTreeMap<String, DomainQueue>,
    current: &BTreeMap<String, DomainQueue>,
) -> BTreeMap<String, DomainQueue> {
    let mut steady = current.clone();
    for (domain, before) in previous {
        let kept = steady
            .get(domain)
            .is_none_or(|now| now.messages < before.messages);
        if kept {
            steady.insert(domain.clone(), before.clone());
        }
    }
    steady
}

/// The key with the highest count; the first by order in a tie.
pub fn commonest(counted: BTreeMap<String, u64>) -> Option<String> {
    let mut best: Option<(String, u64)> = None;
    for (key, count) in counted {
        if best.as_ref().is_none_or(|(_, most)| count > *most) {
            best = Some((key, count));
        }
    }
    best.map(|(key, _)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_and_oldest_arrival_per_domain() {
        let output = r#"{"queue_name": "deferred", "queue_id": "A1", "arrival_time": 1700000100, "message_size": 300, "forced_expire": false, "sender": "x@y.test", "recipients": [{"address": "alice@example.com", "delay_reason": "connect refused"}, {"address": "bob@Example.com", "delay_reason": "connect refused"}]}
{"queue_name": "deferred", "queue_id": "A2", "arrival_time": 1700000000, "message_size": 300, "sender": "", "recipients": [{"address": "carol@example.org"}, {"address": "dave@example.com", "delay_reason": "timed out"}]}
{"queue_name": "deferred", "queue_id": "A3", "arrival_time": 1700000200, "message_size": 300, "sender": "", "recipients": [{"address": "postmaster"}]}
not json
"#;
        let Summary {
            domains,
            messages,
            unreadable,
            ids,
            deferred_by_hold,
        } = summarize(output);
        assert!(deferred_by_hold.is_empty());
        assert_eq!(ids["example.com"], ["A1", "A2"]);
        assert_eq!((messages, unreadable), (3, 1));
        assert_eq!(
            domains["example.com"],
            DomainQueue {
                messages: 2,
                oldest_arrival: 1_700_000_000,
                reason: Some("connect refused".into()),
            }
        );
        assert_eq!(domains["example.org"].messages, 1);
        assert_eq!(domains["example.org"].reason, None, "not tried yet");
        assert_eq!(summarize(""), Summary::default());
    }

    #[test]
    fn messages_deferred_by_a_hold_are_listed_by_domain() {
        let output = format!(
            r#"{{"queue_id": "H1", "arrival_time": 1, "recipients": [{{"address": "a@held.example", "delay_reason": "{HELD_REASON}"}}, {{"address": "b@held.example", "delay_reason": "{HELD_REASON}"}}, {{"address": "c@other.example", "delay_reason": "connect refused"}}]}}
{{"queue_id": "H2", "arrival_time": 2, "recipients": [{{"address": "d@held.example", "delay_reason": "{HELD_REASON}"}}]}}
{{"queue_id": "D3", "arrival_time": 3, "recipients": [{{"address": "e@held.example"}}]}}
"#
        );
        let summary = summarize(&output);
        assert_eq!(
            summary.deferred_by_hold,
            BTreeSet::from(["held.example".to_string()])
        );
        assert_eq!(summary.ids["held.example"], ["H1", "H2", "D3"]);
        assert_eq!(summary.ids["other.example"], ["H1"]);
        assert_eq!(summary.domains["held.example"].messages, 3);
        assert_eq!(
            summary.domains["held.example"].reason.as_deref(),
            Some(HELD_REASON)
        );
    }

    #[test]
    fn a_destination_marked_down_gives_the_same_reason_as_its_first_failure() {
        let output = r#"{"queue_id": "A1", "arrival_time": 1, "recipients": [{"address": "a@example.com", "delay_reason": "connect to mx[192.0.2.1]:25: Connection refused"}]}
{"queue_id": "A2", "arrival_time": 2, "recipients": [{"address": "b@example.com", "delay_reason": "delivery temporarily suspended: connect to mx[192.0.2.1]:25: Connection refused"}]}
{"queue_id": "A3", "arrival_time": 3, "recipients": [{"address": "c@example.com", "delay_reason": "delivery temporarily suspended: connect to mx[192.0.2.1]:25: Connection refused"}]}
"#;
        assert_eq!(
            summarize(output).domains["example.com"].reason.as_deref(),
            Some("connect to mx[192.0.2.1]:25: Connection refused")
        );
    }

    #[test]
    fn a_fall_is_reported_once_a_second_read_agrees() {
        let reads = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(domain, messages)| {
                    let figures = DomainQueue {
                        messages: *messages,
                        oldest_arrival: 100 + messages,
                        reason: Some(format!("read with {messages}")),
                    };
                    (domain.to_string(), figures)
                })
                .collect::<BTreeMap<_, _>>()
        };
        type Read<'a> = &'a [(&'a str, u64)];
        // (previous read, this read, reported)
        let table: [(Read, Read, Read); 6] = [
            (&[], &[("a", 3)], &[("a", 3)]),         // a rise at once
            (&[("a", 3)], &[("a", 2)], &[("a", 3)]), // one read lower
            (&[("a", 3)], &[], &[("a", 3)]),         // one read without it
            (&[("a", 2)], &[("a", 2)], &[("a", 2)]), // two agree
            (&[], &[], &[]),                         // gone
            (&[("a", 5), ("b", 1)], &[("a", 6)], &[("a", 6), ("b", 1)]),
        ];
        for (previous, current, reported) in table {
            assert_eq!(
                steadied(&reads(previous), &reads(current)),
                reads(reported),
                "{previous:?} then {current:?}"
            );
        }
    }

    #[test]
    fn the_commonest_reason_wins_and_a_tie_goes_to_the_first() {
        let counted = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            commonest(counted(&[("a", 1), ("b", 3), ("c", 2)])).as_deref(),
            Some("b")
        );
        assert_eq!(
            commonest(counted(&[("b", 2), ("a", 2)])).as_deref(),
            Some("a")
        );
        assert_eq!(commonest(BTreeMap::new()), None);
    }
}
