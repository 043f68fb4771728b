//! An upgrade from an operator that carried domains in relay ConfigMaps: objects as that
//! operator left them (a StatefulSet running its gateway image, a relay ConfigMap per
//! domain, `status.relayConfigMap`), then this operator started. Each domain gets its
//! MailRelay; the gateway's pods (whose new agents read only MailRelays) are not replaced
//! while a domain has none; and the old ConfigMaps stay until every replica runs the new
//! template, as the old agents read them until then.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use kube::api::{DeleteParams, Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway, MailRelay};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::fixtures::{apply, apply_dynamic, domain, gateway};
use mx_operator_tests::operator::Replica;
use mx_operator_tests::wait::{gateway_condition, until};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const OLD_IMAGE: &str = "mx-operator/gateway:before-mailrelays";

fn image(workload: &StatefulSet) -> Option<String> {
    workload
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test]
async fn domains_of_an_older_operator_move_to_mailrelays_before_the_pods_are_replaced() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("upgrade").await.expect("namespace");
    // What the older operator left.
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let pods =
        json!({"app.kubernetes.io/name": "mx-gateway", "app.kubernetes.io/instance": "edge"});
    apply_dynamic(
        &ns,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "edge", "labels": {"app.kubernetes.io/name": "mx-gateway",
                   "app.kubernetes.io/instance": "edge", "app.kubernetes.io/managed-by": "mx-operator"}},
               "spec": {"replicas": 1, "serviceName": "edge-headless",
                        "selector": {"matchLabels": pods},
                        "template": {"metadata": {"labels": pods},
                                     "spec": {"containers": [{"name": "postfix", "image": OLD_IMAGE}]}}}}),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    let relay = "relay-old.example";
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": relay, "labels": {"mx-operator.io/relay-for": "edge"},
                            "annotations": {"mx-operator.io/maildomain": format!("{}/old", ns.name)}},
               "data": {"domain": "old.example"}}),
    )
    .await;
    apply::<MailDomain>(&ns, domain("old", "old.example", json!({}))).await;
    // Written as the older operator did: applied by its field manager.
    domains
        .patch_status(
            "old",
            &PatchParams::apply("mx-operator").force(),
            &Patch::Apply(
                json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain",
                "status": {"relayConfigMap": format!("{}/{relay}", ns.name)}}),
            ),
        )
        .await
        .expect("the older operator's status");
    // The gateway's own MailRelay exists already (its configuration is not what this test
    // is about; this operator updates it, which the quota below allows).
    apply::<MailRelay>(
        &ns,
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailRelay",
               "metadata": {"name": "gateway-edge", "labels": {"mx-operator.io/gateway-config-for": "edge"}},
               "data": {"main.cf": "# replaced by the operator\n"}}),
    )
    .await;
    // While this quota holds, the MailRelay cannot be written. (Its status is what
    // admission enforces; the test control plane runs no quota controller.)
    let none = json!({"count/mailrelays.mx-operator.io": "0"});
    apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-relays"},
               "spec": {"hard": none}}),
    )
    .await;
    ns.api::<ResourceQuota>()
        .patch_status(
            "no-relays",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": none, "used": none}})),
        )
        .await
        .unwrap();

    // This operator.
    let _operator = Replica::start(plane, &ns.name, "upgraded", false)
        .await
        .expect("operator");
    // No MailRelay yet: the pods keep the old agents, which read the old ConfigMap.
    let migrating = until(LIMIT, "the gateway waiting for the MailRelay", || async {
        gateway_condition(&ns.api(), "edge", "Configured")
            .await
            .filter(|c| c.reason == "MigratingRelays")
    })
    .await;
    assert!(
        migrating.message.starts_with("1 domains"),
        "{}",
        migrating.message
    );
    let workloads = ns.api::<StatefulSet>();
    assert_eq!(
        image(&workloads.get("edge").await.unwrap()).as_deref(),
        Some(OLD_IMAGE)
    );

    // With it, the StatefulSet gets this operator's template; the old ConfigMap stays
    // while old agents may still read it.
    ns.api::<ResourceQuota>()
        .delete("no-relays", &DeleteParams::default())
        .await
        .unwrap();
    let relays = ns.api::<MailRelay>();
    until(
        Duration::from_secs(90),
        "old.example's MailRelay",
        || async { relays.get_opt("relay-old.example").await.ok()? },
    )
    .await;
    until(LIMIT, "the StatefulSet updated", || async {
        let workload = workloads.get("edge").await.ok()?;
        (image(&workload).as_deref() != Some(OLD_IMAGE)).then_some(workload)
    })
    .await;
    let configmaps = ns.api::<ConfigMap>();
    assert!(configmaps.get_opt(relay).await.unwrap().is_some());
    let old = domains.get("old").await.unwrap().status.unwrap();
    assert_eq!(old.relay, Some(format!("{}/relay-old.example", ns.name)));
    assert!(old.relay_config_map.is_some());

    // Once every replica runs it (what the StatefulSet controller reports), the old
    // ConfigMap goes and the status forgets it.
    // (Settled first: the operator may apply it again while it converges.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let updated = workloads.get("edge").await.unwrap();
    assert_ne!(image(&updated).as_deref(), Some(OLD_IMAGE));
    let generation = updated.metadata.generation;
    let replicas = updated.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let rolled_out = json!({"status": {"observedGeneration": generation, "replicas": replicas,
        "readyReplicas": replicas, "updatedReplicas": replicas, "currentReplicas": replicas,
        "currentRevision": "edge-2", "updateRevision": "edge-2"}});
    workloads
        .patch_status("edge", &PatchParams::default(), &Patch::Merge(rolled_out))
        .await
        .expect("the rollout reported");
    domains
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/look-again": "1"}}})),
        )
        .await
        .unwrap();
    until(LIMIT, "the old relay ConfigMap removed", || async {
        configmaps
            .get_opt(relay)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    until(LIMIT, "status.relayConfigMap cleared", || async {
        let status = domains.get("old").await.ok()?.status?;
        status.relay_config_map.is_none().then_some(())
    })
    .await;
}
