//! `mx-operator run`'s controllers against the real API server (with the garbage collector
//! of kube-controller-manager): children, status, repairs, conflicts, and no writes at rest.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator_tests::TestNamespace;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::operator::{TEST_RESYNC, namespace_with_operator};
use mx_operator_tests::wait::{domain_condition, gone, until};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// The status and reason of a condition, once it is there.
fn condition(domain: &MailDomain, type_: &str) -> Option<(ConditionStatus, String, String)> {
    let status = domain.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

async fn wait_condition(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
) -> MailDomain {
    domain_condition(&ns.api(), LIMIT, name, type_, status, reason).await
}

async fn relay_text(api: &Api<MailRelay>, name: &str) -> Option<String> {
    let cm = api.get_opt(name).await.ok()??;
    Some(
        cm.data
            .unwrap_or_default()
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[tokio::test]
async fn gateway_and_three_domains_become_children_and_status() {
    let (_, ns) = namespace_with_operator("children").await;
    apply::<MailGateway>(
        &ns,
        gateway(
            "edge",
            json!({"service": {"loadBalancerIP": "203.0.113.10"}}),
        ),
    )
    .await;
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"},
        "data": {"list": "# staff\ncarol@two.example\ndave@two.example\n"}}),
    )
    .await;
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vip", "labels": {"mx-operator.io/recipient-source": "true"}},
        "stringData": {"list": "erin@three.example\n"}}),
    )
    .await;
    apply::<MailDomain>(&ns, domain("one", "one.example", json!({}))).await;
    apply::<MailDomain>(
        &ns,
        domain(
            "two",
            "two.example",
            json!({"recipients": {"inline": [], "configMapRef": {"name": "users", "key": "list"}}}),
        ),
    )
    .await;
    apply::<MailDomain>(
        &ns,
        domain(
            "three",
            "three.example",
            json!({"recipients": {"secretRef": {"name": "vip", "key": "list"}}}),
        ),
    )
    .await;

    for (name, count) in [("one", 1), ("two", 2), ("three", 2)] {
        let md = wait_condition(&ns, name, "Ready", ConditionStatus::True, "Relayed").await;
        let status = md.status.unwrap();
        assert_eq!(status.recipient_count, Some(count), "{name}");
        assert!(status.recipients_hash.unwrap().starts_with("sha256:"));
        assert_eq!(status.observed_generation, md.metadata.generation);
    }
    let relays: Api<MailRelay> = ns.api();
    let two = relay_text(&relays, "relay-two.example")
        .await
        .expect("MailRelay of two.example");
    assert!(
        two.contains("carol@two.example") && two.contains("dave@two.example"),
        "{two}"
    );
    let three = relay_text(&relays, "relay-three.example")
        .await
        .expect("MailRelay of three.example");
    assert!(
        three.contains("alice@three.example") && three.contains("erin@three.example"),
        "{three}"
    );

    let sts: StatefulSet = until(LIMIT, "StatefulSet", || async {
        ns.api::<StatefulSet>().get_opt("edge").await.ok()?
    })
    .await;
    let sts_spec = sts.spec.unwrap();
    assert_eq!(sts_spec.replicas, Some(2));
    assert_eq!(
        sts_spec.volume_claim_templates.unwrap()[0]
            .metadata
            .name
            .as_deref(),
        Some("queue")
    );
    let service = ns
        .api::<Service>()
        .get("edge")
        .await
        .expect("LoadBalancer Service");
    let service_spec = service.spec.unwrap();
    assert_eq!(service_spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        service_spec.external_traffic_policy.as_deref(),
        Some("Local")
    );
    let headless = ns
        .api::<Service>()
        .get("edge-headless")
        .await
        .expect("headless Service");
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    ns.api::<ServiceAccount>()
        .get("edge-agent")
        .await
        .expect("agent ServiceAccount");
    ns.api::<Role>()
        .get("edge-agent")
        .await
        .expect("agent Role");
    ns.api::<RoleBinding>()
        .get("edge-agent")
        .await
        .expect("agent RoleBinding");
    let config = ns
        .api::<MailRelay>()
        .get("gateway-edge")
        .await
        .expect("gateway MailRelay");
    let main_cf = &config.data.unwrap()["main.cf"];
    assert!(
        main_cf.contains("203.0.113.10"),
        "proxy_interfaces from the LB address: {main_cf}"
    );

    let gateways: Api<MailGateway> = ns.api();
    let gw = until(LIMIT, "gateway status", || async {
        let gw = gateways.get("edge").await.ok()?;
        (gw.status.as_ref()?.domains == Some(3)).then_some(gw)
    })
    .await;
    let status = gw.status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    // No kubelet runs here: the truth is that no replica is ready.
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "ReplicasNotReady")
    );
    let configured = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Configured")
        .unwrap();
    assert!(
        configured.message.contains("no PodDisruptionBudget"),
        "{}",
        configured.message
    );
}

/// An upgrade from an operator that kept the gateway's main.cf in a ConfigMap: that
/// ConfigMap (which anyone with `edit` could change) is removed once every replica runs
/// the current pod template, and the agent's Role no longer reads ConfigMaps.
#[tokio::test]
async fn the_gateway_configmap_of_an_earlier_version_goes_once_the_replicas_are_rolled_out() {
    let (_plane, ns) = namespace_with_operator("legacy-config").await;
    let configmaps = ns.api::<ConfigMap>();
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "edge-config", "labels": {"mx-operator.io/gateway-config-for": "edge"}},
               "data": {"main.cf": "myhostname = old.example\n", "master.cf": "smtp inet n - n - - smtpd\n"}}),
    )
    .await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"replicas": 1}))).await;
    until(LIMIT, "the gateway's MailRelay", || async {
        ns.api::<MailRelay>().get_opt("gateway-edge").await.ok()?
    })
    .await;
    // Until the replicas run the new template, agents of the earlier version may still
    // read their ConfigMap.
    let role_reads_configmaps = || async {
        let role = ns.api::<Role>().get("edge-agent").await.ok()?;
        Some(
            role.rules
                .unwrap_or_default()
                .iter()
                .any(|r| r.resources.iter().flatten().any(|res| res == "configmaps")),
        )
    };
    until(LIMIT, "the agent Role", role_reads_configmaps).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(configmaps.get_opt("edge-config").await.unwrap().is_some());
    assert_eq!(role_reads_configmaps().await, Some(true));

    // The rollout, as the StatefulSet controller (not run on this control plane) reports it.
    let statefulsets = ns.api::<StatefulSet>();
    let generation = statefulsets.get("edge").await.unwrap().metadata.generation;
    statefulsets
        .patch_status(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": generation, "replicas": 1, "readyReplicas": 1,
                "currentReplicas": 1, "updatedReplicas": 1,
                "currentRevision": "edge-1", "updateRevision": "edge-1"}})),
        )
        .await
        .unwrap();
    gone(&configmaps, "edge-config").await;
    let rules = until(LIMIT, "the agent Role without ConfigMaps", || async {
        let role = ns.api::<Role>().get("edge-agent").await.ok()?;
        let rules = role.rules.unwrap_or_default();
        rules
            .iter()
            .all(|r| !r.resources.iter().flatten().any(|res| res == "configmaps"))
            .then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), 1, "{rules:?}");
}

/// A MailGateway holds a finalizer from its first reconcile. Deleted while no replica
/// runs, it goes at once, and a queue volume no replica proved empty stays, named in an
/// Event: a gateway of the same name created again runs on it.
#[tokio::test]
async fn a_gateway_without_replicas_goes_at_once_and_keeps_the_volumes_it_cannot_prove_empty() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let (_plane, ns) = namespace_with_operator("gateway-goes").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"replicas": 1}))).await;
    apply::<MailDomain>(&ns, domain("shop", "shop.example", json!({}))).await;
    wait_condition(&ns, "shop", "Ready", ConditionStatus::True, "Relayed").await;
    let gateways = ns.api::<MailGateway>();
    until(LIMIT, "the gateway's finalizer", || async {
        let gateway = gateways.get("edge").await.ok()?;
        gateway
            .metadata
            .finalizers?
            .contains(&"mx-operator.io/deliver-queues".to_string())
            .then_some(())
    })
    .await;
    // A queue volume as the StatefulSet controller (not run here) names and labels it.
    apply::<PersistentVolumeClaim>(
        &ns,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "queue-edge-0", "labels": {
                   "app.kubernetes.io/name": "mx-gateway", "app.kubernetes.io/instance": "edge",
                   "app.kubernetes.io/component": "queue", "app.kubernetes.io/managed-by": "mx-operator"}},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;

    gateways
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    gone(&gateways, "edge").await;
    let kept = until(LIMIT, "the Event naming the volume kept", || async {
        let events = ns.api::<Event>().list(&Default::default()).await.ok()?;
        events
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("QueueVolumesKept"))
    })
    .await;
    let note = kept.note.unwrap_or_default();
    assert!(
        note.contains("queue-edge-0") && note.contains("created again"),
        "{note}"
    );
    assert!(
        ns.api::<PersistentVolumeClaim>()
            .get_opt("queue-edge-0")
            .await
            .unwrap()
            .is_some_and(|claim| claim.metadata.deletion_timestamp.is_none()),
        "a volume nobody proved empty stays"
    );
    wait_condition(
        &ns,
        "shop",
        "Ready",
        ConditionStatus::False,
        "GatewayNotFound",
    )
    .await;
}

/// A gateway being deleted whose replica cannot say what it holds waits, says so, and
/// goes once annotated `mx-operator.io/force-delete=true`, with an Event saying what was
/// left undelivered.
#[tokio::test]
async fn a_deletion_held_by_a_replica_that_cannot_be_asked_goes_when_forced() {
    use mx_operator_tests::wait::gateway_condition;
    let (_plane, ns) = namespace_with_operator("gateway-forced").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"replicas": 1}))).await;
    let gateways = ns.api::<MailGateway>();
    until(LIMIT, "the gateway's finalizer", || async {
        gateways.get("edge").await.ok()?.metadata.finalizers
    })
    .await;
    // Replica edge-0's pod, its agent on a port where nothing answers.
    let ip = mx_operator_tests::process::machine_address().unwrap();
    let closed = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    mx_operator_tests::gateway::gateway_pod(&ns, "edge", "edge-0", closed, false)
        .await
        .unwrap();

    gateways
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    let held = until(LIMIT, "the deletion held", || async {
        gateway_condition(&gateways, "edge", "Ready")
            .await
            .filter(|c| c.reason == "DeletionBlocked")
    })
    .await;
    assert!(
        held.message.contains("edge-0's agent could not be asked")
            && held.message.contains("mx-operator.io/force-delete=true"),
        "{}",
        held.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        gateways.get_opt("edge").await.unwrap().is_some(),
        "still held"
    );

    gateways
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mx-operator.io/force-delete": "true"}}}),
            ),
        )
        .await
        .unwrap();
    gone(&gateways, "edge").await;
    let forced = until(LIMIT, "the Event of the forced deletion", || async {
        let events = ns.api::<Event>().list(&Default::default()).await.ok()?;
        events
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DeletedWithQueuedMail"))
    })
    .await;
    assert!(
        forced
            .note
            .unwrap_or_default()
            .contains("edge-0's agent could not be asked"),
        "the Event says what was not known"
    );
}

#[tokio::test]
async fn referenced_list_change_propagates_and_hand_edits_are_repaired() {
    let (_, ns) = namespace_with_operator("propagate").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"},
        "data": {"list": "bob@shop.example\n"}}),
    )
    .await;
    apply::<MailDomain>(
        &ns,
        domain(
            "shop",
            "shop.example",
            json!({"recipients": {"configMapRef": {"name": "users", "key": "list"}}}),
        ),
    )
    .await;
    wait_condition(&ns, "shop", "Ready", ConditionStatus::True, "Relayed").await;
    let relays: Api<MailRelay> = ns.api();

    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"},
        "data": {"list": "bob@shop.example\nnew.hire@shop.example\n"}}),
    )
    .await;
    until(LIMIT, "new recipient in the MailRelay", || async {
        relay_text(&relays, "relay-shop.example")
            .await
            .filter(|t| t.contains("new.hire@shop.example"))
    })
    .await;

    let edit = json!({"data": {"relay_recipients": "evil@shop.example OK\n", "injected": "x"}});
    relays
        .patch(
            "relay-shop.example",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .expect("hand edit");
    until(LIMIT, "hand edit of the MailRelay repaired", || async {
        let text = relay_text(&relays, "relay-shop.example").await?;
        (!text.contains("evil@shop.example") && text.contains("new.hire@shop.example"))
            .then_some(())
    })
    .await;
    let relay = relays.get("relay-shop.example").await.unwrap();
    assert!(!relay.data.unwrap().contains_key("injected"));

    let sts: Api<StatefulSet> = ns.api();
    until(LIMIT, "StatefulSet", || async {
        sts.get_opt("edge").await.ok()?
    })
    .await;
    sts.patch(
        "edge",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 7}})),
    )
    .await
    .expect("hand edit");
    until(LIMIT, "StatefulSet replicas repaired", || async {
        let s = sts.get("edge").await.ok()?;
        (s.spec?.replicas == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_domain_removes_its_relay_config() {
    let (plane, ns) = namespace_with_operator("delete").await;
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"allowedDomains": {"from": "All"}})),
    )
    .await;
    apply::<MailDomain>(&ns, domain("local", "local.example", json!({}))).await;
    let tenant = plane.namespace("delete-tenant").await.unwrap();
    apply::<MailDomain>(
        &tenant,
        domain(
            "remote",
            "remote.example",
            json!({"gatewayRef": {"name": "edge", "namespace": ns.name}}),
        ),
    )
    .await;
    wait_condition(&ns, "local", "Ready", ConditionStatus::True, "Relayed").await;
    let remote = wait_condition(&tenant, "remote", "Ready", ConditionStatus::True, "Relayed").await;
    assert!(
        remote
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"mx-operator.io/cleanup".to_string())
    );

    let relays: Api<MailRelay> = ns.api();
    assert!(
        relays
            .get_opt("relay-local.example")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        relays
            .get_opt("relay-remote.example")
            .await
            .unwrap()
            .is_some()
    );
    ns.api::<MailDomain>()
        .delete("local", &DeleteParams::default())
        .await
        .unwrap();
    tenant
        .api::<MailDomain>()
        .delete("remote", &DeleteParams::default())
        .await
        .unwrap();
    for name in ["relay-local.example", "relay-remote.example"] {
        until(LIMIT, &format!("{name} deleted"), || async {
            relays.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    gone(&tenant.api::<MailDomain>(), "remote").await;
}

#[tokio::test]
async fn invalid_specs_get_clear_conditions_and_render_nothing() {
    let (_, ns) = namespace_with_operator("invalid").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let cases = [
        (
            "newline",
            json!({"domain": "bad.example\nmynetworks = 0.0.0.0/0"}),
            "spec.domain",
        ),
        (
            "comma",
            json!({"domain": "bad.example,evil.example"}),
            "spec.domain",
        ),
        (
            "percent",
            json!({"domain": "p.example", "recipients": {"inline": ["a%b@p.example"]}}),
            "spec.recipients.inline[0]",
        ),
        (
            "foreign",
            json!({"domain": "f.example", "recipients": {"inline": ["a@other.example"]}}),
            "spec.recipients.inline[0]",
        ),
        (
            "port",
            json!({"domain": "port.example", "primary": {"host": "mail.port.example", "port": 0}}),
            "spec.primary.port",
        ),
        (
            "host",
            json!({"domain": "host.example", "primary": {"host": "mail host"}}),
            "spec.primary.host",
        ),
        (
            "ttl",
            json!({"domain": "ttl.example", "mx": {"ttl": 1}}),
            "spec.mx.ttl",
        ),
        (
            "grace",
            json!({"domain": "grace.example", "departure": {"gracePeriod": "soon"}}),
            "spec.departure.gracePeriod",
        ),
        (
            "rbl",
            json!({"domain": "rbl.example", "policy": {"rbls": ["zen spamhaus org"]}}),
            "spec.policy.rbls[0]",
        ),
        (
            "client",
            json!({"domain": "client.example", "policy": {"clientDeny": ["300.0.0.0/8"]}}),
            "spec.policy.clientDeny[0]",
        ),
        (
            "size",
            json!({"domain": "size.example", "policy": {"maxMessageSize": "huge"}}),
            "spec.policy.maxMessageSize",
        ),
        (
            "empty",
            json!({"domain": "empty.example", "recipients": {"inline": []}}),
            "spec.recipients",
        ),
        (
            "rate",
            json!({"domain": "rate.example", "delivery": {"rateDelay": "fast"}}),
            "spec.delivery.rateDelay",
        ),
    ];
    for (name, extra, _) in &cases {
        apply::<MailDomain>(&ns, domain(name, "placeholder.example", extra.clone())).await;
    }
    for (name, _, path) in &cases {
        let md = wait_condition(&ns, name, "Ready", ConditionStatus::False, "InvalidSpec").await;
        let (_, _, message) = condition(&md, "Ready").unwrap();
        assert!(message.contains(path), "{name}: {message}");
        assert!(
            condition(&md, "RelayConfigured").is_none(),
            "{name}: nothing else is touched"
        );
    }
    let relays = ns
        .api::<MailRelay>()
        .list(&kube::api::ListParams::default().labels("mx-operator.io/relay-for"))
        .await
        .unwrap();
    assert!(
        relays.items.is_empty(),
        "no relay config rendered: {:?}",
        relays
            .items
            .iter()
            .map(|c| &c.metadata.name)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_older_claim_wins_a_contested_domain() {
    let (plane, ns) = namespace_with_operator("conflict").await;
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"allowedDomains": {"from": "All"}})),
    )
    .await;
    apply::<MailDomain>(&ns, domain("first", "contested.example", json!({}))).await;
    wait_condition(&ns, "first", "Ready", ConditionStatus::True, "Relayed").await;
    let other = plane.namespace("conflict-other").await.unwrap();
    apply::<MailDomain>(
        &other,
        domain(
            "second",
            "Contested.Example.",
            json!({
                "gatewayRef": {"name": "edge", "namespace": ns.name},
                "recipients": {"inline": ["mallory@contested.example"]},
            }),
        ),
    )
    .await;
    let second = wait_condition(
        &other,
        "second",
        "Conflict",
        ConditionStatus::True,
        "DomainClaimed",
    )
    .await;
    let (_, _, message) = condition(&second, "Conflict").unwrap();
    assert!(message.contains(&format!("{}/first", ns.name)), "{message}");
    let relays: Api<MailRelay> = ns.api();
    let text = relay_text(&relays, "relay-contested.example")
        .await
        .unwrap();
    assert!(
        text.contains("alice@contested.example") && !text.contains("mallory"),
        "{text}"
    );

    // When the first claim goes, the second takes over.
    ns.api::<MailDomain>()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_condition(&other, "second", "Ready", ConditionStatus::True, "Relayed").await;
    until(LIMIT, "the relay config of the new holder", || async {
        relay_text(&relays, "relay-contested.example")
            .await
            .filter(|t| t.contains("mallory@contested.example"))
    })
    .await;
}

#[tokio::test]
async fn gateways_accept_only_the_namespaces_they_allow() {
    let (plane, ns) = namespace_with_operator("tenancy").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"allowedDomains": {"from": "Selector", "selector": {"matchLabels": {"mail": "yes"}}}}))).await;
    let stranger = plane.namespace("tenancy-stranger").await.unwrap();
    apply::<MailDomain>(
        &stranger,
        domain(
            "claim",
            "tenant.example",
            json!({"gatewayRef": {"name": "edge", "namespace": ns.name}}),
        ),
    )
    .await;
    let md = wait_condition(
        &stranger,
        "claim",
        "Ready",
        ConditionStatus::False,
        "NamespaceNotAllowed",
    )
    .await;
    assert!(condition(&md, "RelayConfigured").is_some());
    assert!(
        ns.api::<MailRelay>()
            .get_opt("relay-tenant.example")
            .await
            .unwrap()
            .is_none()
    );

    // Labelling the namespace admits it, without touching the MailDomain.
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &stranger.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"mail": "yes"}}})),
        )
        .await
        .unwrap();
    wait_condition(
        &stranger,
        "claim",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
}

#[tokio::test]
async fn missing_recipient_source_is_reported_then_recovers() {
    let (_, ns) = namespace_with_operator("missing").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply::<MailDomain>(
        &ns,
        domain(
            "late",
            "late.example",
            json!({"recipients": {"configMapRef": {"name": "later", "key": "list"}}}),
        ),
    )
    .await;
    let md = wait_condition(
        &ns,
        "late",
        "RecipientsSynced",
        ConditionStatus::False,
        "RecipientSourceMissing",
    )
    .await;
    assert!(condition(&md, "Ready").unwrap().2.contains("ConfigMap"));
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
        "data": {"list": "zoe@late.example\nnot-an-address\n"}}),
    )
    .await;
    let md = wait_condition(
        &ns,
        "late",
        "RecipientsSynced",
        ConditionStatus::False,
        "InvalidRecipients",
    )
    .await;
    assert!(
        condition(&md, "RecipientsSynced")
            .unwrap()
            .2
            .contains("line 2")
    );
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
        "data": {"list": "zoe@late.example\n"}}),
    )
    .await;
    wait_condition(&ns, "late", "Ready", ConditionStatus::True, "Relayed").await;

    let events: Api<Event> = ns.api();
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["RecipientSourceMissing", "InvalidRecipients", "Relayed"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "Event {reason} missing: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn a_steady_state_resync_makes_no_write_request() {
    let (plane, ns) = namespace_with_operator("steady").await;
    // Quantities the API server stores spelt otherwise (500m, 1Gi) are current as written.
    apply::<MailGateway>(
        &ns,
        gateway(
            "edge",
            json!({"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}),
        ),
    )
    .await;
    for i in 0..3 {
        apply::<MailDomain>(
            &ns,
            domain(&format!("d{i}"), &format!("d{i}.steady.example"), json!({})),
        )
        .await;
    }
    for i in 0..3 {
        wait_condition(
            &ns,
            &format!("d{i}"),
            "Ready",
            ConditionStatus::True,
            "Relayed",
        )
        .await;
    }
    let in_namespace = |writes: Vec<mx_operator_tests::control_plane::AuditedWrite>| {
        writes
            .into_iter()
            .filter(|w| w.uri.contains(&format!("/namespaces/{}/", ns.name)))
            .collect::<Vec<_>>()
    };
    // Let the first reconciles settle, then watch three resync periods.
    tokio::time::sleep(TEST_RESYNC * 2).await;
    let before = in_namespace(plane.audited_writes("mx-operator").unwrap()).len();
    tokio::time::sleep(TEST_RESYNC * 3).await;
    let after = in_namespace(plane.audited_writes("mx-operator").unwrap());
    let new: Vec<_> = after[before..]
        .iter()
        .map(|w| format!("{} {}", w.verb, w.uri))
        .collect();
    assert!(
        before > 0,
        "the audit log shows the operator's writes at all"
    );
    assert!(
        new.is_empty(),
        "writes during a steady-state resync: {new:#?}"
    );
}

#[tokio::test]
async fn a_primary_that_is_the_gateway_itself_is_refused() {
    let (_plane, ns) = namespace_with_operator("loop").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    // The API server gives the gateway's Service its cluster IP.
    let cluster_ip = until(LIMIT, "the gateway's Service with a cluster IP", || async {
        let service = ns.api::<Service>().get_opt("edge").await.ok()??;
        service.spec?.cluster_ip.filter(|ip| ip != "None")
    })
    .await;
    let relays = ns.api::<MailRelay>();
    for (name, host) in [
        ("by-name", "EDGE.mx.example.net."),
        ("by-address", cluster_ip.as_str()),
    ] {
        apply::<MailDomain>(
            &ns,
            domain(
                name,
                &format!("{name}.example"),
                json!({"primary": {"host": host}}),
            ),
        )
        .await;
        let md = wait_condition(
            &ns,
            name,
            "Ready",
            ConditionStatus::False,
            "PrimaryIsGateway",
        )
        .await;
        let (_, _, message) = condition(&md, "Ready").unwrap();
        assert!(
            message.contains(&format!("is MailGateway {}/edge itself", ns.name)),
            "{message}"
        );
        let relay = format!("relay-{name}.example");
        assert!(relays.get_opt(&relay).await.unwrap().is_none(), "{relay}");
    }
    // The same host on another port is another server: relayed.
    apply::<MailDomain>(
        &ns,
        domain(
            "other-port",
            "other-port.example",
            json!({"primary": {"host": cluster_ip, "port": 2525}}),
        ),
    )
    .await;
    wait_condition(&ns, "other-port", "Ready", ConditionStatus::True, "Relayed").await;
}

#[tokio::test]
async fn a_shared_gateway_delivers_only_where_it_allows() {
    let (plane, ns) = namespace_with_operator("targets").await;
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"allowedDomains": {"from": "All"}})),
    )
    .await;
    let tenant = plane.namespace("targets-tenant").await.unwrap();
    let on_edge = json!({"gatewayRef": {"name": "edge", "namespace": ns.name}});
    let mut inward = on_edge.clone();
    inward["primary"] = json!({"host": "127.0.0.1", "port": 2525});
    apply::<MailDomain>(&tenant, domain("inward", "inward.example", inward)).await;
    let md = wait_condition(
        &tenant,
        "inward",
        "Ready",
        ConditionStatus::False,
        "PrimaryNotAllowed",
    )
    .await;
    let (_, _, message) = condition(&md, "Ready").unwrap();
    assert!(message.contains("127.0.0.1 is a loopback"), "{message}");
    let relays = ns.api::<MailRelay>();
    assert!(
        relays
            .get_opt("relay-inward.example")
            .await
            .unwrap()
            .is_none()
    );

    // The gateway's owner lists where tenants may deliver: the same domain is relayed, and
    // a primary outside the list is refused.
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"allowedDomains": {"from": "All"}, "allowedPrimaries": {"networks": ["127.0.0.0/8"]}})),
    )
    .await;
    wait_condition(&tenant, "inward", "Ready", ConditionStatus::True, "Relayed").await;
    let mut elsewhere = on_edge;
    elsewhere["primary"] = json!({"host": "mail.elsewhere.example"});
    apply::<MailDomain>(&tenant, domain("elsewhere", "elsewhere.example", elsewhere)).await;
    let md = wait_condition(
        &tenant,
        "elsewhere",
        "Ready",
        ConditionStatus::False,
        "PrimaryNotAllowed",
    )
    .await;
    let (_, _, message) = condition(&md, "Ready").unwrap();
    assert!(message.contains("hostSuffixes"), "{message}");
}

#[tokio::test]
async fn a_list_past_one_relay_is_sharded_and_a_refused_relay_is_a_condition() {
    let (_plane, ns) = namespace_with_operator("toolarge").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    // 40,000 addresses fit in the list's ConfigMap (24 bytes each) and 30,000 more in a
    // Secret; one MailRelay holds 1 MiB of their lines, so they go in two shards.
    let addresses = |range: std::ops::Range<u32>| -> String {
        range.map(|i| format!("user{i:06}@big.example\n")).collect()
    };
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"}, "data": {"list": addresses(0..40_000)}}),
    )
    .await;
    apply::<Secret>(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "more-users", "labels": {"mx-operator.io/recipient-source": "true"}}, "stringData": {"list": addresses(40_000..70_000)}}),
    )
    .await;
    let recipients = json!({"recipients": {
        "configMapRef": {"name": "users", "key": "list"},
        "secretRef": {"name": "more-users", "key": "list"}}});
    apply::<MailDomain>(&ns, domain("big", "big.example", recipients)).await;
    let md = wait_condition(&ns, "big", "Ready", ConditionStatus::True, "Relayed").await;
    let (_, _, message) = condition(&md, "RelayConfigured").unwrap();
    assert!(message.contains("in 2 shard MailRelays"), "{message}");
    let relays = ns.api::<MailRelay>();
    let shard = "recipients-1-of-2.big.example";
    let lines = || async {
        let relay = relays.get_opt(shard).await.ok()??;
        relay.data?.get("relay_recipients").cloned()
    };
    let written = lines().await.expect("shard 2");
    assert!(written.lines().count() > 30_000, "half the list");

    // A hand edit of a shard is repaired like one of a relay.
    relays
        .patch(
            shard,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"relay_recipients": "mallory@big.example OK\n"}})),
        )
        .await
        .expect("hand edit");
    until(LIMIT, "the shard repaired", || async {
        (lines().await? == written).then_some(())
    })
    .await;

    // A MailRelay the API server refuses (its name, `relay-` and a 250-character domain, is
    // longer than an object name may be) is a condition with the server's reason, not a
    // retry loop.
    let long = format!(
        "{}.{}.{}.{}.example",
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(59)
    );
    assert_eq!(long.len(), 250);
    let inline = json!({"recipients": {"inline": [format!("a@{long}")]}});
    apply::<MailDomain>(&ns, domain("long", &long, inline)).await;
    let md = until(LIMIT, "long: Ready=False", || async {
        let md = ns.api::<MailDomain>().get("long").await.ok()?;
        (condition(&md, "Ready")?.0 == ConditionStatus::False).then_some(md)
    })
    .await;
    assert_eq!(
        condition(&md, "Ready").map(|(_, reason, _)| reason),
        Some("RelayConfigRefused".to_string()),
        "{:?}",
        md.status
    );
    let (_, _, message) = condition(&md, "Ready").unwrap();
    assert!(
        message.contains("the API server refused MailRelay") && message.contains("253"),
        "{message}"
    );
    assert_eq!(
        condition(&md, "RelayConfigured").map(|(status, reason, _)| (status, reason)),
        Some((ConditionStatus::False, "RelayConfigRefused".to_string()))
    );
}

#[tokio::test]
async fn a_write_the_api_server_refuses_is_a_condition_until_it_succeeds() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    use mx_operator_tests::fixtures::apply_dynamic;
    use mx_operator_tests::wait::gateway_condition;
    let (_plane, ns) = namespace_with_operator("quota").await;
    // While this quota holds, admission refuses every new ConfigMap and MailRelay in the
    // namespace: the gateway's ConfigMap and the domain's MailRelay. (Its status is what
    // admission enforces; the test control plane runs no quota controller to fill it in.)
    let none = json!({"configmaps": "0", "count/mailrelays.mx-operator.io": "0"});
    apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-configmaps"},
               "spec": {"hard": none}}),
    )
    .await;
    let counted = json!({"status": {"hard": none, "used": none}});
    ns.api::<ResourceQuota>()
        .patch_status(
            "no-configmaps",
            &PatchParams::default(),
            &Patch::Merge(&counted),
        )
        .await
        .unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply::<MailDomain>(&ns, domain("relay", "relay.example", json!({}))).await;
    let configured = until(
        LIMIT,
        "the gateway's refused write in its status",
        || async {
            gateway_condition(&ns.api(), "edge", "Configured")
                .await
                .filter(|c| c.reason == "ApplyFailed")
        },
    )
    .await;
    assert_eq!(configured.status, ConditionStatus::False);
    assert!(
        configured.message.contains("no-configmaps") && configured.message.contains("HTTP 403"),
        "{}",
        configured.message
    );
    let md = wait_condition(&ns, "relay", "Ready", ConditionStatus::False, "ApplyFailed").await;
    let (_, _, message) = condition(&md, "Ready").unwrap();
    assert!(
        message.contains("relay-relay.example") && message.contains("no-configmaps"),
        "{message}"
    );

    // The retries succeed once the quota is gone.
    ns.api::<ResourceQuota>()
        .delete("no-configmaps", &DeleteParams::default())
        .await
        .unwrap();
    let retried = Duration::from_secs(90);
    until(retried, "the gateway configured", || async {
        gateway_condition(&ns.api(), "edge", "Configured")
            .await
            .filter(|c| c.reason == "Applied")
    })
    .await;
    domain_condition(
        &ns.api(),
        retried,
        "relay",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
}

#[tokio::test]
async fn a_statefulset_change_kubernetes_refuses_in_place_replaces_it_and_keeps_its_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::{Resource, ResourceExt};
    use mx_operator_tests::wait::gateway_condition;
    let (_plane, ns) = namespace_with_operator("replace").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"queue": {"size": "1Gi"}}))).await;
    let sts: Api<StatefulSet> = ns.api();
    let old = until(LIMIT, "StatefulSet", || async {
        sts.get_opt("edge").await.ok()?
    })
    .await;
    // A replica of it, as the StatefulSet controller would make (none runs here); its
    // queue is what must survive the replacement.
    let owner = old.controller_owner_ref(&()).expect("owner reference");
    let labels = old.spec.as_ref().unwrap().selector.match_labels.clone();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "edge-0", "labels": labels, "ownerReferences": [owner]},
        "spec": {"containers": [{"name": "postfix", "image": "mx-operator/not-pulled"}],
                 "automountServiceAccountToken": false}
    }))
    .unwrap();
    let pods: Api<Pod> = ns.api();
    // A new namespace's default ServiceAccount comes a moment after the namespace, and
    // pod admission refuses pods until it is there.
    let pod = until(LIMIT, "edge-0 admitted", || async {
        pods.create(&Default::default(), &pod).await.ok()
    })
    .await;

    // Volume claim templates are fixed once the StatefulSet exists.
    ns.api::<MailGateway>()
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"queue": {"size": "2Gi"}}})),
        )
        .await
        .unwrap();
    let new = until(LIMIT, "StatefulSet replaced with 2Gi queues", || async {
        let new = sts.get_opt("edge").await.ok()??;
        let size = new.spec.as_ref()?.volume_claim_templates.as_ref()?[0]
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")?
            .0
            .clone();
        (new.uid() != old.uid() && size == "2Gi").then_some(new)
    })
    .await;
    let configured = until(LIMIT, "Configured again", || async {
        gateway_condition(&ns.api(), "edge", "Configured")
            .await
            .filter(|c| c.reason == "Applied")
    })
    .await;
    assert_eq!(configured.status, ConditionStatus::True);
    // The pod was orphaned, not deleted: the new StatefulSet adopts it.
    let kept = pods.get("edge-0").await.expect("the pod kept");
    assert_eq!(kept.uid(), pod.uid());
    assert!(new.metadata.deletion_timestamp.is_none());
    let events = until(LIMIT, "the replacement announced", || async {
        let events = ns.api::<Event>().list(&Default::default()).await.ok()?;
        events
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ReplacingStatefulSet"))
    })
    .await;
    assert!(
        events
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("volumeClaimTemplates")
            || events
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("forbidden"),
        "{:?}",
        events.note
    );
}
