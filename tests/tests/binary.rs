//! `mx-operator run` as a process: probes, metrics, JSON logs and a clean stop on SIGTERM.

use kube::api::{Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::gateway::http_get;
use mx_operator_tests::process::{Guarded, free_port, spawn_tied};
use mx_operator_tests::wait::until;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn operator_binary() -> PathBuf {
    let binary = mx_operator_tests::process::operator_binary();
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace` first (make test does)",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn run_serves_probes_and_metrics_and_stops_on_sigterm() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("binary").await.expect("namespace");
    let port = free_port().unwrap();
    let log = plane.dir.join("operator-binary.log");
    let mut command = Command::new(operator_binary());
    command
        .args(["run", "--leader-elect", "false", "--resync-seconds", "5"])
        .arg(format!("--metrics-address=127.0.0.1:{port}"))
        .env("KUBECONFIG", &plane.operator_kubeconfig)
        .env("RUST_LOG", "info,mx_operator=debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit());
    let mut operator = Guarded::new("mx-operator", spawn_tied(command).unwrap());

    let (status, body) = until(Duration::from_secs(30), "/readyz", || async {
        http_get(port, "/readyz")
    })
    .await;
    assert_eq!((status, body.trim()), (200, "ok: leading"));
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));

    let gateway: MailGateway = serde_json::from_value(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway", "metadata": {"name": "edge"},
        "spec": {"mxHostnames": ["mx.example.net"]}})).unwrap();
    ns.api::<MailGateway>()
        .patch("edge", &PatchParams::apply("test"), &Patch::Apply(&gateway))
        .await
        .unwrap();
    let domain: MailDomain = serde_json::from_value(json!({
        "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": "bin"},
        "spec": {"domain": "bin.example", "gatewayRef": {"name": "edge"}, "primary": {"host": "192.0.2.1"},
                 "recipients": {"inline": ["a@bin.example"]}}})).unwrap();
    ns.api::<MailDomain>()
        .patch("bin", &PatchParams::apply("test"), &Patch::Apply(&domain))
        .await
        .unwrap();

    let metrics = until(
        Duration::from_secs(30),
        "domain counted as Ready in /metrics",
        || async {
            let (_, body) = http_get(port, "/metrics")?;
            // The status write lands in the cache a moment before the reconcile is counted.
            (body.contains("mx_operator_maildomains{state=\"Ready\"} 1")
                && body.contains("mx_operator_reconciles_total{kind=\"MailDomain\"}"))
            .then_some(body)
        },
    )
    .await;
    assert!(
        metrics.contains("mx_operator_reconciles_total{kind=\"MailDomain\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mx_operator_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );

    // SIGTERM: reconciles finish and the process exits 0.
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(operator.id() as i32, libc::SIGTERM) };
    let mut status = None;
    for _ in 0..200 {
        status = operator.exited();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("the operator exits within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}");

    let lines = std::fs::read_to_string(&log).unwrap();
    let parsed: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    assert!(
        parsed.iter().any(|l| l["span"]["maildomain"] == "bin"),
        "a reconcile span names the object:\n{lines}"
    );
    assert!(
        parsed.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down"))),
        "{lines}"
    );
}
