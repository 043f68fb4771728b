//! Which queued messages an action is about, and what one replica reports back.

use crate::agent::QueuedMessage;
use serde::{Deserialize, Serialize};

/// What `mx-operator agent-queue` prints (JSON): one replica's messages of the domain, and
/// what the action did to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    /// The messages with a recipient in the domain (every message without one), showing
    /// only the domain's recipients.
    pub messages: Vec<QueuedMessage>,
    /// Queue lines that were not entries.
    #[serde(default)]
    pub unreadable: usize,
    /// Deferred messages handed to delivery now (`postqueue -i`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flushed: Vec<String>,
    /// Messages removed from the queue (`postsuper -d`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// Messages not deleted because they also carry recipients of other domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

/// The messages with a recipient in `domain` (all of them for `None`), each showing only
/// the domain's recipients, and the IDs of those that also have recipients elsewhere.
pub fn select(
    messages: Vec<QueuedMessage>,
    domain: Option<&str>,
) -> (Vec<QueuedMessage>, Vec<String>) {
    let Some(domain) = domain.map(str::to_ascii_lowercase) else {
        return (messages, vec![]);
    };
    let mut selected = vec![];
    let mut shared = vec![];
    for mut message in messages {
        let before = message.recipients.len();
        message
            .recipients
            .retain(|r| r.domain().as_deref() == Some(domain.as_str()));
        if message.recipients.is_empty() {
            continue;
        }
        if message.recipients.len() < before {
            shared.push(message.id.clone());
        }
        selected.push(message);
    }
    (selected, shared)
}

/// The messages a delete removes: those asked for (all when `ids` is empty) that carry
/// no other domain's recipients, so deleting one domain's mail never drops another's.
pub fn deletable<'a>(
    selected: &'a [QueuedMessage],
    shared: &[String],
    ids: &[String],
) -> Vec<&'a str> {
    selected
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| ids.is_empty() || ids.iter().any(|asked| asked == id))
        .filter(|id| !shared.iter().any(|s| s == id))
        .collect()
}

/// The messages a flush hands to delivery: the deferred ones (active ones are being
/// delivered already; incoming ones are not yet queued).
pub fn flushable(selected: &[QueuedMessage]) -> Vec<&str> {
    selected
        .iter()
        .filter(|m| m.queue == "deferred")
        .map(|m| m.id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::parse_queue;

    const QUEUE: &str = r#"{"queue_name": "deferred", "queue_id": "A1", "arrival_time": 100, "message_size": 300, "sender": "s@client.test", "recipients": [{"address": "alice@Example.com", "delay_reason": "connect refused"}]}
{"queue_name": "deferred", "queue_id": "A2", "arrival_time": 200, "message_size": 400, "sender": "", "recipients": [{"address": "bob@example.com"}, {"address": "carol@other.example", "delay_reason": "timed out"}]}
{"queue_name": "active", "queue_id": "A3", "arrival_time": 300, "message_size": 500, "sender": "", "recipients": [{"address": "dave@example.com"}]}
{"queue_name": "deferred", "queue_id": "B1", "arrival_time": 400, "message_size": 600, "sender": "", "recipients": [{"address": "erin@other.example"}]}
"#;

    fn ids(messages: &[QueuedMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn a_domain_sees_its_messages_with_only_its_own_recipients() {
        let (messages, unreadable) = parse_queue(QUEUE);
        assert_eq!(unreadable, 0);
        let (selected, shared) = select(messages.clone(), Some("EXAMPLE.com"));
        assert_eq!(ids(&selected), ["A1", "A2", "A3"]);
        assert_eq!(shared, ["A2"]);
        assert_eq!(
            selected[1].recipients.len(),
            1,
            "carol@other.example is not shown"
        );
        assert_eq!(selected[1].recipients[0].address, "bob@example.com");
        assert_eq!(selected[0].size, 300);
        assert_eq!(
            selected[0].recipients[0].reason.as_deref(),
            Some("connect refused")
        );

        let (all, shared) = select(messages, None);
        assert_eq!((all.len(), shared.len()), (4, 0));
    }

    #[test]
    fn a_delete_spares_messages_shared_with_another_domain_and_a_flush_takes_the_deferred() {
        let (selected, shared) = select(parse_queue(QUEUE).0, Some("example.com"));
        assert_eq!(deletable(&selected, &shared, &[]), ["A1", "A3"]);
        let asked = ["A3".to_string(), "A2".to_string(), "B1".to_string()];
        assert_eq!(deletable(&selected, &shared, &asked), ["A3"]);
        assert_eq!(flushable(&selected), ["A1", "A2"]);
    }

    #[test]
    fn the_report_round_trips_and_shows_no_content() {
        let (messages, _) = select(parse_queue(QUEUE).0, Some("example.com"));
        let report = ReplicaReport {
            messages,
            deleted: vec!["A1".into()],
            ..ReplicaReport::default()
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(
            text.contains(r#""id":"A1","queue":"deferred","arrival":100,"size":300"#),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<ReplicaReport>(&text).unwrap(),
            report
        );
    }
}
