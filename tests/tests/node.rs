//! The product as a user runs it, on a real single-node cluster (tests/harness/node.sh): the
//! images built from deploy/*/Dockerfile, the chart installed, the operator and the gateway
//! as pods, mail sent from this machine to the gateway's Service and delivered to a primary
//! listening on this machine's own address.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway};
use mx_operator_tests::TestNamespace;
use mx_operator_tests::control_plane::crd_established;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::http_get_at;
use mx_operator_tests::helm;
use mx_operator_tests::node::{
    GATEWAY_IMAGE, Node, NodeNamespace, OPERATOR_IMAGE, gateway_pods, pod_ip, pod_ready, restarts,
};
use mx_operator_tests::smtp::{Client, Sink, rcpt_reply, relay_tricks, send};
use mx_operator_tests::wait::{domain_condition, gateway_condition, until};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{MutexGuard, OnceCell};

/// Pods start in seconds here; the limits leave room for a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);
const OPERATOR_NAMESPACE: &str = "mx-operator-system";
const DOMAIN: &str = "relay.example";

/// The node with the operator installed from the chart, once per test binary.
async fn node_with_operator() -> &'static Node {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let node = Node::shared().await.expect("the node starts");
    INSTALLED
        .get_or_init(|| async { install_operator(node).await })
        .await;
    node
}

/// What README's "Install on a cluster" says, step by step: the CRDs (without CEL rules on
/// a server before 1.25), then the chart rendered by Helm's engine and applied in Helm's
/// order, with the images built here.
async fn install_operator(node: &Node) {
    let client = node.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    let crds = if mx_operator_tests::control_plane::supports_cel(&version.major, &version.minor) {
        mx_operator::api::crd::all_as_yaml().unwrap()
    } else {
        let output = std::process::Command::new(mx_operator_tests::process::operator_binary())
            .args(["crd", "--without-cel"])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let dir = std::env::temp_dir().join(format!("mx-node-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("crds.yaml"), crds).unwrap();
    let crds_file = dir.join("crds.yaml").to_string_lossy().into_owned();
    node.kubectl(&["apply", "--server-side", "-f", &crds_file])
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in mx_operator::api::crd::all() {
        let name = crd.metadata.name.unwrap_or_default();
        crd_established(&crds, &name, LIMIT).await.unwrap();
    }

    let values = json!({
        "image": {"repository": "localhost/mx-operator", "tag": "dev", "pullPolicy": "Never"},
        "gatewayImage": {"repository": "localhost/mx-gateway", "tag": "dev"},
        "replicas": 2,
        "resyncSeconds": 30,
        "drift": {"intervalSeconds": 3},
        "logFormat": "text",
    });
    assert_eq!(OPERATOR_IMAGE, "localhost/mx-operator:dev");
    assert_eq!(GATEWAY_IMAGE, "localhost/mx-gateway:dev");
    let (manifests, _notes) =
        helm::render(&values, "mx-operator", OPERATOR_NAMESPACE).expect("the chart renders");
    std::fs::write(dir.join("chart.yaml"), manifests).unwrap();
    let chart_file = dir.join("chart.yaml").to_string_lossy().into_owned();
    let _ = node.kubectl(&["create", "namespace", OPERATOR_NAMESPACE]);
    let installed = node
        .kubectl(&["-n", OPERATOR_NAMESPACE, "get", "deploy/mx-operator"])
        .is_ok();
    node.kubectl(&["apply", "--server-side", "-f", &chart_file])
        .unwrap();
    if installed {
        // A reused node: the image just loaded has the same tag, so the pods must restart
        // to run it.
        node.kubectl(&[
            "-n",
            OPERATOR_NAMESPACE,
            "rollout",
            "restart",
            "deploy/mx-operator",
        ])
        .unwrap();
    }
    operator_rolled_out(node);
}

/// Waits until every operator replica runs the Deployment's current template.
fn operator_rolled_out(node: &Node) {
    node.kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "rollout",
        "status",
        "deploy/mx-operator",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", operator_logs(node)));
}

fn operator_logs(node: &Node) -> String {
    node.kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "logs",
        "-l",
        "app.kubernetes.io/name=mx-operator",
        "--tail=40",
        "--prefix",
    ])
    .unwrap_or_else(|e| e)
}

async fn cluster_ip(api: &Api<Service>, name: &str) -> std::net::IpAddr {
    let service = api.get(name).await.unwrap();
    service.spec.unwrap().cluster_ip.unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_from_its_image_with_the_chart_and_leader_election() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let client = node.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let status = deployments
        .get("mx-operator")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.ready_replicas, Some(2), "both replicas pass /readyz");

    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let names: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=mx-operator"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for pod in &pods.list(&Default::default()).await.unwrap().items {
        let spec = pod.spec.as_ref().unwrap();
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some(OPERATOR_IMAGE));
        assert!(
            container
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .is_some()
        );
        assert!(
            container
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .is_some()
        );
    }
    // Applied in Helm's order, nothing was created before what it needs (a Deployment
    // before its ServiceAccount makes the ReplicaSet fail to create pods at first).
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let failed: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .filter_map(|e| e.message)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    // One replica leads, through the in-cluster credentials of its ServiceAccount.
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let holder = until(LIMIT, "a leader", || async {
        leases
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .find_map(|l| l.spec.as_ref()?.holder_identity.clone())
    })
    .await;
    assert!(names.contains(&holder), "{holder} is not one of {names:?}");

    // Metrics through the chart's Service, from this machine.
    let services: Api<Service> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let address = SocketAddr::new(cluster_ip(&services, "mx-operator-metrics").await, 8080);
    let (code, body) = until(LIMIT, "metrics through the Service", || async {
        http_get_at(address, "/metrics").filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("mx_operator_"), "{body}");

    // Another replica takes over when the leader goes away: the standby, or the leader's
    // replacement if it is quicker.
    pods.delete(&holder, &DeleteParams::default())
        .await
        .unwrap();
    let next = until(LIMIT, "another leader", || async {
        let lease = leases
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()?;
        lease.spec?.holder_identity.filter(|h| *h != holder)
    })
    .await;
    let leader = pods.get(&next).await.unwrap();
    assert!(leader.metadata.deletion_timestamp.is_none(), "{next} leads");
    operator_rolled_out(node);
}

/// A gateway `edge` (2 replicas, NodePort) and the domain relay.example with `recipients`,
/// delivered to `primary`, in `ns`; waits until both pods and the domain are Ready.
async fn gateway_with_domain(
    ns: &TestNamespace,
    primary: SocketAddr,
    recipients: serde_json::Value,
) {
    gateway_of(ns, 2, primary, recipients).await;
}

/// Like `gateway_with_domain`, with `replicas` replicas.
async fn gateway_of(
    ns: &TestNamespace,
    replicas: usize,
    primary: SocketAddr,
    recipients: serde_json::Value,
) {
    apply::<MailGateway>(
        ns,
        gateway(
            "edge",
            json!({"replicas": replicas, "service": {"type": "NodePort"}}),
        ),
    )
    .await;
    apply::<MailDomain>(
        ns,
        domain(
            "relay",
            DOMAIN,
            json!({"primary": {"host": primary.ip().to_string(), "port": primary.port(), "tls": "None"},
                   "recipients": recipients}),
        ),
    )
    .await;
    until(LIMIT, "every gateway pod Ready", || async {
        let pods = gateway_pods(ns, "edge").await;
        (pods.len() == replicas && pods.iter().all(pod_ready)).then_some(())
    })
    .await;
    domain_condition(
        &ns.api(),
        LIMIT,
        "relay",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
}

/// Where most node tests start: the node with the operator, a primary on this machine's
/// address, and the gateway relaying relay.example for `recipients` to it, in a fresh
/// namespace (deleted first when dropped, then the node is free for the next test).
struct Relayed {
    ns: NodeNamespace,
    sink: Sink,
    node: &'static Node,
    _turn: MutexGuard<'static, ()>,
}

async fn relayed(prefix: &str, recipients: serde_json::Value) -> Relayed {
    let turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let sink = Sink::start_on(SocketAddr::new(node.ip, 0)).unwrap();
    let ns = node.namespace(prefix).await.unwrap();
    gateway_with_domain(&ns, sink.address, json!({ "inline": recipients })).await;
    Relayed {
        ns,
        sink,
        node,
        _turn: turn,
    }
}

/// The SMTP addresses of each Ready replica (pod IP, port 25).
async fn replicas(ns: &TestNamespace) -> Vec<(String, SocketAddr)> {
    gateway_pods(ns, "edge")
        .await
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| Some((p.metadata.name.clone()?, SocketAddr::new(pod_ip(p)?, 25))))
        .collect()
}

async fn reply_becomes(smtp: SocketAddr, recipient: &str, expected: u16) {
    until(
        LIMIT,
        &format!("RCPT {recipient} at {smtp} → {expected}"),
        || async {
            rcpt_reply(smtp, "sender@client.test", recipient)
                .ok()
                .filter(|reply| reply.code == expected)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_pods_relay_listed_recipients_to_the_primary_and_refuse_the_rest() {
    // The customer's primary is a sink on this machine's own address, which pods reach.
    let Relayed { node, sink, ns, .. } =
        &relayed("carry", json!(["alice@relay.example", "bob@relay.example"])).await;

    // Each replica's queue is a bound claim of its own.
    let claims = ns
        .api::<PersistentVolumeClaim>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(claims.len(), 2);
    for claim in &claims {
        assert_eq!(
            claim.status.as_ref().unwrap().phase.as_deref(),
            Some("Bound")
        );
    }
    let services = ns.api::<Service>();
    let service = services.get("edge").await.unwrap();
    let node_port = service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    let node_port = SocketAddr::new(node.ip, u16::try_from(node_port).unwrap());
    let cluster = SocketAddr::new(cluster_ip(&services, "edge").await, 25);

    for (via, smtp) in [("NodePort", node_port), ("ClusterIP", cluster)] {
        reply_becomes(smtp, "alice@relay.example", 250).await;
        let body =
            format!("Subject: through the {via}\r\nMessage-ID: <{via}@client.test>\r\n\r\nhello");
        let reply = send(smtp, "sender@client.test", "alice@relay.example", &body).unwrap();
        assert_eq!(reply.code, 250, "{via}: {reply}");
        let unknown = rcpt_reply(smtp, "sender@client.test", "mallory@relay.example").unwrap();
        assert_eq!(unknown.code, 550, "{via}: {unknown}");
        let foreign = rcpt_reply(smtp, "sender@client.test", "someone@elsewhere.test").unwrap();
        assert_eq!(foreign.code, 554, "{via}: {foreign}");
    }
    let received = until(LIMIT, "both messages at the primary", || async {
        let received = sink.received();
        (received.len() >= 2).then_some(received)
    })
    .await;
    for via in ["NodePort", "ClusterIP"] {
        assert_eq!(
            received
                .iter()
                .filter(|m| m.data.contains(&format!("through the {via}")))
                .count(),
            1,
            "{via}"
        );
    }
    assert!(
        received
            .iter()
            .all(|m| m.recipients == ["alice@relay.example"])
    );

    // Postfix found its folders as it wants them: the queue volume made right whatever the
    // provisioner gave, the configuration folder not writable by others.
    for (pod, _) in replicas(ns).await {
        let log = node
            .kubectl(&["-n", &ns.name, "logs", &pod, "-c", "postfix"])
            .unwrap();
        assert!(log.contains("daemon started"), "{pod}: {log}");
        for warning in ["group or other writable", "not owned by", "integrity check"] {
            assert!(!log.contains(warning), "{pod}: {warning}: {log}");
        }
    }
    // What Postfix looks up (client names, the primary) goes to the node's own resolver,
    // never off this machine.
    for (pod, _) in replicas(ns).await {
        let resolv = node
            .exec(&ns.name, &pod, "postfix", &["cat", "/etc/resolv.conf"])
            .unwrap();
        let servers: Vec<&str> = resolv
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver "))
            .collect();
        assert_eq!(servers, [node.ip.to_string()], "{pod}: {resolv}");
    }
    // Every replica, asked directly, refuses every relay trick.
    for (pod, smtp) in replicas(ns).await {
        let (tried, accepted) = relay_tricks(smtp, DOMAIN, "edge.mx.example.net");
        println!(
            "mail safety: open-relay tricks tried {tried} / accepted {} (pod {pod})",
            accepted.len()
        );
        assert!(accepted.is_empty(), "{pod} accepted: {accepted:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_added_to_the_list_is_accepted_by_every_replica_without_a_restart() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let sink = Sink::start_on(SocketAddr::new(node.ip, 0)).unwrap();
    let ns = node.namespace("recipients").await.unwrap();
    let list = |addresses: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "users"},
               "data": {"recipients": addresses}})
    };
    apply::<ConfigMap>(&ns, list("alice@relay.example\n")).await;
    gateway_with_domain(
        &ns,
        sink.address,
        json!({"configMapRef": {"name": "users", "key": "recipients"}}),
    )
    .await;
    let before: BTreeMap<String, i32> = gateway_pods(&ns, "edge")
        .await
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), restarts(p)))
        .collect();
    let replicas = replicas(&ns).await;
    assert_eq!(replicas.len(), 2);
    for (_, smtp) in &replicas {
        reply_becomes(*smtp, "alice@relay.example", 250).await;
        assert_eq!(
            rcpt_reply(*smtp, "s@client.test", "carol@relay.example")
                .unwrap()
                .code,
            550
        );
    }
    apply::<ConfigMap>(&ns, list("alice@relay.example\ncarol@relay.example\n")).await;
    let edited = Instant::now();
    for (pod, smtp) in &replicas {
        reply_becomes(*smtp, "carol@relay.example", 250).await;
        println!(
            "node: a recipient added to the ConfigMap accepted by {pod} after {:?}",
            edited.elapsed()
        );
    }
    let after: BTreeMap<String, i32> = gateway_pods(&ns, "edge")
        .await
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), restarts(p)))
        .collect();
    assert_eq!(before, after, "no container restarted");
}

/// A port on this machine's address where nothing listens: the primary during an outage.
fn closed_port(node: &Node) -> SocketAddr {
    let listener = std::net::TcpListener::bind(SocketAddr::new(node.ip, 0)).unwrap();
    listener.local_addr().unwrap()
}

const POSTFIX_CONFIG: &str = "/etc/mx-gateway/postfix";

/// The queue IDs in a replica's Postfix queue.
fn queued(node: &Node, ns: &TestNamespace, pod: &str) -> Result<usize, String> {
    let listing = node.exec(
        &ns.name,
        pod,
        "postfix",
        &["postqueue", "-c", POSTFIX_CONFIG, "-j"],
    )?;
    Ok(listing
        .lines()
        .filter(|l| l.contains("\"queue_id\""))
        .count())
}

fn flush(node: &Node, ns: &TestNamespace, pod: &str) -> Result<String, String> {
    node.exec(
        &ns.name,
        pod,
        "postfix",
        &["postqueue", "-c", POSTFIX_CONFIG, "-f"],
    )
}

/// How often each numbered message (`Message-ID: <n-{tag}@client.test>`) reached the sink.
fn arrivals(sink: &Sink, tag: &str) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for message in sink.received() {
        let number = message
            .data
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|rest| rest.strip_suffix(&format!("-{tag}@client.test>")))
            .and_then(|n| n.parse().ok());
        if let Some(number) = number {
            *counts.entry(number).or_default() += 1;
        }
    }
    counts
}

/// A client that sends numbered messages (`numbered(n, tag)`, from `first` on) for alice to
/// `smtp`, one per session and `pause` apart, until `sending` is cleared; its thread returns
/// each message's number and the reply code or the error.
fn keep_sending(
    smtp: SocketAddr,
    tag: &'static str,
    first: usize,
    pause: Duration,
    sending: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(usize, Result<u16, String>)>> {
    std::thread::spawn(move || {
        let mut replies = Vec::new();
        let mut n = first;
        while sending.load(std::sync::atomic::Ordering::Relaxed) {
            let reply = send(
                smtp,
                "sender@client.test",
                "alice@relay.example",
                &numbered(n, tag),
            );
            replies.push((n, reply.map(|r| r.code).map_err(|e| e.to_string())));
            n += 1;
            std::thread::sleep(pause);
        }
        replies
    })
}

/// Waits until `count` numbered messages tagged `tag` have reached the sink; how often each.
async fn every_arrival(sink: &Sink, tag: &str, count: usize) -> BTreeMap<usize, usize> {
    until(LIMIT, "every queued message at the primary", || async {
        let counts = arrivals(sink, tag);
        (counts.len() == count).then_some(counts)
    })
    .await
}

/// Two seconds on, nothing more has arrived, and each message arrived once.
async fn no_more_and_once_each(sink: &Sink, tag: &str, counts: &BTreeMap<usize, usize>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counts, &arrivals(sink, tag));
    assert!(
        counts.values().all(|&n| n == 1),
        "delivered once each: {counts:?}"
    );
}

fn numbered(n: usize, tag: &str) -> String {
    format!("Subject: message {n}\r\nMessage-ID: <{n}-{tag}@client.test>\r\n\r\nbody of {n}")
}

/// Sends `count` numbered messages for alice@relay.example to replica `pod`, whose primary
/// is down, and waits until its queue holds them.
async fn queue_messages(node: &Node, ns: &TestNamespace, pod: &str, count: usize, tag: &str) {
    let replica = ns.api::<Pod>().get(pod).await.unwrap();
    let smtp = SocketAddr::new(pod_ip(&replica).unwrap(), 25);
    reply_becomes(smtp, "alice@relay.example", 250).await;
    let mut client = Client::connect(smtp).unwrap();
    for n in 0..count {
        let reply = client
            .send(
                "sender@client.test",
                "alice@relay.example",
                &numbered(n, tag),
            )
            .unwrap();
        assert_eq!(reply.code, 250, "{reply}");
    }
    client.quit();
    until(
        LIMIT,
        &format!("the messages deferred in {pod}"),
        || async { (queued(node, ns, pod).ok()? == count).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_in_a_pod_survives_its_deletion_and_is_delivered_once_the_primary_returns() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let primary = closed_port(node);
    let ns = node.namespace("queue").await.unwrap();
    gateway_with_domain(&ns, primary, json!({"inline": ["alice@relay.example"]})).await;
    let pods = ns.api::<Pod>();
    let first = pods.get("edge-0").await.unwrap();
    let count = 5;
    queue_messages(node, &ns, "edge-0", count, "queue").await;

    // The primary comes back while the messages wait for Postfix's retry (minutes away),
    // and the pod is deleted: its claim keeps the queue, and the new pod delivers it as
    // soon as it starts, nobody flushing it by hand.
    let sink = Sink::start_on(primary).unwrap();
    pods.delete("edge-0", &DeleteParams::default())
        .await
        .unwrap();
    let old_uid = first.metadata.uid.clone();
    until(LIMIT, "edge-0 back and Ready", || async {
        let pod = pods.get("edge-0").await.ok()?;
        (pod.metadata.uid != old_uid && pod_ready(&pod)).then_some(())
    })
    .await;
    let restarted = Instant::now();
    let counts = every_arrival(&sink, "queue", count).await;
    println!(
        "node: {count} messages queued before the pod's deletion delivered {:?} after the new pod was Ready",
        restarted.elapsed()
    );
    no_more_and_once_each(&sink, "queue", &counts).await;
    assert_eq!(queued(node, &ns, "edge-0"), Ok(0));
    println!(
        "mail safety: messages queued {count} / delivered {} / lost 0 / duplicated 0 (pod deleted with all queued, primary down)",
        counts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_progress_ends_normally_when_its_pod_is_stopped() {
    let Relayed { sink, ns, .. } = &relayed("drain", json!(["alice@relay.example"])).await;
    let pods = ns.api::<Pod>();
    let pod = pods.get("edge-1").await.unwrap();
    let smtp = SocketAddr::new(pod_ip(&pod).unwrap(), 25);
    reply_becomes(smtp, "alice@relay.example", 250).await;
    let mut client = Client::connect(smtp).unwrap();
    assert_eq!(
        client
            .command("MAIL FROM:<sender@client.test>")
            .unwrap()
            .code,
        250
    );
    assert_eq!(
        client
            .command("RCPT TO:<alice@relay.example>")
            .unwrap()
            .code,
        250
    );
    // The kubelet sends TERM at once; the transaction goes on a few seconds later.
    pods.delete("edge-1", &DeleteParams::default())
        .await
        .unwrap();
    until(LIMIT, "edge-1 terminating", || async {
        pods.get("edge-1")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reply = client.data(&numbered(0, "drain")).unwrap();
    assert_eq!(reply.code, 250, "the session was cut: {reply}");
    client.quit();
    let counts = until(LIMIT, "the message at the primary", || async {
        let counts = arrivals(sink, "drain");
        (!counts.is_empty()).then_some(counts)
    })
    .await;
    assert_eq!(counts, BTreeMap::from([(0, 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_the_gateway_image_loses_nothing_while_a_client_keeps_sending() {
    let Relayed { node, sink, ns, .. } = &relayed("rolling", json!(["alice@relay.example"])).await;
    let cluster = SocketAddr::new(cluster_ip(&ns.api::<Service>(), "edge").await, 25);
    reply_becomes(cluster, "alice@relay.example", 250).await;

    // A client that keeps sending, one message per connection, through the Service.
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = keep_sending(
        cluster,
        "roll",
        0,
        Duration::from_millis(50),
        sending.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.tag_image(GATEWAY_IMAGE, "localhost/mx-gateway:rolled")
        .unwrap();
    apply::<MailGateway>(
        ns,
        gateway("edge", json!({"replicas": 2, "service": {"type": "NodePort"}, "image": "localhost/mx-gateway:rolled"})),
    )
    .await;
    let statefulsets = ns.api::<StatefulSet>();
    until(
        Duration::from_secs(300),
        "the rolling update done",
        || async {
            let status = statefulsets.get("edge").await.ok()?.status?;
            let pods = gateway_pods(ns, "edge").await;
            let rolled = pods.iter().all(|p| {
                pod_ready(p)
                    && p.spec.as_ref().is_some_and(|s| {
                        s.containers
                            .iter()
                            .all(|c| c.image.as_deref() == Some("localhost/mx-gateway:rolled"))
                    })
            });
            (pods.len() == 2 && rolled && status.update_revision == status.current_revision)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let replies = tokio::task::spawn_blocking(move || sender.join().unwrap())
        .await
        .unwrap();

    let accepted: Vec<usize> = replies
        .iter()
        .filter(|(_, r)| r == &Ok(250))
        .map(|(n, _)| *n)
        .collect();
    let refused: Vec<_> = replies
        .iter()
        .filter(|(_, r)| matches!(r, Ok(code) if *code >= 500))
        .collect();
    let not_taken = replies.len() - accepted.len();
    assert!(
        refused.is_empty(),
        "mail refused for good during the update: {refused:?}"
    );
    assert!(accepted.len() > 20, "the client kept sending: {replies:?}");
    // Whatever waits in a queue is delivered now that both replicas run the new image.
    let counts = until(LIMIT, "every accepted message at the primary", || async {
        for pod in ["edge-0", "edge-1"] {
            let _ = flush(node, ns, pod);
        }
        let counts = arrivals(sink, "roll");
        accepted
            .iter()
            .all(|n| counts.contains_key(n))
            .then_some(counts)
    })
    .await;
    let duplicated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "mail safety: messages queued {} / delivered {} / lost 0 / duplicated {} (rolling update of 2 replicas while sending; {not_taken} not taken: 4xx or no connection, the client retries)",
        accepted.len(),
        accepted.len(),
        duplicated.len()
    );
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_probes_every_ready_replica_and_names_the_one_that_answers_wrongly() {
    let Relayed { node, ns, .. } = &relayed("probe", json!(["alice@relay.example"])).await;
    let domains = ns.api::<MailDomain>();
    // Both replicas answered (the second may have become ready after the first check).
    until(LIMIT, "AcceptanceVerified from both replicas", || async {
        let domain = domains.get("relay").await.ok()?;
        let condition = domain.condition("AcceptanceVerified")?;
        (condition.status == ConditionStatus::True
            && condition
                .message
                .ends_with("(all 2 ready replicas: edge-0, edge-1)"))
        .then_some(())
    })
    .await;

    // One replica changed behind the operator's back: it relays no domain any more.
    node.exec(
        &ns.name,
        "edge-1",
        "postfix",
        &["postconf", "-c", POSTFIX_CONFIG, "-e", "relay_domains ="],
    )
    .unwrap();
    node.exec(
        &ns.name,
        "edge-1",
        "postfix",
        &["postfix", "-c", POSTFIX_CONFIG, "reload"],
    )
    .unwrap();
    let stale = domain_condition(
        &domains,
        LIMIT,
        "relay",
        "AcceptanceVerified",
        ConditionStatus::False,
        "NotAccepting",
    )
    .await;
    let message = stale
        .condition("AcceptanceVerified")
        .unwrap()
        .message
        .clone();
    let edge_1 = ns.api::<Pod>().get("edge-1").await.unwrap();
    let address = SocketAddr::new(pod_ip(&edge_1).unwrap(), 25);
    assert!(
        message.starts_with(&format!("replica edge-1 ({address}): ")),
        "{message}"
    );
    println!("node: AcceptanceVerified False NotAccepting: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_waits_until_the_replicas_it_removes_have_delivered_their_queues() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let primary = closed_port(node);
    let ns = node.namespace("scalein").await.unwrap();
    gateway_of(&ns, 3, primary, json!({"inline": ["alice@relay.example"]})).await;
    let pods = ns.api::<Pod>();
    // With the primary down: 2 messages wait on edge-1 and 2 on edge-2.
    let per_replica = 2;
    let mut sent = 0;
    for pod in ["edge-1", "edge-2"] {
        let smtp = SocketAddr::new(pod_ip(&pods.get(pod).await.unwrap()).unwrap(), 25);
        reply_becomes(smtp, "alice@relay.example", 250).await;
        let mut client = Client::connect(smtp).unwrap();
        for _ in 0..per_replica {
            let body = numbered(sent, "scalein");
            let reply = client
                .send("sender@client.test", "alice@relay.example", &body)
                .unwrap();
            assert_eq!(reply.code, 250, "{reply}");
            sent += 1;
        }
        client.quit();
        until(
            LIMIT,
            &format!("the messages deferred in {pod}"),
            || async { (queued(node, &ns, pod).ok()? == per_replica).then_some(()) },
        )
        .await;
    }

    let gateways = ns.api::<MailGateway>();
    let edit = json!({"spec": {"replicas": 1}});
    gateways
        .patch("edge", &Default::default(), &kube::api::Patch::Merge(&edit))
        .await
        .unwrap();
    let scaled = || gateway_condition(&gateways, "edge", "Scaled");
    let held = until(LIMIT, "the scale-in held for the queued mail", || async {
        scaled().await.filter(|c| {
            c.reason == "DrainingBeforeScaleIn"
                && c.message
                    .ends_with("edge-1 holds 2 messages; edge-2 holds 2 messages")
        })
    })
    .await;
    println!("node: MailGateway edge, Scaled: {}", held.message);
    until(
        LIMIT,
        "edge-1 and edge-2 not ready (out of the Service)",
        || async {
            let listed = gateway_pods(&ns, "edge").await;
            let ready: Vec<_> = listed.iter().filter(|p| pod_ready(p)).collect();
            (listed.len() == 3
                && ready.len() == 1
                && ready[0].metadata.name.as_deref() == Some("edge-0"))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let statefulset = ns.api::<StatefulSet>().get("edge").await.unwrap();
    assert_eq!(
        statefulset.spec.and_then(|s| s.replicas),
        Some(3),
        "held while the primary is down"
    );
    assert_eq!(gateway_pods(&ns, "edge").await.len(), 3);

    // The primary returns: the leaving replicas deliver (nobody flushes them by hand), then
    // the StatefulSet goes down to 1.
    let sink = Sink::start_on(primary).unwrap();
    let returned = Instant::now();
    until(
        Duration::from_secs(300),
        "the scale-in done: edge-0 alone",
        || async {
            let listed = gateway_pods(&ns, "edge").await;
            (listed.len() == 1 && scaled().await?.reason == "AtSpec").then_some(())
        },
    )
    .await;
    println!(
        "node: scale-in 3 → 1 done {:?} after the primary returned",
        returned.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = arrivals(&sink, "scalein");
    println!(
        "mail safety: messages queued {sent} / delivered {} / lost {} / duplicated {} (node: scale-in 3 → 1 with mail on replicas 1 and 2, primary down)",
        counts.len(),
        sent - counts.len(),
        counts.values().map(|n| n - 1).sum::<usize>()
    );
    assert_eq!(counts.len(), sent, "every message arrived: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "delivered once each: {counts:?}"
    );
}

/// The issue's case: a MailGateway deleted while its 2 replicas hold 20 messages for a
/// primary that is down. The object (and with it every child) stays, its replicas leave
/// the Service and say what they hold, and once the primary is back all 20 arrive, once
/// each, before the gateway and its emptied queue volumes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_deleted_with_queued_mail_delivers_it_before_it_goes() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let primary = closed_port(node);
    let ns = node.namespace("goes").await.unwrap();
    gateway_with_domain(&ns, primary, json!({"inline": ["alice@relay.example"]})).await;
    let per_replica = 10;
    queue_messages(node, &ns, "edge-0", per_replica, "goes-0").await;
    queue_messages(node, &ns, "edge-1", per_replica, "goes-1").await;

    let gateways = ns.api::<MailGateway>();
    gateways
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    let ready = || gateway_condition(&gateways, "edge", "Ready");
    let held = until(LIMIT, "the deletion held for the queued mail", || async {
        ready().await.filter(|c| {
            c.reason == "DeliveringBeforeDeletion"
                && c.message
                    .ends_with("edge-0 holds 10 messages; edge-1 holds 10 messages")
        })
    })
    .await;
    println!(
        "node: MailGateway edge being deleted, Ready: {}",
        held.message
    );
    domain_condition(
        &ns.api(),
        LIMIT,
        "relay",
        "Ready",
        ConditionStatus::False,
        "GatewayDeleting",
    )
    .await;
    until(LIMIT, "both replicas out of the Service", || async {
        let listed = gateway_pods(&ns, "edge").await;
        (listed.len() == 2 && !listed.iter().any(pod_ready)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        gateways.get_opt("edge").await.unwrap().is_some(),
        "held while the primary is down"
    );
    assert_eq!(gateway_pods(&ns, "edge").await.len(), 2);

    // The primary returns: the replicas deliver (nobody flushes them by hand), then the
    // gateway, its pods and its queue volumes go.
    let sink = Sink::start_on(primary).unwrap();
    let returned = Instant::now();
    until(Duration::from_secs(300), "the gateway gone", || async {
        gateways.get_opt("edge").await.ok()?.is_none().then_some(())
    })
    .await;
    println!(
        "node: gateway deleted {:?} after the primary returned",
        returned.elapsed()
    );
    let counts: Vec<_> = ["goes-0", "goes-1"]
        .iter()
        .map(|tag| arrivals(&sink, tag))
        .collect();
    let delivered: usize = counts.iter().map(BTreeMap::len).sum();
    let duplicated: usize = counts.iter().flat_map(|c| c.values()).map(|n| n - 1).sum();
    println!(
        "mail safety: messages queued {} / delivered {delivered} / lost {} / duplicated {duplicated} (node: MailGateway deleted with mail on 2 replicas, primary down)",
        2 * per_replica,
        2 * per_replica - delivered
    );
    assert_eq!(
        delivered,
        2 * per_replica,
        "every message arrived: {counts:?}"
    );
    assert_eq!(duplicated, 0, "delivered once each: {counts:?}");
    until(LIMIT, "the pods and queue volumes gone", || async {
        let claims = ns
            .api::<PersistentVolumeClaim>()
            .list(&Default::default())
            .await
            .ok()?;
        (gateway_pods(&ns, "edge").await.is_empty() && claims.items.is_empty()).then_some(())
    })
    .await;
}

/// Pods that admission refuses are named on the MailGateway, in the API server's words.
/// Pod Security admission would refuse the gateway's pods in a namespace that enforces
/// `restricted`; the 1.20 node has no PodSecurity admission, so a ResourceQuota that allows
/// no pod produces the same `FailedCreate` from the StatefulSet controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_refused_by_admission_are_named_on_the_gateway_until_admitted() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let ns = node.namespace("refused").await.unwrap();
    apply::<ResourceQuota>(
        &ns,
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
               "spec": {"hard": {"pods": "0"}}}),
    )
    .await;
    apply::<MailGateway>(
        &ns,
        gateway(
            "edge",
            json!({"replicas": 1, "service": {"type": "NodePort"}}),
        ),
    )
    .await;
    let gateways = ns.api::<MailGateway>();
    let refused = until(LIMIT, "Ready False PodsRefused", || async {
        gateway_condition(&gateways, "edge", "Ready")
            .await
            .filter(|c| c.reason == "PodsRefused")
    })
    .await;
    println!("node: MailGateway edge, Ready: {}", refused.message);
    assert!(
        refused.message.contains("forbidden") && refused.message.contains("no-pods"),
        "{}",
        refused.message
    );

    ns.api::<ResourceQuota>()
        .delete("no-pods", &DeleteParams::default())
        .await
        .unwrap();
    until(
        Duration::from_secs(300),
        "Ready True once admitted",
        || async {
            gateway_condition(&gateways, "edge", "Ready")
                .await
                .filter(|c| c.reason == "AllReplicasReady")
        },
    )
    .await;
}

/// `mx-operator queue ARGS` with `kubeconfig`: whether it succeeded, its output and errors.
fn queue_command(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(mx_operator_tests::process::operator_binary())
        .arg("queue")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A kubeconfig for the node that authenticates as ServiceAccount `account` of `ns`, with
/// a Role of `rules` bound to it.
async fn kubeconfig_of_account(
    node: &Node,
    ns: &NodeNamespace,
    account: &str,
    rules: serde_json::Value,
) -> std::path::PathBuf {
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": account}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": account},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns.name}]}]});
    let dir = std::env::temp_dir().join(format!("mx-node-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}-{account}.json", ns.name));
    std::fs::write(&file, objects.to_string()).unwrap();
    node.kubectl(&["apply", "-n", &ns.name, "-f", &file.to_string_lossy()])
        .unwrap();
    let token = ns.service_account_token(account).await;
    let admin = node
        .kubectl(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ])
        .unwrap();
    let mut kubeconfig: serde_json::Value = serde_json::from_str(&admin).unwrap();
    kubeconfig["users"][0]["user"] = json!({ "token": token });
    kubeconfig["contexts"][0]["context"]["namespace"] = json!(ns.name);
    let path = dir.join(format!("{}-{account}.kubeconfig", ns.name));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_command_lists_flushes_and_deletes_across_replicas_as_rbac_allows() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let primary = closed_port(node);
    let ns = node.namespace("cli").await.unwrap();
    gateway_with_domain(
        &ns,
        primary,
        json!({"inline": ["alice@relay.example", "bob@relay.example"]}),
    )
    .await;
    let reads = json!([
        {"apiGroups": ["mx-operator.io"], "resources": ["maildomains"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]);
    let mut handles = reads.clone();
    handles
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}));
    let viewer = kubeconfig_of_account(node, &ns, "viewer", reads).await;
    let handler = kubeconfig_of_account(node, &ns, "handler", handles).await;

    // An outage: mail for the domain waits on both replicas.
    let mut sent = vec![];
    for (name, smtp) in replicas(&ns).await {
        reply_becomes(smtp, "alice@relay.example", 250).await;
        let mut client = Client::connect(smtp).unwrap();
        let recipients = match name.as_str() {
            "edge-0" => ["alice@relay.example", "alice@relay.example"],
            _ => ["alice@relay.example", "bob@relay.example"],
        };
        for recipient in recipients {
            let n = sent.len();
            let reply = client
                .send("sender@client.test", recipient, &numbered(n, "cli"))
                .unwrap();
            assert_eq!(reply.code, 250, "{reply}");
            sent.push((name.clone(), recipient));
        }
        client.quit();
    }
    let domain = ["--domain", DOMAIN];
    let listed = until(LIMIT, "4 messages deferred on the 2 replicas", || async {
        let (ok, out, _) =
            queue_command(&handler, &[&["list", "-o", "json"][..], &domain].concat());
        let listed: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        let messages = listed.as_array()?;
        (messages.len() == 4
            && messages.iter().all(|m| {
                m["queue"] == "deferred"
                    && m["recipients"][0]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("Connection refused"))
            }))
        .then(|| messages.clone())
    })
    .await;
    let on = |replica: &str| listed.iter().filter(|m| m["replica"] == replica).count();
    assert_eq!((on("edge-0"), on("edge-1")), (2, 2), "{listed:?}");
    for message in &listed {
        assert!(message["size"].as_u64().unwrap() > 0, "{message}");
        assert!(message.get("data").is_none() && !message.to_string().contains("body of"));
    }
    let (ok, table, _) = queue_command(&handler, &[&["list"][..], &domain].concat());
    assert!(ok);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPLICA") && lines.len() == 5,
        "{table}"
    );
    assert!(table.contains("bob@relay.example") && table.contains("Connection refused"));
    println!("node: mx-operator queue list --domain {DOMAIN}\n{table}");

    // Without pods/exec there is nothing to see or do.
    for verb in ["list", "flush", "delete"] {
        let (ok, out, err) = queue_command(&viewer, &[&[verb][..], &domain].concat());
        assert!(!ok && out.is_empty(), "{verb}: {out}");
        assert!(
            err.contains("you may not run commands in pod edge-")
                && err.contains(r#"cannot get resource "pods/exec""#),
            "{verb}: {err}"
        );
    }
    println!(
        "node: without pods/exec: {}",
        queue_command(&viewer, &[&["list"][..], &domain].concat())
            .2
            .trim()
    );

    // Bob's message goes, undelivered; an ID of no replica is an error.
    let bob = listed
        .iter()
        .find(|m| m["recipients"][0]["address"] == "bob@relay.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) =
        queue_command(&handler, &[&["delete", "--id", &bob][..], &domain].concat());
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!("edge-0: nothing to do\nedge-1: 1 message(s) deleted: {bob}\n")
    );
    let (ok, _, err) = queue_command(&handler, &[&["delete", "--id", &bob][..], &domain].concat());
    assert!(
        !ok && err.contains(&format!("no replica holds {bob}")),
        "{err}"
    );
    assert_eq!(queued(node, &ns, "edge-1"), Ok(1));

    // The primary is back; Postfix would retry in minutes, a flush sends the rest now.
    let sink = Sink::start_on(primary).unwrap();
    let flushed = Instant::now();
    let (ok, out, err) = queue_command(&handler, &[&["flush"][..], &domain].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("edge-0: 2 deferred message(s) tried now")
            && out.contains("edge-1: 1 deferred message(s) tried now"),
        "{out}"
    );
    let counts = until(LIMIT, "the 3 remaining messages at the primary", || async {
        let counts = arrivals(&sink, "cli");
        (counts.len() == 3).then_some(counts)
    })
    .await;
    println!(
        "node: mx-operator queue flush delivered 3 messages across 2 replicas in {:?}",
        flushed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bobs = sent
        .iter()
        .position(|(_, r)| *r == "bob@relay.example")
        .unwrap();
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..4).filter(|n| *n != bobs).collect::<Vec<_>>()
    );
    assert_eq!(counts, arrivals(&sink, "cli"), "delivered once each");
    let (ok, out, _) = queue_command(&handler, &[&["list", "-o", "json"][..], &domain].concat());
    assert!(ok && out.trim() == "[]", "{out}");
}

/// The restart count of container `name` of `pod`.
fn container_restarts(pod: &Pod, name: &str) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .map_or(0, |c| c.restart_count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_postfix_is_restarted_by_its_liveness_probe_and_delivers_its_queue() {
    let _turn = Node::exclusive().await;
    let node = node_with_operator().await;
    let primary = closed_port(node);
    let ns = node.namespace("wedge").await.unwrap();
    gateway_with_domain(&ns, primary, json!({"inline": ["alice@relay.example"]})).await;
    let pods = ns.api::<Pod>();
    let count = 3;
    queue_messages(node, &ns, "edge-1", count, "wedge").await;

    // The master stops answering, as a wedged one does: it holds its sockets and its queue,
    // and spawns nothing. The primary is back meanwhile; only a restart delivers the mail.
    let before = container_restarts(&pods.get("edge-1").await.unwrap(), "postfix");
    node.exec(
        &ns.name,
        "edge-1",
        "postfix",
        &[
            "sh",
            "-c",
            "kill -STOP $(cat /var/spool/postfix/pid/master.pid)",
        ],
    )
    .unwrap();
    let wedged = Instant::now();
    let sink = Sink::start_on(primary).unwrap();
    until(
        Duration::from_secs(240),
        "the Postfix container restarted",
        || async {
            let pod = pods.get("edge-1").await.ok()?;
            (container_restarts(&pod, "postfix") > before).then_some(())
        },
    )
    .await;
    let restarted = wedged.elapsed();
    let counts = every_arrival(&sink, "wedge", count).await;
    println!(
        "node: a stopped Postfix master restarted by its liveness probe {restarted:?} after it stopped; its {count} queued messages delivered {:?} after it stopped",
        wedged.elapsed()
    );
    no_more_and_once_each(&sink, "wedge", &counts).await;
    let pod = pods.get("edge-1").await.unwrap();
    assert_eq!(
        container_restarts(&pod, "agent"),
        0,
        "only Postfix restarted"
    );
}

/// `mx_agent_postfix_reloads_total` of the replica whose agent listens at `agent`.
fn reloads(agent: SocketAddr) -> Option<f64> {
    let (_, metrics) = http_get_at(agent, "/metrics")?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mx_agent_postfix_reloads_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_configuration_changes_under_load_fail_no_session_and_coalesce_reloads() {
    let Relayed { sink, ns, .. } = &relayed("burst", json!(["alice@relay.example"])).await;
    let replicas = replicas(ns).await;
    assert_eq!(replicas.len(), 2);
    for (_, smtp) in &replicas {
        reply_becomes(*smtp, "alice@relay.example", 250).await;
    }
    let agents: Vec<SocketAddr> = replicas
        .iter()
        .map(|(_, smtp)| SocketAddr::new(smtp.ip(), 8080))
        .collect();
    let reloads_before: Vec<f64> = agents.iter().map(|a| reloads(*a).unwrap()).collect();

    // Two clients, one per replica, each sending one message per session without a pause.
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let senders: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(client, (_, smtp))| {
            keep_sending(
                *smtp,
                "burst",
                client * 1_000_000,
                Duration::ZERO,
                sending.clone(),
            )
        })
        .collect();

    // Every half second for 30 s: a domain comes or goes (relay_domains and transport
    // change, which takes a reload), and the gateway's own main.cf changes.
    let domains = ns.api::<MailDomain>();
    let started = Instant::now();
    let mut changes = 0;
    while started.elapsed() < Duration::from_secs(30) {
        if changes % 2 == 0 {
            apply::<MailDomain>(
                ns,
                domain(
                    "churn",
                    "churn.example",
                    json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                           "recipients": {"inline": ["bob@churn.example"]}}),
                ),
            )
            .await;
        } else {
            let _ = domains.delete("churn", &DeleteParams::default()).await;
        }
        let lifetime = if changes % 4 < 2 { "5d" } else { "6d" };
        apply::<MailGateway>(
            ns,
            gateway(
                "edge",
                json!({"replicas": 2, "service": {"type": "NodePort"}, "queue": {"maxQueueLifetime": lifetime}}),
            ),
        )
        .await;
        changes += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut replies = Vec::new();
    for sender in senders {
        replies.extend(
            tokio::task::spawn_blocking(move || sender.join().unwrap())
                .await
                .unwrap(),
        );
    }
    let failed: Vec<_> = replies.iter().filter(|(_, r)| r != &Ok(250)).collect();
    let reloads_after: Vec<f64> = agents.iter().map(|a| reloads(*a).unwrap()).collect();
    let reloaded: Vec<f64> = reloads_after
        .iter()
        .zip(&reloads_before)
        .map(|(after, before)| after - before)
        .collect();
    println!(
        "node: {changes} configuration changes in {:?} under load: {} sessions, {} failed; reloads per replica {reloaded:?}",
        started.elapsed(),
        replies.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "sessions failed: {failed:?}");
    assert!(
        replies.len() > 40,
        "the clients kept sending: {}",
        replies.len()
    );
    // At most one reload per spacing (5 s) over the 32 s, and at least one per replica.
    for count in &reloaded {
        assert!(
            (1.0..=8.0).contains(count),
            "reloads per replica: {reloaded:?}"
        );
    }
    let counts = until(LIMIT, "every accepted message at the primary", || async {
        let counts = arrivals(sink, "burst");
        replies
            .iter()
            .all(|(n, _)| counts.contains_key(n))
            .then_some(counts)
    })
    .await;
    assert!(counts.values().all(|&n| n == 1), "delivered once each");
}
