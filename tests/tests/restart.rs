//! etcd and kube-apiserver killed and started again while the operator is converging
//! domains: the operator reconnects by itself, finishes, and handles what changed after.
//! Its own test binary and its own control plane, which the test restarts.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::process;
use mx_operator_tests::wait::until;
use mx_operator_tests::{ControlPlane, TestNamespace};
use serde_json::json;
use std::time::{Duration, Instant};

const DOMAINS: usize = 100;
const DOWN_FOR: Duration = Duration::from_secs(5);
const LIMIT: Duration = Duration::from_secs(90);

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
    let cm = ns.api::<ConfigMap>().get_opt(name).await.ok()??;
    Some(
        cm.data
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
    let mut operator =
        process::start_operator(&plane.operator_kubeconfig, &log, "info,mx_operator=debug")
            .expect("operator");

    let ns = plane.namespace("restart").await.expect("namespace");
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    futures::future::join_all((0..DOMAINS).map(|i| {
        apply::<MailDomain>(
            &ns,
            domain(&format!("d{i}"), &format!("d{i}.example"), json!({})),
        )
    }))
    .await;
    // Mid-run: some domains are done, most are not.
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    until(LIMIT, "every domain Ready after the restart", || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        (ready_names(&list.items) == DOMAINS).then_some(())
    })
    .await;
    let converged = restarted_at.elapsed();

    // Changes after the restart still reach the operator through its watches.
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
    ns.api::<ConfigMap>()
        .delete("relay-d1.example", &DeleteParams::default())
        .await
        .unwrap();
    until(LIMIT, "the recipient change rendered", || async {
        relay_data(&ns, "relay-d0.example")
            .await
            .filter(|data| data.contains("bob@d0.example"))
    })
    .await;
    until(LIMIT, "the deleted relay ConfigMap restored", || async {
        relay_data(&ns, "relay-d1.example").await
    })
    .await;
    until(
        LIMIT,
        "the domain created after the restart Ready",
        || async {
            let late = domains.get_opt("late").await.ok()??;
            late.condition("Ready")
                .is_some_and(|c| c.status == ConditionStatus::True)
                .then_some(())
        },
    )
    .await;
    assert!(
        operator.exited().is_none(),
        "the operator kept running, no restart"
    );
    println!(
        "faults: etcd and kube-apiserver SIGKILLed with {before}/{DOMAINS} domains Ready, down {:.1} s, \
         back after {:.1} s; all Ready {:.1} s after the kill, later changes applied, operator not restarted",
        DOWN_FOR.as_secs_f64(),
        back_after.as_secs_f64(),
        converged.as_secs_f64()
    );
}
