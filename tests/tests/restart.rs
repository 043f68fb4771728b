//! etcd and kube-apiserver killed and started again while the operator is converging
//! domains: the operator reconnects by itself, finishes, and handles what changed after.
//! Its own test binary and its own control plane, which the test restarts.

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailRelay};
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::{apply, domain, edge_and_domains};
use mx_operator_tests::process;
use mx_operator_tests::wait::until;
use mx_operator_tests::{ControlPlane, TestNamespace};
use serde_json::json;
use std::time::{Duration, Instant};

const DOMAINS: usize = 100;
const DOWN_FOR: Duration = Duration::from_secs(5);
const LIMIT: Duration = Duration::from_secs(90);
/// For changes made right after the restart: watches that back off for a minute, or
/// relist into a version the server calls too old, miss it.
const WATCH_LIMIT: Duration = Duration::from_secs(45);

fn ready_names(list: &[MailDomain]) -> usize {
    list.iter()
        .filter(|d| {
            d.condition("Ready")
                .is_some_and(|c| c.status == ConditionStatus::True)
                && d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
        })
        .count()
}

async fn relay_data(ns: &TestNamespace, name: &str) -> Option<String> {
    let relay = ns.api::<MailRelay>().get_opt(name).await.ok()??;
    Some(
        relay
            .data
            .unwrap_or_default()
            .into_values()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[tokio::test]
async fn the_operator_rides_out_an_etcd_and_api_server_restart() {
    let dir = std::env::temp_dir()
        .join("mx-operator-tests")
        .join(std::process::id().to_string())
        .join("restart");
    let mut plane = ControlPlane::start(&dir, Lifetime::TiedToThisProcess)
        .await
        .expect("control plane");
    plane.install_crds().await.expect("CRDs");
    let log = plane.dir.join("operator.log");
    let mut operator = process::start_operator(
        &plane.operator_kubeconfig,
        &log,
        "info,mx_operator=debug",
        5,
    )
    .expect("operator");

    let ns = plane.namespace("restart").await.expect("namespace");
    edge_and_domains(&ns, DOMAINS).await;
    // Mid-run: the operator has written some MailRelays, most domains are not done.
    // Waiting for one (rather than a fixed pause) keeps a slow operator start from leaving
    // nothing written before the kill.
    let deleted = until(LIMIT, "a MailRelay other than d0's written", || async {
        ns.api::<MailRelay>()
            .list(&ListParams::default().labels("mx-operator.io/relay-for"))
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .find(|name| name != "relay-d0.example")
    })
    .await;
    let before = ready_names(
        &ns.api::<MailDomain>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    );
    let restarted_at = Instant::now();
    plane.restart(DOWN_FOR).await.expect("restart");
    let back_after = restarted_at.elapsed();

    // A client of this test's made before the restart may hold dead connections.
    let ns = TestNamespace {
        client: plane.client().await.unwrap(),
        name: ns.name.clone(),
    };
    let domains = ns.api::<MailDomain>();
    let back = Instant::now();

    // Changes made as soon as the API is back reach the operator only through its watches
    // (a resync reads the same stale cache): they measure how fast the watches recover.
    domains
        .patch(
            "d0",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"recipients": {"inline": ["alice@d0.example", "bob@d0.example"]}}}),
            ),
        )
        .await
        .unwrap();
    apply::<MailDomain>(&ns, domain("late", "late.example", json!({}))).await;
    // One of the MailRelays written before the kill, deleted behind the operator's back.
    ns.api::<MailRelay>()
        .delete(&deleted, &DeleteParams::default())
        .await
        .unwrap();
    until(WATCH_LIMIT, "the recipient change rendered", || async {
        relay_data(&ns, "relay-d0.example")
            .await
            .filter(|data| data.contains("bob@d0.example"))
    })
    .await;
    until(WATCH_LIMIT, "the deleted MailRelay restored", || async {
        relay_data(&ns, &deleted).await
    })
    .await;
    let changes_after = back.elapsed();
    until(LIMIT, "every domain Ready after the restart", || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        (ready_names(&list.items) == DOMAINS + 1).then_some(())
    })
    .await;
    let converged = restarted_at.elapsed();
    assert!(
        operator.exited().is_none(),
        "the operator kept running, no restart"
    );
    println!(
        "faults: etcd and kube-apiserver SIGKILLed with {before}/{DOMAINS} domains Ready, down {:.1} s, \
         back after {:.1} s; changes made then applied {:.1} s later; all Ready {:.1} s after the kill; operator not restarted",
        DOWN_FOR.as_secs_f64(),
        back_after.as_secs_f64(),
        changes_after.as_secs_f64(),
        converged.as_secs_f64()
    );
}
