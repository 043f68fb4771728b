//! Two operator replicas: only the Lease holder reconciles; when it stops, the other takes
//! over. A test binary of its own, so no other operator runs against its control plane.

use kube::api::{Api, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::control_plane::{OPERATOR_USER, STANDBY_USER};
use mx_operator_tests::operator::Replica;
use mx_operator_tests::wait::until;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

fn writes_outside_leases(plane: &ControlPlane, user: &str, namespace: &str) -> usize {
    plane
        .audited_writes(user)
        .unwrap()
        .into_iter()
        .filter(|w| {
            w.uri.contains(&format!("/namespaces/{namespace}/")) && !w.uri.contains("/leases")
        })
        .count()
}

async fn apply_domain(api: &Api<MailDomain>, name: &str) {
    let md: MailDomain = serde_json::from_value(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": name},
        "spec": {"domain": format!("{name}.example"), "gatewayRef": {"name": "edge"},
                 "primary": {"host": "192.0.2.25"}, "recipients": {"inline": [format!("a@{name}.example")]}},
    }))
    .unwrap();
    api.patch(name, &PatchParams::apply("test-user"), &Patch::Apply(&md))
        .await
        .unwrap();
}

async fn wait_ready(api: &Api<MailDomain>, name: &str) {
    until(LIMIT, &format!("{name} Ready"), || async {
        let md = api.get(name).await.ok()?;
        md.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_writes_and_the_standby_takes_over() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("leader").await.expect("namespace");
    let first = Replica::start(plane, &ns.name, "replica-a", false)
        .await
        .unwrap();
    until(LIMIT, "replica-a leads", || async {
        first.health.is_leader().then_some(())
    })
    .await;
    let second = Replica::start(plane, &ns.name, "replica-b", true)
        .await
        .unwrap();

    let gateway: MailGateway = serde_json::from_value(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway", "metadata": {"name": "edge"},
        "spec": {"mxHostnames": ["mx.example.net"]},
    }))
    .unwrap();
    ns.api::<MailGateway>()
        .patch(
            "edge",
            &PatchParams::apply("test-user"),
            &Patch::Apply(&gateway),
        )
        .await
        .unwrap();
    let domains: Api<MailDomain> = ns.api();
    apply_domain(&domains, "before").await;
    wait_ready(&domains, "before").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!second.health.is_leader());
    assert!(
        writes_outside_leases(plane, OPERATOR_USER, &ns.name) > 0,
        "the leader wrote"
    );
    assert_eq!(
        writes_outside_leases(plane, STANDBY_USER, &ns.name),
        0,
        "the standby wrote nothing"
    );

    first.stop().await;
    until(LIMIT, "replica-b leads", || async {
        second.health.is_leader().then_some(())
    })
    .await;
    apply_domain(&domains, "after").await;
    wait_ready(&domains, "after").await;
    assert!(
        writes_outside_leases(plane, STANDBY_USER, &ns.name) > 0,
        "the new leader reconciles"
    );
    second.stop().await;
}
