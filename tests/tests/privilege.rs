//! Least privilege around the gateway pods, asked with tokens the API server issues, not
//! the admin's. The agent's ServiceAccount, as the operator creates it, may read its
//! gateway's ConfigMap (no other) and the MailRelays of its namespace, and write nothing. A
//! tenant with the aggregated `edit` role in the gateway's namespace may neither read the
//! MailRelays (they hold recipient lists) nor write one (they add domains and recipients).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mx_operator::api::{MailGateway, MailRelay};
use mx_operator_tests::fixtures::{apply, apply_dynamic, gateway};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::until;
use mx_operator_tests::{ControlPlane, TestNamespace};
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

async fn token_client(plane: &ControlPlane, ns: &TestNamespace, account: &str) -> Client {
    let token = ns.service_account_token(account).await;
    let (client, _) = plane
        .token_client(&format!("{}-{account}", ns.name), &token)
        .await
        .unwrap();
    client
}

fn relay(name: &str) -> MailRelay {
    serde_json::from_value(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailRelay",
        "metadata": {"name": name, "labels": {"mx-operator.io/relay-for": "edge"}},
        "data": {"domain": "evil.test", "relay_domains": "evil.test OK\n"}
    }))
    .unwrap()
}

/// Neither a new MailRelay nor a change of the operator's.
async fn may_not_write_relays(relays: &Api<MailRelay>) {
    forbidden(
        relays
            .create(&PostParams::default(), &relay("relay-evil.test"))
            .await,
        "creating a MailRelay",
    );
    forbidden(
        relays
            .patch(
                "relay-shop.example",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"relay_recipients": "mallory@shop.example OK\n"}})),
            )
            .await,
        "changing a MailRelay",
    );
}

#[tokio::test]
async fn the_gateway_token_reads_its_configmap_and_relays_and_nothing_else() {
    let (plane, ns) = namespace_with_operator("privilege").await;
    let other = plane.namespace("privilege-other").await.unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"},
               "data": {"list": "alice@example.com\n"}}),
    )
    .await;
    let agent = token_client(plane, &ns, "edge-agent").await;

    // What the agent needs: its gateway's ConfigMap, read and watched by name, and the
    // MailRelays. The Role and its binding are applied by the gateway reconcile, a moment
    // after the ServiceAccount.
    let own: Api<ConfigMap> = Api::namespaced(agent.clone(), &ns.name);
    let by_name = ListParams::default().fields("metadata.name=edge-config");
    until(
        LIMIT,
        "the agent may list its gateway ConfigMap",
        || async { own.list(&by_name).await.ok() },
    )
    .await;
    own.get("edge-config")
        .await
        .expect("read its gateway ConfigMap");
    let relays: Api<MailRelay> = Api::namespaced(agent.clone(), &ns.name);
    relays
        .list(&ListParams::default())
        .await
        .expect("list the MailRelays");

    // Everything else is refused.
    forbidden(own.get("users").await, "reading another ConfigMap");
    forbidden(
        own.list(&ListParams::default()).await,
        "listing every ConfigMap",
    );
    let smuggled: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "relay-evil.test"}, "data": {"domain": "evil.test"}
    }))
    .unwrap();
    forbidden(
        own.create(&PostParams::default(), &smuggled).await,
        "creating a ConfigMap",
    );
    forbidden(
        own.delete("edge-config", &Default::default()).await,
        "deleting a ConfigMap",
    );
    may_not_write_relays(&relays).await;
    forbidden(
        Api::<Secret>::namespaced(agent.clone(), &ns.name)
            .list(&ListParams::default())
            .await,
        "listing Secrets",
    );
    forbidden(
        Api::<ConfigMap>::namespaced(agent.clone(), &other.name)
            .list(&ListParams::default())
            .await,
        "ConfigMaps of another namespace",
    );
    forbidden(
        Api::<MailRelay>::namespaced(agent.clone(), &other.name)
            .list(&ListParams::default())
            .await,
        "MailRelays of another namespace",
    );
    forbidden(
        Api::<MailGateway>::namespaced(agent, &ns.name)
            .list(&ListParams::default())
            .await,
        "MailGateways",
    );
}

#[tokio::test]
async fn a_tenant_with_edit_in_the_gateway_namespace_can_neither_read_nor_write_relays() {
    let (plane, ns) = namespace_with_operator("tenant-edit").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    let md = json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain",
        "metadata": {"name": "shop"},
        "spec": {"domain": "shop.example", "gatewayRef": {"name": "edge"},
                 "primary": {"host": "mail.shop.example"},
                 "recipients": {"inline": ["alice@shop.example"]}}});
    apply_dynamic(&ns, md).await;
    let admin_relays: Api<MailRelay> = ns.api();
    until(LIMIT, "the operator's MailRelay", || async {
        admin_relays.get_opt("relay-shop.example").await.ok()?
    })
    .await;
    apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}}),
    )
    .await;
    apply_dynamic(
        &ns,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tenant-edit"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns.name}]}),
    )
    .await;
    let tenant = token_client(plane, &ns, "tenant").await;

    // The tenant really holds `edit` (its rules are aggregated by the controller manager):
    // it may create ConfigMaps and Secrets here, labelled as it likes.
    let configmaps: Api<ConfigMap> = Api::namespaced(tenant.clone(), &ns.name);
    let labelled: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "relay-evil.test", "labels": {"mx-operator.io/relay-for": "edge"}},
        "data": {"domain": "evil.test", "relay_domains": "evil.test OK\n"}
    }))
    .unwrap();
    until(LIMIT, "the tenant may create ConfigMaps", || async {
        configmaps
            .create(&PostParams::default(), &labelled)
            .await
            .ok()
    })
    .await;
    Api::<Secret>::namespaced(tenant.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("edit reads Secrets");

    // But no MailRelay: not listed, not read, not created, not changed.
    let relays: Api<MailRelay> = Api::namespaced(tenant, &ns.name);
    forbidden(
        relays.list(&ListParams::default()).await,
        "listing MailRelays",
    );
    forbidden(
        relays.get("relay-shop.example").await,
        "reading a MailRelay",
    );
    may_not_write_relays(&relays).await;
}
