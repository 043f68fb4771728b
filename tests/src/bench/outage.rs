//! Section 6: what a mail outage costs the API server. Domains on one gateway replica,
//! every primary down, messages arriving for a minute: the MailDomains' status writes
//! (their `status.queue`) while the queue fills, and while it stands still.

use super::Figure;
use super::cluster::{domain, fail, is_ready, rcpt_code, sixteen_at_a_time, start_operator};
use crate::control_plane::{ControlPlane, Lifetime, OPERATOR_USER};
use crate::fixtures;
use crate::gateway::Gateway;
use crate::process::free_port;
use crate::smtp::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const SECTION: &str = "6. Queue status in an outage (one gateway replica, primaries down, operator's default queue poll of 15 s)";
const SENDING: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(300);

/// The operator's status writes to MailDomains so far.
fn status_writes(plane: &ControlPlane) -> Result<usize, String> {
    Ok(plane
        .audited_writes(OPERATOR_USER)
        .map_err(fail)?
        .iter()
        .filter(|w| {
            w.resource == "maildomains"
                && w.uri
                    .split('?')
                    .next()
                    .is_some_and(|p| p.ends_with("/status"))
        })
        .count())
}

/// Waits, reading them every second, until all `count` MailDomains pass `test`.
async fn until_all(
    api: &Api<MailDomain>,
    count: usize,
    limit: Duration,
    what: &str,
    test: impl Fn(&MailDomain) -> bool,
) -> Result<(), String> {
    crate::wait::poll_every(Duration::from_secs(1), limit, what, || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        (list.items.iter().filter(|md| test(md)).count() == count).then_some(())
    })
    .await
}

fn per_minute(count: usize, over: Duration) -> f64 {
    count as f64 * 60.0 / over.as_secs_f64()
}

pub async fn run(
    dir: &Path,
    domains: usize,
    messages: usize,
    standing: Duration,
) -> Result<Vec<Figure>, String> {
    let plane = ControlPlane::start(&dir.join("plane-outage"), Lifetime::TiedToThisProcess)
        .await
        .map_err(fail)?;
    plane.install_crds().await.map_err(fail)?;
    let _operator = start_operator(&plane, &dir.join("operator-outage.log"))?;
    let ns = plane.namespace("outage").await.map_err(fail)?;
    fixtures::apply::<MailGateway>(&ns, fixtures::gateway("edge", json!({}))).await;
    let name = |i: usize| format!("o{i:03}");
    let mail_domain = |i: usize| format!("{}.outage.test", name(i));
    // Every primary is a port of this machine where nothing listens.
    let primaries: Vec<SocketAddr> = (0..domains)
        .map(|_| free_port().map(|port| SocketAddr::from(([127, 0, 0, 1], port))))
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    sixteen_at_a_time(domains, |i| {
        let api: Api<MailDomain> = ns.api();
        let object = domain(
            &name(i),
            &mail_domain(i),
            "edge",
            vec![format!("alice@{}", mail_domain(i))],
            primaries[i],
        );
        async move {
            api.patch(
                &name(i),
                &PatchParams::apply("bench").force(),
                &Patch::Apply(object),
            )
            .await
            .map(|_| ())
            .map_err(fail)
        }
    })
    .await?;
    // Postfix's own retry times (the harness's are seconds, for tests): each message is
    // tried when it arrives and not again within the bench, as in the first minutes of
    // a real outage.
    let gateway = Gateway::start_on(
        &dir.join("gateway-outage"),
        &plane.operator_kubeconfig,
        &ns.name,
        "edge",
        None,
        &[
            "--set=queue_run_delay=300s",
            "--set=minimal_backoff_time=300s",
            "--set=maximal_backoff_time=4000s",
        ],
        Lifetime::TiedToThisProcess,
    )
    .await
    .map_err(fail)?;
    // The operator asks the agents it finds in the gateway's headless Service.
    gateway
        .list_as_pod(&ns, "edge", "edge-0")
        .await
        .map_err(fail)?;
    let api: Api<MailDomain> = ns.api();
    until_all(&api, domains, LIMIT, "every outage domain Ready", is_ready).await?;
    rcpt_code(
        gateway.smtp,
        &format!("alice@{}", mail_domain(domains - 1)),
        250,
    )
    .await?;

    let before = status_writes(&plane)?;
    let filling = Instant::now();
    let smtp = gateway.smtp;
    let recipients: Vec<String> = (0..messages)
        .map(|n| format!("alice@{}", mail_domain(n % domains)))
        .collect();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut client = Client::connect(smtp).map_err(fail)?;
        let pause = SENDING / messages as u32;
        for (n, recipient) in recipients.iter().enumerate() {
            let body = format!("Subject: outage {n}\r\n\r\nmessage {n}");
            let reply = client
                .send("sender@client.test", recipient, &body)
                .map_err(fail)?;
            if reply.code != 250 {
                return Err(format!("message {n} to {recipient}: {reply}"));
            }
            std::thread::sleep(pause);
        }
        client.quit();
        Ok(())
    })
    .await
    .map_err(fail)??;
    let sent_in = filling.elapsed();
    // Until every domain shows its full count's range and a deferral reason.
    let per_domain = messages / domains;
    let range = mx_operator::controller::messages_range(per_domain as u64);
    until_all(
        &api,
        domains,
        LIMIT.saturating_sub(filling.elapsed()),
        &format!("every domain showing {range} queued, with a reason"),
        |md| {
            md.status
                .as_ref()
                .and_then(|s| s.queue.as_ref())
                .is_some_and(|q| q.messages == range && q.reason.is_some())
        },
    )
    .await?;
    let filled_in = filling.elapsed();
    let filling_writes = status_writes(&plane)? - before;
    tokio::time::sleep(standing).await;
    let standing_writes = status_writes(&plane)? - before - filling_writes;
    if standing_writes > 0 {
        let mut after = vec![];
        for md in api.list(&ListParams::default()).await.map_err(fail)?.items {
            after.push(format!("{:?}", md.status.and_then(|s| s.queue)));
        }
        eprintln!(
            "bench: {standing_writes} status writes while the queue stood still; now: {after:#?}"
        );
    }
    let label = |what: &str| format!("{domains} domains, {messages} messages: {what}");
    Ok(vec![
        Figure::new(
            SECTION,
            label("sending them (one SMTP session, paced over a minute at least)"),
            sent_in.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            label("last message sent → every domain's QUEUED range and reason shown"),
            (filled_in - sent_in).as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            label("status writes while the queue filled"),
            filling_writes as f64,
            "",
        ),
        Figure::new(
            SECTION,
            label("status writes per domain while the queue filled"),
            filling_writes as f64 / domains as f64,
            "",
        ),
        Figure::new(
            SECTION,
            label("status writes per minute while the queue filled (first message → all shown)"),
            per_minute(filling_writes, filled_in),
            "/min",
        ),
        Figure::new(
            SECTION,
            label(&format!(
                "status writes per minute while the queue stood still ({} s)",
                standing.as_secs()
            )),
            per_minute(standing_writes, standing),
            "/min",
        )
        .at_most(0.0),
    ])
}
