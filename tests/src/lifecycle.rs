//! Mail queued for a domain while its primary is down, taken through a change of the
//! domain (deleted, withdrawn after a departure, moved to another gateway): the messages
//! the gateway accepted must still reach the primary, each exactly once, none bounced.

use crate::TestNamespace;
use crate::gateway::Gateway;
use crate::smtp::{Client, Sink, rcpt_reply};
use crate::wait::{gateway_condition, until};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Messages queued in each case.
pub const MESSAGES: usize = 200;
const LIMIT: Duration = Duration::from_secs(60);

/// Queues [`MESSAGES`] numbered messages for `recipient` on `gateway` while nothing listens
/// at `primary`, runs `change`, and checks what the change must not do to them:
/// * new mail for the recipient gets `refused_with` at RCPT;
/// * every queued message is retried under the new configuration and stays queued, also
///   after the replica's pod is deleted and started again (new configuration folder, same
///   queue volume);
/// * once the primary is back, each arrives exactly once and nothing is bounced;
/// * the MailGateway `edge` in `ns` says how many are draining on the replica (listed as
///   as pod `edge-0`) and, once they are delivered, that none is;
/// * `outliving`, the MailDomain (in `ns`) that outlives the change when it is not
///   deleted, says in `status.draining` how many wait on gateway `edge`, then none;
/// * then the domain's route leaves the gateway.
///
/// Prints the `mail safety:` figures `make verify-mail-safety` sums up.
#[allow(clippy::too_many_arguments)]
pub async fn queued_mail_outlives<F: Future<Output = ()>>(
    ns: &TestNamespace,
    gateway: &mut Gateway,
    recipient: &str,
    primary: SocketAddr,
    case: &str,
    refused_with: u16,
    outliving: Option<&str>,
    change: F,
) {
    let domain = recipient
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    send_numbered(gateway.smtp, recipient, MESSAGES);
    until(LIMIT, "every message queued", || async {
        (gateway.queued().ok()? == MESSAGES).then_some(())
    })
    .await;

    gateway
        .list_as_pod(ns, "edge", "edge-0")
        .await
        .expect("pods");
    change.await;
    until(
        LIMIT,
        &format!("RCPT {recipient} → {refused_with}"),
        || async {
            rcpt_reply(gateway.smtp, "sender@client.test", recipient)
                .ok()
                .filter(|reply| reply.code == refused_with)
        },
    )
    .await;
    // Every message goes through the queue manager again under the new configuration:
    // without a route it would bounce right here.
    retried_and_draining(gateway, domain, "after the change").await;
    let draining = format!("{domain}: {MESSAGES} on edge-0");
    let said = queue_drained(ns, false, "MailDraining", &draining).await;
    println!("MailGateway edge, QueueDrained: {said}");
    let edge = format!("{}/edge", ns.name);
    if let Some(name) = outliving {
        draining_on_domain(ns, name, &[(edge.as_str(), MESSAGES as u64)]).await;
    }
    gateway.recreate().await.expect("the replica started again");
    retried_and_draining(gateway, domain, "after the pod's restart").await;

    let sink = Sink::start_on(primary).expect("primary sink");
    let (arrived, total) = released_to(gateway, &sink, MESSAGES, Duration::from_secs(180)).await;
    let bounced = gateway.log_count("status=bounced");
    println!(
        "mail safety: messages queued {MESSAGES} / delivered {} / lost {} / duplicated {} / bounced {bounced} ({case}, primary down)",
        arrived.len(),
        MESSAGES - arrived.len(),
        total - arrived.len()
    );
    assert_eq!(bounced, 0, "nothing bounced");
    assert_eq!(
        arrived,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message arrived"
    );
    assert_eq!(total, MESSAGES, "none arrived twice");

    until(LIMIT, "the drained domain's route removed", || async {
        let transport = std::fs::read_to_string(gateway.dir.join("conf/maps/transport")).ok()?;
        let draining = gateway.metric(&draining_sample(domain));
        (!transport.contains(&format!("{domain} ")) && draining.is_none()).then_some(())
    })
    .await;
    queue_drained(ns, true, "NothingDraining", "1 replicas asked").await;
    if let Some(name) = outliving {
        draining_on_domain(ns, name, &[]).await;
    }
}

/// Sends `count` messages numbered 0.. (`X-Seq`, which the sink reads) to `recipient` at
/// `smtp`, in one session; each must be taken with 250.
pub fn send_numbered(smtp: SocketAddr, recipient: &str, count: usize) {
    let id = recipient.replace('@', ".");
    let mut client = Client::connect(smtp).expect("SMTP session");
    for n in 0..count {
        let body = format!(
            "Subject: queued {n}\r\nMessage-ID: <{n}.{id}@client.test>\r\nX-Seq: {n}\r\n\r\nbody {n}"
        );
        let reply = client.send("sender@client.test", recipient, &body).unwrap();
        assert_eq!(reply.code, 250, "message {n} to {recipient}: {reply}");
    }
    client.quit();
}

/// Waits until MailDomain `name`'s `status.draining` is `expected` (gateway, messages).
async fn draining_on_domain(ns: &TestNamespace, name: &str, expected: &[(&str, u64)]) {
    let domains = ns.api::<MailDomain>();
    until(
        LIMIT,
        &format!("MailDomain {name}: draining {expected:?}"),
        || async {
            let status = domains.get(name).await.ok()?.status?;
            let draining: Vec<(&str, u64)> = status
                .draining
                .iter()
                .map(|d| (d.gateway.as_str(), d.messages))
                .collect();
            (draining == expected).then_some(())
        },
    )
    .await;
}

/// Waits until MailGateway `edge`'s `QueueDrained` is `ok` with `reason` and a message
/// containing `text`; the message.
async fn queue_drained(ns: &TestNamespace, ok: bool, reason: &str, text: &str) -> String {
    let gateways = ns.api::<MailGateway>();
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    until(
        LIMIT,
        &format!("QueueDrained {status:?} ({reason}): {text}"),
        || async {
            let condition = gateway_condition(&gateways, "edge", "QueueDrained").await?;
            (condition.status == status
                && condition.reason == reason
                && condition.message.contains(text))
            .then_some(condition.message)
        },
    )
    .await
}

fn draining_sample(domain: &str) -> String {
    format!("mx_agent_draining_messages{{domain=\"{domain}\"}}")
}

/// Waits until every queued message was tried again (and deferred, nothing bounced), and
/// the agent reports them all as draining.
async fn retried_and_draining(gateway: &Gateway, domain: &str, when: &str) {
    let deferred = gateway.log_count("status=deferred");
    until(LIMIT, &format!("every message retried {when}"), || async {
        let retried = gateway.log_count("status=deferred") >= deferred + MESSAGES;
        (retried || gateway.log_count("status=bounced") > 0).then_some(())
    })
    .await;
    assert_eq!(
        gateway.log_count("status=bounced"),
        0,
        "nothing bounced {when}"
    );
    let sample = draining_sample(domain);
    until(LIMIT, &format!("the draining figure {when}"), || async {
        gateway.metric(&sample).filter(|n| *n as usize == MESSAGES)
    })
    .await;
}

/// With the primary (`sink`) back: flushes the queue, waits until `count` messages arrived
/// and the queue is empty, and a moment longer (anything delivered twice would arrive right
/// after the rest). Returns the sink's sequence numbers and how many numbered messages
/// arrived in all.
pub async fn released_to(
    gateway: &Gateway,
    sink: &Sink,
    count: usize,
    limit: Duration,
) -> (Vec<usize>, usize) {
    // The master listens before its queue manager is up after a restart: until then
    // postqueue -f answers "mail system is down".
    until(LIMIT, "the queue manager taking a flush", || async {
        gateway.flush().ok()
    })
    .await;
    until(limit, "the queue drained to the primary", || async {
        (sink.received().len() >= count && gateway.queued().ok()? == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.sequence_numbers()
}
