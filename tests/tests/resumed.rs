//! The operator restarted while the primary's directory is down. The new operator holds no
//! list, so the gateway keeps the one it has; status keeps the last success the earlier
//! operator recorded, and `maxAge` counts from it: once it passes, the domain answers 4xx,
//! as it would have without the restart. Its own test binary: it runs its own operator,
//! twice.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mx_operator::api::{MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::ldap::{Person, SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd};
use mx_operator_tests::process;
use mx_operator_tests::smtp::{Sink, rcpt_reply};
use mx_operator_tests::wait::{recipient_source, until};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

// Long enough that the first operator does not reach it before the restart.
const MAX_AGE_SECONDS: i64 = 60;

async fn answer(smtp: SocketAddr, recipient: &str, limit: Duration, expected: fn(u16) -> bool) {
    until(
        limit,
        &format!("the answer to RCPT {recipient}"),
        || async {
            let reply = rcpt_reply(smtp, "sender@client.test", recipient).ok()?;
            expected(reply.code).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn an_operator_started_while_the_directory_is_down_counts_max_age_from_the_last_success() {
    let sink = Sink::start().unwrap();
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("resumed").await.expect("namespace");
    let log = plane.dir.join(format!("operator-{}.log", ns.name));
    let operator =
        || process::start_operator(&plane.operator_kubeconfig, &log, "info", 5).expect("operator");
    let people: Vec<Person> = (0..50)
        .map(|i| Person {
            uid: format!("user{i}"),
            mail: vec![format!("user{i}@dir.example")],
            proxy_addresses: vec![],
        })
        .collect();
    let mut slapd =
        Slapd::start(&plane.dir.join(format!("slapd-{}", ns.name)), &people).expect("slapd");
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": SERVICE_PASSWORD}}),
    )
    .await;
    let first_operator = operator();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let gateway = Gateway::of_namespace(plane, &ns, "edge")
        .await
        .expect("gateway replica");
    // Searched once: a later refresh would move the last success.
    let ldap = json!({
        "url": slapd.url, "insecure": true, "bindDN": SERVICE_DN, "baseDN": format!("ou=people,{SUFFIX}"),
        "passwordSecretRef": {"name": "ldap", "key": "password"}, "refreshInterval": "1h",
    });
    apply::<MailDomain>(
        &ns,
        domain(
            "dir",
            "dir.example",
            json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                   "recipients": {"ldap": ldap, "maxAge": format!("{MAX_AGE_SECONDS}s")}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    let first = recipient_source(&domains, "dir", "the first sync", |s| {
        s.addresses == Some(50)
    })
    .await;
    let synced_at = first.last_success.clone().expect("lastSuccess").0;
    answer(
        gateway.smtp,
        "user7@dir.example",
        Duration::from_secs(60),
        |code| code == 250,
    )
    .await;

    // SIGKILLed; the directory goes down; another operator starts.
    let stale_from = synced_at + SignedDuration::from_secs(MAX_AGE_SECONDS);
    let killed_at = Timestamp::now();
    assert!(
        killed_at < stale_from,
        "the first operator ran until the list was stale ({killed_at}): the test proves nothing"
    );
    drop(first_operator);
    slapd.pause();
    let _second_operator = operator();
    let kept = recipient_source(&domains, "dir", "Unreachable after the restart", |s| {
        s.reason.as_deref() == Some("Unreachable")
    })
    .await;
    assert_eq!(
        (kept.last_success.as_ref().map(|t| t.0), kept.addresses),
        (Some(synced_at), Some(50)),
        "the earlier operator's last success stays in status: {kept:?}"
    );

    // Once that success is older than maxAge, 4xx: not the old list kept forever.
    answer(
        gateway.smtp,
        "user7@dir.example",
        Duration::from_secs(120),
        |code| code / 100 == 4,
    )
    .await;
    let deferred_at = Timestamp::now();
    println!("lastSuccess {synced_at}, maxAge {MAX_AGE_SECONDS}s: RCPT deferred at {deferred_at}");
    assert!(
        deferred_at >= stale_from,
        "deferred at {deferred_at}, before the list was {MAX_AGE_SECONDS}s old ({stale_from})"
    );
    let stale = domains.get("dir").await.expect("the MailDomain");
    let ready = stale.condition("Ready").expect("Ready");
    assert_eq!(ready.reason, "Stale", "{}", ready.message);

    // Back up: the next attempt (a minute after a failure at most) syncs, and lifts the 4xx.
    slapd.resume().expect("slapd back");
    answer(
        gateway.smtp,
        "user7@dir.example",
        Duration::from_secs(120),
        |code| code == 250,
    )
    .await;
    answer(
        gateway.smtp,
        "nobody@dir.example",
        Duration::from_secs(10),
        |code| code == 550,
    )
    .await;
}
