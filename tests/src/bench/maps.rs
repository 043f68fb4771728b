//! The gateway's Postfix maps for many recipients, through the agent's own code path:
//! render every MailRelay, check and assemble them as the agent does, and let
//! `Postfix::apply` compile the tables with `postmap`. Then one domain gains a recipient.

use super::Figure;
use mx_operator::agent::Postfix;
use mx_operator::api::{MailDomainSpec, MailGatewaySpec};
use mx_operator::render::{
    DomainInput, LocalSettings, RelayMode, assemble, check_gateway, check_relay,
    gateway_configmap_data, relay_data,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

const SECTION: &str = "5. Gateway maps (100 recipients per domain, agent code path, postmap lmdb)";
const PER_DOMAIN: usize = 100;

fn spec(domain: &str) -> Result<MailDomainSpec, String> {
    serde_json::from_value(json!({
        "domain": domain,
        "gatewayRef": {"name": "edge"},
        "primary": {"host": format!("mail.{domain}")},
        "recipients": {"catchAll": false, "inline": []},
    }))
    .map_err(|e| e.to_string())
}

fn recipients(domain: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("user{i:04}@{domain}")).collect()
}

pub async fn run(dir: &Path, total: usize) -> Result<Vec<Figure>, String> {
    let domains = total.div_ceil(PER_DOMAIN);
    let gateway: MailGatewaySpec =
        serde_json::from_value(json!({"mxHostnames": ["edge.mx.example.net"]}))
            .map_err(|e| e.to_string())?;
    let gateway_data = gateway_configmap_data("edge", &gateway, None).map_err(|e| e.to_string())?;
    let render = |index: usize, count: usize| -> Result<BTreeMap<String, String>, String> {
        let domain = format!("d{index:05}.bench.test");
        let spec = spec(&domain)?;
        relay_data(&DomainInput {
            spec: &spec,
            recipients: &recipients(&domain, count).into(),
            mode: RelayMode::Active,
            gateway_delivery: &gateway.delivery,
        })
        .map_err(|e| e.to_string())
    };
    let mut relays = (0..domains)
        .map(|i| render(i, PER_DOMAIN))
        .collect::<Result<Vec<_>, _>>()?;

    let folder = dir.join("maps-postfix");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
    let postfix = Postfix::new(folder.clone());
    let local = LocalSettings {
        overrides: vec![(
            "data_directory".into(),
            folder.join("data").display().to_string(),
        )],
        smtp_listen: None,
    };
    let load = |relays: &[BTreeMap<String, String>]| {
        let started = Instant::now();
        let gateway = check_gateway(&gateway_data)?;
        let checked = relays
            .iter()
            .map(check_relay)
            .collect::<Result<Vec<_>, _>>()?;
        let (assembled, problems) = assemble(&gateway, &checked, &Default::default(), &[], &local);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok::<_, String>((assembled, started.elapsed()))
    };

    let (assembled, checked_in) = load(&relays)?;
    let lines = assembled
        .tables
        .get(mx_operator::render::keys::RELAY_RECIPIENTS)
        .map(|t| t.source.lines().count())
        .unwrap_or(0);
    if lines < total {
        return Err(format!(
            "relay_recipients has {lines} lines, expected {total}"
        ));
    }
    let started = Instant::now();
    postfix.apply(&assembled).await.map_err(|e| e.to_string())?;
    let built_in = started.elapsed();

    relays[domains / 2] = render(domains / 2, PER_DOMAIN + 1)?;
    let (changed, rechecked_in) = load(&relays)?;
    let started = Instant::now();
    postfix.apply(&changed).await.map_err(|e| e.to_string())?;
    let rebuilt_in = started.elapsed();
    let size = std::fs::metadata(folder.join("maps/relay_recipients.lmdb"))
        .map(|m| m.len())
        .unwrap_or(0);

    let label = format!("{total} recipients in {domains} domains");
    Ok(vec![
        Figure::new(
            SECTION,
            format!("{label}: check + assemble"),
            checked_in.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            format!("{label}: postmap (all tables)"),
            built_in.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            "relay_recipients.lmdb size",
            size as f64 / 1_048_576.0,
            "MiB",
        ),
        Figure::new(
            SECTION,
            "one domain +1 recipient: check + assemble",
            rechecked_in.as_secs_f64(),
            "s",
        ),
        Figure::new(
            SECTION,
            "one domain +1 recipient: postmap",
            rebuilt_in.as_secs_f64(),
            "s",
        ),
    ])
}
