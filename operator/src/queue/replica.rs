//! `mx-operator agent-queue`: run inside a gateway's agent container (through pods/exec),
//! it reads one replica's queue and acts on it with Postfix's own tools.

use super::select::{ReplicaReport, deletable, flushable, select};
use crate::agent::{Postfix, PostfixError, parse_queue};
use std::time::Duration;

/// How long the queue read may go without output: the caller waits on it through the API
/// server.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    List,
    /// Deferred messages are tried now.
    Flush,
    /// The messages `ids` (all of the domain's when empty) are removed.
    Delete {
        ids: Vec<String>,
    },
}

/// Does `action` to the messages of `domain` (every message for `None`), and reports the
/// messages that remain.
pub async fn act(
    postfix: &Postfix,
    domain: Option<&str>,
    action: &Action,
) -> Result<ReplicaReport, PostfixError> {
    let (messages, unreadable) = parse_queue(&postfix.queue(READ_TIMEOUT).await?);
    let (messages, shared) = select(messages, domain);
    let mut report = ReplicaReport {
        unreadable,
        ..ReplicaReport::default()
    };
    match action {
        Action::List => {}
        Action::Flush => {
            for id in flushable(&messages) {
                postfix.deliver_now(id).await?;
                report.flushed.push(id.to_string());
            }
        }
        Action::Delete { ids } => {
            for id in deletable(&messages, &shared, ids) {
                postfix.delete(id).await?;
                report.deleted.push(id.to_string());
            }
            report.shared = shared
                .into_iter()
                .filter(|id| ids.is_empty() || ids.contains(id))
                .collect();
        }
    }
    report.messages = messages
        .into_iter()
        .filter(|m| !report.deleted.contains(&m.id))
        .collect();
    Ok(report)
}
