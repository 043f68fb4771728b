//! Recipient sources that fail safe, against a real nginx and slapd-shaped hostile servers,
//! the operator on the real API server, and a gateway replica whose real Postfix answers
//! RCPT: what the gateway does not know is answered 4xx, never 5xx; a list that shrinks
//! too far is held until someone accepts it; a hanging source holds up no other domain;
//! and tenants cannot aim sources at the platform.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::nginx::Nginx;
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::smtp::{Silent, Sink, rcpt_reply};
use mx_operator_tests::wait::{rcpt_answer as answer, recipient_source, until};
use serde_json::json;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const SOURCE_LABEL: &str = "mx-operator.io/recipient-source";

fn users(domain: &str, count: usize) -> String {
    (0..count).map(|i| format!("user{i}@{domain}\n")).collect()
}

async fn wait_condition(
    ns: &mx_operator_tests::TestNamespace,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
) -> MailDomain {
    let api = ns.api::<MailDomain>();
    mx_operator_tests::wait::domain_condition(&api, LIMIT, name, type_, status, reason).await
}

fn condition(domain: &MailDomain, type_: &str) -> (ConditionStatus, String, String) {
    let found = domain.condition(type_).expect(type_);
    (found.status, found.reason.clone(), found.message.clone())
}

#[tokio::test]
async fn a_list_that_shrinks_is_held_until_accepted_and_a_failing_source_keeps_mail_flowing() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("shrink").await;
    let nginx = Nginx::start(&plane.dir.join(format!("nginx-{}", ns.name))).expect("nginx");
    nginx
        .serve("shop.txt", &users("shop.example", 1_000))
        .unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let gateway = Gateway::of_namespace(plane, &ns, "edge").await.unwrap();
    let http = json!({"url": format!("{}/shop.txt", nginx.http_url), "refreshInterval": "10s"});
    apply::<MailDomain>(
        &ns,
        domain(
            "shop",
            "shop.example",
            json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                   "recipients": {"http": http}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    recipient_source(&domains, "shop", "the first list", |s| {
        s.addresses == Some(1_000)
    })
    .await;
    answer(gateway.smtp, "user500@shop.example", |code| code == 250).await;

    // 200 OK with ten addresses: held; the thousand keep their 250.
    nginx.serve("shop.txt", &users("shop.example", 10)).unwrap();
    let held = recipient_source(&domains, "shop", "the truncated list held", |s| {
        s.held.as_ref().is_some_and(|h| h.addresses == 10)
    })
    .await;
    assert_eq!(held.addresses, Some(1_000), "the list in force: {held:?}");
    let md = domains.get("shop").await.unwrap();
    let (status, reason, message) = condition(&md, "RecipientsSynced");
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "ShrinkHeld")
    );
    let id = held.held.clone().unwrap().id;
    assert!(
        message.contains("from 1000 to 10") && message.contains(&id),
        "{message}"
    );
    assert_eq!(condition(&md, "Ready").1, "Relayed", "mail still flows");
    assert_eq!(
        rcpt_reply(gateway.smtp, "sender@client.test", "user500@shop.example")
            .unwrap()
            .code,
        250
    );

    // An empty answer is held too.
    nginx.serve("shop.txt", "").unwrap();
    recipient_source(&domains, "shop", "the empty list held", |s| {
        s.held.as_ref().is_some_and(|h| h.addresses == 0)
    })
    .await;

    // The source fails (404) while the thousand are in force: RecipientsSynced says so,
    // Ready stays True, and the 250s stay.
    nginx.withdraw("shop.txt").unwrap();
    let failing = recipient_source(&domains, "shop", "ServerError", |s| {
        s.reason.as_deref() == Some("ServerError")
    })
    .await;
    assert_eq!(failing.addresses, Some(1_000));
    let md = until(LIMIT, "RecipientsSynced False ServerError", || async {
        let md = domains.get("shop").await.ok()?;
        (condition(&md, "RecipientsSynced").1 == "ServerError").then_some(md)
    })
    .await;
    assert_eq!(condition(&md, "RecipientsSynced").0, ConditionStatus::False);
    assert_eq!(condition(&md, "Ready").0, ConditionStatus::True);
    assert_eq!(
        rcpt_reply(gateway.smtp, "sender@client.test", "user500@shop.example")
            .unwrap()
            .code,
        250
    );

    // A real mass deletion, accepted by naming the held sync: the 990 are refused.
    nginx.serve("shop.txt", &users("shop.example", 10)).unwrap();
    recipient_source(&domains, "shop", "the ten held again, same id", |s| {
        s.held.as_ref().is_some_and(|h| h.id == id)
    })
    .await;
    let accept =
        json!({"metadata": {"annotations": {"mx-operator.io/accept-recipient-shrink": id}}});
    domains
        .patch("shop", &PatchParams::default(), &Patch::Merge(&accept))
        .await
        .unwrap();
    let applied = recipient_source(&domains, "shop", "the ten applied", |s| {
        s.addresses == Some(10)
    })
    .await;
    assert!(applied.held.is_none(), "{applied:?}");
    let code = answer(gateway.smtp, "user500@shop.example", |code| code != 250).await;
    assert_eq!(code, 550);
    answer(gateway.smtp, "user5@shop.example", |code| code == 250).await;
    wait_condition(
        &ns,
        "shop",
        "RecipientsSynced",
        ConditionStatus::True,
        "Synced",
    )
    .await;
}

#[tokio::test]
async fn a_new_domain_whose_first_sync_fails_defers_instead_of_refusing() {
    let (plane, ns) = namespace_with_operator("unsynced").await;
    let nginx = Nginx::start(&plane.dir.join(format!("nginx-{}", ns.name))).expect("nginx");
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let gateway = Gateway::of_namespace(plane, &ns, "edge").await.unwrap();
    let http = json!({"url": format!("{}/fresh.txt", nginx.http_url), "refreshInterval": "10s"});
    apply::<MailDomain>(
        &ns,
        domain(
            "fresh",
            "fresh.example",
            json!({"recipients": {"http": http}}),
        ),
    )
    .await;
    let md = wait_condition(&ns, "fresh", "Ready", ConditionStatus::False, "ServerError").await;
    let (_, _, message) = condition(&md, "RecipientsSynced");
    assert!(message.contains("4xx"), "{message}");
    // Not 554 (relay access denied) nor 550: the gateway does not know yet.
    let code = answer(gateway.smtp, "anyone@fresh.example", |code| code != 554).await;
    assert!((400..500).contains(&code), "{code}");

    // The list arrives at the next try: its users are accepted, others refused.
    nginx
        .serve("fresh.txt", &users("fresh.example", 3))
        .unwrap();
    answer(gateway.smtp, "user2@fresh.example", |code| code == 250).await;
    let code = answer(gateway.smtp, "nobody@fresh.example", |code| code != 250).await;
    assert_eq!(code, 550);
}

#[tokio::test]
async fn sources_that_never_answer_hold_up_no_other_domain() {
    let silent = Silent::start().await.unwrap();
    let (plane, ns) = namespace_with_operator("silent").await;
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "ldap", "labels": {SOURCE_LABEL: "true"}},
               "stringData": {"password": "x"}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let gateway = Gateway::of_namespace(plane, &ns, "edge").await.unwrap();
    const HANGING: usize = 50;
    for i in 0..HANGING {
        let recipients = if i % 2 == 0 {
            json!({"http": {"url": format!("http://{}/list.txt", silent.address)}})
        } else {
            json!({"ldap": {"url": format!("ldap://{}", silent.address), "insecure": true,
                            "bindDN": "cn=x", "baseDN": "dc=x",
                            "passwordSecretRef": {"name": "ldap", "key": "password"}}})
        };
        apply::<MailDomain>(
            &ns,
            domain(
                &format!("hang{i}"),
                &format!("hang{i}.example"),
                json!({"recipients": recipients}),
            ),
        )
        .await;
    }
    // Each hanging domain says so at once, and defers its mail.
    let md = wait_condition(
        &ns,
        "hang0",
        "Ready",
        ConditionStatus::False,
        "RecipientsNotSynced",
    )
    .await;
    assert!(condition(&md, "RecipientsSynced").2.contains("running"));
    let code = answer(gateway.smtp, "someone@hang0.example", |code| code != 554).await;
    assert!((400..500).contains(&code), "{code}");

    let started = Instant::now();
    apply::<MailDomain>(
        &ns,
        domain(
            "ordinary",
            "ordinary.example",
            json!({"recipients": {"inline": ["alice@ordinary.example"]}}),
        ),
    )
    .await;
    wait_condition(&ns, "ordinary", "Ready", ConditionStatus::True, "Relayed").await;
    let ready = started.elapsed();
    answer(gateway.smtp, "alice@ordinary.example", |code| code == 250).await;
    println!(
        "with {HANGING} sources that never answer: a new domain Ready in {:.1} s, 250 at SMTP in {:.1} s",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // The whole sync has a deadline (30 s in tests): a hanging source ends TimedOut.
    let domains = ns.api::<MailDomain>();
    let timed_out = until(Duration::from_secs(120), "a source TimedOut", || async {
        for i in 0..HANGING {
            let md = domains.get(&format!("hang{i}")).await.ok()?;
            let source = md.status?.recipient_sources.into_iter().next();
            if source.is_some_and(|s| s.reason.as_deref() == Some("TimedOut")) {
                return Some(i);
            }
        }
        None
    })
    .await;
    println!("hang{timed_out} ended TimedOut");
}

#[tokio::test]
async fn tenants_cannot_aim_sources_at_the_platform_nor_at_secrets_not_opted_in() {
    let (plane, ns) = namespace_with_operator("fence").await;
    let nginx = Nginx::start(&plane.dir.join(format!("nginx-{}", ns.name))).expect("nginx");
    nginx
        .serve("inside.txt", &users("inward.example", 5))
        .unwrap();
    nginx
        .serve("plain.txt", &users("plain.example", 5))
        .unwrap();
    let silent = Silent::start().await.unwrap();
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"allowedDomains": {"from": "All"}})),
    )
    .await;
    let tenant = plane.namespace("fence-tenant").await.unwrap();
    let on_edge = |recipients: serde_json::Value| json!({"gatewayRef": {"name": "edge", "namespace": ns.name}, "recipients": recipients});
    let inward = [
        (
            "inward-http",
            json!({"http": {"url": format!("{}/inside.txt?token=QUERY-SECRET", nginx.http_url)}}),
        ),
        (
            "inward-name",
            json!({"http": {"url": format!("http://localhost:{}/inside.txt", silent.address.port())}}),
        ),
        (
            "inward-ldap",
            json!({"ldap": {"url": format!("ldap://{}", silent.address), "insecure": true,
                            "bindDN": "cn=x", "baseDN": "dc=x",
                            "passwordSecretRef": {"name": "ldap", "key": "password"}}}),
        ),
    ];
    for (name, recipients) in inward {
        apply::<MailDomain>(
            &tenant,
            domain(name, &format!("{name}.example"), on_edge(recipients)),
        )
        .await;
    }
    for (name, _) in [
        ("inward-http", ()),
        ("inward-name", ()),
        ("inward-ldap", ()),
    ] {
        let md = wait_condition(
            &tenant,
            name,
            "RecipientsSynced",
            ConditionStatus::False,
            "SourceNotAllowed",
        )
        .await;
        let text = serde_json::to_string(&md.status).unwrap();
        assert!(!text.contains("QUERY-SECRET"), "{text}");
    }

    // In the gateway's own namespace: a Secret without the label is not read, and a token
    // is not sent over http:// unless the source says insecure.
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unlabelled"},
               "stringData": {"token": "TOKEN-NOT-OPTED-IN"}}),
    )
    .await;
    let token = |url: String| json!({"http": {"url": url, "bearerTokenSecretRef": {"name": "unlabelled", "key": "token"}}});
    apply::<MailDomain>(
        &ns,
        domain(
            "unlabelled",
            "unlabelled.example",
            json!({"recipients": token(format!("{}/plain.txt", nginx.https_url))}),
        ),
    )
    .await;
    apply::<MailDomain>(
        &ns,
        domain(
            "plain",
            "plain.example",
            json!({"recipients": token(format!("{}/plain.txt", nginx.http_url))}),
        ),
    )
    .await;
    wait_condition(
        &ns,
        "unlabelled",
        "RecipientsSynced",
        ConditionStatus::False,
        "SecretNotAllowed",
    )
    .await;
    wait_condition(
        &ns,
        "plain",
        "RecipientsSynced",
        ConditionStatus::False,
        "InsecureCredentials",
    )
    .await;
    // Nothing was asked of nginx.
    let asked = nginx.requests();
    assert!(asked.is_empty(), "{asked:?}");
}
