//! Where a shared gateway delivers for tenants: a host-name primary is judged by the
//! addresses it resolves to as well as by its name, at every reconcile.
//! Its own test binary: its operator resolves names at this test's Knot.

use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::knot::Knot;
use mx_operator_tests::operator::operator_resolving_at;
use mx_operator_tests::wait::domain_condition;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const ZONE: &str = "primaries.example";

#[tokio::test]
async fn a_tenants_primary_whose_name_resolves_inside_the_host_is_refused() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let knot = Knot::start(
        &plane.dir.join("knot-primaries"),
        &[(
            ZONE,
            "loop A 127.0.0.1\nmail A 192.0.2.25\nmail AAAA 2001:db8::25\n",
        )],
    )
    .unwrap();
    let operator = operator_resolving_at(plane, vec![knot.address]).await;

    let fleet = plane.namespace("fleet").await.unwrap();
    let tenant = plane.namespace("tenant").await.unwrap();
    apply::<MailGateway>(
        &fleet,
        gateway("edge", json!({"allowedDomains": {"from": "All"}})),
    )
    .await;
    let on_fleet = |host: &str| json!({"gatewayRef": {"name": "edge", "namespace": fleet.name}, "primary": {"host": host}});
    apply::<MailDomain>(
        &tenant,
        domain(
            "looped",
            "looped.example",
            on_fleet(&format!("loop.{ZONE}")),
        ),
    )
    .await;
    apply::<MailDomain>(
        &tenant,
        domain("fine", "fine.example", on_fleet(&format!("mail.{ZONE}"))),
    )
    .await;
    let looped = domain_condition(
        &tenant.api(),
        LIMIT,
        "looped",
        "Ready",
        ConditionStatus::False,
        "PrimaryNotAllowed",
    )
    .await;
    let message = &looped.condition("Ready").unwrap().message;
    assert!(
        message.contains("loop.primaries.example resolves to 127.0.0.1"),
        "{message}"
    );
    domain_condition(
        &tenant.api(),
        LIMIT,
        "fine",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;

    // The name is moved to the cloud metadata address: refused at the next reconcile.
    knot.nsupdate(
        ZONE,
        &format!("update delete mail.{ZONE}. A\nupdate add mail.{ZONE}. 300 A 169.254.169.254"),
    )
    .unwrap();
    let moved = domain_condition(
        &tenant.api(),
        LIMIT,
        "fine",
        "Ready",
        ConditionStatus::False,
        "PrimaryNotAllowed",
    )
    .await;
    let message = &moved.condition("Ready").unwrap().message;
    assert!(message.contains("resolves to 169.254.169.254"), "{message}");
    operator.abort();
}
