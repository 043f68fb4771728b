//! MX records published and retracted at a real Knot DNS with TSIG, and external-dns
//! DNSEndpoint objects on the real API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject};
use mx_operator::api::fixtures::{domain_object, gateway_object, provider_object};
use mx_operator::api::{ConditionStatus, DNSProvider, MailDomain};
use mx_operator::dns::external::api_resource;
use mx_operator_tests::TestNamespace;
use mx_operator_tests::control_plane::crd_established;
use mx_operator_tests::fixtures::apply_dynamic as apply;
use mx_operator_tests::knot::{Knot, TSIG_KEY_NAME, TSIG_SECRET};
use mx_operator_tests::kubectl::{kubectl, kubectl_ok};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::{domain_condition, gone, until};
use serde_json::{Value, json};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const CUSTOMER_MX: &str = "10 mail.customer.example.";

async fn provider(ns: &TestNamespace, name: &str, knot: &Knot, zone: Option<&str>, secret: &str) {
    apply(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-key")},
        "stringData": {"secret": secret}}),
    )
    .await;
    let mut rfc = json!({"port": knot.address.port(),
        "tsig": {"keyName": TSIG_KEY_NAME, "secretRef": {"name": format!("{name}-key")}}});
    if let Some(zone) = zone {
        rfc["zone"] = json!(zone);
    }
    apply(ns, provider_object(name, json!({"spec": {"rfc2136": rfc}}))).await;
}

async fn gateway(ns: &TestNamespace, host: &str) {
    apply(
        ns,
        gateway_object("edge", json!({"spec": {"mxHostnames": [host]}})),
    )
    .await;
}

async fn domain(ns: &TestNamespace, name: &str, domain: &str, provider: &str, mx: Value) {
    let spec = json!({"primary": {"host": "mail.customer.example"},
        "dns": {"providerRef": {"name": provider}}, "mx": mx});
    apply(ns, domain_object(name, domain, json!({"spec": spec}))).await;
}

async fn dns_synced(ns: &TestNamespace, name: &str, ok: bool, reason: &str) -> MailDomain {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    domain_condition(&ns.api(), LIMIT, name, "DnsSynced", status, reason).await
}

/// Waits until DNSProvider `name`'s `Ready` is `ok` with `reason`; its message.
async fn provider_ready(ns: &TestNamespace, name: &str, ok: bool, reason: &str) -> String {
    let providers = ns.api::<DNSProvider>();
    until(
        LIMIT,
        &format!("DNSProvider {name}: Ready {ok} ({reason})"),
        || async {
            let ready = providers
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            let status = if ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            };
            (ready.status == status && ready.reason == reason).then_some(ready.message)
        },
    )
    .await
}

async fn mx_answer(knot: &Knot, name: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    until(LIMIT, &format!("MX of {name} = {want:?}"), || async {
        let mut answer = knot.dig(name, "MX");
        answer.sort();
        (answer == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn publish_change_and_delete_touch_only_our_record() {
    let (plane, ns) = namespace_with_operator("dns-lifecycle").await;
    let knot = Knot::start(
        &plane.dir.join("knot-lifecycle"),
        &[("life.example", "@ MX 10 mail.customer.example.")],
    )
    .unwrap();
    provider(&ns, "knot", &knot, Some("life.example"), TSIG_SECRET).await;
    let checked = provider_ready(&ns, "knot", true, "Verified").await;
    assert!(
        checked.contains("accepts updates of zone life.example signed with the TSIG key"),
        "{checked}"
    );
    gateway(&ns, "mx1.relay.example.net").await;
    let started = std::time::Instant::now();
    domain(&ns, "life", "life.example", "knot", json!({})).await;
    mx_answer(
        &knot,
        "life.example",
        &[CUSTOMER_MX, "20 mx1.relay.example.net."],
    )
    .await;
    eprintln!(
        "MailDomain apply -> MX answer from Knot: {:?}",
        started.elapsed()
    );
    let md = dns_synced(&ns, "life", true, "Published").await;
    assert_eq!(
        md.status.as_ref().unwrap().published_records,
        ["20 mx1.relay.example.net"]
    );
    assert_eq!(md.status.unwrap().dns_zone.as_deref(), Some("life.example"));

    domain(
        &ns,
        "life",
        "life.example",
        "knot",
        json!({"preference": 30, "ttl": 600}),
    )
    .await;
    mx_answer(
        &knot,
        "life.example",
        &[CUSTOMER_MX, "30 mx1.relay.example.net."],
    )
    .await;

    gateway(&ns, "mx2.relay.example.net").await;
    mx_answer(
        &knot,
        "life.example",
        &[CUSTOMER_MX, "30 mx2.relay.example.net."],
    )
    .await;

    // Deleted behind the operator's back: restored at the next resync.
    knot.nsupdate(
        "life.example",
        "update delete life.example. MX 30 mx2.relay.example.net.",
    )
    .unwrap();
    mx_answer(
        &knot,
        "life.example",
        &[CUSTOMER_MX, "30 mx2.relay.example.net."],
    )
    .await;

    ns.api::<MailDomain>()
        .delete("life", &DeleteParams::default())
        .await
        .unwrap();
    mx_answer(&knot, "life.example", &[CUSTOMER_MX]).await;
    gone(&ns.api::<MailDomain>(), "life").await;
}

#[tokio::test]
async fn the_zone_is_found_from_the_soa() {
    let (plane, ns) = namespace_with_operator("dns-auto").await;
    let knot = Knot::start(&plane.dir.join("knot-auto"), &[("auto.example", "")]).unwrap();
    provider(&ns, "knot", &knot, None, TSIG_SECRET).await;
    provider_ready(&ns, "knot", true, "Reachable").await;
    gateway(&ns, "mx1.relay.example.net").await;
    domain(&ns, "sub", "shop.auto.example", "knot", json!({})).await;
    let md = dns_synced(&ns, "sub", true, "Published").await;
    assert_eq!(md.status.unwrap().dns_zone.as_deref(), Some("auto.example"));
    mx_answer(&knot, "shop.auto.example", &["20 mx1.relay.example.net."]).await;
}

#[tokio::test]
async fn a_wrong_key_is_auth_failed() {
    let (plane, ns) = namespace_with_operator("dns-key").await;
    let knot = Knot::start(&plane.dir.join("knot-key"), &[("key.example", "")]).unwrap();
    provider(
        &ns,
        "knot",
        &knot,
        Some("key.example"),
        "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ==",
    )
    .await;
    // The provider says so on its own, and names a zone the server does not serve.
    provider_ready(&ns, "knot", false, "AuthFailed").await;
    provider(&ns, "elsewhere", &knot, Some("other.example"), TSIG_SECRET).await;
    let unserved = provider_ready(&ns, "elsewhere", false, "ZoneNotServed").await;
    assert!(
        unserved.contains("does not serve zone other.example"),
        "{unserved}"
    );
    gateway(&ns, "mx1.relay.example.net").await;
    domain(&ns, "key", "key.example", "knot", json!({})).await;
    let md = dns_synced(&ns, "key", false, "AuthFailed").await;
    let ready = md
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "AuthFailed")
    );
    assert!(knot.dig("key.example", "MX").is_empty());
    // The key never shows up in status or Events.
    let events = kubectl(
        &plane.kubeconfig,
        &["get", "events.events.k8s.io", "-n", &ns.name, "-o", "yaml"],
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&events.stdout).contains("d3Jvbmcta2V5"));
}

#[tokio::test]
async fn an_unreachable_server_is_reported_and_recovery_republishes() {
    let (plane, ns) = namespace_with_operator("dns-down").await;
    let mut knot = Knot::start(&plane.dir.join("knot-down"), &[("down.example", "")]).unwrap();
    provider(&ns, "knot", &knot, Some("down.example"), TSIG_SECRET).await;
    gateway(&ns, "mx1.relay.example.net").await;
    knot.pause();
    domain(&ns, "down", "down.example", "knot", json!({})).await;
    dns_synced(&ns, "down", false, "ServerUnreachable").await;
    provider_ready(&ns, "knot", false, "ServerUnreachable").await;
    knot.resume().unwrap();
    dns_synced(&ns, "down", true, "Published").await;
    provider_ready(&ns, "knot", true, "Verified").await;
    mx_answer(&knot, "down.example", &["20 mx1.relay.example.net."]).await;
}

#[tokio::test]
async fn external_dns_mode_writes_a_dnsendpoint() {
    let (plane, ns) = namespace_with_operator("dns-external").await;
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dnsendpoint-crd.yaml");
    kubectl_ok(&plane.kubeconfig, &["apply", "-f", crd]);
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    crd_established(
        &crds,
        "dnsendpoints.externaldns.k8s.io",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    apply(&ns, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider", "metadata": {"name": "extdns"},
        "spec": {"externalDNS": {"labels": {"dns": "public"}}}})).await;
    gateway(&ns, "mx1.relay.example.net").await;
    domain(&ns, "ext", "ext.example", "extdns", json!({"ttl": 900})).await;
    dns_synced(&ns, "ext", true, "Published").await;
    let endpoints: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &api_resource());
    let endpoint = endpoints.get("mx-ext.example").await.expect("DNSEndpoint");
    let spec = &endpoint.data["spec"]["endpoints"][0];
    assert_eq!(spec["dnsName"], "ext.example");
    assert_eq!(spec["recordType"], "MX");
    assert_eq!(spec["recordTTL"], 900);
    assert_eq!(
        spec["targets"],
        json!(["10 mail.customer.example", "20 mx1.relay.example.net"])
    );
    assert_eq!(endpoint.metadata.labels.unwrap()["dns"], "public");
    assert_eq!(
        endpoint.metadata.owner_references.unwrap()[0].kind,
        "MailDomain"
    );
}

#[tokio::test]
async fn a_dns_outage_does_not_block_deletion_for_ever() {
    let (plane, ns) = namespace_with_operator("dns-outage").await;
    let mut knot = Knot::start(&plane.dir.join("knot-outage"), &[("gone.example", "")]).unwrap();
    provider(&ns, "knot", &knot, Some("gone.example"), TSIG_SECRET).await;
    gateway(&ns, "mx1.relay.example.net").await;
    domain(&ns, "gone", "gone.example", "knot", json!({})).await;
    dns_synced(&ns, "gone", true, "Published").await;
    knot.pause();
    ns.api::<MailDomain>()
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    // Five attempts, one per resync, then the finalizer is released.
    gone(&ns.api::<MailDomain>(), "gone").await;
    let events = kubectl(
        &plane.kubeconfig,
        &["get", "events.events.k8s.io", "-n", &ns.name, "-o", "yaml"],
    )
    .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("DnsCleanupAbandoned"), "{events}");
    assert!(
        events.contains("20 mx1.relay.example.net"),
        "the Event names the record left behind: {events}"
    );
}
