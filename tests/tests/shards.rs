//! A recipient list longer than one MailRelay holds, end to end: a list of 100,000 and then
//! 200,000 addresses served by nginx, the operator on the real API server splitting it into
//! shard MailRelays, and a gateway replica (agent and Postfix) answering RCPT from one
//! table per shard. A change of two addresses rewrites only the tables of their shards,
//! a new shard count arrives without a wrong answer for anyone listed, and a list that fits
//! again leaves no shard behind.

use kube::ResourceExt;
use kube::api::ListParams;
use mx_operator::api::{MailDomain, MailGateway, MailRelay};
use mx_operator::render::shards::{shard_of, split};
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::gateway::Gateway;
use mx_operator_tests::nginx::Nginx;
use mx_operator_tests::operator::namespace_with_operator;
use mx_operator_tests::smtp::{Sink, rcpt_reply};
use mx_operator_tests::wait::until;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const LIMIT: Duration = Duration::from_secs(120);
const LIST: &str = "big.txt";

fn address(i: usize) -> String {
    format!("user{i}@big.example")
}

fn list(addresses: impl Iterator<Item = usize>) -> String {
    addresses.map(|i| format!("{}\n", address(i))).collect()
}

/// The shard count the renderer gives `addresses` of big.example.
fn shard_count(addresses: impl Iterator<Item = usize>) -> usize {
    let lines = addresses.map(|i| format!("{} OK\n", address(i))).collect();
    let relay = BTreeMap::from([
        ("domain".to_string(), "big.example".to_string()),
        ("relay_recipients".to_string(), lines),
    ]);
    split(relay).shards.len()
}

fn code(smtp: SocketAddr, recipient: &str) -> Option<u16> {
    rcpt_reply(smtp, "sender@client.test", recipient)
        .ok()
        .map(|reply| reply.code)
}

async fn answer_becomes(smtp: SocketAddr, recipient: &str, code_wanted: u16) -> Duration {
    let started = Instant::now();
    until(
        LIMIT,
        &format!("RCPT {recipient} → {code_wanted}"),
        || async { (code(smtp, recipient) == Some(code_wanted)).then_some(()) },
    )
    .await;
    started.elapsed()
}

/// The shard MailRelays of big.example, by name.
async fn shard_names(relays: &kube::Api<MailRelay>) -> Vec<String> {
    let mut names: Vec<String> = relays
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| name.starts_with("recipients-"))
        .collect();
    names.sort();
    names
}

/// When each shard table of the gateway was last written, by file name.
fn shard_tables(maps: &Path) -> BTreeMap<String, SystemTime> {
    std::fs::read_dir(maps)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let shard = name.starts_with("relay_recipients-") && name.ends_with(".lmdb");
            shard.then(|| (name, entry.metadata().unwrap().modified().unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn a_list_past_one_relay_is_sharded_and_a_change_rewrites_only_its_shards() {
    let sink = Sink::start().unwrap();
    let (plane, ns) = namespace_with_operator("shards").await;
    let nginx = Nginx::start(&plane.dir.join(format!("nginx-{}", ns.name))).expect("nginx");
    nginx.serve(LIST, &list(0..100_000)).unwrap();
    apply::<MailGateway>(&ns, gateway("edge", json!({}))).await;
    apply::<MailDomain>(
        &ns,
        domain(
            "big",
            "big.example",
            json!({"primary": {"host": sink.address.ip().to_string(), "port": sink.address.port(), "tls": "None"},
                   "recipients": {"http": {"url": format!("{}/{LIST}", nginx.http_url), "refreshInterval": "10s"},
                                  // The list shrinks to ten at the end, on purpose.
                                  "maxShrink": {"percent": 100}}}),
        ),
    )
    .await;
    let domains = ns.api::<MailDomain>();
    let relays = ns.api::<MailRelay>();
    let first = shard_count(0..100_000);
    let second = shard_count((0..200_000).filter(|i| *i != 5));
    assert!(first >= 2 && second > first, "{first} then {second}");
    let in_first = format!("in {first} shard MailRelays");
    let configured = until(LIMIT, "the list relayed in shards", || async {
        let md = domains.get("big").await.ok()?;
        let condition = md.condition("RelayConfigured")?.clone();
        condition.message.contains(&in_first).then_some(condition)
    })
    .await;
    assert_eq!(configured.reason, "Configured", "{configured:?}");
    assert_eq!(
        shard_names(&relays).await,
        (0..first)
            .map(|i| format!("recipients-{i}-of-{first}.big.example"))
            .collect::<Vec<_>>()
    );
    let relay = relays.get("relay-big.example").await.unwrap();
    let data = relay.data.unwrap_or_default();
    assert_eq!(data.get("recipient_shards"), Some(&first.to_string()));
    assert!(!data.contains_key("relay_recipients"));

    let gateway = Gateway::of_namespace(plane, &ns, "edge")
        .await
        .expect("gateway replica");
    let smtp = gateway.smtp;
    let maps = gateway.dir.join("conf/maps");
    for listed in [0, 1, 50_000, 99_999] {
        answer_becomes(smtp, &address(listed), 250).await;
    }
    assert_eq!(code(smtp, "nobody@big.example"), Some(550));
    let tables_before = shard_tables(&maps);
    assert_eq!(tables_before.len(), first, "{tables_before:?}");

    // One address added and one removed: their shards' tables are written again, and only
    // those.
    nginx
        .serve(LIST, &list((0..100_001).filter(|i| *i != 5)))
        .unwrap();
    let added = answer_becomes(smtp, &address(100_000), 250).await;
    answer_becomes(smtp, &address(5), 550).await;
    let tables_after = shard_tables(&maps);
    let rewritten: Vec<&String> = tables_after
        .iter()
        .filter(|(name, modified)| tables_before.get(*name) != Some(modified))
        .map(|(name, _)| name)
        .collect();
    let mut touched: Vec<String> = [100_000, 5]
        .iter()
        .map(|i| {
            format!(
                "relay_recipients-{}-of-{first}.big.example.lmdb",
                shard_of(&address(*i), first)
            )
        })
        .collect();
    touched.sort();
    touched.dedup();
    assert_eq!(
        rewritten
            .iter()
            .map(|name| name.as_str())
            .collect::<Vec<_>>(),
        touched,
        "only the changed shards' tables"
    );
    println!(
        "100,000 addresses in {first} shards: an added address answered 250 after {added:?} (up to one 10 s refresh); tables rewritten: {rewritten:?}"
    );

    // Twice as many: more shards. While they arrive the first set keeps serving; nobody
    // listed is refused at any moment.
    nginx
        .serve(LIST, &list((0..200_000).filter(|i| *i != 5)))
        .unwrap();
    let sampled = [0, 1, 2, 3, 4, 6, 7, 50_000, 99_999];
    let mut reads = 0;
    while code(smtp, &address(150_000)) != Some(250) {
        for listed in sampled {
            let answer = code(smtp, &address(listed));
            assert_ne!(
                answer,
                Some(550),
                "{} refused while resharding",
                address(listed)
            );
            reads += 1;
        }
        assert!(reads < 20_000, "the eight shards never served");
    }
    let of_second = format!("-of-{second}.");
    until(LIMIT, "the first set's tables removed", || async {
        let tables = shard_tables(&maps);
        (tables.len() == second && tables.keys().all(|name| name.contains(&of_second)))
            .then_some(())
    })
    .await;
    assert_eq!(shard_names(&relays).await.len(), second);
    println!("resharding {first} → {second}: {reads} RCPT answers read meanwhile, none 550");

    // A list that fits again: back in the relay, no shard left behind.
    nginx.serve(LIST, &list(0..10)).unwrap();
    answer_becomes(smtp, &address(150_000), 550).await;
    assert_eq!(code(smtp, &address(9)), Some(250));
    until(LIMIT, "the shard MailRelays removed", || async {
        shard_names(&relays).await.is_empty().then_some(())
    })
    .await;
    until(LIMIT, "the shard tables removed", || async {
        shard_tables(&maps).is_empty().then_some(())
    })
    .await;
}
