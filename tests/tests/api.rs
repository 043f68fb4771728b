//! The v1alpha1 API on a real kube-apiserver: CRDs served, objects round-trip, kubectl
//! shows the printer columns and the field documentation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use mx_operator::api::{DNSProvider, MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::kubectl::{kubectl, kubectl_ok};
use serde_json::json;

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("fixture deserializes")
}

fn maildomain(name: &str, domain: &str) -> MailDomain {
    from_json(json!({
        "apiVersion": "mx-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name},
        "spec": {
            "domain": domain,
            "gatewayRef": {"name": "edge"},
            "primary": {"host": "mail.example.com", "port": 2525, "tls": "Encrypt"},
            "recipients": {"inline": ["alice@example.com"], "configMapRef": {"name": "users", "key": "list"}},
            "policy": {"rbls": ["zen.spamhaus.org"], "requireTls": true},
            "delivery": {"concurrency": 2, "rateDelay": "2s"},
        }
    }))
}

#[tokio::test]
async fn crds_are_established_and_served() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let client = plane.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in mx_operator::api::crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        let served = crds.get(&name).await.expect("CRD exists");
        let established = served
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not established");
    }
    let discovery = kube::discovery::Discovery::new(client)
        .run()
        .await
        .expect("discovery");
    let group = discovery
        .get("mx-operator.io")
        .expect("group is discoverable");
    let mut kinds: Vec<_> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["DNSProvider", "MailDomain", "MailGateway", "MailRelay"]
    );
}

#[tokio::test]
async fn objects_round_trip_with_defaults_and_status() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("roundtrip").await.expect("namespace");

    let domains: Api<MailDomain> = ns.api();
    let created = domains
        .create(
            &PostParams::default(),
            &maildomain("example", "Example.COM."),
        )
        .await
        .expect("create MailDomain");
    let read = domains.get("example").await.expect("get MailDomain");
    assert_eq!(read.spec, created.spec);
    assert_eq!(
        read.spec.domain, "Example.COM.",
        "the server stores what the user wrote"
    );
    assert_eq!(
        read.spec.departure.grace_period, "72h",
        "schema defaults are applied by the server"
    );
    assert_eq!(read.spec.mx.ttl, 3600);

    // Status is a subresource: a status patch changes status only.
    let status = json!({"status": {"observedGeneration": 1, "conditions": [{
        "type": "Ready", "status": "False", "reason": "Testing",
        "message": "written by a test", "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1
    }]}});
    let patched = domains
        .patch_status("example", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    let conditions = patched.status.expect("status").conditions;
    assert_eq!(conditions[0].reason, "Testing");

    let gateways: Api<MailGateway> = ns.api();
    let gateway: MailGateway = from_json(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway",
        "metadata": {"name": "edge"},
        "spec": {"mxHostnames": ["mx1.relay.example.net", "mx2.relay.example.net"],
                 "service": {"loadBalancerIP": "203.0.113.25"}},
    }));
    let created = gateways
        .patch(
            "edge",
            &PatchParams::apply("roundtrip-test"),
            &Patch::Apply(&gateway),
        )
        .await
        .expect("server-side apply MailGateway");
    assert_eq!(created.spec.replicas, 2);
    assert_eq!(
        created.spec.service.load_balancer_ip.as_deref(),
        Some("203.0.113.25")
    );
    assert_eq!(created.spec.queue.max_queue_lifetime, "5d");
    assert_eq!(created.spec.validate(), Ok(()));

    let providers: Api<DNSProvider> = ns.api();
    let provider: DNSProvider = from_json(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider",
        "metadata": {"name": "knot"},
        "spec": {"rfc2136": {"server": "127.0.0.1", "port": 5353, "zone": "example.com",
                 "tsig": {"keyName": "mx-operator", "algorithm": "hmac-sha512",
                          "secretRef": {"name": "tsig", "key": "secret"}}}},
    }));
    let created = providers
        .create(&PostParams::default(), &provider)
        .await
        .expect("create DNSProvider");
    assert_eq!(created.spec, provider.spec);
}

#[tokio::test]
async fn wrong_types_are_refused_by_the_schema() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("schema").await.expect("namespace");
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<MailDomain>(&()),
    );
    let mut object = serde_json::to_value(maildomain("typed", "example.com")).unwrap();
    object["spec"]["primary"]["port"] = json!("twenty-five");
    object["spec"]["role"] = json!("Tertiary");
    let object: kube::api::DynamicObject = from_json(object);
    let error = api
        .create(&PostParams::default(), &object)
        .await
        .expect_err("the API server refuses wrong types");
    let message = error.to_string();
    assert!(message.contains("spec.primary.port"), "{message}");
    assert!(message.contains("spec.role"), "{message}");
}

#[tokio::test]
async fn kubectl_shows_columns_and_field_docs() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("kubectl").await.expect("namespace");
    let domains: Api<MailDomain> = ns.api();
    let mut domain = maildomain("shop", "shop.example");
    domain.metadata = ObjectMeta {
        name: Some("shop".into()),
        ..Default::default()
    };
    domain.spec.recipients.inline = vec!["anna@shop.example".into()];
    domains
        .create(&PostParams::default(), &domain)
        .await
        .expect("create");

    let table = kubectl_ok(&plane.kubeconfig, &["get", "md", "-n", &ns.name]);
    let header: Vec<_> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "DOMAIN", "GATEWAY", "ROLE", "READY", "DRIFT", "QUEUED", "AGE"
        ]
    );
    let row: Vec<_> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["shop", "shop.example", "edge", "Backup"]);

    let output =
        kubectl(&plane.kubeconfig, &["get", "mail", "-n", &ns.name]).expect("kubectl runs");
    assert!(String::from_utf8_lossy(&output.stdout).contains("maildomain.mx-operator.io/shop"));

    // The server publishes a new CRD's schema to /openapi/v2 a moment after it is served.
    let mut attempts = 0;
    let output = loop {
        let output =
            kubectl(&plane.kubeconfig, &["explain", "maildomain.spec"]).expect("kubectl runs");
        attempts += 1;
        if output.status.success() || attempts == 60 {
            break output;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let explain = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(explain.contains("recipients"), "{explain}");
    assert!(
        explain.contains("The MailGateway that relays this domain"),
        "{explain}"
    );
    let output = kubectl(
        &plane.kubeconfig,
        &["explain", "maildomain.spec.recipients.catchAll"],
    )
    .expect("kubectl runs");
    assert!(String::from_utf8_lossy(&output.stdout).contains("backscatter"));
}

#[test]
fn the_api_reference_is_generated_from_the_crds() {
    let path = mx_operator_tests::repository().join("docs/api.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == mx_operator::api::reference::markdown(),
        "docs/api.md is stale: run `make crds` and commit the result"
    );
}

#[test]
fn committed_crds_match_the_generator() {
    let dir = mx_operator_tests::repository().join("crds");
    let mut expected: Vec<String> = Vec::new();
    for crd in mx_operator::api::crd::all() {
        let name = mx_operator::api::crd::file_name(&crd);
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `make crds`"));
        let generated = mx_operator::api::crd::to_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "crds/{name} is stale: run `make crds` and commit the result"
        );
        expected.push(name);
    }
    let kustomization =
        std::fs::read_to_string(dir.join(mx_operator::api::crd::KUSTOMIZATION_FILE))
            .unwrap_or_default();
    assert_eq!(
        kustomization,
        mx_operator::api::crd::kustomization(),
        "crds/kustomization.yaml is stale: run `make crds`"
    );
    expected.push(mx_operator::api::crd::KUSTOMIZATION_FILE.into());
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(
        present, expected,
        "crds/ holds files the generator does not produce"
    );
}

#[tokio::test]
async fn cel_rules_where_served_and_validate_everywhere() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("cel").await.expect("namespace");
    let version = ns.client.apiserver_version().await.expect("version");
    let both_modes: DNSProvider = from_json(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider",
        "metadata": {"name": "both"},
        "spec": {"externalDNS": {}, "rfc2136": {"server": "127.0.0.1",
                 "tsig": {"keyName": "k", "secretRef": {"name": "t", "key": "s"}}}},
    }));
    let result = ns
        .api::<DNSProvider>()
        .create(&PostParams::default(), &both_modes)
        .await;
    if mx_operator_tests::control_plane::supports_cel(&version.major, &version.minor) {
        assert!(result.is_err(), "the CEL rule refuses two modes");
    } else {
        // This server ignores CEL: the object is stored, and only validate() stands between
        // it and the data plane.
        let stored = result.expect("a pre-1.25 server stores what CEL would refuse");
        let problems = stored.spec.validate().expect_err("validate() refuses it");
        assert_eq!(
            problems.problems[0].message,
            "set exactly one of rfc2136 and externalDNS"
        );
    }
}
