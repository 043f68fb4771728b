//! Packaging: the Helm chart rendered by Helm's own engine and checked against the
//! Kubernetes schemas, the kustomize base, the operator run with the chart's RBAC (its
//! ServiceAccount token, not the admin's) through a full reconcile, and the Argo CD health
//! check run by a real Lua against the status objects that reconcile produced.

use kube::api::{Api, DeleteParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator_tests::control_plane::ControlPlane;
use mx_operator_tests::fixtures::apply_dynamic;
use mx_operator_tests::helm::{chart, documents, lint, render, validate};
use mx_operator_tests::knot::{Knot, TSIG_KEY_NAME, TSIG_SECRET};
use mx_operator_tests::kubectl::kubectl_ok;
use mx_operator_tests::process::{Guarded, free_port, operator_binary, spawn_tied};
use mx_operator_tests::repository;
use mx_operator_tests::wait::{domain_condition, gone, until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

fn operator_args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment").expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `kubectl kustomize` of a folder of this repository, as objects.
fn kustomize(folder: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repository().join(folder))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize {folder}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    documents(&String::from_utf8_lossy(&output.stdout))
}

/// Objects of kinds the Kubernetes schemas know.
fn built_in(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| {
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            !api_version.starts_with("mx-operator.io/")
                && !api_version.starts_with("monitoring.coreos.com/")
        })
        .cloned()
        .collect()
}

#[test]
fn chart_crds_are_the_generated_ones_byte_for_byte() {
    for crd in mx_operator::api::crd::all() {
        let name = mx_operator::api::crd::file_name(&crd);
        let generated = std::fs::read(repository().join("crds").join(&name)).unwrap();
        let in_chart = std::fs::read(chart().join("crds").join(&name))
            .unwrap_or_else(|e| panic!("charts/mx-operator/crds/{name}: {e}; run `make crds`"));
        assert!(
            generated == in_chart,
            "charts/mx-operator/crds/{name} differs from crds/: run `make crds`"
        );
    }
    let files = std::fs::read_dir(chart().join("crds")).unwrap().count();
    assert_eq!(
        files,
        mx_operator::api::crd::all().len(),
        "only the CRDs are in the chart's crds/"
    );
}

#[test]
fn the_chart_lints_and_every_variant_renders_objects_the_schemas_accept() {
    let (passed, findings) = lint();
    assert!(passed, "helm lint --strict:\n{findings}");

    let variants = [
        ("default", json!({})),
        (
            "ha",
            json!({"replicas": 3, "metrics": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}},
                   "drift": {"resolvers": ["192.0.2.53", "[2001:db8::53]:53"], "smtpProbes": false}}),
        ),
        (
            "gateway",
            json!({"defaultGateway": {"enabled": true, "spec": {"mxHostnames": ["mx1.relay.example.net"]}}}),
        ),
        (
            "own-rbac",
            json!({"serviceAccount": {"create": false, "name": "mine"}, "rbac": {"create": false}}),
        ),
        (
            "openshift",
            json!({"podSecurityContext": {"runAsUser": null, "runAsGroup": null}}),
        ),
        (
            "network-policy",
            json!({"networkPolicy": {"enabled": true, "apiServer": {"cidrs": ["192.0.2.2/32", "2001:db8::1/128"]},
                   "gatewayNamespaces": ["mail", "tenant-mail"],
                   "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}}),
        ),
    ];
    for (variant, values) in variants {
        let (yaml, notes) = render(&values, "mxo", "mx-system")
            .unwrap_or_else(|(code, e)| panic!("{variant}: exit {code}: {e}"));
        let objects = documents(&yaml);
        for version in ["1.25.0", "1.37.0"] {
            if let Err(problems) = validate(&built_in(&objects), version) {
                panic!("{variant} against Kubernetes {version}:\n{problems}");
            }
        }
        for object in &objects {
            let labels = &object["metadata"]["labels"];
            for label in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/version",
            ] {
                assert!(
                    labels[label].is_string(),
                    "{variant}: {} lacks {label}",
                    object["kind"]
                );
            }
        }
        let pod = &find(&objects, "Deployment").unwrap()["spec"]["template"]["spec"];
        let container = &pod["containers"][0]["securityContext"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{variant}");
        assert_eq!(container["readOnlyRootFilesystem"], true, "{variant}");
        assert_eq!(container["allowPrivilegeEscalation"], false, "{variant}");
        assert_eq!(
            container["seccompProfile"]["type"], "RuntimeDefault",
            "{variant}"
        );
        assert_eq!(
            container["capabilities"]["drop"],
            json!(["ALL"]),
            "{variant}"
        );
        assert!(
            notes.contains("kubectl get maildomains -A"),
            "{variant}: NOTES.txt\n{notes}"
        );

        let args = operator_args(&objects);
        let kinds = kinds(&objects);
        match variant {
            "ha" => {
                assert!(args.contains(&"--leader-elect=true".into()), "{args:?}");
                assert!(
                    args.contains(&"--resolver=[2001:db8::53]:53".into()),
                    "{args:?}"
                );
                assert!(args.contains(&"--smtp-probes=false".into()), "{args:?}");
                assert!(
                    kinds.contains(&"ServiceMonitor".into())
                        && kinds.contains(&"PrometheusRule".into())
                        && kinds.contains(&"Role".into()),
                    "{kinds:?}"
                );
            }
            "gateway" => {
                let gateway = find(&objects, "MailGateway").expect("the default gateway");
                let spec: mx_operator::api::MailGatewaySpec =
                    serde_json::from_value(gateway["spec"].clone()).unwrap();
                assert_eq!(spec.validate(), Ok(()));
            }
            "network-policy" => {
                let policies: Vec<&Value> = objects
                    .iter()
                    .filter(|o| o["kind"] == "NetworkPolicy")
                    .collect();
                let namespaces: Vec<&str> = policies
                    .iter()
                    .filter_map(|p| p["metadata"]["namespace"].as_str())
                    .collect();
                assert_eq!(namespaces, ["mx-system", "mail", "tenant-mail"]);
                let operator = &policies[0]["spec"];
                assert_eq!(operator["policyTypes"], json!(["Ingress", "Egress"]));
                assert_eq!(
                    operator["egress"][0]["to"][1]["ipBlock"]["cidr"],
                    "2001:db8::1/128"
                );
                assert_eq!(
                    operator["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    "monitoring"
                );
                // SMTP from anywhere; the agent's port from the operator and the scraper.
                let gateway = &policies[1]["spec"];
                assert_eq!(gateway["policyTypes"], json!(["Ingress"]));
                assert!(
                    mx_operator::manifests::gateway::pod_selector("edge")
                        .split(',')
                        .any(|label| label == "app.kubernetes.io/name=mx-gateway"),
                    "the gateway pods carry the label the policy selects"
                );
                assert_eq!(
                    gateway["ingress"][0],
                    json!({"ports": [{"port": 25, "protocol": "TCP"}]})
                );
                let agent = &gateway["ingress"][1];
                assert_eq!(agent["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
                assert_eq!(
                    agent["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
                    "mx-operator"
                );
                assert_eq!(
                    agent["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    "mx-system"
                );
                assert_eq!(agent["from"].as_array().map(Vec::len), Some(2));
                // The operator's own pods match its policy's selector.
                let pod_labels = &find(&objects, "Deployment").unwrap()["spec"]["template"]["metadata"]
                    ["labels"];
                for (key, value) in operator["podSelector"]["matchLabels"].as_object().unwrap() {
                    assert_eq!(&pod_labels[key], value, "{key}");
                }
                // Without the API server's addresses the policy would cut the operator off.
                let refused = render(
                    &json!({"networkPolicy": {"enabled": true}}),
                    "mxo",
                    "mx-system",
                )
                .expect_err("a policy without the API server's addresses");
                assert!(
                    refused.1.contains("networkPolicy.apiServer.cidrs"),
                    "{refused:?}"
                );
            }
            "openshift" => {
                // restricted-v2 assigns the UID from the namespace's range.
                assert!(pod["securityContext"].get("runAsUser").is_none(), "{pod}");
                assert!(pod["securityContext"].get("runAsGroup").is_none(), "{pod}");
            }
            "own-rbac" => {
                assert_eq!(kinds, ["Deployment", "Service"]);
                assert_eq!(
                    find(&objects, "Deployment").unwrap()["spec"]["template"]["spec"]["serviceAccountName"],
                    "mine"
                );
            }
            _ => {
                assert!(
                    args.contains(&"--leader-elect=false".into()),
                    "one replica needs no Lease: {args:?}"
                );
                assert_eq!(
                    kinds,
                    [
                        "ClusterRole",
                        "ClusterRoleBinding",
                        "Deployment",
                        "Service",
                        "ServiceAccount"
                    ]
                );
            }
        }
    }
}

/// The objects the operator itself builds for a gateway (`GatewayBuild`), for `spec`.
fn gateway_children(name: &str, spec: Value) -> Vec<Value> {
    use mx_operator::manifests::gateway::GatewayBuild;
    let mut object = mx_operator_tests::fixtures::gateway(name, spec);
    object["metadata"]["namespace"] = json!("mail");
    object["metadata"]["uid"] = json!("0b9d4c43-6f0e-4bbf-8f7c-6f1b8f2f3a11");
    let gateway: MailGateway = serde_json::from_value(object).unwrap();
    assert_eq!(gateway.spec.validate(), Ok(()), "{name}");
    let owner = kube::Resource::controller_owner_ref(&gateway, &()).unwrap();
    let build = GatewayBuild {
        gateway: &gateway,
        name,
        namespace: "mail",
        owner,
        default_image: "ghcr.io/mx-operator/gateway:0.1.0",
    };
    let value = |object: serde_json::Result<Value>| object.unwrap();
    vec![
        value(serde_json::to_value(build.service())),
        value(serde_json::to_value(build.headless_service())),
        value(serde_json::to_value(build.service_account())),
        value(serde_json::to_value(build.role(true))),
        value(serde_json::to_value(build.role(false))),
        value(serde_json::to_value(build.role_binding())),
        value(serde_json::to_value(build.pod_disruption_budget(1))),
        value(serde_json::to_value(
            build.stateful_set(gateway.spec.replicas),
        )),
    ]
}

/// Everything the product installs or creates, validated (`kubernetes-validate --strict`)
/// against the schemas of every minor from 1.29 to the newest the validator knows: the
/// chart with every optional template on, the kustomize base, the examples, and what the
/// operator builds for a plain gateway and for one with every option set.
#[test]
fn every_object_the_product_installs_or_builds_validates_on_every_current_minor() {
    let everything_on = json!({
        "replicas": 3,
        "metrics": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}},
        "defaultGateway": {"enabled": true, "spec": {"mxHostnames": ["mx1.relay.example.net"]}},
        "networkPolicy": {"enabled": true, "apiServer": {"cidrs": ["192.0.2.2/32"]}, "gatewayNamespaces": ["mail"]},
    });
    let (chart, _) = render(&everything_on, "mxo", "mx-system").unwrap();
    let mut objects = documents(&chart);
    objects.extend(kustomize("deploy"));
    for example in ["examples/dnsprovider.yaml", "examples/maildomains.yaml"] {
        objects.extend(documents(
            &std::fs::read_to_string(repository().join(example)).unwrap(),
        ));
    }
    objects.extend(gateway_children("edge", json!({})));
    objects.extend(gateway_children(
        "full",
        json!({"replicas": 3,
               "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                           "annotations": {"metallb.universe.tf/loadBalancerIPs": "192.0.2.25"}},
               "queue": {"size": "20Gi", "storageClassName": "fast", "maxQueueLifetime": "3d"},
               "tls": {"secretName": "edge-tls"},
               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
               "image": "registry.example.net/mx-gateway:1.2.3"}),
    ));
    let objects = built_in(&objects);
    let kinds: std::collections::BTreeSet<String> = kinds(&objects).into_iter().collect();
    for kind in [
        "StatefulSet",
        "Service",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Deployment",
        "ClusterRole",
        "Secret",
        "ConfigMap",
        "Namespace",
    ] {
        assert!(kinds.contains(kind), "{kind} is validated: {kinds:?}");
    }
    let minors = mx_operator_tests::helm::minors_from(29);
    assert!(minors.len() >= 9, "1.29 to 1.37 at least: {minors:?}");
    for minor in &minors {
        if let Err(problems) = validate(&objects, minor) {
            panic!("against Kubernetes {minor}:\n{problems}");
        }
    }
    println!(
        "validated {} objects ({} kinds) against Kubernetes {}",
        objects.len(),
        kinds.len(),
        minors.join(", ")
    );
}

/// The Pod Security level each pod meets, evaluated as the PodSecurity admission plugin
/// of current releases would: the operator `restricted`, the gateway `baseline` (its
/// Postfix master starts as root). Fails when either drops.
#[test]
fn the_operator_pod_is_restricted_and_the_gateway_pods_baseline() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use mx_operator_tests::pod_security::{Level, level};
    let (chart, _) = render(&json!({}), "mxo", "mx-system").unwrap();
    let objects = documents(&chart);
    let deployment: Deployment =
        serde_json::from_value(find(&objects, "Deployment").unwrap().clone()).unwrap();
    let operator = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(level(&operator), (Level::Restricted, vec![]));
    for (name, spec) in [
        ("edge", json!({})),
        (
            "full",
            json!({"tls": {"secretName": "edge-tls"}, "replicas": 3}),
        ),
    ] {
        let built = gateway_children(name, spec);
        let stateful_set = built
            .iter()
            .find(|o| o["kind"] == "StatefulSet")
            .unwrap()
            .clone();
        let stateful_set: StatefulSet = serde_json::from_value(stateful_set).unwrap();
        let pod = stateful_set.spec.unwrap().template.spec.unwrap();
        let (met, short_of_restricted) = level(&pod);
        println!("gateway {name}: {met:?}; not restricted because: {short_of_restricted:?}");
        assert_eq!(met, Level::Baseline, "{short_of_restricted:?}");
    }
}

/// The CEL validation rules of the generated CRDs: kind, field path, rule and the schema
/// that carries it.
fn cel_rules() -> Vec<(String, String, String, Value)> {
    fn walk(
        kind: &str,
        path: &str,
        schema: &Value,
        found: &mut Vec<(String, String, String, Value)>,
    ) {
        for rule in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            found.push((
                kind.to_string(),
                path.to_string(),
                rule["rule"].as_str().unwrap_or_default().to_string(),
                schema.clone(),
            ));
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(kind, &path, property, found);
        }
        if schema["items"].is_object() {
            walk(kind, &format!("{path}[]"), &schema["items"], found);
        }
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repository().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".mx-operator.io.yaml") {
            continue;
        }
        for crd in documents(&std::fs::read_to_string(&path).unwrap()) {
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                walk(&kind, "", &version["schema"]["openAPIV3Schema"], &mut found);
            }
        }
    }
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

/// Every CEL rule of the CRDs (evaluated by Kubernetes 1.25+, ignored by 1.20, where
/// `validate()` alone refuses) is compiled and evaluated by a CEL implementation
/// (cel-python) against values `validate()` accepts and refuses: the rule refuses nothing
/// `validate()` accepts, and refuses what it is there for. Every string a rule reads has a
/// `maxLength`, which the API server's cost estimate needs.
#[test]
fn every_cel_rule_compiles_and_refuses_nothing_validate_accepts() {
    use mx_operator::api::DNSProviderSpec;
    use mx_operator::api::validate::normalize_domain;
    let rules = cel_rules();
    let places: Vec<(&str, &str)> = rules.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    // A new rule needs its cases here.
    assert_eq!(
        places,
        [("DNSProvider", "spec"), ("MailDomain", "spec.domain")]
    );
    for (kind, path, _, schema) in &rules {
        if schema["type"] == "string" {
            assert!(
                schema["maxLength"].is_u64(),
                "{kind} {path}: a rule reads a string without maxLength"
            );
        }
        if schema["type"] == "array" {
            assert!(
                schema["maxItems"].is_u64(),
                "{kind} {path}: a rule reads a list without maxItems"
            );
        }
    }
    let rfc2136 = json!({"server": "127.0.0.1", "tsig": {"keyName": "mx-operator",
                         "secretRef": {"name": "tsig", "key": "secret"}}});
    // (value, what validate() says, what the rule must say when validate() refuses; None:
    // the rule may let it through, validate() refuses it at the operator).
    let providers = [
        (json!({"rfc2136": rfc2136}), Some(true)),
        (json!({"externalDNS": {}}), Some(true)),
        (json!({"rfc2136": rfc2136, "externalDNS": {}}), Some(false)),
        (json!({}), Some(false)),
    ];
    let domains = [
        ("example.com", Some(true)),
        ("Example.COM.", Some(true)),
        ("bücher.example", Some(true)),
        ("xn--bcher-kva.example", Some(true)),
        ("exa mple.com", Some(false)),
        ("a@b.example", Some(false)),
        ("a,b.example", Some(false)),
        ("#x.example", Some(false)),
        ("x\ty.example", Some(false)),
        ("x\ny.example", Some(false)),
        ("", Some(false)),
        ("-bad-.example", None),
        ("a..b", None),
    ];
    let rule_of = |kind: &str| rules.iter().find(|r| r.0 == kind).unwrap().2.clone();
    let mut cases = Vec::new();
    let mut accepted = Vec::new();
    for (spec, expect) in &providers {
        let spec_ok = serde_json::from_value::<DNSProviderSpec>(spec.clone())
            .map(|s| s.validate().is_ok())
            .unwrap_or(false);
        cases.push((rule_of("DNSProvider"), spec.clone()));
        accepted.push((format!("DNSProvider spec {spec}"), spec_ok, *expect));
    }
    for (domain, expect) in &domains {
        cases.push((rule_of("MailDomain"), json!(domain)));
        accepted.push((
            format!("spec.domain {domain:?}"),
            normalize_domain(domain).is_ok(),
            *expect,
        ));
    }
    let verdicts = mx_operator_tests::helm::cel(&cases);
    assert_eq!(verdicts.len(), cases.len());
    for ((what, validate_accepts, expect), verdict) in accepted.iter().zip(verdicts) {
        let rule_accepts = verdict.unwrap_or_else(|error| panic!("{what}: {error}"));
        if *validate_accepts {
            assert!(
                rule_accepts,
                "{what}: the CEL rule refuses what validate() accepts"
            );
        }
        if let Some(expected) = expect {
            assert_eq!(*validate_accepts, *expected, "{what}: validate()");
            assert_eq!(rule_accepts, *expected, "{what}: the CEL rule");
        }
    }
}

#[test]
fn wrong_values_are_rejected_by_the_schema_with_the_key_named() {
    for (values, key) in [
        (json!({"replicas": "two"}), "replicas"),
        (json!({"replicas": 0}), "replicas"),
        (
            json!({"drift": {"intervalSeconds": "5m"}}),
            "intervalSeconds",
        ),
        (json!({"logFormat": "xml"}), "logFormat"),
        (json!({"replica": 2}), "replica"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "pullPolicy"),
        (json!({"defaultGateway": {"enabled": true}}), "mxHostnames"),
        (json!({"metrics": {"service": {"port": 70000}}}), "port"),
        (
            json!({"metrics": {"prometheusRule": {"for": {"departed": "an hour"}}}}),
            "departed",
        ),
        (
            json!({"metrics": {"prometheusRule": {"queuedLongHours": 6}}}),
            "queuedLongHours",
        ),
    ] {
        match render(&values, "mxo", "mx-system") {
            Ok(_) => panic!("{values} was accepted"),
            Err((code, message)) => {
                assert_eq!(code, 3, "{values}: {message}");
                assert!(
                    message.contains(key),
                    "{values}: the message should name {key}: {message}"
                );
            }
        }
    }
}

/// `promtool` (Debian's prometheus package) with `args`, in `dir`: success, and what it
/// printed.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (bootstrap.sh installs Debian's prometheus package)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The metric names an expression reads, as their families are registered (a counter's
/// `_total` left off).
fn metrics_read(expr: &str) -> Vec<String> {
    let mut names = vec![];
    let mut rest = expr;
    while let Some(start) = rest.find("mx_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        names.push(name.strip_suffix("_total").unwrap_or(name).to_string());
        rest = &tail[end..];
    }
    names
}

/// The operator's and an agent's metrics text with a sample in every family (a family
/// without one is not printed).
fn every_metric_exported() -> String {
    use mx_operator::api::conditions::Verdict;
    use mx_operator::drift::{Observation, decide::MxState};
    use mx_operator::telemetry::Endpoints;
    use std::collections::BTreeMap;

    let operator = mx_operator::controller::Metrics::default();
    let failed = mx_operator::controller::Error::NotNamespaced("md".into());
    operator.observe_reconcile("MailDomain", Duration::from_millis(1), Some(&failed));
    operator.observe_dns_repair();
    operator.drift.observe_check(&Observation {
        public: MxState::Ours,
        authoritative_ok: Some(true),
        acceptance: Some(Verdict::new(true, "Verified", "")),
        primary: Some(Verdict::new(true, "Reachable", "")),
    });
    let domain: MailDomain = serde_json::from_value(mx_operator::api::fixtures::domain_object(
        "md",
        "example.com",
        json!({"metadata": {"uid": "md"}, "status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "Relayed", "message": "",
            "lastTransitionTime": "2026-12-01T00:00:00Z"}],
            "recipientSources": [{"source": "http", "addresses": 10,
                "lastSuccess": "2026-12-01T00:00:00Z",
                "held": {"id": "abc", "addresses": 1, "at": "2026-12-01T00:00:00Z"}}]}}),
    ))
    .unwrap();
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(domain));
    operator.count_domains_from(store);

    let agent = mx_operator::agent::AgentMetrics::default();
    agent.load_error("Invalid");
    let queued = mx_operator::agent::DomainQueue {
        messages: 1,
        oldest_arrival: 1,
        reason: None,
    };
    agent.set_queue(&BTreeMap::from([("example.com".to_string(), queued)]), 2);
    agent.set_draining(&BTreeMap::from([("example.org".to_string(), 1)]));
    format!("{}{}", operator.encode().unwrap(), agent.metrics().unwrap())
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_on_the_figures_they_watch() {
    let values = json!({"metrics": {"prometheusRule": {
        "enabled": true, "labels": {"release": "kube-prometheus"},
        "alertLabels": {"team": "mail"}, "queuedLongSeconds": 3600,
        "for": {"mxNotPublished": "10m"}}}});
    let (yaml, _) = render(&values, "mxo", "mx-system").unwrap();
    let objects = documents(&yaml);
    let rule = find(&objects, "PrometheusRule").expect("a PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();

    // Every metric an alert reads is one the operator or the agent exports.
    let exported = every_metric_exported();
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        for name in metrics_read(expr) {
            assert!(
                exported.contains(&format!("# TYPE {name} ")),
                "{}: no metric {name} is exported:\n{exported}",
                rule["alert"]
            );
        }
    }
    // ... and docs/operations.md lists each alert.
    let operations = std::fs::read_to_string(repository().join("docs/operations.md")).unwrap();
    for rule in rules {
        let alert = rule["alert"].as_str().unwrap();
        assert!(
            operations.contains(&format!("`{alert}`")),
            "docs/operations.md does not list {alert}"
        );
    }

    let dir = std::env::temp_dir().join(format!("mx-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yaml"), rule["spec"].to_string()).unwrap();
    let (passed, printed) = promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(
        passed && printed.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{printed}"
    );

    // Evaluated by Prometheus' rule engine over series as the operator and agents export them.
    let description = |alert: &str| {
        rules.iter().find(|r| r["alert"] == alert).unwrap()["annotations"]["description"].clone()
    };
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": r#"mx_agent_queue_oldest_message_age_seconds{domain="a.example",pod="edge-0"}"#,
                 "values": "3000+60x80"},
                {"series": r#"mx_agent_queue_oldest_message_age_seconds{domain="a.example",pod="edge-1"}"#,
                 "values": "60x80"},
                {"series": r#"mx_agent_queue_oldest_message_age_seconds{domain="b.example",pod="edge-0"}"#,
                 "values": "60x80"},
                {"series": r#"mx_operator_maildomain_conditions{condition="DnsSynced",status="False",reason="Refused"}"#,
                 "values": "0 0 2x80"},
                {"series": r#"mx_operator_maildomain_conditions{condition="DnsSynced",status="True",reason="Published"}"#,
                 "values": "5x80"},
                {"series": r#"mx_operator_drift_checks_total{check="gateway_probe",result="OpenRelay"}"#,
                 "values": "0 0 0 1x80"},
                {"series": r#"mx_operator_drift_checks_total{check="gateway_probe",result="Verified"}"#,
                 "values": "0+10x80"},
                {"series": "mx_operator_maildomains_departed", "values": "1x80"},
                {"series": r#"mx_operator_recipient_source_up{namespace="mail",maildomain="shop",source="ldap"}"#,
                 "values": "1 1 0x80"},
                {"series": r#"mx_operator_recipient_source_up{namespace="mail",maildomain="web",source="http"}"#,
                 "values": "1x80"},
                {"series": r#"mx_operator_recipient_source_shrink_held{namespace="mail",maildomain="web",source="http"}"#,
                 "values": "0 0 1x80"}
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "MailQueuedLong", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "MailQueuedLong", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "team": "mail", "domain": "a.example"},
                    "exp_annotations": {"summary": "Mail for a.example has been queued for 1h 2m 0s",
                                        "description": description("MailQueuedLong")}}]},
                {"eval_time": "11m", "alertname": "MailDomainMxNotPublished", "exp_alerts": []},
                {"eval_time": "13m", "alertname": "MailDomainMxNotPublished", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "team": "mail", "reason": "Refused"},
                    "exp_annotations": {
                        "summary": "2 MailDomains' MX records are not published or not repaired (Refused)",
                        "description": description("MailDomainMxNotPublished")}}]},
                {"eval_time": "5m", "alertname": "GatewayOpenRelay", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "team": "mail",
                                   "check": "gateway_probe", "result": "OpenRelay"},
                    "exp_annotations": {
                        "summary": "A gateway accepts mail for a domain it does not serve",
                        "description": description("GatewayOpenRelay")}}]},
                {"eval_time": "40m", "alertname": "GatewayOpenRelay", "exp_alerts": []},
                {"eval_time": "31m", "alertname": "RecipientSourceFailing", "exp_alerts": []},
                {"eval_time": "33m", "alertname": "RecipientSourceFailing", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "team": "mail", "namespace": "mail",
                                   "maildomain": "shop", "source": "ldap"},
                    "exp_annotations": {
                        "summary": "The ldap recipient source of MailDomain mail/shop fails to sync",
                        "description": description("RecipientSourceFailing")}}]},
                {"eval_time": "6m", "alertname": "RecipientListShrinkHeld", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "RecipientListShrinkHeld", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "team": "mail", "namespace": "mail",
                                   "maildomain": "web", "source": "http"},
                    "exp_annotations": {
                        "summary": "A recipient list of MailDomain mail/web shrank too far and is held",
                        "description": description("RecipientListShrinkHeld")}}]},
                {"eval_time": "50m", "alertname": "MailDomainDeparted", "exp_alerts": []},
                {"eval_time": "65m", "alertname": "MailDomainDeparted", "exp_alerts": [{
                    "exp_labels": {"severity": "info", "team": "mail"},
                    "exp_annotations": {
                        "summary": "1 MailDomains no longer have their MX pointing at their gateway",
                        "description": description("MailDomainDeparted")}}]}
            ]
        }]
    });
    std::fs::write(dir.join("tests.yaml"), tests.to_string()).unwrap();
    let (passed, printed) = promtool(&dir, &["test", "rules", "tests.yaml"]);
    assert!(passed, "promtool test rules:\n{printed}");

    // A broken rule is caught, by name.
    let broken = rule["spec"].to_string().replace(
        "mx_operator_maildomains_departed > 0",
        "mx_operator_maildomains_departed >",
    );
    std::fs::write(dir.join("rules.yaml"), broken).unwrap();
    let (passed, printed) = promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(
        !passed && printed.contains("MailDomainDeparted"),
        "{printed}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_kustomize_base_is_the_chart_with_its_defaults() {
    let (yaml, _) = render(&json!({}), "mx-operator", "mx-operator-system").unwrap();
    let committed =
        std::fs::read_to_string(repository().join("deploy/operator/mx-operator.yaml")).unwrap();
    assert!(
        yaml == committed,
        "deploy/operator/mx-operator.yaml is stale: run `make manifests`"
    );

    let objects = kustomize("deploy");
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "Service",
            "ServiceAccount"
        ]
    );

    let config = kustomize("deploy/argocd");
    let lua = std::fs::read_to_string(repository().join("deploy/argocd/health.lua")).unwrap();
    for kind in ["MailGateway", "MailDomain"] {
        assert_eq!(
            config[0]["data"][format!("resource.customizations.health.mx-operator.io_{kind}")],
            lua.as_str()
        );
    }
}

/// The Argo CD health of an object as deploy/argocd/health.lua judges it, run by lua5.4
/// with `obj` set the way Argo CD sets it.
fn argo_health(object: &Value) -> (String, String) {
    fn lua(value: &Value) -> String {
        match value {
            Value::Null => "nil".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            // Rust's escapes (\n, \", \\, \u{..}) are Lua 5.4's too.
            Value::String(s) => format!("{s:?}"),
            Value::Array(items) => format!(
                "{{{}}}",
                items.iter().map(lua).collect::<Vec<_>>().join(", ")
            ),
            Value::Object(map) => format!(
                "{{{}}}",
                map.iter()
                    .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    let check = std::fs::read_to_string(repository().join("deploy/argocd/health.lua")).unwrap();
    let script = format!(
        "obj = {}\nlocal hs = (function()\n{check}\nend)()\nio.write(hs.status, \"\\t\", hs.message)\n",
        lua(object)
    );
    let output = Command::new("lua5.4")
        .arg("-e")
        .arg(&script)
        .output()
        .expect("lua5.4");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn apply_file(plane: &ControlPlane, file: &Path, extra: &[&str]) -> String {
    let path = file.to_string_lossy();
    let mut args = vec!["apply", "--server-side", "--force-conflicts", "-f", &path];
    args.extend(extra);
    kubectl_ok(&plane.kubeconfig, &args)
}

async fn ready(
    api: &Api<MailDomain>,
    name: &str,
    status: ConditionStatus,
    reason: &str,
) -> MailDomain {
    domain_condition(api, LIMIT, name, "Ready", status, reason).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_everything_with_only_the_charts_rbac() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let system = plane.namespace("mxo-system").await.unwrap();
    let mail = plane.namespace("mail").await.unwrap();
    let tenant = plane.namespace("tenant").await.unwrap();

    // The kustomize base applied to the real server (its Deployment never runs here). Its CRDs
    // carry CEL rules the 1.20 server rejects as unknown fields (the chart requires 1.25);
    // the harness installs them with the rules stripped, as `crds_are_established` checks.
    let without_crds: String = kustomize("deploy")
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| format!("---\n{o}\n"))
        .collect();
    let base = plane.dir.join("kustomize-base.yaml");
    std::fs::write(&base, without_crds).unwrap();
    apply_file(plane, &base, &[]);

    // The chart, two replicas (so the Lease Role too), applied for real in its namespace;
    // its Deployment never runs here (no kubelet): the test runs the binary with its token.
    let (yaml, _) = render(&json!({"replicas": 2}), "mxo", &system.name).unwrap();
    let rendered = plane.dir.join("chart-rendered.yaml");
    std::fs::write(&rendered, &yaml).unwrap();
    apply_file(plane, &rendered, &[]);
    let token = system.service_account_token("mxo-mx-operator").await;
    let (_, kubeconfig) = plane.token_client("chart-operator", &token).await.unwrap();

    let knot = Knot::start(
        &plane.dir.join("knot-packaging"),
        &[("tenant.test", "@ MX 10 mail.tenant.test.")],
    )
    .unwrap();
    let log = plane.dir.join("chart-operator.log");
    let metrics_port = free_port().unwrap();
    let mut command = Command::new(operator_binary());
    command
        .args([
            "run",
            "--leader-elect=true",
            "--log-format=text",
            "--resync-seconds=5",
            "--drift-interval-seconds=1",
            "--smtp-probes=false",
        ])
        .arg(format!("--lease-namespace={}", system.name))
        .arg(format!("--resolver={}", knot.address))
        .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let _operator = Guarded::new("mx-operator", spawn_tied(command).unwrap());

    // A gateway in `mail` that takes domains from every namespace (and lets them deliver to
    // this machine's loopback, where the test's primaries live), and a domain in `tenant`
    // with everything: DNS by RFC 2136, recipients from a ConfigMap and a Secret.
    apply_dynamic(&mail, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway", "metadata": {"name": "edge"},
        "spec": {"mxHostnames": ["mx1.relay.test"], "allowedDomains": {"from": "All"},
            "allowedPrimaries": {"networks": ["127.0.0.0/8"]}}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig"}, "stringData": {"secret": TSIG_SECRET}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider", "metadata": {"name": "knot"},
        "spec": {"rfc2136": {"server": "127.0.0.1", "port": knot.address.port(),
            "tsig": {"keyName": TSIG_KEY_NAME, "secretRef": {"name": "tsig", "key": "secret"}}}}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"}, "data": {"list": "bob@tenant.test\n"}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vips", "labels": {"mx-operator.io/recipient-source": "true"}}, "stringData": {"list": "carol@tenant.test\n"}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": "tenant"},
        "spec": {"domain": "tenant.test", "gatewayRef": {"name": "edge", "namespace": mail.name}, "primary": {"host": "127.0.0.1"},
            "dns": {"providerRef": {"name": "knot"}},
            "recipients": {"inline": ["alice@tenant.test"], "configMapRef": {"name": "users", "key": "list"}, "secretRef": {"name": "vips", "key": "list"}}}})).await;
    apply_dynamic(&tenant, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": "broken"},
        "spec": {"domain": "bad domain", "gatewayRef": {"name": "edge", "namespace": mail.name}, "primary": {"host": "127.0.0.1"},
            "recipients": {"catchAll": true}}})).await;

    let domains: Api<MailDomain> = tenant.api();
    let relayed = ready(&domains, "tenant", ConditionStatus::True, "Relayed").await;
    let status = relayed.status.clone().unwrap();
    assert_eq!(status.recipient_count, Some(3));
    assert_eq!(status.published_records, ["20 mx1.relay.test"]);
    until(LIMIT, "our MX at Knot", || async {
        knot.dig("tenant.test", "MX")
            .contains(&"20 mx1.relay.test.".to_string())
            .then_some(())
    })
    .await;
    until(LIMIT, "Departed=False from the drift check", || async {
        let md = domains.get("tenant").await.ok()?;
        md.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Departed" && c.status == ConditionStatus::False)
    })
    .await;
    let broken = ready(&domains, "broken", ConditionStatus::False, "InvalidSpec").await;
    let gateways: Api<MailGateway> = mail.api();
    let gateway = until(LIMIT, "the gateway's status", || async {
        let gw = gateways.get("edge").await.ok()?;
        gw.status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready")
            .then_some(gw)
    })
    .await;
    let relays: Api<MailRelay> = mail.api();
    assert!(relays.get_opt("relay-tenant.test").await.unwrap().is_some());
    assert!(relays.get_opt("gateway-edge").await.unwrap().is_some());
    kubectl_ok(
        &plane.kubeconfig,
        &["get", "lease", "-n", &system.name, "mx-operator-leader"],
    );
    let events = kubectl_ok(
        &plane.kubeconfig,
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            &tenant.name,
            "-o",
            "name",
        ],
    );
    assert!(!events.trim().is_empty(), "Events were recorded");

    // Argo CD's view of these real objects.
    let healthy = argo_health(&as_json(&relayed));
    assert_eq!(healthy.0, "Healthy", "{healthy:?}");
    let degraded = argo_health(&as_json(&broken));
    assert_eq!(degraded.0, "Degraded", "{degraded:?}");
    assert!(
        degraded.1.starts_with("InvalidSpec: spec.domain"),
        "{degraded:?}"
    );
    let starting = argo_health(&as_json(&gateway));
    assert_eq!(
        starting.0, "Progressing",
        "replicas still starting: {starting:?}"
    );
    let mut newer = as_json(&relayed);
    newer["metadata"]["generation"] = json!(relayed.metadata.generation.unwrap() + 1);
    assert_eq!(
        argo_health(&newer).0,
        "Progressing",
        "a generation the operator has not seen"
    );
    let mut fresh = as_json(&relayed);
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(argo_health(&fresh).0, "Progressing");

    // Deletion: the finalizer is released after the record is withdrawn and the relay
    // in the other namespace removed.
    domains
        .delete("tenant", &DeleteParams::default())
        .await
        .unwrap();
    gone(&domains, "tenant").await;
    assert!(relays.get_opt("relay-tenant.test").await.unwrap().is_none());
    assert!(
        !knot
            .dig("tenant.test", "MX")
            .contains(&"20 mx1.relay.test.".to_string())
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let denied: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC lacks verbs:\n{}",
        denied.join("\n")
    );
}

/// An object as the JSON Argo CD sees.
fn as_json(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}
