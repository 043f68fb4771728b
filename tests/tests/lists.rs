//! Recipients from a list the primary serves over HTTP(S): a real nginx (its own ETag and
//! If-None-Match handling, bearer and basic authentication, TLS with a CA made for the
//! test) and the operator on the real API server.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::nginx::{Nginx, PASSWORD, TOKEN, USER};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::{recipient_source, until};
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
