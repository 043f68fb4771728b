//! The data plane end to end: the operator renders MailGateway and MailDomain objects on the
//! real API server, the agent loads them into a real Postfix, and mail is sent to it over
//! SMTP, with an SMTP sink standing in for the customer's primary.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway, MailRelay};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::lifecycle::{queued_mail_outlives, released_to, send_numbered};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::process::free_port;
use mx_operator_tests::smtp::{Client, Reply, Sink, rcpt_reply, relay_tricks, send};
use mx_operator_tests::wait::{gateway_condition, gone, until};
use mx_operator_tests::{ControlPlane, TestNamespace};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// A gateway `edge` in a fresh namespace with the given domains, and its replica running.
async fn replica(
    prefix: &str,
    domains: &[(&str, &str, serde_json::Value)],
) -> (&'static ControlPlane, TestNamespace, Gateway) {
    let (plane, ns) = namespace_with_operator(prefix).await;
    let gateway = replica_in(plane, &ns, json!({}), domains).await;
    (plane, ns, gateway)
}

/// Like `replica`, in a namespace the test prepared, the gateway's spec merged with
/// `gateway_spec`.
async fn replica_in(
    plane: &ControlPlane,
    ns: &TestNamespace,
    gateway_spec: serde_json::Value,
    domains: &[(&str, &str, serde_json::Value)],
) -> Gateway {
    apply_edge(ns, gateway_spec, domains).await;
    start_replica(plane, ns, "edge").await
}

/// Gateway `edge` (its spec merged with `gateway_spec`) and `domains`, applied, once their
/// MailRelays exist.
async fn apply_edge(
    ns: &TestNamespace,
    gateway_spec: serde_json::Value,
    domains: &[(&str, &str, serde_json::Value)],
) {
    apply::<MailGateway>(ns, gateway("edge", gateway_spec)).await;
    for (name, name_of_domain, extra) in domains {
        apply::<MailDomain>(ns, domain(name, name_of_domain, extra.clone())).await;
    }
    let relays = ns.api::<MailRelay>();
    for (_, name_of_domain, _) in domains {
        let name = format!("relay-{name_of_domain}");
        until(LIMIT, &format!("MailRelay {name}"), || async {
            relays.get_opt(&name).await.ok().flatten()
        })
        .await;
    }
}

/// A replica of gateway `name` in `ns`.
async fn start_replica(plane: &ControlPlane, ns: &TestNamespace, name: &str) -> Gateway {
    start_replica_with(plane, ns, name, &[]).await
}

/// A replica of gateway `name` in `ns`, its agent given `agent_args` as well.
async fn start_replica_with(
    plane: &ControlPlane,
    ns: &TestNamespace,
    name: &str,
    agent_args: &[&str],
) -> Gateway {
    Gateway::start_on(
        &plane.dir.join(format!("gateway-{}-{name}", ns.name)),
        &plane.operator_kubeconfig,
        &ns.name,
        name,
        None,
        agent_args,
        mx_operator_tests::control_plane::Lifetime::TiedToThisProcess,
    )
    .await
    .expect("gateway replica")
}

/// A replica of `edge` whose Postfix retries deferred mail ten minutes apart: within a
/// test, only a release or a flush sends what it queued.
async fn start_replica_retrying_late(plane: &ControlPlane, ns: &TestNamespace) -> Gateway {
    start_replica_with(
        plane,
        ns,
        "edge",
        &[
            "--set=minimal_backoff_time=600s",
            "--set=maximal_backoff_time=1200s",
        ],
    )
    .await
}

fn primary(sink: SocketAddr) -> serde_json::Value {
    json!({"primary": {"host": sink.ip().to_string(), "port": sink.port(), "tls": "None"}})
}

async fn reply_becomes(smtp: SocketAddr, recipient: &str, expected: u16) -> Reply {
    until(LIMIT, &format!("RCPT {recipient} → {expected}"), || async {
        rcpt_reply(smtp, "sender@client.test", recipient)
            .ok()
            .filter(|reply| reply.code == expected)
    })
    .await
}

#[tokio::test]
async fn known_recipients_are_relayed_and_nothing_else_is_accepted() {
    let sink = Sink::start().unwrap();
    let mut extra = primary(sink.address);
    extra["recipients"] = json!({"inline": ["alice@relay.example", "bob@relay.example"]});
    let (_plane, _ns, gateway) = replica("smtp", &[("relay", "relay.example", extra)]).await;
    let smtp = gateway.smtp;

    let body = "Subject: backup MX test\r\nMessage-ID: <t1@client.test>\r\n\r\nline one\r\n.leading dot\r\nlast line";
    let reply = send(smtp, "sender@client.test", "alice@relay.example", body).unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    let received = until(LIMIT, "the message at the primary", || async {
        sink.received().into_iter().next()
    })
    .await;
    assert_eq!(received.sender, "sender@client.test");
    assert_eq!(received.recipients, ["alice@relay.example"]);
    for line in [
        "Subject: backup MX test",
        "line one",
        ".leading dot",
        "last line",
    ] {
        assert!(
            received.data.contains(line),
            "{line:?} missing in {}",
            received.data
        );
    }

    let unknown = rcpt_reply(smtp, "sender@client.test", "mallory@relay.example").unwrap();
    assert_eq!(unknown.code, 550, "{unknown}");
    assert!(unknown.text.starts_with("5.1.1"), "{unknown}");
    let strangers: Vec<String> = (0..20)
        .map(|i| format!("nobody{i}@relay.example"))
        .chain([
            "ALICE.@relay.example".into(),
            "alice+tag@relay.example".into(),
        ])
        .collect();
    let let_in: Vec<&String> = strangers
        .iter()
        .filter(|r| {
            rcpt_reply(smtp, "sender@client.test", r)
                .map(|reply| reply.code / 100 != 5)
                .unwrap_or(true)
        })
        .collect();
    println!(
        "mail safety: unknown recipients tried {} / accepted {}",
        strangers.len() + 1,
        let_in.len()
    );
    assert!(let_in.is_empty(), "not refused with 5xx: {let_in:?}");
    let foreign = rcpt_reply(smtp, "sender@client.test", "someone@elsewhere.test").unwrap();
    assert_eq!(foreign.code, 554, "{foreign}");
    assert!(foreign.text.contains("Relay access denied"), "{foreign}");

    // ETRN (a request to deliver a domain's queue now) is refused, for any domain.
    let mut client = mx_operator_tests::smtp::Client::connect(smtp).unwrap();
    for domain in ["relay.example", "elsewhere.test"] {
        let etrn = client.command(&format!("ETRN {domain}")).unwrap();
        assert_eq!(etrn.code / 100, 5, "ETRN {domain}: {etrn}");
    }
    client.quit();

    let (tried, accepted) = relay_tricks(smtp, "relay.example", "edge.mx.example.net");
    println!(
        "mail safety: open-relay tricks tried {tried} / accepted {}",
        accepted.len()
    );
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");

    // The legitimate variants of a known address are accepted: case and a null sender
    // (bounces to a real user must get through).
    for (sender, recipient) in [
        ("", "alice@relay.example"),
        ("x@client.test", "ALICE@Relay.Example"),
    ] {
        let reply = rcpt_reply(smtp, sender, recipient).unwrap();
        assert_eq!(reply.code, 250, "{sender:?} → {recipient}: {reply}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.received().len(),
        1,
        "only the one real message reached the primary"
    );
}

#[tokio::test]
async fn queued_during_an_outage_then_released_at_the_configured_pace() {
    // The primary is down: nothing listens on its port until the sink starts there.
    let port = mx_operator_tests::process::free_port().unwrap();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut extra = primary(address);
    extra["delivery"] = json!({"rateDelay": "2s"});
    let (_plane, _ns, gateway) = replica("outage", &[("slow", "slow.example", extra)]).await;

    const MESSAGES: usize = 6;
    for i in 0..MESSAGES {
        let reply = send(
            gateway.smtp,
            "sender@client.test",
            "alice@slow.example",
            &format!("Subject: queued {i}\r\n\r\nbody {i}"),
        )
        .unwrap();
        assert_eq!(reply.code, 250, "{reply}");
    }
    until(LIMIT, "all messages deferred", || async {
        (gateway.log_count("status=deferred") >= MESSAGES).then_some(())
    })
    .await;
    assert_eq!(
        gateway.queued().unwrap(),
        MESSAGES,
        "every message stays queued"
    );
    let queued = until(LIMIT, "queue depth in the agent's metrics", || async {
        gateway
            .metric("mx_agent_queue_messages{domain=\"slow.example\"}")
            .filter(|n| *n as usize == MESSAGES)
    })
    .await;
    assert_eq!(queued as usize, MESSAGES);

    let sink = Sink::start_on(address).unwrap();
    gateway.flush().unwrap();
    let received = until(
        Duration::from_secs(60),
        "every queued message at the primary",
        || async {
            let received = sink.received();
            (received.len() >= MESSAGES).then_some(received)
        },
    )
    .await;
    assert_eq!(gateway.log_count("status=bounced"), 0, "nothing bounced");
    let mut bodies: Vec<String> = received.iter().map(|m| m.data.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), MESSAGES, "each message exactly once");
    println!(
        "mail safety: messages queued {MESSAGES} / delivered {} / lost {}",
        bodies.len(),
        MESSAGES - bodies.len()
    );
    let span = received[MESSAGES - 1].at.duration_since(received[0].at);
    let gaps: Vec<String> = received
        .windows(2)
        .map(|w| format!("{:.2}", w[1].at.duration_since(w[0].at).as_secs_f64()))
        .collect();
    println!(
        "delivery pace with rateDelay 2s: {MESSAGES} messages over {:.2} s, gaps {gaps:?}",
        span.as_secs_f64()
    );
    // Postfix's timer counts whole seconds, so a pause of 2 s leaves at least 1 s between
    // two deliveries (less a little for the time the sink takes to note one); all at once,
    // the six would arrive within a fraction of a second.
    assert!(
        span >= Duration::from_millis(((MESSAGES - 1) as u64) * 950),
        "released too fast: {span:?}, gaps {gaps:?}"
    );
}

#[tokio::test]
async fn a_thousand_queued_messages_survive_a_postfix_restart_and_arrive_exactly_once() {
    // The primary is down while 1,000 messages arrive; Postfix is restarted with all of
    // them queued (a pod restart keeps the queue volume); then the primary comes back.
    let port = mx_operator_tests::process::free_port().unwrap();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let (_plane, _ns, mut gateway) =
        replica("thousand", &[("bulk", "bulk.example", primary(address))]).await;

    const MESSAGES: usize = 1_000;
    const SESSIONS: usize = 10;
    let smtp = gateway.smtp;
    let senders: Vec<_> = (0..SESSIONS)
        .map(|session| {
            std::thread::spawn(move || {
                let mut client = mx_operator_tests::smtp::Client::connect(smtp).unwrap();
                for n in (session..MESSAGES).step_by(SESSIONS) {
                    let body = format!(
                        "Subject: queued {n}\r\nMessage-ID: <{n}@bulk.client.test>\r\nX-Seq: {n}\r\n\r\nbody {n}"
                    );
                    let reply = client
                        .send("sender@client.test", "alice@bulk.example", &body)
                        .unwrap();
                    assert_eq!(reply.code, 250, "message {n}: {reply}");
                }
                client.quit();
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("a sending session failed");
    }
    until(
        Duration::from_secs(120),
        "all 1,000 messages queued",
        || async { (gateway.queued().ok()? == MESSAGES).then_some(()) },
    )
    .await;

    gateway.restart_postfix().await.unwrap();
    // (showq skips a message while a queue manager moves it, so count until all are seen.)
    until(
        LIMIT,
        "all 1,000 messages still queued after the restart",
        || async { (gateway.queued().ok()? == MESSAGES).then_some(()) },
    )
    .await;

    let sink = Sink::start_on(address).unwrap();
    let (sequence, total) = released_to(&gateway, &sink, MESSAGES, Duration::from_secs(300)).await;
    assert_eq!(gateway.log_count("status=bounced"), 0, "nothing bounced");
    println!(
        "mail safety: messages queued {MESSAGES} / delivered {} / lost {} / duplicated {} (Postfix restarted with all queued, primary down)",
        sequence.len(),
        MESSAGES - sequence.len(),
        total - sequence.len()
    );
    assert_eq!(
        sequence,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message arrived"
    );
    assert_eq!(total, MESSAGES, "none arrived twice");
}

#[tokio::test]
async fn recipient_list_changes_reach_the_smtp_port_without_a_restart() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("change").await;
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"}, "data": {"list": "alice@change.example\n"}}),
    )
    .await;
    let mut extra = primary(sink.address);
    extra["recipients"] = json!({"configMapRef": {"name": "users", "key": "list"}});
    let gateway = replica_in(
        plane,
        &ns,
        json!({}),
        &[("change", "change.example", extra)],
    )
    .await;
    let lists = ns.api::<ConfigMap>();
    reply_becomes(gateway.smtp, "alice@change.example", 250).await;
    let master = gateway.master_pid().expect("master pid");
    let reloads = gateway.metric("mx_agent_postfix_reloads_total");

    let mut latencies = Vec::new();
    for i in 0..20 {
        let added = i % 2 == 0;
        let user = format!("user{}@change.example", i / 2);
        let list = if added {
            format!("alice@change.example\n{user}\n")
        } else {
            "alice@change.example\n".to_string()
        };
        let started = Instant::now();
        let edit = json!({"data": {"list": list}});
        until(LIMIT, "the recipient list edit", || async {
            lists
                .patch("users", &PatchParams::default(), &Patch::Merge(&edit))
                .await
                .ok()
        })
        .await;
        reply_becomes(gateway.smtp, &user, if added { 250 } else { 550 }).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "recipient change → new answer at the SMTP port over {} changes: min {:?}, median {:?}, max {:?}",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        gateway.master_pid(),
        Some(master),
        "Postfix was not restarted"
    );
    assert_eq!(
        gateway.metric("mx_agent_postfix_reloads_total"),
        reloads,
        "recipient changes need no reload"
    );
    assert!(
        gateway
            .metric("mx_agent_config_generation")
            .unwrap_or_default()
            >= 21.0,
        "each change is a new generation"
    );
}

#[tokio::test]
async fn policy_changes_reload_postfix_and_apply_per_domain() {
    let sink = Sink::start().unwrap();
    let mut strict = primary(sink.address);
    strict["policy"] = json!({"senderDeny": ["@spam.test"], "clientDeny": ["127.0.0.0/8"]});
    let mut open = primary(sink.address);
    open["policy"] = json!({"senderDeny": ["@spam.test"]});
    let (_plane, ns, gateway) = replica(
        "policy",
        &[
            ("strict", "strict.example", strict),
            ("open", "open.example", open),
        ],
    )
    .await;
    let smtp = gateway.smtp;
    // The test client connects from 127.0.0.1: refused for strict.example only.
    let refused = rcpt_reply(smtp, "x@client.test", "alice@strict.example").unwrap();
    assert_eq!(refused.code, 554, "{refused}");
    assert!(refused.text.contains("strict.example"), "{refused}");
    assert_eq!(
        rcpt_reply(smtp, "x@client.test", "alice@open.example")
            .unwrap()
            .code,
        250
    );
    let spam = rcpt_reply(smtp, "x@spam.test", "alice@open.example").unwrap();
    assert_eq!(spam.code, 554, "{spam}");

    // Lifting the client deny list changes the domain's restriction class: main.cf changes
    // and Postfix reloads (no restart), and the domain accepts the client.
    let master = gateway.master_pid();
    ns.api::<MailDomain>()
        .patch(
            "strict",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"policy": {"clientDeny": []}}})),
        )
        .await
        .unwrap();
    reply_becomes(smtp, "alice@strict.example", 250).await;
    assert_eq!(gateway.master_pid(), master);
    assert!(
        gateway
            .metric("mx_agent_postfix_reloads_total")
            .unwrap_or_default()
            >= 1.0
    );
    let spam = rcpt_reply(smtp, "x@spam.test", "alice@strict.example").unwrap();
    assert_eq!(spam.code, 554, "the sender deny list still applies: {spam}");
}

#[tokio::test]
async fn mail_queued_for_a_deleted_domain_still_reaches_its_primary() {
    let address: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (_plane, ns, mut gateway) =
        replica("deleted", &[("gone", "gone.example", primary(address))]).await;
    let domains = ns.api::<MailDomain>();
    queued_mail_outlives(
        &ns,
        &mut gateway,
        "alice@gone.example",
        address,
        "domain deleted",
        554,
        None,
        async {
            domains
                .delete("gone", &Default::default())
                .await
                .expect("delete");
            gone(&domains, "gone").await;
        },
    )
    .await;
}

#[tokio::test]
async fn mail_queued_for_a_domain_that_moves_is_delivered_by_the_old_gateway() {
    let address: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (plane, ns) = namespace_with_operator("moved").await;
    let mut old = replica_in(
        plane,
        &ns,
        json!({}),
        &[("moving", "moving.example", primary(address))],
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge2", json!({}))).await;
    let new = start_replica(plane, &ns, "edge2").await;
    reply_becomes(new.smtp, "alice@moving.example", 554).await;
    queued_mail_outlives(
        &ns,
        &mut old,
        "alice@moving.example",
        address,
        "domain moved to another gateway",
        554,
        Some("moving"),
        async {
            let domains = ns.api::<MailDomain>();
            let edit = json!({"spec": {"gatewayRef": {"name": "edge2"}}});
            domains
                .patch("moving", &PatchParams::default(), &Patch::Merge(&edit))
                .await
                .expect("move");
            reply_becomes(new.smtp, "alice@moving.example", 250).await;
        },
    )
    .await;
}

/// The notifications of `sink` to `recipient` whose body contains `text`.
fn notices(sink: &Sink, recipient: &str, text: &str) -> usize {
    sink.received()
        .iter()
        .filter(|m| m.recipients == [recipient] && m.data.contains(text))
        .count()
}

#[tokio::test]
async fn mail_the_primary_refuses_is_reported_to_its_sender_once_and_refused_recipients_never() {
    let notify = Sink::start().unwrap();
    let refusing = Sink::start_refusing(([127, 0, 0, 1], 0).into(), &["bob@dsn.example"]).unwrap();
    let down: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let relay_host = format!("[127.0.0.1]:{}", notify.address.port());
    let (plane, ns) = namespace_with_operator("dsn").await;
    let mut dsn = primary(refusing.address);
    dsn["recipients"] = json!({"inline": ["alice@dsn.example", "bob@dsn.example"]});
    let mut late = primary(down);
    late["recipients"] = json!({"inline": ["carol@late.example"]});
    let spec = json!({"notifications": {"mode": "RelayHost", "relayHost": relay_host,
        "postmaster": "postmaster@ops.test", "delayWarningTime": "1h"}});
    apply_edge(
        &ns,
        spec,
        &[("dsn", "dsn.example", dsn), ("late", "late.example", late)],
    )
    .await;
    // The spec's shortest warning time is an hour; this replica warns after 10 s.
    let gateway = start_replica_with(plane, &ns, "edge", &["--set=delay_warning_time=10s"]).await;
    let gateways = ns.api::<MailGateway>();
    let said = until(LIMIT, "status.notifications", || async {
        let status = gateways.get("edge").await.ok()?.status?;
        status.notifications.filter(|n| n.contains(&relay_host))
    })
    .await;
    assert!(
        said.contains("copies of bounce notices to postmaster@ops.test"),
        "{said}"
    );

    // A listed recipient the primary no longer has: accepted here, refused there.
    let body = "Subject: to bob\r\nMessage-ID: <dsn1@client.test>\r\n\r\nhello";
    let reply = send(gateway.smtp, "sender@client.test", "bob@dsn.example", body).unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    until(
        Duration::from_secs(60),
        "the DSN at the sender's relay",
        || async { (notices(&notify, "sender@client.test", "Action: failed") > 0).then_some(()) },
    )
    .await;
    let dsn = notify
        .received()
        .into_iter()
        .find(|m| m.recipients == ["sender@client.test"])
        .unwrap();
    assert_eq!(dsn.sender, "", "a DSN has the null sender");
    for part in [
        "report-type=delivery-status",
        "Final-Recipient: rfc822; bob@dsn.example",
        "550 5.1.1",
        "Message-ID: <dsn1@client.test>",
    ] {
        assert!(dsn.data.contains(part), "{part:?} missing in {}", dsn.data);
    }
    until(LIMIT, "the postmaster's copy", || async {
        notify
            .received()
            .into_iter()
            .find(|m| m.recipients == ["postmaster@ops.test"])
    })
    .await;

    // Mail still queued after delayWarningTime: the sender is told, the mail stays.
    let reply = send(
        gateway.smtp,
        "early@client.test",
        "carol@late.example",
        "Subject: late\r\n\r\nx",
    )
    .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    until(Duration::from_secs(60), "the delay warning", || async {
        (notices(&notify, "early@client.test", "Action: delayed") > 0).then_some(())
    })
    .await;
    assert_eq!(
        gateway.queued().unwrap(),
        1,
        "the delayed message stays queued"
    );

    // Recipients refused during the dialogue never produce a DSN (no backscatter), and the
    // way out that notifications have is no way out for anything else.
    let notified = notify.received().len();
    let (tricks, accepted) = relay_tricks(gateway.smtp, "dsn.example", "edge.mx.example.net");
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    let mut refused = 0;
    for i in 0..50 {
        let recipient = if i % 2 == 0 {
            format!("nobody{i}@dsn.example")
        } else {
            format!("someone{i}@elsewhere.test")
        };
        let reply = rcpt_reply(gateway.smtp, "victim@client.test", &recipient).unwrap();
        assert_eq!(reply.code / 100, 5, "{recipient}: {reply}");
        refused += 1;
    }
    // Several queue runs (2 s apart) for anything that might have been queued.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let backscatter = notify.received().len() - notified;
    let failed = notices(&notify, "sender@client.test", "Action: failed");
    println!(
        "mail safety: DSNs for 1 message the primary refused {failed} / for {refused} recipients refused at RCPT and {tricks} relay tricks {backscatter}"
    );
    assert_eq!(failed, 1, "one DSN for the refused message");
    assert_eq!(
        backscatter, 0,
        "RCPT-refused attempts produced notifications"
    );

    // Turned off: the next refused message produces no notification, and is not kept.
    let off = json!({"spec": {"notifications": {"mode": "Off", "relayHost": null,
        "postmaster": null, "delayWarningTime": null}}});
    gateways
        .patch("edge", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .unwrap();
    let reloads = gateway.metric("mx_agent_postfix_reloads_total");
    until(LIMIT, "Postfix reloaded with the Off route", || async {
        let main = std::fs::read_to_string(gateway.dir.join("conf/main.cf")).ok()?;
        (main.contains("=discard:") && gateway.metric("mx_agent_postfix_reloads_total") > reloads)
            .then_some(())
    })
    .await;
    let reply = send(
        gateway.smtp,
        "quiet@client.test",
        "bob@dsn.example",
        "Subject: x\r\n\r\nx",
    )
    .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    until(
        Duration::from_secs(60),
        "the notification discarded",
        || async { (gateway.log_count("delivery status notifications are off") > 0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(notices(&notify, "quiet@client.test", ""), 0);
    let status = gateways.get("edge").await.unwrap().status.unwrap();
    assert!(
        status
            .notifications
            .as_deref()
            .is_some_and(|n| n.starts_with("not sent")),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_hung_postfix_fails_its_liveness_probe_and_recovers_when_it_answers() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("hung").await;
    let mut extra = primary(sink.address);
    extra["recipients"] = json!({"inline": ["alice@hung.example"]});
    apply_edge(&ns, json!({}), &[("hung", "hung.example", extra)]).await;
    let gateway = start_replica_with(plane, &ns, "edge", &["--postfix-answer-seconds=3"]).await;
    let agent = gateway.agent_address;
    let answer = |path: &'static str| async move {
        mx_operator_tests::gateway::http_get_at(agent, path).map(|(code, _)| code)
    };
    assert_eq!(answer("/healthz/postfix").await, Some(200));

    gateway.freeze_postfix(true).unwrap();
    let (code, text) = until(LIMIT, "/healthz/postfix fails", || async {
        mx_operator_tests::gateway::http_get_at(agent, "/healthz/postfix")
            .filter(|(code, _)| *code == 503)
    })
    .await;
    assert!(
        text.contains("postqueue") && text.contains("no output for 3s"),
        "{code}: {text}"
    );
    assert_eq!(
        answer("/readyz").await,
        Some(503),
        "a hung replica takes no new mail"
    );
    assert_eq!(
        answer("/healthz").await,
        Some(200),
        "the agent itself is well"
    );

    gateway.freeze_postfix(false).unwrap();
    until(LIMIT, "/healthz/postfix answers again", || async {
        (answer("/healthz/postfix").await == Some(200)).then_some(())
    })
    .await;
    until(LIMIT, "ready again", || async {
        (answer("/readyz").await == Some(200)).then_some(())
    })
    .await;
    let reply = send(
        gateway.smtp,
        "sender@client.test",
        "alice@hung.example",
        "Subject: x\r\n\r\nx",
    )
    .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    until(LIMIT, "the message at the primary", || async {
        sink.received().into_iter().next()
    })
    .await;
}

/// A replica of gateway `edge` in `ns` run as pod `pod` (its agent knows its ordinal).
async fn start_pod(plane: &ControlPlane, ns: &TestNamespace, pod: &str) -> Gateway {
    Gateway::start_on(
        &plane.dir.join(format!("gateway-{}-{pod}", ns.name)),
        &plane.operator_kubeconfig,
        &ns.name,
        "edge",
        None,
        &[&format!("--replica={pod}")],
        mx_operator_tests::control_plane::Lifetime::TiedToThisProcess,
    )
    .await
    .expect("gateway replica")
}

/// The `replicas` of StatefulSet `edge`, and MailGateway `edge`'s `Scaled` condition.
async fn scale_state(ns: &TestNamespace) -> Option<(i32, String, String, String)> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let replicas = ns
        .api::<StatefulSet>()
        .get("edge")
        .await
        .ok()?
        .spec?
        .replicas?;
    let scaled = gateway_condition(&ns.api(), "edge", "Scaled").await?;
    Some((
        replicas,
        format!("{:?}", scaled.status),
        scaled.reason,
        scaled.message,
    ))
}

#[tokio::test]
async fn a_scale_in_removes_a_replica_only_once_it_has_delivered_its_queue() {
    let address: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (plane, ns) = namespace_with_operator("scalein").await;
    apply_edge(
        &ns,
        json!({"replicas": 3}),
        &[("relay", "relay.example", primary(address))],
    )
    .await;
    let mut pods = Vec::new();
    for ordinal in 0..3 {
        let pod = format!("edge-{ordinal}");
        let replica = start_pod(plane, &ns, &pod).await;
        pods.push((pod, replica));
    }
    let listed: Vec<(&str, &Gateway)> = pods.iter().map(|(p, g)| (p.as_str(), g)).collect();
    mx_operator_tests::gateway::list_as_pods(&ns, "edge", &listed)
        .await
        .expect("pods");
    // With the primary down: 2 messages wait on edge-1, 1 on edge-2.
    let mut sequence = 0;
    for (ordinal, count) in [(1, 2), (2, 1)] {
        let replica = &pods[ordinal].1;
        for _ in 0..count {
            let body = format!("Subject: {sequence}\r\nX-Seq: {sequence}\r\n\r\nbody");
            let reply = send(
                replica.smtp,
                "sender@client.test",
                "alice@relay.example",
                &body,
            )
            .unwrap();
            assert_eq!(reply.code, 250, "{reply}");
            sequence += 1;
        }
        until(LIMIT, "the messages queued", || async {
            (replica.queued().ok()? == count).then_some(())
        })
        .await;
    }
    until(LIMIT, "StatefulSet edge at 3", || async {
        scale_state(&ns).await.filter(|s| s.0 == 3)
    })
    .await;
    // A client that connected before the scale-in and sends its message late.
    let mut late = Client::connect(pods[2].1.smtp).unwrap();

    let gateways = ns.api::<MailGateway>();
    gateways
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let scaled_in = std::time::Instant::now();
    let held = until(
        LIMIT,
        "the scale-in held, with what it waits for",
        || async {
            scale_state(&ns).await.filter(|s| {
                s.2 == "DrainingBeforeScaleIn"
                    && s.3.ends_with(
                        "edge-1 holds 2 messages; edge-2 holds 1 message and has 1 SMTP session open",
                    )
            })
        },
    )
    .await;
    println!("MailGateway edge, Scaled: {}", held.3);
    assert_eq!((held.0, held.1.as_str()), (3, "False"), "{held:?}");
    let ready = |replica: &Gateway| {
        mx_operator_tests::gateway::http_get_at(replica.agent_address, "/readyz")
            .map(|(code, _)| code)
    };
    // The leaving replicas take no new mail; the one that stays does.
    until(LIMIT, "edge-1 and edge-2 not ready", || async {
        (ready(&pods[1].1) == Some(503) && ready(&pods[2].1) == Some(503)).then_some(())
    })
    .await;
    assert_eq!(ready(&pods[0].1), Some(200));
    // Held for as long as the mail cannot go.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(scale_state(&ns).await.map(|s| s.0), Some(3));

    let sink = Sink::start_on(address).unwrap();
    // Its queue delivered, edge-2 still waits for the open session, past the minute a
    // replica settles.
    until(
        Duration::from_secs(60),
        "edge-2 held by the open session alone",
        || async {
            scale_state(&ns).await.filter(|s| {
                s.3.ends_with("edge-2 holds no mail yet but has 1 SMTP session open")
            })
        },
    )
    .await;
    tokio::time::sleep(
        (scaled_in + Duration::from_secs(70)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    let waiting = scale_state(&ns).await.unwrap();
    assert_eq!(waiting.0, 3, "{waiting:?}");
    assert!(
        waiting
            .3
            .ends_with("edge-2 holds no mail yet but has 1 SMTP session open"),
        "{waiting:?}"
    );
    let body = format!("Subject: {sequence}\r\nX-Seq: {sequence}\r\n\r\nlate body");
    let reply = late
        .send("sender@client.test", "alice@relay.example", &body)
        .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    sequence += 1;
    late.quit();
    let done = until(
        Duration::from_secs(120),
        "the scale-in done once the queues are delivered",
        || async {
            scale_state(&ns)
                .await
                .filter(|s| s.0 == 1 && s.2 == "AtSpec")
        },
    )
    .await;
    assert_eq!(done.1, "True", "{done:?}");
    for (pod, replica) in &pods[1..] {
        assert_eq!(
            replica.queued().ok(),
            Some(0),
            "{pod} emptied before it went"
        );
    }
    let bounced: usize = pods
        .iter()
        .map(|(_, replica)| replica.log_count("status=bounced"))
        .sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (arrived, total) = sink.sequence_numbers();
    println!(
        "mail safety: messages queued {sequence} / delivered {} / lost {} / duplicated {} / bounced {bounced} (scale-in 3 → 1, primary down)",
        arrived.len(),
        sequence - arrived.len(),
        total - arrived.len()
    );
    assert_eq!(bounced, 0, "nothing bounced");
    assert_eq!(arrived, (0..sequence).collect::<Vec<_>>());
    assert_eq!(total, sequence, "none arrived twice");
}

/// `status.queue` of MailDomain `name` once `wanted` holds for it.
async fn queue_shown(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    wanted: impl Fn(&Option<mx_operator::api::domain::QueuedMail>) -> bool,
) -> MailDomain {
    let domains = ns.api::<MailDomain>();
    until(LIMIT, &format!("MailDomain {name}: {what}"), || async {
        let domain = domains.get(name).await.ok()?;
        let queue = domain.status.as_ref().and_then(|s| s.queue.clone());
        wanted(&queue).then_some(domain)
    })
    .await
}

#[tokio::test]
async fn mail_queued_for_two_domains_shows_in_their_status_summed_over_the_replicas() {
    let down_a: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let down_b: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (plane, ns) = namespace_with_operator("queued").await;
    apply_edge(
        &ns,
        json!({}),
        &[
            ("qa", "qa.example", primary(down_a)),
            ("qb", "qb.example", primary(down_b)),
        ],
    )
    .await;
    let one = start_replica(plane, &ns, "edge").await;
    let two = Gateway::start_on(
        &plane.dir.join(format!("gateway-{}-edge-1", ns.name)),
        &plane.operator_kubeconfig,
        &ns.name,
        "edge",
        None,
        &[],
        mx_operator_tests::control_plane::Lifetime::TiedToThisProcess,
    )
    .await
    .expect("second replica");
    mx_operator_tests::gateway::list_as_pods(&ns, "edge", &[("edge-0", &one), ("edge-1", &two)])
        .await
        .expect("pods");
    let before_mail = k8s_openapi::jiff::Timestamp::now().as_second() - 1;
    // qa: 6 + 5 messages, in the 10-99 range only when both replicas count.
    send_numbered(one.smtp, "alice@qa.example", 6);
    send_numbered(two.smtp, "alice@qa.example", 5);
    send_numbered(one.smtp, "alice@qb.example", 2);

    let qa = queue_shown(&ns, "qa", "11 messages, refused", |queue| {
        queue.as_ref().is_some_and(|q| {
            q.messages == "10-99"
                && q.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("Connection refused"))
        })
    })
    .await;
    let shown = qa.status.unwrap().queue.unwrap();
    let oldest = shown.oldest_arrival.0.as_second();
    assert!(
        oldest >= before_mail && oldest <= k8s_openapi::jiff::Timestamp::now().as_second(),
        "oldest arrival {oldest}, mail sent after {before_mail}"
    );
    let reason = shown.reason.unwrap_or_default();
    assert!(reason.contains(&down_a.port().to_string()), "{reason}");
    let qb = queue_shown(&ns, "qb", "2 messages, refused", |queue| {
        queue.as_ref().is_some_and(|q| {
            q.messages == "1-9"
                && q.reason
                    .as_deref()
                    .is_some_and(|r| r.contains(&down_b.port().to_string()))
        })
    })
    .await;
    // `kubectl get md` shows the range in its QUEUED column.
    let listed = mx_operator_tests::kubectl::kubectl_ok(
        &plane.operator_kubeconfig,
        &["get", "md", "-n", &ns.name],
    );
    // Columns are found by where their header starts: an empty one leaves a gap.
    let mut lines = listed.lines();
    let column = lines
        .next()
        .and_then(|header| header.find("QUEUED"))
        .expect("a QUEUED column");
    let queued: Vec<(&str, &str)> = lines
        .map(|line| {
            let name = line.split_whitespace().next().unwrap_or_default();
            let cell = line.get(column..).unwrap_or_default();
            (name, cell.split_whitespace().next().unwrap_or_default())
        })
        .collect();
    assert_eq!(queued, [("qa", "10-99"), ("qb", "1-9")], "{listed}");

    // A steady queue (Postfix retries every few seconds, with the same answer) costs no
    // status write.
    let version = qb.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let domains = ns.api::<MailDomain>();
    let later = domains.get("qb").await.unwrap();
    assert_eq!(
        later.metadata.resource_version,
        version,
        "qb rewritten while its queue stood still: {:?}",
        later.status.and_then(|s| s.queue)
    );

    // The primaries answer again: the queue empties, and so does the status.
    let sink_a = Sink::start_on(down_a).expect("primary a");
    let sink_b = Sink::start_on(down_b).expect("primary b");
    for replica in [&one, &two] {
        until(LIMIT, "the queue manager taking a flush", || async {
            replica.flush().ok()
        })
        .await;
    }
    until(LIMIT, "every message delivered", || async {
        (sink_a.received().len() >= 11
            && sink_b.received().len() >= 2
            && one.queued().ok()? == 0
            && two.queued().ok()? == 0)
            .then_some(())
    })
    .await;
    for name in ["qa", "qb"] {
        queue_shown(&ns, name, "nothing queued", Option::is_none).await;
    }
}

#[tokio::test]
async fn a_held_domain_keeps_its_mail_after_the_primary_returns_and_its_release_delivers_it_paced()
{
    let address: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (plane, ns) = namespace_with_operator("hold").await;
    let mut extra = primary(address);
    extra["delivery"] = json!({"rateDelay": "2s"});
    apply_edge(&ns, json!({}), &[("held", "held.example", extra)]).await;
    let gateway = start_replica_retrying_late(plane, &ns).await;
    gateway
        .list_as_pod(&ns, "edge", "edge-0")
        .await
        .expect("pods");
    const QUEUED: usize = 4;
    send_numbered(gateway.smtp, "alice@held.example", QUEUED);
    until(LIMIT, "every message deferred", || async {
        (gateway.log_count("status=deferred") >= QUEUED).then_some(())
    })
    .await;

    let domains = ns.api::<MailDomain>();
    let reloads = || {
        gateway
            .metric("mx_agent_postfix_reloads_total")
            .unwrap_or_default()
    };
    let reloaded_before = reloads();
    let hold = |on: bool| json!({"spec": {"delivery": {"rateDelay": "2s", "hold": on}}});
    domains
        .patch("held", &PatchParams::default(), &Patch::Merge(&hold(true)))
        .await
        .expect("hold");
    until(LIMIT, "the hold in the transport table", || async {
        let transport = std::fs::read_to_string(gateway.dir.join("conf/maps/transport")).ok()?;
        transport.contains("held.example mxhold:").then_some(())
    })
    .await;
    // The hold service is new in master.cf: in force once Postfix has reloaded.
    until(LIMIT, "Postfix reloaded with the hold", || async {
        (reloads() > reloaded_before).then_some(())
    })
    .await;
    // The primary is back, and even a flush of the whole queue delivers nothing held.
    let sink = Sink::start_on(address).expect("primary");
    until(LIMIT, "the queue manager taking a flush", || async {
        gateway.flush().ok()
    })
    .await;
    until(LIMIT, "every message deferred by the hold", || async {
        (gateway.log_count("delivery held by spec.delivery.hold") >= QUEUED).then_some(())
    })
    .await;
    // New mail is accepted while held, and held too.
    let reply = send(
        gateway.smtp,
        "sender@client.test",
        "alice@held.example",
        "Subject: during the hold\r\nX-Seq: 4\r\n\r\nbody 4",
    )
    .unwrap();
    assert_eq!(reply.code, 250, "{reply}");
    queue_shown(&ns, "held", "held, with its reason", |queue| {
        queue.as_ref().is_some_and(|q| {
            q.messages == "1-9"
                && q.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("delivery held by spec.delivery.hold"))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sink.received().is_empty(), "nothing delivered while held");
    assert_eq!(gateway.queued().unwrap(), QUEUED + 1, "all of it queued");

    // Released: delivered now (not in ten minutes), one message per 2 s pause.
    domains
        .patch("held", &PatchParams::default(), &Patch::Merge(&hold(false)))
        .await
        .expect("release");
    let released = Instant::now();
    let received = until(
        Duration::from_secs(60),
        "every held message at the primary",
        || async {
            let received = sink.received();
            (received.len() > QUEUED && gateway.queued().ok()? == 0).then_some(received)
        },
    )
    .await;
    let took = received[QUEUED].at.duration_since(released);
    let span = received[QUEUED].at.duration_since(received[0].at);
    println!(
        "hold: {} messages released, the first {:.1} s after the release, the last {:.1} s after the first",
        received.len(),
        received[0].at.duration_since(released).as_secs_f64(),
        span.as_secs_f64()
    );
    assert!(took < Duration::from_secs(60));
    assert!(
        span >= Duration::from_secs(QUEUED as u64),
        "paced by the 2 s rate delay: {span:?}"
    );
    let (arrived, total) = sink.sequence_numbers();
    assert_eq!(arrived, (0..=QUEUED).collect::<Vec<_>>(), "each message");
    assert_eq!(total, QUEUED + 1, "none twice");
    assert_eq!(gateway.log_count("status=bounced"), 0, "nothing bounced");
    queue_shown(&ns, "held", "nothing queued", Option::is_none).await;
}

/// The gradual release after an outage is Postfix's own: a destination starts at
/// `initial_destination_concurrency` (5) parallel deliveries and gains one each time
/// deliveries succeed, up to the domain's `delivery.concurrency`.
#[tokio::test]
async fn after_an_outage_delivery_starts_at_five_connections_and_ramps_up_to_the_domains_limit() {
    let address: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let (plane, ns) = namespace_with_operator("ramp").await;
    let mut extra = primary(address);
    extra["delivery"] = json!({"concurrency": 12});
    apply_edge(&ns, json!({}), &[("ramp", "ramp.example", extra)]).await;
    let gateway = start_replica_retrying_late(plane, &ns).await;
    const QUEUED: usize = 200;
    send_numbered(gateway.smtp, "alice@ramp.example", QUEUED);
    until(LIMIT, "every message deferred", || async {
        (gateway.log_count("status=deferred") >= QUEUED).then_some(())
    })
    .await;

    // The primary is back, busy: a quarter of a second per message.
    let sink = Sink::start_slow(address, Duration::from_millis(250)).expect("primary");
    until(LIMIT, "the queue manager taking a flush", || async {
        gateway.flush().ok()
    })
    .await;
    until(LIMIT, "every message delivered", || async {
        (sink.sequence_numbers().0.len() == QUEUED).then_some(())
    })
    .await;
    let opened = sink.sessions_opened();
    let first_delivered = sink.received().iter().map(|m| m.at).min().unwrap();
    let start = opened[0].0;
    // Before any delivery succeeded, Postfix had no reason to open more than 5.
    let before_success = opened
        .iter()
        .filter(|(at, _)| *at < first_delivered)
        .map(|(_, open)| *open)
        .max()
        .unwrap_or_default();
    let peak = opened
        .iter()
        .map(|(_, open)| *open)
        .max()
        .unwrap_or_default();
    let mut ramp = std::collections::BTreeMap::<u128, usize>::new();
    for (at, open) in &opened {
        let slot = ramp
            .entry(at.duration_since(start).as_millis() / 500)
            .or_default();
        *slot = (*slot).max(*open);
    }
    let last = sink.received().iter().map(|m| m.at).max().unwrap();
    println!(
        "ramp after an outage: {QUEUED} messages, 250 ms each at the primary, delivery.concurrency 12: \
         open sessions (highest per 0.5 s from the first) {:?}; {} sessions opened; all delivered in {:?}",
        ramp.values().collect::<Vec<_>>(),
        opened.len(),
        last.duration_since(start)
    );
    assert!(
        before_success <= 5,
        "{before_success} sessions before the first success"
    );
    assert!(
        peak <= 12,
        "{peak} sessions open at once, over delivery.concurrency"
    );
}
