//! Least privilege of the gateway pods: the agent's ServiceAccount, as the operator creates
//! it, may read its own namespace's ConfigMaps and nothing else. Asked with the token the
//! API server issues for that ServiceAccount, not the admin's.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use mx_operator::api::MailGateway;
use mx_operator_tests::fixtures::{apply, gateway};
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::wait::until;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn the_gateway_token_reads_its_configmaps_and_nothing_else() {
    let (plane, ns) = namespace_with_operator("privilege").await;
    let other = plane.namespace("privilege-other").await.unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;

    let token = ns.service_account_token("edge-agent").await;
    let (agent, _) = plane
        .token_client(&format!("{}-agent", ns.name), &token)
        .await
        .unwrap();

    // What the agent needs: its namespace's ConfigMaps, read and watched. The Role and its
    // binding are applied by the gateway reconcile, a moment after the ServiceAccount.
    let own: Api<ConfigMap> = Api::namespaced(agent.clone(), &ns.name);
    until(LIMIT, "the agent may list its ConfigMaps", || async {
        own.list(&ListParams::default()).await.ok()
    })
    .await;
    own.get("edge-config")
        .await
        .expect("read its gateway ConfigMap");

    // Everything else is refused.
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
        Api::<MailGateway>::namespaced(agent, &ns.name)
            .list(&ListParams::default())
            .await,
        "MailGateways",
    );
}
