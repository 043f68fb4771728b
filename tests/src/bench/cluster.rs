//! The sections that need the API server: onboarding latency and recipient-change latency
//! (operator binary + a gateway replica: agent and Postfix), and scale (operator binary on
//! a fresh control plane holding N MailDomains with 100 recipients each).

use super::{Figure, Spread};
use crate::control_plane::{AuditedWrite, ControlPlane, Lifetime, OPERATOR_USER};
use crate::gateway::Gateway;
use crate::process::{Guarded, free_port, start_operator as start_operator_process};
use crate::smtp::rcpt_reply;
use crate::{TestNamespace, fixtures};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator::manifests::gateway::GatewayNames;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const ONBOARDING: &str =
    "1. Onboarding latency (MailDomain apply → Ready, → 250 at the gateway's SMTP port)";
const RECIPIENTS: &str =
    "2. Recipient change latency (ConfigMap edit → new answer at the SMTP port)";
const SCALE: &str = "3. Scale (one gateway, 100 recipients per domain, operator binary)";
const POLL: Duration = Duration::from_millis(10);
const LIMIT: Duration = Duration::from_secs(60);
const RESYNC_SECONDS: u64 = 30;

pub(super) fn fail(what: impl std::fmt::Display) -> String {
    what.to_string()
}

/// `mx-operator run` against `plane`, with drift off (the bench's domains are not real).
pub(super) fn start_operator(plane: &ControlPlane, log: &Path) -> Result<Guarded, String> {
    start_operator_process(&plane.operator_kubeconfig, log, "warn", RESYNC_SECONDS).map_err(fail)
}

fn peak_rss_mib(pid: u32) -> f64 {
    super::memory_mib(&pid.to_string(), "VmHWM:")
}

pub(super) fn domain(
    name: &str,
    domain: &str,
    gateway: &str,
    recipients: Vec<String>,
    primary: SocketAddr,
) -> Value {
    json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": name},
        "spec": {"domain": domain, "gatewayRef": {"name": gateway},
            "primary": {"host": primary.ip().to_string(), "port": primary.port(), "tls": "None"},
            "recipients": {"inline": recipients}}})
}

pub(super) fn is_ready(md: &MailDomain) -> bool {
    md.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

pub(super) async fn poll<T, F, Fut>(what: &str, check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::wait::poll_every(POLL, LIMIT, what, check).await
}

pub(super) async fn rcpt_code(smtp: SocketAddr, recipient: &str, code: u16) -> Result<(), String> {
    poll(&format!("RCPT {recipient} → {code}"), || async {
        rcpt_reply(smtp, "sender@client.test", recipient)
            .ok()
            .filter(|r| r.code == code)
            .map(|_| ())
    })
    .await
}

/// Sections 1 and 2: one operator, one gateway replica, domains applied one at a time.
pub async fn latency(dir: &Path, onboard: usize, changes: usize) -> Result<Vec<Figure>, String> {
    let plane = ControlPlane::start(&dir.join("plane-latency"), Lifetime::TiedToThisProcess)
        .await
        .map_err(fail)?;
    plane.install_crds().await.map_err(fail)?;
    let _operator = start_operator(&plane, &dir.join("operator-latency.log"))?;
    let ns = plane.namespace("bench").await.map_err(fail)?;
    // No mail is sent, so the primary needs no listener.
    let primary: SocketAddr = ([127, 0, 0, 1], free_port().map_err(fail)?).into();
    fixtures::apply::<MailGateway>(&ns, fixtures::gateway("edge", json!({}))).await;
    fixtures::apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rc-users"},
            "data": {"list": "alice@rc.test\n"}}),
    )
    .await;
    let mut seed = domain("rc", "rc.test", "edge", vec![], primary);
    seed["spec"]["recipients"] = json!({"configMapRef": {"name": "rc-users", "key": "list"}});
    fixtures::apply_dynamic(&ns, seed).await;
    let relays = ns.api::<MailRelay>();
    poll("relay-rc.test", || async {
        relays.get_opt("relay-rc.test").await.ok().flatten()
    })
    .await?;
    let configmaps = ns.api::<ConfigMap>();
    let gateway = Gateway::start(
        &dir.join("gateway"),
        &plane.operator_kubeconfig,
        &ns.name,
        "edge",
        Lifetime::TiedToThisProcess,
    )
    .await
    .map_err(fail)?;
    let smtp = gateway.smtp;
    rcpt_code(smtp, "alice@rc.test", 250).await?;

    let domains: Api<MailDomain> = ns.api();
    let (mut ready, mut accepted) = (vec![], vec![]);
    for i in 0..onboard {
        let name = format!("o{i:03}");
        let mail_domain = format!("{name}.onboard.test");
        let started = Instant::now();
        fixtures::apply_dynamic(
            &ns,
            domain(
                &name,
                &mail_domain,
                "edge",
                vec![format!("alice@{mail_domain}")],
                primary,
            ),
        )
        .await;
        poll(&format!("{name} Ready"), || async {
            domains.get(&name).await.ok().filter(is_ready)
        })
        .await?;
        ready.push(started.elapsed());
        rcpt_code(smtp, &format!("alice@{mail_domain}"), 250).await?;
        accepted.push(started.elapsed());
    }
    let mut figures = vec![Figure::new(
        ONBOARDING,
        "domains applied",
        onboard as f64,
        "",
    )];
    figures.extend(Spread::of(&ready).figures(ONBOARDING, "apply → Ready", true));
    let accepted = Spread::of(&accepted);
    let mut these = accepted.figures(ONBOARDING, "apply → 250 at SMTP", true);
    let p99 = these.remove(2).at_most(3000.0);
    these.insert(2, p99);
    figures.extend(these);

    let master = gateway.master_pid();
    let mut list = String::from("alice@rc.test\n");
    let mut took = vec![];
    for i in 0..changes {
        let user = format!("user{i:03}@rc.test");
        list.push_str(&format!("{user}\n"));
        let started = Instant::now();
        configmaps
            .patch(
                "rc-users",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "rc-users"}, "data": {"list": list}})),
            )
            .await
            .map_err(fail)?;
        rcpt_code(smtp, &user, 250).await?;
        took.push(started.elapsed());
    }
    let restarted = gateway.master_pid() != master;
    figures.push(Figure::new(RECIPIENTS, "changes", changes as f64, ""));
    let spread = Spread::of(&took);
    let mut these = spread.figures(RECIPIENTS, "edit → new answer", true);
    let p99 = these.remove(2).at_most(3000.0);
    these.insert(2, p99);
    figures.extend(these);
    figures.push(
        Figure::new(
            RECIPIENTS,
            "Postfix restarts",
            f64::from(u8::from(restarted)),
            "",
        )
        .at_most(0.0),
    );
    Ok(figures)
}

/// The API server's request counts since it started.
struct Requests {
    all: f64,
    /// Reads and writes of the kinds a domain has objects of (MailDomains, MailRelays,
    /// Events, and ConfigMaps: the gateway's), without lists and watches: what converging costs per domain, without what
    /// the operator spends once or by the second (starting its watches, the gateway's
    /// status as its domain count rises).
    domain_kinds: f64,
    /// Those by verb and resource (the metric's labels), to say what any excess was.
    domain_kinds_by_labels: std::collections::BTreeMap<String, f64>,
}

impl Requests {
    /// The requests of domain kinds made since `before`, by labels.
    fn domain_kinds_since(&self, before: &Requests) -> Vec<(String, f64)> {
        self.domain_kinds_by_labels
            .iter()
            .map(|(labels, n)| {
                let old = before.domain_kinds_by_labels.get(labels).copied();
                (labels.clone(), n - old.unwrap_or_default())
            })
            .filter(|(_, n)| *n > 0.0)
            .collect()
    }
}

async fn apiserver_requests(plane: &ControlPlane) -> Result<Requests, String> {
    let client = plane.client().await.map_err(fail)?;
    let request = http::Request::get("/metrics").body(vec![]).map_err(fail)?;
    let text = client.request_text(request).await.map_err(fail)?;
    let mut requests = Requests {
        all: 0.0,
        domain_kinds: 0.0,
        domain_kinds_by_labels: Default::default(),
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some(count) = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) else {
            continue;
        };
        requests.all += count;
        let of_a_domain = ["maildomains", "mailrelays", "configmaps", "events"]
            .iter()
            .any(|r| line.contains(&format!("resource=\"{r}\"")));
        let list_or_watch = ["LIST", "WATCH"]
            .iter()
            .any(|v| line.contains(&format!("verb=\"{v}\"")));
        if of_a_domain && !list_or_watch {
            requests.domain_kinds += count;
            let labels = line.rsplit_once(' ').map_or(line, |(labels, _)| labels);
            requests
                .domain_kinds_by_labels
                .insert(labels.to_string(), count);
        }
    }
    Ok(requests)
}

/// Runs `work(i)` for `i` in `0..count`, 16 at a time (the operator's concurrency);
/// the first error, if any.
pub(super) async fn sixteen_at_a_time<F, Fut>(count: usize, work: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let results: Vec<Result<(), String>> = futures::stream::iter(0..count)
        .map(work)
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn create_domains(ns: &TestNamespace, count: usize) -> Result<(), String> {
    let primary: SocketAddr = ([127, 0, 0, 1], 2526).into();
    sixteen_at_a_time(count, |i| {
        let api: Api<MailDomain> = ns.api();
        async move {
            let name = format!("s{i:05}");
            let mail_domain = format!("{name}.scale.test");
            let recipients = (0..100)
                .map(|u| format!("user{u:03}@{mail_domain}"))
                .collect();
            let object: MailDomain =
                serde_json::from_value(domain(&name, &mail_domain, "edge", recipients, primary))
                    .map_err(fail)?;
            api.patch(
                &name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&object),
            )
            .await
            .map(|_| ())
            .map_err(fail)
        }
    })
    .await
}

/// The API server's raw write floor for `count` domains, with the operator's client and
/// concurrency (16): `count` ConfigMap creates of a relay config's size, then `count`
/// status writes (server-side apply of the MailDomains' status). What converging can
/// never beat; the operator's convergence time is printed as a ratio to it.
async fn write_floor(
    plane: &ControlPlane,
    domains: &TestNamespace,
    count: usize,
) -> Result<Duration, String> {
    let floor = plane.namespace("floor").await.map_err(fail)?;
    let started = Instant::now();
    sixteen_at_a_time(count, |i| {
        let api: Api<ConfigMap> = floor.api();
        async move {
            let lines: String = (0..100)
                .map(|u| format!("user{u:03}@s{i:05}.scale.test OK\n"))
                .collect();
            let object: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("floor-{i:05}")},
                "data": {"relay_recipients": lines}}))
            .map_err(fail)?;
            api.create(&Default::default(), &object)
                .await
                .map(|_| ())
                .map_err(fail)
        }
    })
    .await?;
    sixteen_at_a_time(count, |i| {
        let api: Api<MailDomain> = domains.api();
        async move {
            let status = json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain",
                "status": {"observedGeneration": 1, "recipientCount": i}});
            api.patch_status(
                &format!("s{i:05}"),
                &PatchParams::apply("bench-floor").force(),
                &Patch::Apply(&status),
            )
            .await
            .map(|_| ())
            .map_err(fail)
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// How many of `writes` went to gateway `name`'s own objects of the domain kinds: its
/// MailRelay, and Events about it (named `<object>.<time>`).
fn gateway_writes(writes: &[AuditedWrite], name: &str) -> usize {
    let config = GatewayNames::of(name).config;
    let event_prefix = format!("{name}.");
    writes
        .iter()
        .filter(|w| {
            (w.resource == "mailrelays" && w.name == config)
                || (w.resource == "events" && w.name.starts_with(&event_prefix))
        })
        .count()
}

/// Section 3 for one size, on a control plane of its own.
pub async fn scale(dir: &Path, count: usize, limit: Duration) -> Result<Vec<Figure>, String> {
    let plane = ControlPlane::start(
        &dir.join(format!("plane-scale-{count}")),
        Lifetime::TiedToThisProcess,
    )
    .await
    .map_err(fail)?;
    plane.install_crds().await.map_err(fail)?;
    let ns = plane.namespace("scale").await.map_err(fail)?;
    fixtures::apply::<MailGateway>(&ns, fixtures::gateway("edge", json!({}))).await;
    let created = Instant::now();
    create_domains(&ns, count).await?;
    let created_in = created.elapsed();

    let requests_before = apiserver_requests(&plane).await?;
    let writes_at_start = plane.audited_writes(OPERATOR_USER).map_err(fail)?.len();
    let started = Instant::now();
    let operator = start_operator(&plane, &dir.join(format!("operator-scale-{count}.log")))?;
    let api: Api<MailDomain> = ns.api();
    let mut polls = 0u32;
    let converged = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        polls += 1;
        let list = api.list(&ListParams::default()).await.map_err(fail)?;
        let ready = list.items.iter().filter(|md| is_ready(md)).count();
        if ready == count {
            break started.elapsed();
        }
        if started.elapsed() > limit {
            return Err(format!("{ready} of {count} Ready after {limit:?}"));
        }
    };
    let requests_after = apiserver_requests(&plane).await?;
    // Less the bench's own polls and its first read of the metrics.
    let requests = requests_after.all - requests_before.all - f64::from(polls) - 1.0;
    let converging_writes = plane.audited_writes(OPERATOR_USER).map_err(fail)?;
    let writes_before = converging_writes.len();
    // The gateway's own ConfigMap and Events are of the same kinds but made once, not per
    // domain: the audit log names them.
    let of_the_gateway = gateway_writes(&converging_writes[writes_at_start..], "edge");
    let domain_requests =
        requests_after.domain_kinds - requests_before.domain_kinds - of_the_gateway as f64;
    if domain_requests > 3.0 * count as f64 {
        eprintln!(
            "bench: {count} domains, requests of domain kinds ({of_the_gateway} of them the gateway's own): {:#?}",
            requests_after.domain_kinds_since(&requests_before)
        );
    }
    // A full resync of every domain and the gateway, plus margin.
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS + 10)).await;
    let writes = plane.audited_writes(OPERATOR_USER).map_err(fail)?;
    let steady_writes = writes.len() - writes_before;
    if steady_writes > 0 {
        // Say what they were: the figure alone does not tell a loop from a slow start.
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for write in &writes[writes_before..] {
            let path = write.uri.split('?').next().unwrap_or_default();
            let resource: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let kind = match resource.iter().position(|p| *p == "namespaces") {
                Some(at) => resource
                    .get(at + 2..)
                    .map(|r| r.iter().step_by(2).copied().collect::<Vec<_>>().join("/")),
                None => None,
            }
            .unwrap_or_else(|| path.to_string());
            *kinds.entry(format!("{} {kind}", write.verb)).or_default() += 1;
        }
        eprintln!("bench: {count} domains, writes after convergence: {kinds:?}");
    }
    let rss = peak_rss_mib(operator.id());
    // The floor is measured with the operator stopped, so that nothing else writes.
    drop(operator);
    let floor = write_floor(&plane, &ns, count).await?;
    let label = |what: &str| format!("{count} domains: {what}");
    let mut convergence = Figure::new(
        SCALE,
        label("operator start → all Ready"),
        converged.as_secs_f64(),
        "s",
    );
    let mut memory = Figure::new(SCALE, label("operator peak RSS"), rss, "MiB");
    if count >= 10_000 {
        convergence = convergence.at_most(120.0);
        memory = memory.at_most(256.0);
    }
    Ok(vec![
        Figure::new(
            SCALE,
            label("creating the MailDomains (bench, 16 at a time)"),
            created_in.as_secs_f64(),
            "s",
        ),
        convergence,
        memory,
        Figure::new(
            SCALE,
            label("API requests per second while converging"),
            requests / converged.as_secs_f64(),
            "req/s",
        ),
        Figure::new(
            SCALE,
            label("API requests per domain while converging (all requests)"),
            requests / count as f64,
            "",
        ),
        Figure::new(
            SCALE,
            label(
                "API requests per domain while converging (MailDomains, MailRelays, Events; not the gateway's own, no lists or watches)",
            ),
            domain_requests / count as f64,
            "",
        )
        .at_most(3.0),
        Figure::new(
            SCALE,
            label("API write floor (N ConfigMap creates + N status writes, 16 at a time)"),
            floor.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SCALE,
            label("convergence ÷ write floor"),
            converged.as_secs_f64() / floor.as_secs_f64(),
            "",
        ),
        Figure::new(
            SCALE,
            label(&format!(
                "writes in a steady-state resync ({RESYNC_SECONDS} s + 10 s)"
            )),
            steady_writes as f64,
            "",
        )
        .at_most(0.0),
    ])
}
