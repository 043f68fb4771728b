//! How `mx-operator queue list` prints what the replicas hold: a table, one row per
//! queued recipient, or JSON, one object per message.

use super::select::ReplicaReport;
use serde_json::{Value, json};

const HEADER: [&str; 7] = [
    "REPLICA",
    "ID",
    "QUEUE",
    "AGE",
    "SIZE",
    "RECIPIENT",
    "REASON",
];

/// The table of every replica's messages, oldest first; `now` in Unix seconds.
pub fn table(reports: &[(String, ReplicaReport)], now: u64) -> String {
    let mut rows: Vec<(u64, [String; 7])> = vec![];
    for (replica, report) in reports {
        for message in &report.messages {
            for recipient in &message.recipients {
                rows.push((
                    message.arrival,
                    [
                        replica.clone(),
                        message.id.clone(),
                        message.queue.clone(),
                        age(now.saturating_sub(message.arrival)),
                        size(message.size),
                        recipient.address.clone(),
                        recipient.reason.clone().unwrap_or_else(|| "-".into()),
                    ],
                ));
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut widths = HEADER.map(str::len);
    for (_, row) in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = HEADER.map(String::from);
    for row in std::iter::once(&header).chain(rows.iter().map(|(_, row)| row)) {
        let last = row.len() - 1;
        for (column, cell) in row.iter().enumerate() {
            if column == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[column]));
            }
        }
        text.push('\n');
    }
    text
}

/// The messages as JSON, each with its replica.
pub fn json(reports: &[(String, ReplicaReport)]) -> Value {
    let messages: Vec<Value> = reports
        .iter()
        .flat_map(|(replica, report)| {
            report.messages.iter().map(move |message| {
                let mut object = json!(message);
                object["replica"] = json!(replica);
                object
            })
        })
        .collect();
    Value::Array(messages)
}

/// `45s`, `12m`, `5h`, `3d`, as kubectl shows ages.
pub fn age(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7_200 => format!("{}m", seconds / 60),
        7_200..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1_024 => format!("{bytes}B"),
        1_024..1_048_576 => format!("{:.1}KiB", bytes as f64 / 1_024.0),
        _ => format!("{:.1}MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::parse_queue;

    fn report(lines: &str) -> ReplicaReport {
        ReplicaReport {
            messages: parse_queue(lines).0,
            ..ReplicaReport::default()
        }
    }

    #[test]
    fn one_row_per_recipient_oldest_first_across_replicas() {
        let reports = [
            (
                "edge-1".to_string(),
                report(
                    r#"{"queue_name": "deferred", "queue_id": "B1", "arrival_time": 1000, "message_size": 2048, "recipients": [{"address": "a@example.com", "delay_reason": "connect to mx[192.0.2.1]:25: Connection refused"}]}"#,
                ),
            ),
            (
                "edge-0".to_string(),
                report(
                    r#"{"queue_name": "active", "queue_id": "A1", "arrival_time": 400, "message_size": 300, "recipients": [{"address": "b@example.com"}, {"address": "c@example.com"}]}"#,
                ),
            ),
        ];
        let text = table(&reports, 4_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "REPLICA   ID   QUEUE      AGE   SIZE     RECIPIENT       REASON",
                "edge-0    A1   active     60m   300B     b@example.com   -",
                "edge-0    A1   active     60m   300B     c@example.com   -",
                "edge-1    B1   deferred   50m   2.0KiB   a@example.com   connect to mx[192.0.2.1]:25: Connection refused",
            ]
        );
        let listed = json(&reports);
        assert_eq!(listed[0]["replica"], "edge-1");
        assert_eq!(listed[1]["recipients"][1]["address"], "c@example.com");
        assert_eq!(
            table(&[], 0),
            "REPLICA   ID   QUEUE   AGE   SIZE   RECIPIENT   REASON\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl_s() {
        assert_eq!(
            [0, 119, 120, 7_199, 7_200, 172_799, 172_800].map(age),
            ["0s", "119s", "2m", "119m", "2h", "47h", "2d"]
        );
    }
}
