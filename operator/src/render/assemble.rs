//! The agent's side of the renderer: check what a MailRelay holds line by line, and
//! merge the gateway ConfigMap and every MailRelay into the files Postfix reads.
//!
//! The checks accept exactly what `relay_data` writes, so a ConfigMap edited by
//! hand or by anything else cannot smuggle a parameter, a service or another domain's map
//! entry into the gateway; the agent keeps the last good version of such a ConfigMap.

use super::gateway::DEFAULT_MESSAGE_SIZE_LIMIT;
use super::keys;
use super::postfix::{
    CLASS_PREFIX, TRANSPORT_PREFIX, checked_domain, class_name, domain_table, is_generated_name,
    is_recipient_of, token,
};
use super::shards::CheckedShard;
use crate::api::validate::normalize_domain;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A MailRelay that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedRelay {
    pub domain: String,
    /// Empty when the domain is withdrawn (not relayed at all).
    data: BTreeMap<String, String>,
}

impl CheckedRelay {
    pub fn relayed(&self) -> bool {
        !self.data.is_empty()
    }

    /// How many shards hold the domain's recipients, when its relay names them.
    pub fn recipient_shards(&self) -> Option<usize> {
        self.data
            .get(keys::RECIPIENT_SHARDS)
            .and_then(|count| count.parse().ok())
    }

    /// Whether the domain's mail is held (`spec.delivery.hold`): queued, not delivered.
    pub fn held(&self) -> bool {
        self.data.get(keys::HOLD).is_some_and(|hold| hold == "true")
    }

    /// The ConfigMap `data` this was checked from.
    pub fn source(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// Only the way to the primary: the transport entry, its delivery service and that
    /// service's limits. Assembled, it delivers mail already queued for the domain with the
    /// same transport, TLS level and pace, while the domain is no longer a relay domain, so
    /// new mail for it is refused. Not a hold: no spec is left to release it, so the mail
    /// goes to the primary. None when the relay carries no route (withdrawn).
    pub fn route_only(&self) -> Option<CheckedRelay> {
        if !self.relayed() {
            return None;
        }
        let transport = self.data.get(keys::TRANSPORT)?;
        let service = transport.split_once(' ')?.1.split(':').next()?;
        let limits: String = self
            .data
            .get(keys::MAIN_CF)
            .map(String::as_str)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with(&format!("{service}_")))
            .map(|line| format!("{line}\n"))
            .collect();
        let mut data = BTreeMap::from([
            (keys::DOMAIN.to_string(), self.domain.clone()),
            (keys::TRANSPORT.to_string(), transport.clone()),
            (keys::MAIN_CF.to_string(), limits),
        ]);
        if let Some(master_cf) = self.data.get(keys::MASTER_CF) {
            data.insert(keys::MASTER_CF.to_string(), master_cf.clone());
        }
        Some(CheckedRelay {
            domain: self.domain.clone(),
            data,
        })
    }
}

/// The gateway ConfigMap's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayFiles {
    main_cf: String,
    master_cf: String,
    /// Replicas with this ordinal or a higher one are being removed by a scale-in.
    pub retiring_from: Option<u32>,
    /// What the operator presents to read `/status`; None from an operator before it.
    pub agent_token: Option<String>,
}

impl GatewayFiles {
    /// Postfix's queue directory: the host's override, or the gateway's `main.cf` value.
    pub fn queue_directory(&self, local: &LocalSettings) -> Option<std::path::PathBuf> {
        const NAME: &str = "queue_directory";
        let gateway = self.main_cf.lines().filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == NAME).then(|| value.trim().to_string())
        });
        let local = local
            .overrides
            .iter()
            .filter(|(name, _)| name == NAME)
            .map(|(_, value)| value.clone());
        gateway
            .chain(local)
            .last()
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
    }
}

/// Settings of this agent's host that override the gateway's (paths, listen address).
#[derive(Clone, Debug, Default)]
pub struct LocalSettings {
    /// `main.cf` parameters appended last, so they win.
    pub overrides: Vec<(String, String)>,
    /// Replaces the `smtp inet` service's address (`127.0.0.1:2525`); unset: port 25.
    pub smtp_listen: Option<String>,
}

impl LocalSettings {
    /// The port the `smtp inet` service listens on.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_listen
            .as_deref()
            .and_then(|listen| listen.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or(25)
    }
}

/// How Postfix reads a table: indexed (`postmap`, picked up without a reload) or `cidr`
/// (read when a process starts, so a change needs a reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableType {
    Lmdb,
    Cidr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub kind: TableType,
    /// Shared: a shard's lines are held once, by its check, this and what was applied.
    pub source: std::sync::Arc<str>,
}

/// Everything Postfix reads, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    pub main_cf: String,
    pub master_cf: String,
    /// File name under `maps/` → table.
    pub tables: BTreeMap<String, Table>,
}

impl Assembled {
    /// The domains whose mail this configuration holds.
    pub fn held_domains(&self) -> BTreeSet<String> {
        self.tables
            .get(keys::TRANSPORT)
            .map(|table| {
                table
                    .source
                    .lines()
                    .filter_map(|line| line.split_once(' '))
                    .filter(|(_, next_hop)| *next_hop == format!("{HOLD_SERVICE}:"))
                    .map(|(domain, _)| domain.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The shortest agent token taken: the operator draws 64 hex digits (256 bits).
const MIN_AGENT_TOKEN: usize = 32;

/// Whether `token` may be the agent token: long enough, and letters and digits only (it
/// travels in an HTTP header).
pub fn check_agent_token(token: &str) -> Result<(), String> {
    if token.len() >= MIN_AGENT_TOKEN && token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not at least {MIN_AGENT_TOKEN} letters and digits",
            keys::AGENT_TOKEN
        ))
    }
}

/// Checks the gateway ConfigMap.
pub fn check_gateway(data: &BTreeMap<String, String>) -> Result<GatewayFiles, String> {
    let file = |key: &str| {
        data.get(key)
            .cloned()
            .ok_or_else(|| format!("has no {key:?} key"))
    };
    let main_cf = file(keys::MAIN_CF)?;
    for (number, line) in main_cf.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parameter = line.split_once(" =").map(|(name, _)| name);
        if !parameter.is_some_and(|name| token(name).is_ok() && !name.starts_with(' ')) {
            return Err(format!(
                "main.cf line {}: {line:?} is not `name = value`",
                number + 1
            ));
        }
    }
    let master_cf = file(keys::MASTER_CF)?;
    if !master_cf.lines().any(is_smtp_listener) {
        return Err("master.cf has no `smtp inet` service".into());
    }
    let retiring_from = data
        .get(keys::RETIRING_FROM)
        .map(|from| {
            from.parse().map_err(|_| {
                format!(
                    "{:?} is not a replica ordinal: {from:?}",
                    keys::RETIRING_FROM
                )
            })
        })
        .transpose()?;
    let agent_token = data
        .get(keys::AGENT_TOKEN)
        .map(|token| check_agent_token(token).map(|()| token.clone()))
        .transpose()?;
    Ok(GatewayFiles {
        main_cf,
        master_cf,
        retiring_from,
        agent_token,
    })
}

/// An `inet` service whose command is `smtpd` (options may follow).
fn is_smtp_listener(line: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields.get(1) == Some(&"inet") && fields.get(7) == Some(&"smtpd")
}

/// Checks one MailRelay's `data`.
pub fn check_relay(data: &BTreeMap<String, String>) -> Result<CheckedRelay, String> {
    let domain = checked_domain(data)?;
    if let Some(unknown) = data.keys().find(|k| !keys::RELAY.contains(&k.as_str())) {
        return Err(format!("unknown key {unknown:?}"));
    }
    if !data.contains_key(keys::RELAY_DOMAINS) {
        return Ok(CheckedRelay {
            domain,
            data: BTreeMap::new(),
        });
    }
    let get = |key: &str| data.get(key).map(String::as_str).unwrap_or_default();
    let entries = |key: &str| -> Result<Vec<(&str, &str)>, String> {
        get(key)
            .lines()
            .map(|line| {
                line.split_once(' ')
                    .filter(|(k, v)| token(k).is_ok() && !v.contains('$'))
                    .ok_or_else(|| format!("{key}: {line:?} is not `key value`"))
            })
            .collect()
    };
    let within = |key: &str, ok: &dyn Fn(&str, &str) -> bool| -> Result<(), String> {
        for (k, v) in entries(key)? {
            if !ok(k, v) {
                return Err(format!(
                    "{key}: entry {k:?} → {v:?} is not allowed for {domain}"
                ));
            }
        }
        Ok(())
    };
    if entries(keys::RELAY_DOMAINS)? != [(domain.as_str(), "OK")] {
        return Err(format!("relay_domains must be exactly `{domain} OK`"));
    }
    within(keys::RELAY_RECIPIENTS, &|k, v| {
        v == "OK" && is_recipient_of(k, &domain)
    })?;
    if let Some(count) = data.get(keys::RECIPIENT_SHARDS) {
        super::shards::parse_count(count)
            .map_err(|problem| format!("recipient_shards: {problem}"))?;
        if data.contains_key(keys::RELAY_RECIPIENTS) {
            return Err("relay_recipients and recipient_shards: one or the other".into());
        }
    }

    let transport = entries(keys::TRANSPORT)?;
    let [(key, next_hop)] = transport.as_slice() else {
        return Err("transport must have exactly one entry".into());
    };
    let name = next_hop.split(':').next().unwrap_or_default();
    if *key != domain || !is_generated_name(name, TRANSPORT_PREFIX) || !next_hop_ok(next_hop, name)
    {
        return Err(format!(
            "transport: {key:?} → {next_hop:?} is not allowed for {domain}"
        ));
    }
    let service = get(keys::MASTER_CF);
    let prefix = format!("{name} unix - - n - - smtp -o smtp_tls_security_level=");
    let level_ok = service
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix('\n'))
        .is_some_and(|level| ["none", "may", "encrypt", "verify", "secure"].contains(&level));
    if !level_ok {
        return Err(format!(
            "master.cf: {service:?} is not the delivery service {name}"
        ));
    }

    let class = class_name(&domain);
    within(keys::RECIPIENT_POLICY, &|k, v| {
        k == domain && (v == class || (v.starts_with("450 4.7.1 ") && token_words(v)))
    })?;
    within(keys::SENDER_ACCESS, &|_, v| {
        v.starts_with("REJECT ") && token_words(v)
    })?;
    within(keys::CLIENT_ACCESS, &|k, v| {
        network_ok(k) && v.starts_with("REJECT ") && token_words(v)
    })?;
    if let Some(size) = data.get(keys::MESSAGE_SIZE_LIMIT)
        && size.parse::<u64>().is_err()
    {
        return Err(format!("message_size_limit {size:?} is not a number"));
    }
    if let Some(hold) = data.get(keys::HOLD)
        && hold != "true"
    {
        return Err(format!("hold {hold:?} is not `true`"));
    }
    check_parameters(&domain, name, data)?;
    Ok(CheckedRelay {
        domain,
        data: data.clone(),
    })
}

/// The parameter the shards' tables are added to, after the gateway's own table.
const RELAY_RECIPIENT_MAPS: &str = "relay_recipient_maps";

/// The reason held mail is deferred with, after its DSN status code.
pub const HELD_REASON: &str = "delivery held by spec.delivery.hold";

/// The delivery service of held domains. Not Postfix's own `retry`: the SMTP server
/// refuses new mail (450) for a domain routed there, and a held domain takes mail.
const HOLD_SERVICE: &str = "mxhold";

/// A command that defers every recipient it is given (exit status 75, EX_TEMPFAIL) and
/// says why; run as `nobody`, as the pipe service requires a user without privileges. A
/// flush (`postqueue -f`) goes through it too, and held mail ages as in an outage.
fn hold_service() -> String {
    format!(
        "{HOLD_SERVICE} unix - n n - - pipe user=nobody argv=/bin/sh -c {{echo {HELD_REASON}; exit 75}}\n"
    )
}

/// The transport entry of a held domain.
fn held_transport(domain: &str) -> String {
    format!("{domain} {HOLD_SERVICE}:\n")
}

/// Reply text of an access-map action: words of printable characters, no expansions.
fn token_words(value: &str) -> bool {
    value.split(' ').all(|word| {
        !word.is_empty() && !word.contains(['$', '{', '}']) && !word.chars().any(char::is_control)
    })
}

fn next_hop_ok(next_hop: &str, name: &str) -> bool {
    let Some(rest) = next_hop.strip_prefix(&format!("{name}:[")) else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once("]:") else {
        return false;
    };
    let host_ok = host.parse::<IpAddr>().is_ok() || normalize_domain(host).as_deref() == Ok(host);
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn network_ok(key: &str) -> bool {
    let (address, bits) = key.split_once('/').unwrap_or((key, "0"));
    address.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
}

/// The relay's `main.cf` lines: its transport's limits and its restriction class, nothing else.
fn check_parameters(
    domain: &str,
    transport: &str,
    data: &BTreeMap<String, String>,
) -> Result<(), String> {
    let class = class_name(domain);
    let allowed_restrictions = [
        format!(
            "check_client_access cidr:$config_directory/maps/{}",
            domain_table(keys::CLIENT_ACCESS, domain)
        ),
        format!(
            "check_sender_access lmdb:$config_directory/maps/{}",
            domain_table(keys::SENDER_ACCESS, domain)
        ),
        "reject_plaintext_session".to_string(),
    ];
    for line in data
        .get(keys::MAIN_CF)
        .map(String::as_str)
        .unwrap_or_default()
        .lines()
    {
        let Some((name, value)) = line.split_once(" = ") else {
            return Err(format!("main.cf: {line:?} is not `name = value`"));
        };
        let ok = if name == class {
            value.split(", ").all(|item| {
                allowed_restrictions.iter().any(|a| a == item)
                    || item
                        .strip_prefix("reject_rbl_client ")
                        .is_some_and(|zone| normalize_domain(zone).as_deref() == Ok(zone))
            }) && (!value.contains("client_access") || data.contains_key(keys::CLIENT_ACCESS))
                && (!value.contains("sender_access") || data.contains_key(keys::SENDER_ACCESS))
        } else if name == format!("{transport}_destination_concurrency_limit") {
            value.parse::<u16>().is_ok_and(|n| n > 0)
        } else if name == format!("{transport}_destination_rate_delay") {
            value
                .strip_suffix('s')
                .is_some_and(|n| n.parse::<u32>().is_ok())
        } else {
            false
        };
        if !ok {
            return Err(format!("main.cf: {line:?} is not allowed for {domain}"));
        }
    }
    Ok(())
}

/// Merges the gateway files and the relays (sorted by domain) into what Postfix reads,
/// and the routes of `draining` relays (see [`CheckedRelay::route_only`]) whose domain no
/// relay serves. A relay whose lines clash with an earlier one (the same domain twice, or
/// one parameter with two values) is left out, and the reason returned beside the result.
///
/// A relay that names shards takes its recipients from `shards` (a complete set, by
/// domain), each shard a table of its own; without a set its recipients answer 450 until
/// one is complete: half a list would reject real recipients.
pub fn assemble(
    gateway: &GatewayFiles,
    relays: &[CheckedRelay],
    shards: &BTreeMap<String, Vec<std::sync::Arc<CheckedShard>>>,
    draining: &[CheckedRelay],
    local: &LocalSettings,
) -> (Assembled, Vec<String>) {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    let mut services = BTreeSet::new();
    let mut shared: BTreeMap<&str, String> = [
        keys::RELAY_DOMAINS,
        keys::RELAY_RECIPIENTS,
        keys::TRANSPORT,
        keys::RECIPIENT_POLICY,
    ]
    .into_iter()
    .map(|k| (k, String::new()))
    .collect();
    let mut tables = BTreeMap::from([(
        "no_local_recipients".to_string(),
        Table {
            kind: TableType::Lmdb,
            source: "".into(),
        },
    )]);
    let mut size_limit = None::<u64>;
    let mut shard_tables = Vec::new();
    let mut sorted: Vec<&CheckedRelay> = relays.iter().filter(|r| r.relayed()).collect();
    sorted.sort_by(|a, b| a.domain.cmp(&b.domain));
    let served: BTreeSet<&str> = sorted.iter().map(|r| r.domain.as_str()).collect();
    let mut routes: Vec<CheckedRelay> = draining
        .iter()
        .filter(|r| !served.contains(r.domain.as_str()))
        .filter_map(CheckedRelay::route_only)
        .collect();
    routes.sort_by(|a, b| a.domain.cmp(&b.domain));
    for relay in sorted.into_iter().chain(&routes) {
        if !seen.insert(relay.domain.clone()) {
            problems.push(format!(
                "{} is carried by two MailRelays; the second is ignored",
                relay.domain
            ));
            continue;
        }
        let value = |key: &str| relay.data.get(key).map(String::as_str).unwrap_or_default();
        let own: Vec<(String, String)> = value(keys::MAIN_CF)
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some((name, _)) = own
            .iter()
            .find(|(k, v)| parameters.get(k).is_some_and(|existing| existing != v))
        {
            problems.push(format!(
                "{}: {name} clashes with another domain's value; the domain is left out",
                relay.domain
            ));
            continue;
        }
        parameters.extend(own);
        services.insert(value(keys::MASTER_CF).to_string());
        let set = relay.recipient_shards().map(|_| shards.get(&relay.domain));
        for shard in set.flatten().into_iter().flatten() {
            let name = domain_table(
                &format!(
                    "{}-{}-of-{}",
                    keys::RELAY_RECIPIENTS,
                    shard.index,
                    shard.count
                ),
                &relay.domain,
            );
            tables.insert(
                name.clone(),
                Table {
                    kind: TableType::Lmdb,
                    source: shard.lines.clone(),
                },
            );
            shard_tables.push(name);
        }
        for (key, text) in shared.iter_mut() {
            if *key == keys::RECIPIENT_POLICY && set == Some(None) {
                text.push_str(&format!(
                    "{} 450 4.7.1 The recipient list of {} is being loaded, try again later\n",
                    relay.domain, relay.domain
                ));
            } else if *key == keys::TRANSPORT && relay.held() {
                text.push_str(&held_transport(&relay.domain));
                services.insert(hold_service());
            } else if let Some(lines) = relay.data.get(*key) {
                text.push_str(lines);
            }
        }
        for (key, kind) in [
            (keys::SENDER_ACCESS, TableType::Lmdb),
            (keys::CLIENT_ACCESS, TableType::Cidr),
        ] {
            if let Some(source) = relay.data.get(key) {
                tables.insert(
                    domain_table(key, &relay.domain),
                    Table {
                        kind,
                        source: source.as_str().into(),
                    },
                );
            }
        }
        let limit = relay
            .data
            .get(keys::MESSAGE_SIZE_LIMIT)
            .and_then(|s| s.parse().ok());
        size_limit = size_limit.max(limit);
    }
    for (key, source) in shared {
        tables.insert(
            key.to_string(),
            Table {
                kind: TableType::Lmdb,
                source: source.into(),
            },
        );
    }

    // Overridden parameters are left out of the gateway's lines rather than repeated,
    // which Postfix would warn about on every start.
    if !shard_tables.is_empty() {
        let maps: Vec<String> = std::iter::once(keys::RELAY_RECIPIENTS.to_string())
            .chain(shard_tables)
            .map(|name| format!("lmdb:$config_directory/maps/{name}"))
            .collect();
        parameters.insert(RELAY_RECIPIENT_MAPS.into(), maps.join(", "));
    }
    let mut main_cf: String = gateway
        .main_cf
        .lines()
        .filter(|line| {
            let name = line.split_once(" =").map(|(name, _)| name);
            let replaced =
                name == Some(RELAY_RECIPIENT_MAPS) && parameters.contains_key(RELAY_RECIPIENT_MAPS);
            !replaced
                && !local
                    .overrides
                    .iter()
                    .any(|(o, _)| Some(o.as_str()) == name)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    main_cf.push_str("\n# Added by the agent from the MailRelays.\n");
    let classes: Vec<&str> = parameters
        .keys()
        .map(String::as_str)
        .filter(|k| is_generated_name(k, CLASS_PREFIX))
        .collect();
    main_cf.push_str(&format!(
        "smtpd_restriction_classes = {}\n",
        classes.join(" ")
    ));
    // The gateway takes the largest message any of its domains takes.
    main_cf.push_str(&format!(
        "message_size_limit = {}\n",
        size_limit.unwrap_or(DEFAULT_MESSAGE_SIZE_LIMIT)
    ));
    for (name, value) in &parameters {
        main_cf.push_str(&format!("{name} = {value}\n"));
    }
    if !local.overrides.is_empty() {
        main_cf.push_str("# Local to this host.\n");
        for (name, value) in &local.overrides {
            main_cf.push_str(&format!("{name} = {value}\n"));
        }
    }

    let mut master_cf = String::new();
    for line in gateway.master_cf.lines() {
        match (&local.smtp_listen, is_smtp_listener(line)) {
            (Some(address), true) => {
                let rest = line
                    .split_once(char::is_whitespace)
                    .map(|(_, r)| r)
                    .unwrap_or_default();
                master_cf.push_str(&format!("{address} {}\n", rest.trim_start()));
            }
            _ => {
                master_cf.push_str(line);
                master_cf.push('\n');
            }
        }
    }
    for service in services {
        master_cf.push_str(&service);
    }
    (
        Assembled {
            main_cf,
            master_cf,
            tables,
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_SHARDS: BTreeMap<String, Vec<std::sync::Arc<CheckedShard>>> = BTreeMap::new();
    use crate::render::test_support::{domain_spec, input};
    use crate::render::{RelayMode, gateway_configmap_data, relay_data};

    fn relay(
        value: serde_json::Value,
        recipients: &[&str],
        mode: RelayMode,
    ) -> BTreeMap<String, String> {
        let spec = domain_spec(value);
        let recipients = recipients
            .iter()
            .map(|r| r.to_string())
            .collect::<BTreeSet<_>>()
            .into();
        relay_data(&input(&spec, &recipients, mode)).unwrap()
    }

    fn gateway() -> GatewayFiles {
        let spec =
            serde_json::from_value(serde_json::json!({"mxHostnames": ["mx1.relay.test"]})).unwrap();
        check_gateway(&gateway_configmap_data("edge", &spec, None).unwrap()).unwrap()
    }

    #[test]
    fn the_smtp_port_is_the_listen_address_port_or_25() {
        let port = |listen: Option<&str>| {
            LocalSettings {
                smtp_listen: listen.map(String::from),
                ..LocalSettings::default()
            }
            .smtp_port()
        };
        assert_eq!(port(None), 25);
        assert_eq!(port(Some("127.0.0.1:2525")), 2525);
        assert_eq!(port(Some("[::1]:2526")), 2526);
        assert_eq!(port(Some("2527")), 2527);
        assert_eq!(port(Some("smtp")), 25);
    }

    #[test]
    fn everything_the_renderer_writes_passes() {
        for mode in [
            RelayMode::Active,
            RelayMode::Stale,
            RelayMode::Unsynced,
            RelayMode::Suspended,
            RelayMode::Withdrawn,
        ] {
            let data = relay(
                serde_json::json!({"policy": {"rbls": ["zen.spamhaus.org"], "senderDeny": ["@spam.test"], "clientDeny": ["192.0.2.0/24"], "requireTls": true, "maxMessageSize": "25Mi"}, "delivery": {"concurrency": 2, "rateDelay": "1s"}}),
                &["alice@example.com"],
                mode,
            );
            let checked = check_relay(&data).unwrap();
            assert_eq!(checked.relayed(), mode != RelayMode::Withdrawn);
        }
    }

    #[test]
    fn a_relay_without_its_empty_keys_assembles_alike() {
        // A plain domain renders an empty `main.cf`, which a MailRelay leaves out.
        let full = relay(serde_json::json!({}), &[], RelayMode::Active);
        assert!(full.values().any(String::is_empty));
        let mut trimmed = full.clone();
        trimmed.retain(|_, value| !value.is_empty());
        let local = LocalSettings::default();
        let assembled = |data: &BTreeMap<String, String>| {
            assemble(
                &gateway(),
                &[check_relay(data).unwrap()],
                &NO_SHARDS,
                &[],
                &local,
            )
        };
        assert_eq!(assembled(&trimmed), assembled(&full));
    }

    #[test]
    fn a_sharded_domain_reads_its_shards_tables_or_answers_450_without_them() {
        let recipients: Vec<String> = (0..150_000)
            .map(|i| format!("user{i:07}@example.com"))
            .collect();
        let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
        let split = crate::render::shards::split(relay(
            serde_json::json!({}),
            &recipients,
            RelayMode::Active,
        ));
        let sharded = check_relay(&split.relay).unwrap();
        let set: Vec<_> = split
            .shards
            .iter()
            .map(|data| std::sync::Arc::new(crate::render::shards::check_shard(data).unwrap()))
            .collect();
        let local = LocalSettings::default();
        let sets = BTreeMap::from([("example.com".to_string(), set)]);
        let (files, problems) = assemble(
            &gateway(),
            std::slice::from_ref(&sharded),
            &sets,
            &[],
            &local,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            files.main_cf.matches("relay_recipient_maps =").count(),
            1,
            "the gateway's line is replaced"
        );
        assert!(files.main_cf.contains(
            "relay_recipient_maps = lmdb:$config_directory/maps/relay_recipients, \
             lmdb:$config_directory/maps/relay_recipients-0-of-4.example.com, "
        ));
        let table = &files.tables["relay_recipients-3-of-4.example.com"];
        assert_eq!(&*table.source, split.shards[3][keys::RELAY_RECIPIENTS]);
        assert!(files.tables["recipient_policy"].source.is_empty());

        let (loading, _) = assemble(&gateway(), &[sharded], &NO_SHARDS, &[], &local);
        assert_eq!(
            &*loading.tables["recipient_policy"].source,
            "example.com 450 4.7.1 The recipient list of example.com is being loaded, try again later\n"
        );
        assert!(
            !loading
                .tables
                .contains_key("relay_recipients-0-of-4.example.com")
        );
        assert_eq!(loading.main_cf.matches("relay_recipient_maps =").count(), 1);
    }

    #[test]
    fn hand_edits_that_reach_beyond_the_domain_are_refused() {
        let good = relay(
            serde_json::json!({"policy": {"requireTls": true}}),
            &["alice@example.com"],
            RelayMode::Active,
        );
        let edits: [(&str, &str); 12] = [
            (keys::RELAY_DOMAINS, "example.com OK\nevil.test OK\n"),
            (
                keys::RELAY_RECIPIENTS,
                "alice@example.com OK\n@evil.test OK\n",
            ),
            (keys::RELAY_RECIPIENTS, "a%evil.test@example.com OK\n"),
            (keys::RELAY_RECIPIENTS, "alice@example.com REJECT\n"),
            (keys::TRANSPORT, "example.com smtp:[192.0.2.1]:25\n"),
            (keys::TRANSPORT, "evil.test mxt0000000000:[192.0.2.1]:25\n"),
            (
                keys::MASTER_CF,
                "mxt0000000000 unix - - n - - pipe user=root argv=/bin/sh\n",
            ),
            (keys::MAIN_CF, "mynetworks = 0.0.0.0/0\n"),
            (keys::MAIN_CF, "mxd0000000000 = permit\n"),
            (keys::RECIPIENT_POLICY, "example.com OK\n"),
            (keys::RECIPIENT_POLICY, "evil.test 450 4.7.1 x\n"),
            ("extra", "x"),
        ];
        for (key, value) in edits {
            let mut data = good.clone();
            data.insert(key.to_string(), value.to_string());
            assert!(check_relay(&data).is_err(), "{key}: {value:?} was accepted");
        }
        let mut data = good.clone();
        data.insert(keys::DOMAIN.into(), "Example.COM".into());
        assert!(check_relay(&data).is_err());
    }

    #[test]
    fn assembled_tables_and_files() {
        let a = check_relay(&relay(
            serde_json::json!({"policy": {"requireTls": true, "maxMessageSize": "20M"}}),
            &["alice@example.com"],
            RelayMode::Active,
        ))
        .unwrap();
        let mut other = relay(serde_json::json!({}), &[], RelayMode::Active);
        for value in other.values_mut() {
            *value = value.replace("example.com", "example.org");
        }
        let b = check_relay(&other).unwrap();
        let local = LocalSettings {
            overrides: vec![("queue_directory".into(), "/tmp/q".into())],
            smtp_listen: Some("127.0.0.1:2525".into()),
        };
        let (files, problems) =
            assemble(&gateway(), &[b.clone(), a.clone()], &NO_SHARDS, &[], &local);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            &*files.tables[keys::RELAY_DOMAINS].source,
            "example.com OK\nexample.org OK\n"
        );
        assert_eq!(&*files.tables["no_local_recipients"].source, "");
        assert!(files.main_cf.contains(&format!(
            "smtpd_restriction_classes = {}\n",
            class_name("example.com")
        )));
        assert!(files.main_cf.contains("message_size_limit = 20000000\n"));
        assert!(files.main_cf.ends_with("queue_directory = /tmp/q\n"));
        assert!(files.master_cf.starts_with("127.0.0.1:2525 inet  n"));
        // Both domains use the same transport class: one service line.
        assert_eq!(
            files
                .master_cf
                .lines()
                .filter(|l| l.starts_with(TRANSPORT_PREFIX))
                .count(),
            1
        );

        let (again, problems) = assemble(
            &gateway(),
            &[a.clone(), a],
            &NO_SHARDS,
            &[],
            &LocalSettings::default(),
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(
            &*again.tables[keys::RELAY_DOMAINS].source,
            "example.com OK\n"
        );
    }

    #[test]
    fn a_held_domain_is_routed_to_the_retry_service_and_its_draining_route_is_not() {
        let held = check_relay(&relay(
            serde_json::json!({"delivery": {"hold": true}}),
            &["alice@example.com"],
            RelayMode::Active,
        ))
        .unwrap();
        assert!(held.held());
        let held = std::slice::from_ref(&held);
        let (files, problems) =
            assemble(&gateway(), held, &NO_SHARDS, &[], &LocalSettings::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            &*files.tables[keys::TRANSPORT].source,
            "example.com mxhold:\n"
        );
        assert!(
            files.master_cf.contains(&hold_service()),
            "{}",
            files.master_cf
        );
        assert_eq!(files.held_domains(), BTreeSet::from(["example.com".into()]));
        assert!(
            files.tables[keys::RELAY_RECIPIENTS]
                .source
                .contains("alice@example.com"),
            "still accepted"
        );
        // Deleted while held: the route delivers.
        let (draining, _) = assemble(&gateway(), &[], &NO_SHARDS, held, &LocalSettings::default());
        assert!(draining.held_domains().is_empty());
        let route = &draining.tables[keys::TRANSPORT].source;
        assert!(
            route.starts_with(&format!("example.com {TRANSPORT_PREFIX}")),
            "{route}"
        );
        // Only `true` is a hold.
        let mut data = relay(serde_json::json!({}), &[], RelayMode::Active);
        data.insert(keys::HOLD.into(), "yes".into());
        assert!(check_relay(&data).unwrap_err().contains("hold"));
    }

    #[test]
    fn a_draining_relay_keeps_its_route_and_nothing_that_accepts_mail() {
        let leaving = check_relay(&relay(
            serde_json::json!({"policy": {"requireTls": true, "senderDeny": ["@spam.test"]}, "delivery": {"concurrency": 2, "rateDelay": "1s"}}),
            &["alice@example.com"],
            RelayMode::Active,
        ))
        .unwrap();
        let leaving = std::slice::from_ref(&leaving);
        let (serving, _) = assemble(
            &gateway(),
            leaving,
            &NO_SHARDS,
            &[],
            &LocalSettings::default(),
        );
        let (files, problems) = assemble(
            &gateway(),
            &[],
            &NO_SHARDS,
            leaving,
            &LocalSettings::default(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        for key in [
            keys::RELAY_DOMAINS,
            keys::RELAY_RECIPIENTS,
            keys::RECIPIENT_POLICY,
        ] {
            assert_eq!(&*files.tables[key].source, "", "{key}");
        }
        assert_eq!(
            files.tables[keys::TRANSPORT],
            serving.tables[keys::TRANSPORT],
            "the same route to the primary"
        );
        assert_eq!(
            files.master_cf, serving.master_cf,
            "the same delivery service"
        );
        for limit in [
            "_destination_concurrency_limit = 2\n",
            "_destination_rate_delay = 1s\n",
        ] {
            assert!(files.main_cf.contains(limit), "{limit}: {}", files.main_cf);
        }
        assert!(!files.main_cf.contains(&class_name("example.com")));
        assert!(!files.tables.keys().any(|t| t.contains("example.com")));

        // Served again (or by a new MailRelay): the relay wins, the route is not doubled.
        let (again, problems) = assemble(
            &gateway(),
            leaving,
            &NO_SHARDS,
            leaving,
            &LocalSettings::default(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, serving);

        let withdrawn =
            check_relay(&relay(serde_json::json!({}), &[], RelayMode::Withdrawn)).unwrap();
        assert_eq!(withdrawn.route_only(), None);
    }

    #[test]
    fn the_queue_directory_is_the_hosts_or_the_gateways() {
        let local = LocalSettings {
            overrides: vec![("queue_directory".into(), "/tmp/q".into())],
            smtp_listen: None,
        };
        assert_eq!(gateway().queue_directory(&local), Some("/tmp/q".into()));
        assert_eq!(
            gateway().queue_directory(&LocalSettings::default()),
            Some("/var/spool/postfix".into())
        );
    }

    #[test]
    fn gateway_config_must_have_a_listener_and_parameters() {
        let mut data = BTreeMap::from([
            (keys::MAIN_CF.to_string(), "myhostname = x\n".to_string()),
            (
                keys::MASTER_CF.to_string(),
                "pickup unix n - n 60 1 pickup\n".to_string(),
            ),
        ]);
        assert!(check_gateway(&data).is_err());
        data.insert(keys::MASTER_CF.into(), "smtp inet n - n - - smtpd\n".into());
        assert!(check_gateway(&data).is_ok());
        data.insert(keys::MAIN_CF.into(), "this is not a parameter\n".into());
        assert!(check_gateway(&data).is_err());
    }

    #[test]
    fn a_scale_in_marker_is_an_ordinal_or_refused() {
        let spec = serde_json::from_value(serde_json::json!({"mxHostnames": []})).unwrap();
        let mut data = gateway_configmap_data("edge", &spec, None).unwrap();
        // spec.replicas defaults to 2.
        assert_eq!(check_gateway(&data).unwrap().retiring_from, Some(2));
        data.remove(keys::RETIRING_FROM);
        assert_eq!(check_gateway(&data).unwrap().retiring_from, None);
        data.insert(keys::RETIRING_FROM.into(), "-1".into());
        assert!(check_gateway(&data).unwrap_err().contains("retiring-from"));
    }

    #[test]
    fn an_agent_token_is_long_and_plain_or_refused() {
        let spec = serde_json::from_value(serde_json::json!({"mxHostnames": []})).unwrap();
        let mut data = gateway_configmap_data("edge", &spec, None).unwrap();
        assert_eq!(check_gateway(&data).unwrap().agent_token, None);
        let token = "f".repeat(64);
        data.insert(keys::AGENT_TOKEN.into(), token.clone());
        assert_eq!(check_gateway(&data).unwrap().agent_token, Some(token));
        for refused in [
            "short",
            &"a b".repeat(20),
            &format!("{}\r\nX: y", "a".repeat(40)),
        ] {
            data.insert(keys::AGENT_TOKEN.into(), refused.to_string());
            assert!(
                check_gateway(&data).unwrap_err().contains("agent-token"),
                "{refused:?}"
            );
        }
    }
}
