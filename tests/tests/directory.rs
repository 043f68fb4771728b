//! Recipients synced from the primary's directory: a real OpenLDAP slapd with thousands of
//! entries (more than its size limit lets one search return), the operator on the real API
//! server, and a gateway replica whose real Postfix answers RCPT from the synced list.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use mx_operator::api::domain::RecipientSourceStatus;
use mx_operator::api::{MailDomain, MailGateway};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::ldap::{Person, SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::smtp::{Sink, rcpt_reply};
use mx_operator_tests::wait::{rcpt_answer as answer, recipient_source, until};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const PEOPLE: usize = 3_000;

/// `user<i>@dir.example` for everyone; every tenth also has `proxyAddresses` with a typed
/// primary address, an alias and an X.500 address; every seventh a mail address of
/// another domain.
fn people() -> Vec<Person> {
    (0..PEOPLE)
        .map(|i| Person {
            uid: format!("user{i}"),
            mail: std::iter::once(format!("user{i}@dir.example"))
                .chain((i % 7 == 0).then(|| format!("user{i}@other.example")))
                .collect(),
            proxy_addresses: if i % 10 == 0 {
                vec![
                    format!("SMTP:first.last{i}@Dir.Example"),
                    format!("smtp:alias{i}@dir.example"),
                    format!("X500:/o=Dir/ou=people/cn=user{i}"),
                ]
            } else {
                vec![]
            },
        })
        .collect()
}

async fn source_shows(
    domains: &kube::Api<MailDomain>,
    what: &str,
    check: impl Fn(&RecipientSourceStatus) -> bool,
) -> RecipientSourceStatus {
    recipient_source(domains, "dir", what, check).await
}

#[tokio::test]
async fn a_directory_is_synced_in_pages_and_its_changes_and_failures_reach_the_smtp_port() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("directory").await;
    let mut slapd =
        Slapd::start(&plane.dir.join(format!("slapd-{}", ns.name)), &people()).expect("slapd");
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": SERVICE_PASSWORD}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let ldap = json!({
        "url": slapd.url, "insecure": true, "bindDN": SERVICE_DN, "baseDN": format!("ou=people,{SUFFIX}"),
        "filter": "(objectClass=inetOrgPerson)", "attributes": ["mail", "proxyAddresses"],
        "passwordSecretRef": {"name": "ldap", "key": "password"},
        "pageSize": 200, "refreshInterval": "10s",
    });
    apply::<MailDomain>(
        &ns,
        domain(
            "dir",
            "dir.example",
            json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                   "recipients": {"ldap": ldap}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    // Everyone's address, and the tenth's two proxy addresses; not the other domain's, nor
    // the X.500 ones.
    let expected = PEOPLE + 2 * PEOPLE / 10;
    let first = source_shows(&domains, "the first sync", |s| {
        s.addresses == Some(expected as i64)
    })
    .await;
    assert_eq!(first.reason, None, "{first:?}");
    let synced_at = first.last_success.clone().expect("lastSuccess");
    let relayed = until(LIMIT, "the merged count", || async {
        let status = domains.get("dir").await.ok()?.status?;
        (status.recipient_count == Some(expected as i64 + 1)).then_some(status)
    })
    .await;
    assert!(relayed.recipients_hash.is_some());

    let gateway = Gateway::of_namespace(plane, &ns, "edge")
        .await
        .expect("gateway replica");
    let smtp = gateway.smtp;
    for known in [
        "user0@dir.example",
        &format!("user{}@dir.example", PEOPLE - 1),
        "first.last2990@dir.example",
        "alias20@dir.example",
        "alice@dir.example",
    ] {
        answer(smtp, known, |code| code == 250).await;
    }
    for unknown in [
        "user1@other.example",
        "nobody@dir.example",
        "alias21@dir.example",
    ] {
        let code = answer(smtp, unknown, |code| code != 250).await;
        assert!((500..600).contains(&code), "{unknown}: {code}");
    }

    // The directory changes; the next sync (10 s) brings it to the SMTP port.
    slapd
        .add(&Person {
            uid: "newcomer".into(),
            mail: vec!["newcomer@dir.example".into()],
            proxy_addresses: vec![],
        })
        .expect("ldapadd");
    slapd.delete("user5").expect("ldapdelete");
    answer(smtp, "newcomer@dir.example", |code| code == 250).await;
    answer(smtp, "user5@dir.example", |code| code == 550).await;

    // A wrong password: the sync fails as AuthFailed, and the last good list keeps serving.
    let wrong = json!({"stringData": {"password": "not-the-password"}});
    ns.api::<Secret>()
        .patch("ldap", &PatchParams::default(), &Patch::Merge(&wrong))
        .await
        .expect("Secret patch");
    let refused = source_shows(&domains, "AuthFailed", |s| {
        s.reason.as_deref() == Some("AuthFailed")
    })
    .await;
    assert!(
        refused
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("invalid credentials"),
        "{refused:?}"
    );
    assert_eq!(
        refused.addresses,
        Some(expected as i64),
        "the list in force"
    );
    assert!(refused.last_success.unwrap().0 > synced_at.0);
    answer(smtp, "newcomer@dir.example", |code| code == 250).await;

    // The password is fixed and the directory goes down: Unreachable; then, once the last
    // success is older than maxAge, the domain answers 4xx (neither accepts nor rejects).
    let right = json!({"stringData": {"password": SERVICE_PASSWORD}});
    ns.api::<Secret>()
        .patch("ldap", &PatchParams::default(), &Patch::Merge(&right))
        .await
        .expect("Secret patch");
    source_shows(&domains, "a sync with the right password", |s| {
        s.reason.is_none()
    })
    .await;
    slapd.pause();
    source_shows(&domains, "Unreachable", |s| {
        s.reason.as_deref() == Some("Unreachable")
    })
    .await;
    answer(smtp, "newcomer@dir.example", |code| code == 250).await;
    let max_age = json!({"spec": {"recipients": {"maxAge": "20s"}}});
    domains
        .patch("dir", &PatchParams::default(), &Patch::Merge(&max_age))
        .await
        .expect("maxAge");
    let code = answer(smtp, "newcomer@dir.example", |code| code / 100 == 4).await;
    println!("directory down past maxAge: RCPT answered {code}");
    let stale = domains.get("dir").await.unwrap();
    let ready = stale.condition("Ready").unwrap();
    assert_eq!(ready.reason, "Stale", "{}", ready.message);

    // Back up: the next sync lifts the 4xx.
    slapd.resume().expect("slapd back");
    answer(smtp, "newcomer@dir.example", |code| code == 250).await;
}

#[tokio::test]
async fn tls_to_the_directory_is_checked_against_the_ca_from_its_secret() {
    let (plane, ns) = namespace_with_operator("directory-tls").await;
    let dir = plane.dir.join(format!("slapd-{}", ns.name));
    let names = ["ldaps", "starttls", "stranger", "stranger-starttls"];
    let few: Vec<Person> = people()
        .into_iter()
        .take(10)
        .chain(names.map(|name| Person {
            uid: format!("postmaster-{name}"),
            mail: vec![format!("postmaster@{name}.example")],
            proxy_addresses: vec![],
        }))
        .collect();
    let slapd = Slapd::start(&dir, &few).expect("slapd");
    let stranger = mx_operator_tests::tls::certificate_authority(&dir, "stranger").unwrap();
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": SERVICE_PASSWORD, "ca.crt": slapd.ca_pem,
                              "other-ca.crt": stranger}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let cases = [
        ("ldaps", &slapd.ldaps_url, false, "ca.crt"),
        ("starttls", &slapd.url, true, "ca.crt"),
        ("stranger", &slapd.ldaps_url, false, "other-ca.crt"),
        ("stranger-starttls", &slapd.url, true, "other-ca.crt"),
    ];
    for (name, url, start_tls, ca) in cases {
        let ldap = json!({
            "url": url, "startTLS": start_tls, "bindDN": SERVICE_DN,
            "baseDN": format!("ou=people,{SUFFIX}"),
            "passwordSecretRef": {"name": "ldap", "key": "password"},
            "caSecretRef": {"name": "ldap", "key": ca},
        });
        apply::<MailDomain>(
            &ns,
            domain(
                name,
                &format!("{name}.example"),
                json!({"recipients": {"ldap": ldap}}),
            ),
        )
        .await;
    }
    let domains = ns.api::<MailDomain>();
    for name in ["ldaps", "starttls"] {
        let synced =
            recipient_source(&domains, name, "a sync over TLS", |s| s.addresses.is_some()).await;
        assert_eq!((synced.addresses, synced.reason), (Some(1), None));
    }
    for name in ["stranger", "stranger-starttls"] {
        let refused = recipient_source(&domains, name, "TLSFailed", |s| s.reason.is_some()).await;
        assert_eq!(refused.reason.as_deref(), Some("TLSFailed"), "{refused:?}");
        assert!(
            refused
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("certificate"),
            "{refused:?}"
        );
        let ready = domains.get(name).await.unwrap();
        assert_eq!(ready.condition("Ready").unwrap().reason, "TLSFailed");
    }
}

#[tokio::test]
async fn a_directory_whose_acl_hides_the_addresses_is_held_not_applied() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("acl").await;
    let people = mx_operator_tests::ldap::numbered(300, "acl.example");
    let mut slapd =
        Slapd::start(&plane.dir.join(format!("slapd-{}", ns.name)), &people).expect("slapd");
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": SERVICE_PASSWORD}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let gateway = Gateway::of_namespace(plane, &ns, "edge").await.unwrap();
    let ldap = json!({
        "url": slapd.url, "insecure": true, "bindDN": SERVICE_DN,
        "baseDN": format!("ou=people,{SUFFIX}"), "refreshInterval": "10s",
        "passwordSecretRef": {"name": "ldap", "key": "password"},
    });
    apply::<MailDomain>(
        &ns,
        domain(
            "dir",
            "acl.example",
            json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                   "recipients": {"ldap": ldap}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    source_shows(&domains, "the first sync", |s| s.addresses == Some(300)).await;
    answer(gateway.smtp, "u7@acl.example", |code| code == 250).await;

    // The directory's admin changes an ACL: the service account no longer sees `mail`,
    // and the search succeeds with nothing. Held: the 300 keep their 250.
    slapd.restrict("access to attrs=mail by * none\n").unwrap();
    let held = source_shows(&domains, "the empty sync held", |s| {
        s.held.as_ref().is_some_and(|h| h.addresses == 0)
    })
    .await;
    assert_eq!(held.addresses, Some(300), "{held:?}");
    let md = domains.get("dir").await.unwrap();
    let synced = md.condition("RecipientsSynced").unwrap();
    assert_eq!(synced.reason, "ShrinkHeld", "{synced:?}");
    assert_eq!(md.condition("Ready").unwrap().reason, "Relayed");
    let code = rcpt_reply(gateway.smtp, "sender@client.test", "u7@acl.example")
        .unwrap()
        .code;
    assert_eq!(code, 250);

    // The ACL put back: the next sync is the list in force again, nothing held.
    slapd.restrict("").unwrap();
    source_shows(&domains, "nothing held", |s| {
        s.held.is_none() && s.addresses == Some(300) && s.reason.is_none()
    })
    .await;
}
