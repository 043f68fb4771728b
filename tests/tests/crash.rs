//! `mx-operator run` killed with SIGKILL at random points, 20 times, while 100 domains
//! converge (and some are deleted or changed): the last run finishes the job with no MX
//! record duplicated or missing, no MailRelay orphaned, and the TSIG key never logged.
//! Its own test binary: no other operator may reconcile this control plane meanwhile.

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailRelay};
use mx_operator_tests::ControlPlane;
use mx_operator_tests::fixtures::apply_dynamic as apply;
use mx_operator_tests::knot::{Knot, TSIG_KEY_NAME, TSIG_SECRET};
use mx_operator_tests::kubectl::kubectl_ok;
use mx_operator_tests::process::{self, Guarded};
use mx_operator_tests::wait::until;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const DOMAINS: usize = 100;
const KILLS: usize = 20;
const ZONE: &str = "crash.example";
const GATEWAY_HOST: &str = "mx1.relay.example.net";
const CUSTOMER_MX: &str = "10 mail.customer.example.";
/// Domains deleted while the operator keeps dying (after kills 4 and 14).
const DELETED: std::ops::Range<usize> = 0..10;
/// Live domains whose MX preference changes after each kill.
const CHANGES_PER_KILL: usize = 10;

fn name(i: usize) -> String {
    format!("d{i:03}")
}

fn fqdn(i: usize) -> String {
    format!("{}.{ZONE}", name(i))
}

fn start_operator(kubeconfig: &Path, log: &Path) -> Guarded {
    // Debug level: the most the operator ever says, searched for the key below.
    process::start_operator(kubeconfig, log, "debug", 5).unwrap()
}

#[tokio::test]
async fn sigkilled_twenty_times_while_converging_leaves_nothing_duplicated_or_orphaned() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let ns = plane.namespace("crash").await.expect("namespace");
    let zone_body: String = (0..DOMAINS)
        .map(|i| format!("{} MX {CUSTOMER_MX}\n", name(i)))
        .collect();
    let knot = Knot::start(&plane.dir.join("knot-crash"), &[(ZONE, &zone_body)]).unwrap();

    apply(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "knot-key"},
        "stringData": {"secret": TSIG_SECRET}}),
    )
    .await;
    apply(&ns, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider", "metadata": {"name": "knot"},
        "spec": {"rfc2136": {"server": "127.0.0.1", "port": knot.address.port(), "zone": ZONE,
            "tsig": {"keyName": TSIG_KEY_NAME, "secretRef": {"name": "knot-key", "key": "secret"}}}}})).await;
    apply(&ns, json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway", "metadata": {"name": "edge"},
        "spec": {"mxHostnames": [GATEWAY_HOST]}})).await;
    let domain = |i: usize, mx_preference: u16| {
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": name(i)},
            "spec": {"domain": fqdn(i), "gatewayRef": {"name": "edge"}, "primary": {"host": "mail.customer.example"},
                "recipients": {"inline": [format!("alice@{}", fqdn(i)), format!("bob@{}", fqdn(i))]},
                "dns": {"providerRef": {"name": "knot"}}, "mx": {"preference": mx_preference}}})
    };
    for i in 0..DOMAINS {
        apply(&ns, domain(i, 20)).await;
    }

    let log = plane.dir.join("operator-crash.log");
    let domains = ns.api::<MailDomain>();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut random = fastrand::Rng::with_seed(seed);
    let mut lifetimes = Vec::new();
    let mut preferences = [20u16; DOMAINS];
    let started = Instant::now();
    for kill in 0..KILLS {
        let operator = start_operator(&plane.operator_kubeconfig, &log);
        // From before the caches have filled to mid-way through a round of reconciles.
        let lifetime = Duration::from_millis(random.u64(50..1_500));
        lifetimes.push(lifetime.as_millis());
        tokio::time::sleep(lifetime).await;
        drop(operator); // SIGKILL
        // Work for the next run, made while no operator runs: deletions (the finalizer
        // holds them) and MX changes (old record out, new one in).
        if kill == 4 || kill == 14 {
            let half = DELETED.len() / 2;
            let batch = if kill == 4 {
                DELETED.start..DELETED.start + half
            } else {
                DELETED.start + half..DELETED.end
            };
            for i in batch {
                domains
                    .delete(&name(i), &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
        for _ in 0..CHANGES_PER_KILL {
            let i = random.usize(DELETED.end..DOMAINS);
            preferences[i] = *random.choice(&[20u16, 30, 40]).unwrap();
            domains
                .patch(
                    &name(i),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"mx": {"preference": preferences[i]}}})),
                )
                .await
                .unwrap();
        }
    }
    let _survivor = start_operator(&plane.operator_kubeconfig, &log);
    let alive: BTreeSet<String> = (0..DOMAINS)
        .filter(|i| !DELETED.contains(i))
        .map(name)
        .collect();
    until(
        Duration::from_secs(120),
        "every domain Ready, the deleted ones gone",
        || async {
            let list = domains.list(&ListParams::default()).await.ok()?;
            let ready: BTreeSet<String> = list
                .items
                .iter()
                .filter(|d| {
                    d.condition("Ready")
                        .is_some_and(|c| c.status == ConditionStatus::True)
                        && d.metadata.deletion_timestamp.is_none()
                        && d.status.as_ref().and_then(|s| s.observed_generation)
                            == d.metadata.generation
                })
                .filter_map(|d| d.metadata.name.clone())
                .collect();
            (list.items.len() == alive.len() && ready == alive).then_some(())
        },
    )
    .await;
    let converged = started.elapsed();

    // DNS: exactly the customer's record and one of ours per live domain; only the
    // customer's for a deleted one. An update a killed run sent may land after the next
    // run has looked (the record stays listed as pending, and the next check removes it):
    // the zone has to settle within two resyncs, and stay settled.
    let wrong_records = || {
        let mut problems = Vec::new();
        for (i, preference) in preferences.iter().enumerate() {
            let mut answer = knot.dig(&fqdn(i), "MX");
            answer.sort();
            let mut want = vec![CUSTOMER_MX.to_string()];
            if !DELETED.contains(&i) {
                want.push(format!("{preference} {GATEWAY_HOST}."));
            }
            want.sort();
            if answer != want {
                problems.push(format!("{}: {answer:?}, want {want:?}", fqdn(i)));
            }
        }
        problems
    };
    let settle = Instant::now();
    let mut problems = wrong_records();
    while !problems.is_empty() && settle.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems = wrong_records();
    }
    let settled_after = settle.elapsed();
    if !problems.is_empty() {
        // What the operator listed and did for the domains that went wrong.
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        for problem in &problems {
            let name = problem.split('.').next().unwrap_or_default();
            let status = domains.get(name).await.ok().and_then(|d| d.status);
            eprintln!(
                "{name}: published {:?}, pending {:?}",
                status.as_ref().map(|s| &s.published_records),
                status.as_ref().map(|s| &s.pending_records)
            );
            for line in logged.lines().filter(|l| {
                l.contains(&format!("{name}.{ZONE}")) && l.contains("MX records updated")
            }) {
                eprintln!("  {line}");
            }
        }
    }
    assert!(
        problems.is_empty(),
        "MX records wrong 12 s after all were Ready:\n{}",
        problems.join("\n")
    );

    // Relay config: one MailRelay per live domain, none for a deleted one.
    let relays: BTreeSet<String> = ns
        .api::<MailRelay>()
        .list(&ListParams::default().labels("mx-operator.io/relay-for"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let want: BTreeSet<String> = (0..DOMAINS)
        .filter(|i| !DELETED.contains(i))
        .map(|i| format!("relay-{}", fqdn(i)))
        .collect();
    assert_eq!(relays, want, "MailRelays: none orphaned, none missing");

    // The TSIG key: not in any log line of 21 runs at debug level, nor in Events or status.
    let logged = std::fs::read_to_string(&log).unwrap();
    let key_text = "mx-operator-test-key-32-bytes!!!";
    assert!(logged.lines().count() > 100, "the runs logged: {logged}");
    assert!(
        !logged.contains(TSIG_SECRET) && !logged.contains(key_text),
        "TSIG key in the operator's log"
    );
    let objects = kubectl_ok(
        &plane.kubeconfig,
        &[
            "get",
            "events,maildomains,mailgateways,dnsproviders,configmaps,mailrelays",
            "-n",
            &ns.name,
            "-o",
            "yaml",
        ],
    );
    assert!(
        !objects.contains(TSIG_SECRET) && !objects.contains(key_text),
        "TSIG key in Events, status, ConfigMaps or MailRelays"
    );

    let late = wrong_records();
    assert!(
        late.is_empty(),
        "MX records changed again:\n{}",
        late.join("\n")
    );
    println!(
        "faults: operator SIGKILLed {KILLS} times (seed {seed}, lifetimes {lifetimes:?} ms) while {DOMAINS} domains converged \
         ({} deleted, {} MX changes); \
         all Ready {:.1} s after the first start, MX settled {:.1} s later; \
         MX duplicated 0 / missing 0, orphaned MailRelays 0, log lines {} with the key 0",
        DELETED.len(),
        KILLS * CHANGES_PER_KILL,
        converged.as_secs_f64(),
        settled_after.as_secs_f64(),
        logged.lines().count()
    );
}
