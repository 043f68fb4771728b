//! The operator started on domains that already exist (an upgrade, a restart, a new
//! leader): each domain's first status is its real one. Reconciles wait for every watch
//! they read to list; before that, the first domains were reported `GatewayNotFound`, with
//! an Event, and then `Ready`. Then deletions reach what depends on them through the
//! watches, not at the next resync (300 s here). Its own test binary and its own control
//! plane.

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::edge_and_domains;
use mx_operator_tests::process;
use mx_operator_tests::wait::until;
use std::collections::BTreeMap;
use std::time::Duration;

const DOMAINS: usize = 100;
const LIMIT: Duration = Duration::from_secs(90);
/// Well below the resync: only a watch can make it in time.
const AT_ONCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_operator_started_on_existing_domains_reports_each_once_then_follows_deletions() {
    let dir = std::env::temp_dir()
        .join("mx-operator-tests")
        .join(std::process::id().to_string())
        .join("startup");
    let plane = ControlPlane::start(&dir, Lifetime::TiedToThisProcess)
        .await
        .expect("control plane");
    plane.install_crds().await.expect("CRDs");
    let ns = plane.namespace("startup").await.expect("namespace");
    edge_and_domains(&ns, DOMAINS).await;

    let _operator = process::start_operator(
        &plane.operator_kubeconfig,
        &plane.dir.join("operator.log"),
        "info",
        300,
    )
    .expect("operator");
    let domains = ns.api::<MailDomain>();
    until(LIMIT, "every domain Ready", || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        let ready = list.items.iter().filter(|d| {
            d.condition("Ready")
                .is_some_and(|c| c.status == ConditionStatus::True)
        });
        (ready.count() == DOMAINS).then_some(())
    })
    .await;
    // Events are written after the status; give the last ones a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events.items {
        if event.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("MailDomain") {
            let name = event.regarding.and_then(|r| r.name).unwrap_or_default();
            let reason = event.reason.unwrap_or_default();
            by_domain.entry(name).or_default().push(reason);
        }
    }
    let more_than_one: BTreeMap<_, _> = by_domain
        .iter()
        .filter(|(_, reasons)| reasons.len() > 1)
        .collect();
    assert!(
        more_than_one.is_empty(),
        "domains reported more than once at start: {more_than_one:?}"
    );
    assert_eq!(
        by_domain.len(),
        DOMAINS,
        "one Event per domain: {by_domain:?}"
    );

    // A domain deleted (no finalizer: same namespace) leaves its gateway's count.
    let gateways = ns.api::<MailGateway>();
    domains.delete("d0", &Default::default()).await.unwrap();
    until(AT_ONCE, "the gateway counting one domain less", || async {
        let gateway = gateways.get("edge").await.ok()?;
        (gateway.status?.domains? == DOMAINS as i32 - 1).then_some(())
    })
    .await;

    // The gateway deleted: every domain says so, at once.
    gateways.delete("edge", &Default::default()).await.unwrap();
    until(AT_ONCE, "every domain GatewayNotFound", || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        let told = list.items.iter().filter(|d| {
            d.condition("Ready").is_some_and(|c| {
                c.status == ConditionStatus::False && c.reason == "GatewayNotFound"
            })
        });
        (told.count() == DOMAINS - 1).then_some(())
    })
    .await;
}
