//! Recipients from a list the primary serves over HTTP(S): a real nginx (its own ETag and
//! If-None-Match handling, bearer and basic authentication, TLS with a CA made for the
//! test) and the operator on the real API server. And what a list's content may never
//! reach: status and Events.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::nginx::{Nginx, PASSWORD, TOKEN, USER};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::{domain_condition, recipient_source, until};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn users(count: usize) -> String {
    let mut list = String::from("# exported from the primary\n");
    for i in 0..count {
        list.push_str(&format!("user{i}@web.example\n"));
    }
    list
}

#[tokio::test]
async fn a_list_over_https_costs_one_bodiless_request_while_unchanged() {
    let (plane, ns) = namespace_with_operator("lists").await;
    let dir = plane.dir.join(format!("nginx-{}", ns.name));
    let nginx = Nginx::start(&dir).expect("nginx");
    let stranger = mx_operator_tests::tls::certificate_authority(&dir, "stranger").unwrap();
    nginx.serve("bearer/users.txt", &users(500)).unwrap();
    let jsonl: String = (0..40)
        .map(|i| {
            format!("{{\"address\": \"member{i}@basic.example\", \"name\": \"Member {i}\"}}\n")
        })
        .collect();
    nginx.serve("basic/users.jsonl", &jsonl).unwrap();
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lists", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"token": TOKEN, "ca.crt": nginx.ca_pem, "other-ca.crt": stranger}}),
    )
    .await;
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "basic", "labels": {"mx-operator.io/recipient-source": "true"}},
               "type": "kubernetes.io/basic-auth",
               "stringData": {"username": USER, "password": PASSWORD}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let bearer_source = |url: String, ca: &str| {
        json!({"url": url, "refreshInterval": "10s",
               "caSecretRef": {"name": "lists", "key": ca},
               "bearerTokenSecretRef": {"name": "lists", "key": "token"}})
    };
    let domains_to_apply = [
        (
            "web",
            "web.example",
            bearer_source(format!("{}/bearer/users.txt", nginx.https_url), "ca.crt"),
        ),
        (
            "basic",
            "basic.example",
            json!({"url": format!("{}/basic/users.jsonl", nginx.http_url), "insecure": true,
                   "format": "JSONLines", "basicAuthSecretRef": {"name": "basic"}}),
        ),
        (
            "stranger",
            "stranger.example",
            bearer_source(
                format!("{}/bearer/users.txt", nginx.https_url),
                "other-ca.crt",
            ),
        ),
    ];
    for (name, name_of_domain, http) in domains_to_apply {
        apply::<MailDomain>(
            &ns,
            domain(name, name_of_domain, json!({"recipients": {"http": http}})),
        )
        .await;
    }
    let domains = ns.api::<MailDomain>();
    let first = recipient_source(&domains, "web", "the first fetch", |s| {
        s.addresses == Some(500)
    })
    .await;
    assert_eq!(first.reason, None);
    let basic = recipient_source(&domains, "basic", "the JSON lines", |s| {
        s.addresses.is_some()
    })
    .await;
    assert_eq!((basic.addresses, basic.reason), (Some(40), None));
    let refused = recipient_source(&domains, "stranger", "TLSFailed", |s| s.reason.is_some()).await;
    assert_eq!(refused.reason.as_deref(), Some("TLSFailed"), "{refused:?}");

    // Unchanged: each refresh is one request, answered 304 without a body, and counts as
    // a success (maxAge counts from it).
    let web_requests = || {
        nginx
            .requests()
            .into_iter()
            .filter(|r| r.path == "/bearer/users.txt")
            .collect::<Vec<_>>()
    };
    let before = web_requests().len();
    until(LIMIT, "two more refreshes", || async {
        (web_requests().len() >= before + 2).then_some(())
    })
    .await;
    let refreshed = recipient_source(&domains, "web", "a later success", |s| {
        s.last_success > first.last_success
    })
    .await;
    assert_eq!(refreshed.addresses, Some(500));
    let logged = web_requests();
    let ours: Vec<_> = logged
        .iter()
        .filter(|r| r.status == 200 || r.status == 304)
        .collect();
    assert_eq!(ours[0].status, 200, "{logged:?}");
    let full = ours[0].body_bytes;
    assert!(full > 9_000, "{logged:?}");
    let unchanged: Vec<_> = logged.iter().skip(before.max(1)).collect();
    assert!(
        unchanged
            .iter()
            .all(|r| r.status == 304 && r.body_bytes == 0),
        "{logged:?}"
    );
    println!(
        "HTTP list unchanged over {} refreshes: {} requests, {} body bytes (the list is {full})",
        unchanged.len(),
        unchanged.len(),
        unchanged.iter().map(|r| r.body_bytes).sum::<u64>()
    );

    // A change is fetched whole at the next refresh.
    nginx.serve("bearer/users.txt", &users(501)).unwrap();
    recipient_source(&domains, "web", "the changed list", |s| {
        s.addresses == Some(501)
    })
    .await;

    // A wrong token: 401, AuthFailed, and the last good list stays in force.
    let wrong = json!({"stringData": {"token": "not-the-token"}});
    ns.api::<Secret>()
        .patch("lists", &PatchParams::default(), &Patch::Merge(&wrong))
        .await
        .expect("Secret patch");
    let refused = recipient_source(&domains, "web", "AuthFailed", |s| {
        s.reason.as_deref() == Some("AuthFailed")
    })
    .await;
    assert_eq!(refused.addresses, Some(501), "the list in force");
    let ready = domains.get("web").await.unwrap();
    assert_eq!(ready.condition("Ready").unwrap().reason, "Relayed");

    // A changed credential is used at once, not at the next refresh (15 minutes for
    // "basic", longer than the wait): a wrong password is AuthFailed, the list kept. (The
    // right one again is a success, at once or at the retry a minute after the failure.)
    let basic_password = |password: &str| json!({"stringData": {"password": password}});
    let basic_secret = ns.api::<Secret>();
    basic_secret
        .patch(
            "basic",
            &PatchParams::default(),
            &Patch::Merge(&basic_password("wrong")),
        )
        .await
        .expect("Secret patch");
    let refused = recipient_source(
        &domains,
        "basic",
        "AuthFailed once its Secret changed",
        |s| s.reason.as_deref() == Some("AuthFailed"),
    )
    .await;
    assert_eq!(refused.addresses, Some(40), "the list in force");
    basic_secret
        .patch(
            "basic",
            &PatchParams::default(),
            &Patch::Merge(&basic_password(PASSWORD)),
        )
        .await
        .expect("Secret patch");
    recipient_source(
        &domains,
        "basic",
        "a success once the password is right",
        |s| s.reason.is_none() && s.last_success > refused.last_success,
    )
    .await;
    // A change of the Secret's metadata only (a label): its domain is looked at again, and
    // nothing is fetched, since the credentials are the same. A wrong password after it is
    // then the only request (nginx answers 401).
    let basic_requests = || {
        let requests = nginx.requests().into_iter();
        let basic = requests.filter(|r| r.path == "/basic/users.jsonl");
        basic.map(|r| r.status).collect::<Vec<_>>()
    };
    let before = basic_requests().len();
    let labelled = json!({"metadata": {"labels": {"rotated-by": "nobody"}}});
    basic_secret
        .patch("basic", &PatchParams::default(), &Patch::Merge(&labelled))
        .await
        .expect("Secret label");
    tokio::time::sleep(Duration::from_secs(5)).await;
    basic_secret
        .patch(
            "basic",
            &PatchParams::default(),
            &Patch::Merge(&basic_password("wrong again")),
        )
        .await
        .expect("Secret patch");
    recipient_source(&domains, "basic", "AuthFailed after the label", |s| {
        s.reason.as_deref() == Some("AuthFailed")
    })
    .await;
    assert_eq!(
        basic_requests()[before..],
        [401],
        "a label is no reason to fetch"
    );
}

/// A Secret's list with lines that hold a secret (a password pasted into the wrong key):
/// refused by line number and kind of problem; neither the MailDomain's status nor any
/// Event of its namespace quotes a line.
#[tokio::test]
async fn a_refused_secret_list_names_its_lines_never_their_content() {
    let (_, ns) = namespace_with_operator("secret-list").await;
    let list = "alice@vip.example\nTOPSECRET-VALUE-1 hunter2\n\n  TOPSECRET-VALUE-1 hunter2  \n";
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vip", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"list": list}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply::<MailDomain>(
        &ns,
        domain(
            "vip",
            "vip.example",
            json!({"recipients": {"secretRef": {"name": "vip", "key": "list"}}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    let refused = domain_condition(
        &domains,
        LIMIT,
        "vip",
        "RecipientsSynced",
        ConditionStatus::False,
        "InvalidRecipients",
    )
    .await;
    let synced = refused
        .condition("RecipientsSynced")
        .unwrap()
        .message
        .clone();
    for named in ["has 2 invalid line(s): line 2: ", "; line 4: "] {
        assert!(synced.contains(named), "{synced}");
    }
    let events = until(LIMIT, "the InvalidRecipients Event", || async {
        let events = ns.api::<Event>().list(&Default::default()).await.ok()?;
        let reasons = events.items.iter().filter_map(|e| e.reason.as_deref());
        reasons
            .clone()
            .any(|r| r == "InvalidRecipients")
            .then_some(events.items)
    })
    .await;
    // Read again: whatever the operator wrote by the time of the Event.
    let status = domains.get("vip").await.unwrap().status;
    let ready = status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        ready.contains("line 2") && ready.contains("line 4"),
        "{ready}"
    );
    let status = serde_json::to_string(&status).unwrap();
    let events = serde_json::to_string(&events).unwrap();
    let quoting: Vec<&str> = [("status", &status), ("Events", &events)]
        .into_iter()
        .filter(|(_, text)| text.contains("TOPSECRET") || text.contains("hunter2"))
        .map(|(what, _)| what)
        .collect();
    assert!(
        quoting.is_empty(),
        "{quoting:?} quote the list:\nstatus: {status}\nEvents: {events}"
    );
    println!("a refused Secret list, as status says it: {synced}");
}

/// Lists as Windows tools write them: with a UTF-8 byte-order mark (skipped: the first
/// address is relayed), and in UTF-16 (PowerShell 5's `>`; refused whole, saying so).
#[tokio::test]
async fn a_list_with_a_byte_order_mark_is_read_and_a_utf16_one_refused() {
    let (plane, ns) = namespace_with_operator("encodings").await;
    let dir = plane.dir.join(format!("nginx-{}", ns.name));
    let nginx = Nginx::start(&dir).expect("nginx");
    nginx
        .serve(
            "bom.txt",
            "\u{feff}first@bom.example\r\nsecond@bom.example\r\n",
        )
        .unwrap();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            "first@utf16.example\r\nsecond@utf16.example\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    nginx.serve_bytes("utf16.txt", &utf16).unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    for name in ["bom", "utf16"] {
        let http = json!({"url": format!("{}/{name}.txt", nginx.http_url)});
        apply::<MailDomain>(
            &ns,
            domain(
                name,
                &format!("{name}.example"),
                json!({"recipients": {"http": http}}),
            ),
        )
        .await;
    }
    let domains = ns.api::<MailDomain>();
    let bom = recipient_source(&domains, "bom", "the list with a mark", |s| {
        s.addresses.is_some() || s.reason.is_some()
    })
    .await;
    assert_eq!(
        (bom.addresses, bom.reason.as_deref()),
        (Some(2), None),
        "{bom:?}"
    );
    domain_condition(
        &domains,
        LIMIT,
        "bom",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
    let relayed = until(LIMIT, "the MailRelay of bom.example", || async {
        let relay = ns
            .api::<MailRelay>()
            .get_opt("relay-bom.example")
            .await
            .ok()??;
        let text = relay.data?.into_values().collect::<Vec<_>>().join("\n");
        text.contains("second@bom.example").then_some(text)
    })
    .await;
    assert!(relayed.contains("first@bom.example"), "{relayed}");

    let refused = recipient_source(&domains, "utf16", "the UTF-16 list", |s| {
        s.addresses.is_some() || s.reason.is_some()
    })
    .await;
    assert_eq!(refused.reason.as_deref(), Some("NotUTF8"), "{refused:?}");
    assert_eq!(refused.addresses, None, "{refused:?}");
    let message = refused.message.unwrap_or_default();
    assert!(message.contains("UTF-16"), "{message}");
    println!("a UTF-16 list, as status says it: {message}");
}
