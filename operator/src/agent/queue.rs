//! The mail queue as `postqueue -j` reports it, summed up per recipient domain.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
struct QueuedMessage {
    arrival_time: u64,
    recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Deserialize)]
struct QueuedRecipient {
    address: String,
}

/// Queued messages and the oldest arrival time (Unix seconds) of one domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainQueue {
    pub messages: u64,
    pub oldest_arrival: u64,
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
}

/// Parses `postqueue -j` output (one JSON object per line). Lines that are not queue
/// entries are skipped and counted.
pub fn summarize(output: &str) -> Summary {
    let mut summary = Summary::default();
    let domains = &mut summary.domains;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(message) = serde_json::from_str::<QueuedMessage>(line) else {
            summary.unreadable += 1;
            continue;
        };
        summary.messages += 1;
        let mut seen: Vec<String> = message
            .recipients
            .iter()
            .filter_map(|r| {
                r.address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for domain in seen {
            let entry = domains.entry(domain).or_insert(DomainQueue {
                messages: 0,
                oldest_arrival: message.arrival_time,
            });
            entry.messages += 1;
            entry.oldest_arrival = entry.oldest_arrival.min(message.arrival_time);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_and_oldest_arrival_per_domain() {
        let output = r#"{"queue_name": "deferred", "queue_id": "A1", "arrival_time": 1700000100, "message_size": 300, "forced_expire": false, "sender": "x@y.test", "recipients": [{"address": "alice@example.com", "delay_reason": "connect refused"}, {"address": "bob@Example.com"}]}
{"queue_name": "deferred", "queue_id": "A2", "arrival_time": 1700000000, "message_size": 300, "sender": "", "recipients": [{"address": "carol@example.org"}, {"address": "dave@example.com"}]}
{"queue_name": "deferred", "queue_id": "A3", "arrival_time": 1700000200, "message_size": 300, "sender": "", "recipients": [{"address": "postmaster"}]}
not json
"#;
        let Summary {
            domains,
            messages,
            unreadable,
        } = summarize(output);
        assert_eq!((messages, unreadable), (3, 1));
        assert_eq!(
            domains["example.com"],
            DomainQueue {
                messages: 2,
                oldest_arrival: 1_700_000_000
            }
        );
        assert_eq!(domains["example.org"].messages, 1);
        assert_eq!(summarize(""), Summary::default());
    }
}
