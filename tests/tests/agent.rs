//! The agent on its own (no operator): its gateway's MailRelay and the domains' MailRelays
//! written straight to the API server, as a hand edit or a faulty writer would. A refused
//! object leaves the previous configuration serving, Postfix keeps serving while the agent
//! is down, and a ConfigMap labelled as a relay or as the gateway's configuration adds
//! nothing.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use mx_operator::api::MailRelay;
use mx_operator::api::domain::MailDomainSpec;
use mx_operator::api::gateway::MailGatewaySpec;
use mx_operator::render::{
    DomainInput, GATEWAY_CONFIG_LABEL, RELAY_GATEWAY_LABEL, RelayMode, gateway_configmap_data,
    relay_data,
};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::apply;
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::smtp::{Sink, rcpt_reply};
use mx_operator_tests::wait::until;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_refused_config_leaves_the_previous_one_serving() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("agent").await.expect("namespace");
    let sink = Sink::start().unwrap();
    let gateway_spec: MailGatewaySpec =
        serde_json::from_value(json!({"mxHostnames": ["mx1.relay.test"]})).unwrap();
    let gateway_data = gateway_configmap_data("edge", &gateway_spec, None).unwrap();
    apply::<MailRelay>(
        &ns,
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailRelay",
        "metadata": {"name": "gateway-edge", "labels": {GATEWAY_CONFIG_LABEL: "edge"}},
        "data": gateway_data}),
    )
    .await;
    let spec: MailDomainSpec = serde_json::from_value(json!({
        "domain": "kept.example", "gatewayRef": {"name": "edge"},
        "primary": {"host": "127.0.0.1", "port": sink.address.port(), "tls": "None"},
        "recipients": {"inline": ["alice@kept.example"]},
    }))
    .unwrap();
    let recipients = BTreeSet::from(["alice@kept.example".to_string()]).into();
    let relay_data = relay_data(&DomainInput {
        spec: &spec,
        recipients: &recipients,
        mode: RelayMode::Active,
        gateway_delivery: &Default::default(),
    })
    .unwrap();
    let written = MailRelay::new(
        serde_json::from_value(
            json!({"name": "relay-kept.example", "labels": {RELAY_GATEWAY_LABEL: "edge"}}),
        )
        .unwrap(),
        relay_data.clone(),
    );
    apply::<MailRelay>(&ns, serde_json::to_value(written).unwrap()).await;

    let mut gateway = Gateway::start(
        &plane.dir.join(format!("gateway-{}", ns.name)),
        &plane.kubeconfig,
        &ns.name,
        "edge",
        Lifetime::TiedToThisProcess,
    )
    .await
    .expect("gateway replica");
    let smtp = gateway.smtp;
    let answer = |recipient: &'static str| async move {
        rcpt_reply(smtp, "x@client.test", recipient).unwrap().code
    };
    assert_eq!(answer("alice@kept.example").await, 250);
    let relays = ns.api::<MailRelay>();

    // Whoever may create ConfigMaps in the gateway's namespace cannot add a domain or a
    // recipient: a well-formed relay configuration in a ConfigMap labelled for the gateway
    // is never read. (The load that follows the MailRelay edit below proves it was seen.)
    let mut forged = relay_data.clone();
    forged.insert(
        "relay_recipients".into(),
        "alice@kept.example OK\nmallory@kept.example OK\n".into(),
    );
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "relay-forged", "labels": {RELAY_GATEWAY_LABEL: "edge"}},
        "data": forged}),
    )
    .await;
    // Nor change a Postfix parameter: a gateway configuration in the ConfigMap that an
    // earlier version read (`<gateway>-config`), one that would relay anything.
    let mut open_relay = gateway_data.clone();
    open_relay.insert(
        "main.cf".into(),
        format!(
            "{}smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = permit\n",
            gateway_data["main.cf"]
        ),
    );
    apply::<ConfigMap>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "edge-config", "labels": {GATEWAY_CONFIG_LABEL: "edge"}},
        "data": open_relay}),
    )
    .await;

    // A MailRelay that reaches beyond its domain is refused as a whole: bob (added in the
    // same edit) is not accepted, and the smuggled domain is not relayed.
    relays
        .patch(
            "relay-kept.example",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {
            "relay_recipients": "alice@kept.example OK\nbob@kept.example OK\n",
            "relay_domains": "kept.example OK\nevil.test OK\n"}})),
        )
        .await
        .unwrap();
    until(LIMIT, "the refusal in the agent's metrics", || async {
        gateway.metric("mx_agent_load_errors_total{reason=\"relay_refused\"}")
    })
    .await;
    assert_eq!(answer("bob@kept.example").await, 550);
    assert_eq!(answer("someone@evil.test").await, 554);
    assert_eq!(answer("alice@kept.example").await, 250);
    assert_eq!(
        answer("mallory@kept.example").await,
        550,
        "the forged ConfigMap"
    );
    assert!(
        !std::fs::read_to_string(gateway.dir.join("conf/main.cf"))
            .unwrap()
            .contains("= permit"),
        "the gateway ConfigMap was read"
    );

    // A gateway MailRelay with a broken main.cf is refused too.
    let mut broken = gateway_data.clone();
    broken.insert("main.cf".into(), "this is not a parameter\n".into());
    relays
        .patch(
            "gateway-edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": broken})),
        )
        .await
        .unwrap();
    until(
        LIMIT,
        "the gateway refusal in the agent's metrics",
        || async { gateway.metric("mx_agent_load_errors_total{reason=\"gateway_refused\"}") },
    )
    .await;
    assert_eq!(answer("alice@kept.example").await, 250);
    assert!(
        std::fs::read_to_string(gateway.dir.join("conf/main.cf"))
            .unwrap()
            .contains("relay_domains = lmdb:"),
        "the last good main.cf stays in place"
    );

    // Without the agent, Postfix keeps serving what was loaded; a new agent loads it again.
    gateway.stop_agent();
    assert_eq!(answer("alice@kept.example").await, 250);
    relays
        .patch(
            "gateway-edge",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": gateway_data})),
        )
        .await
        .unwrap();
    gateway.start_agent().unwrap();
    until(LIMIT, "the restarted agent's first load", || async {
        gateway
            .metric("mx_agent_config_generation")
            .filter(|g| *g >= 1.0)
    })
    .await;
    assert_eq!(answer("alice@kept.example").await, 250);
    assert_eq!(answer("bob@kept.example").await, 550);
}
