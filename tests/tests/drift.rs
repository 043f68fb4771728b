//! Drift against the real components: the operator (drift checks every second) on the real
//! API server, two Knot servers — the zone's server the operator publishes to, and the
//! "public" DNS its departure check resolves through — and a gateway replica (agent +
//! Postfix) that the SMTP probe asks. Also `mx-operator audit` on a fixture zone.

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use mx_operator::api::{Condition, ConditionStatus, MailDomain, MailRelay};
use mx_operator::controller::Metrics;
use mx_operator::controller::Settings;
use mx_operator::drift::{CheckSettings, DriftSettings};
use mx_operator_tests::control_plane::Lifetime;
use mx_operator_tests::fixtures::{apply_dynamic, merge};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::knot::{Knot, TSIG_KEY_NAME, TSIG_SECRET};
use mx_operator_tests::lifecycle::queued_mail_outlives;
use mx_operator_tests::operator::{ensure_shared_operator_with, test_settings};
use mx_operator_tests::process::{free_port, operator_binary};
use mx_operator_tests::smtp::{Sink, rcpt_reply};
use mx_operator_tests::wait::{domain_condition, until};
use mx_operator_tests::{ControlPlane, TestNamespace};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(40);
const GATEWAY_HOST: &str = "edge.mx.example.net";
const OUR_MX: &str = "20 edge.mx.example.net.";
const GRACE: Duration = Duration::from_secs(4);

struct World {
    plane: &'static ControlPlane,
    /// What the departure check resolves through.
    public: &'static Knot,
    /// Where the operator publishes MX records.
    authoritative: &'static Knot,
    metrics: Arc<Metrics>,
}

async fn world() -> World {
    static SERVERS: OnceLock<(Knot, Knot)> = OnceLock::new();
    let plane = ControlPlane::shared().await.expect("control plane");
    let (public, authoritative) = SERVERS.get_or_init(|| {
        let public = Knot::start(
            &plane.dir.join("knot-public"),
            &[
                (
                    "moved.test",
                    "@ MX 10 mail.moved.test.\n@ MX 20 edge.mx.example.net.",
                ),
                ("leaving.test", "@ MX 20 edge.mx.example.net."),
            ],
        )
        .expect("public knot");
        let authoritative = Knot::start(
            &plane.dir.join("knot-authoritative"),
            &[
                ("moved.test", "@ MX 10 mail.moved.test."),
                ("repair.test", "@ MX 10 mail.repair.test."),
            ],
        )
        .expect("authoritative knot");
        (public, authoritative)
    });
    let resolver = public.address;
    let metrics = ensure_shared_operator_with(plane, move || Settings {
        drift: Some(DriftSettings {
            interval: Duration::from_secs(1),
            concurrency: 8,
            dns_timeout: Duration::from_millis(500),
            checks: CheckSettings {
                resolvers: vec![resolver],
                smtp: true,
                smtp_timeout: Duration::from_secs(5),
                confirm_after: Duration::from_millis(500),
            },
        }),
        ..test_settings()
    });
    World {
        plane,
        public,
        authoritative,
        metrics,
    }
}

fn gateway(smtp: SocketAddr) -> Value {
    json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway", "metadata": {"name": "edge"},
        "spec": {"mxHostnames": [GATEWAY_HOST], "probeAddress": smtp.to_string()}})
}

fn domain(name: &str, domain: &str, primary: SocketAddr, extra: Value) -> Value {
    let mut spec = json!({
        "primary": {"host": primary.ip().to_string(), "port": primary.port(), "tls": "None"},
    });
    merge(&mut spec, extra);
    mx_operator::api::fixtures::domain_object(name, domain, json!({"spec": spec}))
}

async fn provider(ns: &TestNamespace, knot: &Knot) {
    apply_dynamic(
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsig"},
            "stringData": {"secret": TSIG_SECRET}}),
    )
    .await;
    apply_dynamic(ns, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider", "metadata": {"name": "zone-server"},
        "spec": {"rfc2136": {"server": "127.0.0.1", "port": knot.address.port(),
            "tsig": {"keyName": TSIG_KEY_NAME, "secretRef": {"name": "tsig", "key": "secret"}}}}}))
    .await;
}

/// Starts the gateway replica once every domain's MailRelay exists.
async fn replica(w: &World, ns: &TestNamespace, smtp: SocketAddr, domains: &[&str]) -> Gateway {
    let relays = ns.api::<MailRelay>();
    for name in domains {
        let name = format!("relay-{name}");
        until(LIMIT, &format!("MailRelay {name}"), || async {
            relays.get_opt(&name).await.ok().flatten()
        })
        .await;
    }
    Gateway::start_on(
        &w.plane.dir.join(format!("gateway-{}", ns.name)),
        &w.plane.operator_kubeconfig,
        &ns.name,
        "edge",
        Some(smtp.port()),
        &[],
        Lifetime::TiedToThisProcess,
    )
    .await
    .expect("gateway replica")
}

async fn condition(
    api: &Api<MailDomain>,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
) -> (MailDomain, Condition) {
    let md = domain_condition(api, LIMIT, name, type_, status, reason).await;
    let found = md
        .condition(type_)
        .cloned()
        .expect("the condition just seen");
    (md, found)
}

async fn rcpt_becomes(smtp: SocketAddr, recipient: &str, code: u16) {
    until(LIMIT, &format!("RCPT {recipient} → {code}"), || async {
        rcpt_reply(smtp, "sender@client.test", recipient)
            .ok()
            .filter(|reply| reply.code == code)
    })
    .await;
}

async fn mx_at(knot: &Knot, name: &str, present: bool, record: &str) -> Duration {
    let started = Instant::now();
    until(
        LIMIT,
        &format!("{record} at {name} present={present}"),
        || async {
            let answer = knot.dig(name, "MX");
            (answer.iter().any(|r| r == record) == present).then_some(())
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_departures_withdraw_and_return_and_probes_catch_stale_gateways() {
    let w = world().await;
    let ns = w.plane.namespace("drift").await.expect("namespace");
    let api: Api<MailDomain> = ns.api();
    let sink = Sink::start().expect("primary sink");
    let smtp: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    provider(&ns, w.authoritative).await;
    apply_dynamic(&ns, gateway(smtp)).await;
    let managed = json!({"dns": {"providerRef": {"name": "zone-server"}},
        "departure": {"gracePeriod": "4s", "action": "Remove"}});
    apply_dynamic(
        &ns,
        domain("moved", "moved.test", sink.address, managed.clone()),
    )
    .await;
    apply_dynamic(
        &ns,
        domain("repair", "repair.test", sink.address, managed.clone()),
    )
    .await;
    let mut gateway = replica(&w, &ns, smtp, &["moved.test", "repair.test"]).await;

    // In service: the probe, the primary and the public MX all agree.
    condition(
        &api,
        "moved",
        "AcceptanceVerified",
        ConditionStatus::True,
        "Verified",
    )
    .await;
    condition(
        &api,
        "moved",
        "PrimaryReachable",
        ConditionStatus::True,
        "BannerReceived",
    )
    .await;
    let (md, _) = condition(
        &api,
        "moved",
        "Departed",
        ConditionStatus::False,
        "MxPointsHere",
    )
    .await;
    assert_eq!(
        md.status.unwrap().drift.as_deref(),
        Some("None"),
        "DRIFT column"
    );

    // Our MX deleted at the zone's server behind the operator's back: restored.
    mx_at(w.authoritative, "repair.test", true, OUR_MX).await;
    w.authoritative
        .nsupdate(
            "repair.test",
            "update delete repair.test. MX 20 edge.mx.example.net.",
        )
        .unwrap();
    assert!(
        !w.authoritative
            .dig("repair.test", "MX")
            .contains(&OUR_MX.to_string())
    );
    let restored_in = mx_at(w.authoritative, "repair.test", true, OUR_MX).await;
    println!(
        "our MX restored {} ms after its deletion",
        restored_in.as_millis()
    );
    assert!(
        w.authoritative
            .dig("repair.test", "MX")
            .contains(&"10 mail.repair.test.".to_string()),
        "the customer's record stays"
    );
    let events: Api<Event> = ns.api();
    until(LIMIT, "a DnsDriftRepaired Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("DnsDriftRepaired"))
    })
    .await;
    let repairs = w.metrics.encode().unwrap();
    assert!(
        repairs.contains("mx_operator_dns_drift_repairs_total 1")
            || repairs.contains("mx_operator_dns_drift_repairs_total 2"),
        "{repairs}"
    );

    // The public resolver stops answering for longer than the grace period: no departure,
    // but the blind spot shows.
    let frozen_at = Instant::now();
    w.public.freeze();
    let (blind, _) = condition(
        &api,
        "moved",
        "PublicMxResolved",
        ConditionStatus::False,
        "LookupFailed",
    )
    .await;
    assert!(
        blind
            .status
            .as_ref()
            .and_then(|s| s.drift.as_deref())
            .is_some_and(|d| d.contains("MxLookupFailed")),
        "DRIFT column: {:?}",
        blind.status.as_ref().map(|s| &s.drift)
    );
    tokio::time::sleep((GRACE + Duration::from_secs(2)).saturating_sub(frozen_at.elapsed())).await;
    let during = api.get("moved").await.unwrap();
    w.public.thaw();
    let departed = during
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Departed"))
        .unwrap();
    assert_eq!(
        (departed.status, departed.reason.as_str()),
        (ConditionStatus::False, "MxPointsHere")
    );
    condition(
        &api,
        "moved",
        "PublicMxResolved",
        ConditionStatus::True,
        "Resolved",
    )
    .await;
    rcpt_becomes(smtp, "alice@moved.test", 250).await;
    let metrics = w.metrics.encode().unwrap();
    assert!(
        metrics.contains(
            "mx_operator_drift_checks_total{check=\"public_mx\",result=\"LookupFailed\"}"
        ),
        "{metrics}"
    );

    // The domain moves: its public MX names another host.
    w.public
        .nsupdate(
            "moved.test",
            "update delete moved.test. MX\nupdate add moved.test. 300 MX 10 mx.elsewhere.test.",
        )
        .unwrap();
    let (_, departed) = condition(
        &api,
        "moved",
        "Departed",
        ConditionStatus::True,
        "MxElsewhere",
    )
    .await;
    assert!(
        departed.message.contains("10 mx.elsewhere.test"),
        "evidence: {}",
        departed.message
    );
    let (md, withdrawn) =
        condition(&api, "moved", "Ready", ConditionStatus::False, "Departed").await;
    let waited = withdrawn
        .last_transition_time
        .0
        .duration_since(departed.last_transition_time.0);
    assert!(
        waited.as_secs_f64() >= GRACE.as_secs_f64() - 1.0,
        "the action ran {waited:?} after the departure, before the grace period"
    );
    assert!(
        md.status
            .unwrap()
            .drift
            .unwrap()
            .contains("Departed(MxElsewhere)"),
        "DRIFT column"
    );
    rcpt_becomes(smtp, "alice@moved.test", 554).await;
    mx_at(w.authoritative, "moved.test", false, OUR_MX).await;
    assert!(
        w.authoritative
            .dig("moved.test", "MX")
            .contains(&"10 mail.moved.test.".to_string()),
        "the customer's record stays"
    );
    condition(
        &api,
        "moved",
        "AcceptanceVerified",
        ConditionStatus::True,
        "Verified",
    )
    .await;

    // It comes back: relayed and published again, by itself.
    w.public
        .nsupdate(
            "moved.test",
            "update add moved.test. 300 MX 20 edge.mx.example.net.",
        )
        .unwrap();
    condition(
        &api,
        "moved",
        "Departed",
        ConditionStatus::False,
        "MxPointsHere",
    )
    .await;
    condition(&api, "moved", "Ready", ConditionStatus::True, "Relayed").await;
    rcpt_becomes(smtp, "alice@moved.test", 250).await;
    mx_at(w.authoritative, "moved.test", true, OUR_MX).await;

    // A gateway that did not load a new domain (its agent is down) is caught by the probe,
    // and an unreachable primary is reported.
    gateway.stop_agent();
    let closed: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    apply_dynamic(&ns, domain("late", "late.test", closed, json!({}))).await;
    condition(&api, "late", "Ready", ConditionStatus::True, "Relayed").await;
    condition(
        &api,
        "late",
        "AcceptanceVerified",
        ConditionStatus::False,
        "NotAccepting",
    )
    .await;
    let (md, _) = condition(
        &api,
        "late",
        "PrimaryReachable",
        ConditionStatus::False,
        "Unreachable",
    )
    .await;
    // (The "public" server has no zone for late.test and refuses: a blind departure check
    // is on the list too.)
    assert_eq!(
        md.status.unwrap().drift.as_deref(),
        Some("NotAccepting,MxLookupFailed,PrimaryUnreachable")
    );
    gateway.start_agent().unwrap();
    condition(
        &api,
        "late",
        "AcceptanceVerified",
        ConditionStatus::True,
        "Verified",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_for_a_departed_domain_still_reaches_its_primary() {
    let w = world().await;
    let ns = w.plane.namespace("departed").await.expect("namespace");
    let api: Api<MailDomain> = ns.api();
    let primary: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let smtp: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    apply_dynamic(&ns, gateway(smtp)).await;
    let departure = json!({"departure": {"gracePeriod": "4s", "action": "Remove"}});
    apply_dynamic(&ns, domain("leaving", "leaving.test", primary, departure)).await;
    let mut gateway = replica(&w, &ns, smtp, &["leaving.test"]).await;
    condition(
        &api,
        "leaving",
        "Departed",
        ConditionStatus::False,
        "MxPointsHere",
    )
    .await;
    queued_mail_outlives(
        &ns,
        &mut gateway,
        "alice@leaving.test",
        primary,
        "domain withdrawn after its departure",
        554,
        Some("leaving"),
        async {
            w.public
                .nsupdate(
                    "leaving.test",
                    "update delete leaving.test. MX\nupdate add leaving.test. 300 MX 10 mx.elsewhere.test.",
                )
                .unwrap();
            condition(&api, "leaving", "Ready", ConditionStatus::False, "Departed").await;
        },
    )
    .await;
}

/// The fixture zone: 50 domains, and the faults the audit must report for each.
fn fixture_zone() -> (String, BTreeMap<String, Vec<&'static str>>) {
    let mut zone = String::new();
    let mut expected = BTreeMap::new();
    for i in 1..=50 {
        let name = format!("d{i:02}");
        let primary = format!("@ MX 10 mail.{name}.audit.test.");
        let (records, states): (Vec<String>, Vec<&str>) = match i {
            1..=40 => (vec![primary, format!("@ MX {OUR_MX}")], vec!["ok"]),
            41..=43 => (vec![primary], vec!["mx-missing"]),
            44..=46 => (vec!["@ MX 10 mx.elsewhere.test.".into()], vec!["departed"]),
            47 | 48 => (vec![], vec!["nxdomain"]),
            49 => (vec!["@ A 192.0.2.49".into()], vec!["mx-missing"]),
            _ => (vec!["@ MX 5 EDGE.MX.Example.NET.".into()], vec!["ok"]),
        };
        for record in records {
            zone.push_str(&format!("$ORIGIN {name}.audit.test.\n{record}\n"));
        }
        expected.insert(format!("{name}.audit.test"), states);
    }
    for name in ["p-ok", "p-gone", "p-catch"] {
        zone.push_str(&format!("$ORIGIN {name}.audit.test.\n@ MX {OUR_MX}\n"));
    }
    (zone, expected)
}

fn audit(args: &[String]) -> (i32, String) {
    let output = std::process::Command::new(operator_binary())
        .arg("audit")
        .args(args)
        .output()
        .expect("mx-operator audit");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn states_of(json: &str) -> BTreeMap<String, Vec<String>> {
    let findings: Vec<Value> = serde_json::from_str(json).expect("JSON report");
    findings
        .iter()
        .map(|f| {
            let states = f["states"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            (f["domain"].as_str().unwrap().to_string(), states)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_exactly_the_faults_of_a_fixture_zone() {
    let w = world().await;
    let (body, expected) = fixture_zone();
    let zone_dir = w.plane.dir.join("knot-audit");
    let knot = Knot::start(&zone_dir, &[("audit.test", &body)]).expect("audit knot");
    let csv = zone_dir.join("domains.csv");
    let mut text = String::from("domain,primary\n");
    for domain in expected.keys() {
        let label = domain.split('.').next().unwrap();
        text.push_str(&format!("{domain},mail.{label}.audit.test\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let common = |file: &std::path::Path| {
        vec![
            format!("--domains={}", file.display()),
            format!("--gateway-hostname={GATEWAY_HOST}"),
            format!("--resolver={}", knot.address),
            "--timeout-seconds=2".into(),
        ]
    };

    let started = Instant::now();
    let mut args = common(&csv);
    args.push("--output=json".into());
    let (code, json) = audit(&args);
    println!("audit of 50 domains: {} ms", started.elapsed().as_millis());
    assert_eq!(code, 1, "problems found: exit status 1\n{json}");
    let expected: BTreeMap<String, Vec<String>> = expected
        .into_iter()
        .map(|(d, s)| (d, s.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(states_of(&json), expected);
    let (code, table) = audit(&common(&csv));
    assert_eq!(code, 1);
    assert!(
        table.contains("50 domain(s), 41 ok, 9 with problems"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("d44.audit.test")
            && l.contains("departed")
            && l.contains("10 mx.elsewhere.test")),
        "{table}"
    );

    // With the probe: a relayed domain, one the gateway does not serve, and one the gateway
    // accepts every address of although the list says it is not catch-all.
    let ns = w.plane.namespace("audit").await.expect("namespace");
    let sink = Sink::start().expect("primary sink");
    let smtp: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    apply_dynamic(&ns, gateway(smtp)).await;
    apply_dynamic(
        &ns,
        domain("p-ok", "p-ok.audit.test", sink.address, json!({})),
    )
    .await;
    apply_dynamic(
        &ns,
        domain(
            "p-catch",
            "p-catch.audit.test",
            sink.address,
            json!({"recipients": {"inline": [], "catchAll": true}}),
        ),
    )
    .await;
    let _gateway = replica(&w, &ns, smtp, &["p-ok.audit.test", "p-catch.audit.test"]).await;
    let list = zone_dir.join("probe.csv");
    std::fs::write(
        &list,
        "p-ok.audit.test,,alice@p-ok.audit.test\np-gone.audit.test,,bob@p-gone.audit.test\np-catch.audit.test\n",
    )
    .unwrap();
    let mut args = common(&list);
    args.extend([format!("--probe={smtp}"), "--output=json".into()]);
    let (code, json) = audit(&args);
    assert_eq!(code, 1, "{json}");
    let found = states_of(&json);
    let want = |s: &str| vec![s.to_string()];
    assert_eq!(found["p-ok.audit.test"], want("ok"), "{json}");
    assert_eq!(
        found["p-gone.audit.test"],
        want("gateway-not-accepting"),
        "{json}"
    );
    assert_eq!(
        found["p-catch.audit.test"],
        want("backscatter-risk"),
        "{json}"
    );

    // Input that cannot be used is exit status 2, with the line named.
    let bad = zone_dir.join("bad.txt");
    std::fs::write(&bad, "ok.test\nnot a domain\n").unwrap();
    let output = std::process::Command::new(operator_binary())
        .arg("audit")
        .args(common(&bad))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
