//! Recipients at ISP scale, end to end: a domain whose list a real slapd holds, more
//! domains whose lists a real nginx serves until the gateway holds `http_domains + 1`
//! times `people` addresses, the operator binary on a fresh control plane splitting them
//! into shard MailRelays, and one gateway replica (agent and Postfix) answering RCPT. Then
//! one address added to or removed from the big domain, again and again, through a
//! ConfigMap it also reads (watched: the change reaches the operator at once), timed to the
//! new answer at the SMTP port.

use super::cluster::{fail, start_operator};
use super::{Figure, Spread};
use crate::control_plane::{ControlPlane, Lifetime};
use crate::gateway::Gateway;
use crate::ldap::{SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd};
use crate::nginx::Nginx;
use crate::process::free_port;
use crate::smtp::rcpt_reply;
use crate::{fixtures, wait};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use mx_operator::api::{MailDomain, MailGateway, MailRelay};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const SECTION: &str =
    "8. Recipients at scale (slapd and nginx → operator → shard MailRelays → agent → Postfix)";
const EVERY: Duration = Duration::from_millis(20);
const LOAD_LIMIT: Duration = Duration::from_secs(1800);
const CHANGE_LIMIT: Duration = Duration::from_secs(120);

async fn answer(
    smtp: SocketAddr,
    recipient: &str,
    code: u16,
    limit: Duration,
) -> Result<(), String> {
    wait::poll_every(
        EVERY,
        limit,
        &format!("RCPT {recipient} → {code}"),
        || async {
            rcpt_reply(smtp, "sender@client.test", recipient)
                .ok()
                .filter(|reply| reply.code == code)
                .map(|_| ())
        },
    )
    .await
}

fn domain(
    name: &str,
    mail_domain: &str,
    primary: SocketAddr,
    recipients: serde_json::Value,
) -> serde_json::Value {
    json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain", "metadata": {"name": name},
        "spec": {"domain": mail_domain, "gatewayRef": {"name": "edge"},
            "primary": {"host": primary.ip().to_string(), "port": primary.port(), "tls": "None"},
            "recipients": recipients}})
}

pub async fn run(
    dir: &Path,
    people: usize,
    http_domains: usize,
    changes: usize,
) -> Result<Vec<Figure>, String> {
    let error = |e: crate::HarnessError| e.to_string();
    let loading = Instant::now();
    let everyone = crate::ldap::numbered(people, "dir.example");
    let slapd = Slapd::start(&dir.join("recipients-slapd"), &everyone).map_err(error)?;
    drop(everyone);
    let nginx = Nginx::start(&dir.join("recipients-nginx")).map_err(error)?;
    for k in 0..http_domains {
        let list: String = (0..people)
            .map(|i| format!("u{i}@d{k}.example\n"))
            .collect();
        nginx.serve(&format!("d{k}.txt"), &list).map_err(error)?;
    }
    eprintln!(
        "bench: slapd and nginx loaded in {:.0} s",
        loading.elapsed().as_secs_f64()
    );

    let plane = ControlPlane::start(&dir.join("plane-recipients"), Lifetime::TiedToThisProcess)
        .await
        .map_err(fail)?;
    plane.install_crds().await.map_err(fail)?;
    let operator = start_operator(&plane, &dir.join("operator-recipients.log"))?;
    let ns = plane.namespace("bench").await.map_err(fail)?;
    // No mail is sent, so the primaries need no listener.
    let primary: SocketAddr = ([127, 0, 0, 1], free_port().map_err(fail)?).into();
    fixtures::apply::<MailGateway>(&ns, fixtures::gateway("edge", json!({}))).await;
    fixtures::apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ldap", "labels": {"mx-operator.io/recipient-source": "true"}},
               "stringData": {"password": SERVICE_PASSWORD}}),
    )
    .await;
    fixtures::apply_dynamic(
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"},
               "data": {"list": "# added by hand\n"}}),
    )
    .await;
    let gateway = Gateway::of_namespace(&plane, &ns, "edge")
        .await
        .map_err(fail)?;
    let smtp = gateway.smtp;

    // The directory's domain first, alone: its sync and its first answers.
    let ldap = json!({
        "url": slapd.url, "insecure": true, "bindDN": SERVICE_DN, "baseDN": format!("ou=people,{SUFFIX}"),
        "passwordSecretRef": {"name": "ldap", "key": "password"}, "refreshInterval": "1h",
    });
    let recipients = json!({"ldap": ldap, "configMapRef": {"name": "extra", "key": "list"}});
    let started = Instant::now();
    fixtures::apply_dynamic(&ns, domain("dir", "dir.example", primary, recipients)).await;
    let domains = ns.api::<MailDomain>();
    wait::poll_every(EVERY, LOAD_LIMIT, "the directory synced", || async {
        let status = domains.get("dir").await.ok()?.status?;
        let source = status.recipient_sources.first()?;
        (source.addresses == Some(people as i64)).then_some(())
    })
    .await?;
    let synced = started.elapsed();
    answer(
        smtp,
        &format!("u{}@dir.example", people - 1),
        250,
        LOAD_LIMIT,
    )
    .await?;
    let first_250 = started.elapsed();
    answer(smtp, "u0@dir.example", 250, LOAD_LIMIT).await?;
    let relays = ns.api::<MailRelay>();
    let shards = || async {
        relays
            .list(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|relay| {
                        relay
                            .metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("recipients-"))
                    })
                    .count()
            })
            .map_err(fail)
    };
    let dir_shards = shards().await?;

    // The other domains, all at once, until the gateway holds every list.
    let started = Instant::now();
    for k in 0..http_domains {
        let http = json!({"http": {"url": format!("{}/d{k}.txt", nginx.http_url), "refreshInterval": "1h"}});
        fixtures::apply_dynamic(
            &ns,
            domain(&format!("d{k}"), &format!("d{k}.example"), primary, http),
        )
        .await;
    }
    for k in 0..http_domains {
        answer(
            smtp,
            &format!("u{}@d{k}.example", people - 1),
            250,
            LOAD_LIMIT,
        )
        .await?;
        answer(smtp, &format!("u0@d{k}.example"), 250, LOAD_LIMIT).await?;
    }
    let all_loaded = started.elapsed();
    let total = people * (http_domains + 1);
    let all_shards = shards().await?;
    eprintln!(
        "bench: {total} recipients on the gateway in {all_shards} shards after {:.0} s",
        all_loaded.as_secs_f64()
    );

    // One address in, one out, through the watched ConfigMap, with everything loaded.
    let configmaps = ns.api::<ConfigMap>();
    let mut took = vec![];
    for i in 0..changes {
        let added = i % 2 == 0;
        let user = format!("new{}@dir.example", i / 2);
        let list = if added {
            format!("{user}\n")
        } else {
            String::from("# none\n")
        };
        let started = Instant::now();
        configmaps
            .patch(
                "extra",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "extra"}, "data": {"list": list}})),
            )
            .await
            .map_err(fail)?;
        answer(smtp, &user, if added { 250 } else { 550 }, CHANGE_LIMIT).await?;
        took.push(started.elapsed());
    }

    let operator_peak = super::memory_mib(&operator.id().to_string(), "VmHWM:");
    let agent_peak = gateway.agent_pid().map_or(f64::NAN, |pid| {
        super::memory_mib(&pid.to_string(), "VmHWM:")
    });
    let mut figures = vec![
        Figure::new(
            SECTION,
            format!("directory domain: {people} entries, full paged sync (apply → synced)"),
            synced.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            "directory domain: apply → first 250 at SMTP",
            first_250.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            "directory domain: shard MailRelays",
            dir_shards as f64,
            "",
        ),
        Figure::new(
            SECTION,
            format!(
                "{http_domains} more domains of {people} over HTTP: apply → every list answering"
            ),
            all_loaded.as_secs_f64(),
            "s",
        ),
        Figure::new(SECTION, "recipients on the gateway", total as f64, ""),
        Figure::new(
            SECTION,
            "shard MailRelays on the gateway",
            all_shards as f64,
            "",
        ),
    ];
    let spread = Spread::of(&took);
    let name =
        format!("one address added or removed ({changes} changes, {total} loaded) → new answer");
    let mut these = spread.figures(SECTION, &name, true);
    let p99 = these.remove(2).at_most(3000.0);
    these.insert(2, p99);
    figures.extend(these);
    figures.push(Figure::new(
        SECTION,
        "operator peak RSS",
        operator_peak,
        "MiB",
    ));
    figures.push(Figure::new(SECTION, "agent peak RSS", agent_peak, "MiB"));
    drop(gateway);
    drop(operator);
    Ok(figures)
}
