//! The MailRelay of one domain: lookup-table lines plus the `main.cf` and `master.cf`
//! lines that only this domain needs. The agent checks and merges them (`assemble`).

use super::postfix::{
    TRANSPORT_PREFIX, class_name, domain_table, is_recipient_of, map_line, seconds, short_hash,
    token,
};
use super::{DomainInput, RelayMode, RenderError, invalid, keys};
use crate::api::DeliveryLimits;
use crate::api::domain::TlsPolicy;
use crate::api::validate::{
    normalize_domain, normalize_host, normalize_sender_pattern, parse_byte_quantity,
    parse_client_network, parse_duration,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `data` of the MailRelay for one domain.
pub fn relay_data(input: &DomainInput) -> Result<BTreeMap<String, String>, RenderError> {
    let spec = input.spec;
    let domain = normalize_domain(&spec.domain).map_err(invalid("spec.domain"))?;
    let mut data = BTreeMap::from([(keys::DOMAIN.to_string(), domain.clone())]);
    if input.mode == RelayMode::Withdrawn {
        return Ok(data);
    }
    let line =
        |key: &str, value: &str, field: &'static str| map_line(key, value).map_err(invalid(field));
    data.insert(
        keys::RELAY_DOMAINS.into(),
        line(&domain, "OK", "spec.domain")?,
    );
    let recipients = if spec.recipients.catch_all {
        line(&format!("@{domain}"), "OK", "spec.recipients.catchAll")?
    } else {
        let mut lines = String::new();
        for address in input.recipients.iter() {
            // What the agent would refuse is refused here, not shipped.
            if !is_recipient_of(address, &domain) {
                return Err(invalid("spec.recipients")(format!(
                    "{address:?} is not a plain address of {domain}"
                )));
            }
            lines.push_str(&line(address, "OK", "spec.recipients")?);
        }
        lines
    };
    data.insert(keys::RELAY_RECIPIENTS.into(), recipients);

    let transport = Transport::of(input)?;
    data.insert(
        keys::TRANSPORT.into(),
        line(&domain, &transport.next_hop(input)?, "spec.primary")?,
    );
    data.insert(keys::MASTER_CF.into(), transport.service());
    let mut main_cf = transport.parameters();
    if held(input) {
        data.insert(keys::HOLD.into(), "true".into());
    }

    let refusal = match input.mode {
        RelayMode::Suspended => Some(format!(
            "450 4.7.1 Service for {domain} is suspended, try again later"
        )),
        RelayMode::Stale => Some(format!(
            "450 4.7.1 The recipient list of {domain} is out of date, try again later"
        )),
        RelayMode::Unsynced => Some(format!(
            "450 4.7.1 The recipient list of {domain} is not synced yet, try again later"
        )),
        RelayMode::Active | RelayMode::Withdrawn => None,
    };
    let policy = Policy::of(input, &domain)?;
    if let Some(refusal) = refusal {
        data.insert(
            keys::RECIPIENT_POLICY.into(),
            line(&domain, &refusal, "spec")?,
        );
    } else if !policy.restrictions.is_empty() {
        let class = class_name(&domain);
        data.insert(
            keys::RECIPIENT_POLICY.into(),
            line(&domain, &class, "spec.policy")?,
        );
        main_cf.push_str(&format!("{class} = {}\n", policy.restrictions.join(", ")));
    }
    if !policy.sender_access.is_empty() {
        data.insert(keys::SENDER_ACCESS.into(), policy.sender_access);
    }
    if !policy.client_access.is_empty() {
        data.insert(keys::CLIENT_ACCESS.into(), policy.client_access);
    }
    if let Some(size) = &spec.policy.max_message_size {
        let bytes = parse_byte_quantity(size).map_err(invalid("spec.policy.maxMessageSize"))?;
        data.insert(keys::MESSAGE_SIZE_LIMIT.into(), bytes.to_string());
    }
    data.insert(keys::MAIN_CF.into(), main_cf);
    Ok(data)
}

/// Whether the domain's mail is held: by its own `spec.delivery`, or by its gateway's.
fn held(input: &DomainInput) -> bool {
    input.spec.delivery.as_ref().is_some_and(|d| d.hold) || input.gateway_delivery.hold
}

/// The master.cf service that delivers to a primary, one per combination of TLS level and
/// delivery limits. Postfix applies concurrency and rate delay per destination (the
/// primary), so domains with the same settings share a transport without sharing a pace.
struct Transport {
    name: String,
    tls: &'static str,
    concurrency: Option<i32>,
    rate_delay: Option<String>,
}

impl Transport {
    fn of(input: &DomainInput) -> Result<Self, RenderError> {
        // A domain's `delivery` that only holds keeps the gateway's limits.
        let limits: &DeliveryLimits = input
            .spec
            .delivery
            .as_ref()
            .filter(|own| own.concurrency.is_some() || own.rate_delay.is_some())
            .unwrap_or(input.gateway_delivery);
        let tls = match input.spec.primary.tls {
            TlsPolicy::None => "none",
            TlsPolicy::May => "may",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::Verify => "verify",
            TlsPolicy::Secure => "secure",
        };
        let rate_delay = limits
            .rate_delay
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(invalid("spec.delivery.rateDelay"))?
            .filter(|delay| !delay.is_zero())
            .map(seconds);
        let concurrency = limits.concurrency;
        let name = format!(
            "{TRANSPORT_PREFIX}{}",
            short_hash(&[
                tls,
                &concurrency.map(|c| c.to_string()).unwrap_or_default(),
                rate_delay.as_deref().unwrap_or_default(),
            ])
        );
        Ok(Self {
            name,
            tls,
            concurrency,
            rate_delay,
        })
    }

    fn next_hop(&self, input: &DomainInput) -> Result<String, RenderError> {
        let host =
            normalize_host(&input.spec.primary.host).map_err(invalid("spec.primary.host"))?;
        let host = token(&host).map_err(invalid("spec.primary.host"))?;
        // Brackets: deliver to this host as given, never to the domain's MX (which may be us).
        Ok(format!(
            "{}:[{host}]:{}",
            self.name, input.spec.primary.port
        ))
    }

    fn service(&self) -> String {
        format!(
            "{} unix - - n - - smtp -o smtp_tls_security_level={}\n",
            self.name, self.tls
        )
    }

    fn parameters(&self) -> String {
        let mut lines = String::new();
        if let Some(concurrency) = self.concurrency {
            lines.push_str(&format!(
                "{}_destination_concurrency_limit = {concurrency}\n",
                self.name
            ));
        }
        if let Some(delay) = &self.rate_delay {
            lines.push_str(&format!("{}_destination_rate_delay = {delay}\n", self.name));
        }
        lines
    }
}

/// A domain's acceptance policy as Postfix restrictions and the tables they read.
struct Policy {
    restrictions: Vec<String>,
    sender_access: String,
    client_access: String,
}

impl Policy {
    fn of(input: &DomainInput, domain: &str) -> Result<Self, RenderError> {
        let policy = &input.spec.policy;
        let mut restrictions = Vec::new();
        let mut client_access = String::new();
        for client in &policy.client_deny {
            let network = parse_client_network(client)
                .and_then(|n| network_address(&n))
                .map_err(invalid("spec.policy.clientDeny"))?;
            client_access.push_str(
                &map_line(
                    &network,
                    &format!("REJECT 5.7.1 Client refused by the policy of {domain}"),
                )
                .map_err(invalid("spec.policy.clientDeny"))?,
            );
        }
        if !client_access.is_empty() {
            restrictions.push(format!(
                "check_client_access cidr:$config_directory/maps/{}",
                domain_table(keys::CLIENT_ACCESS, domain)
            ));
        }
        let mut sender_access = String::new();
        for sender in &policy.sender_deny {
            let pattern =
                normalize_sender_pattern(sender).map_err(invalid("spec.policy.senderDeny"))?;
            sender_access.push_str(
                &map_line(
                    &pattern,
                    &format!("REJECT 5.7.1 Sender refused by the policy of {domain}"),
                )
                .map_err(invalid("spec.policy.senderDeny"))?,
            );
        }
        if !sender_access.is_empty() {
            restrictions.push(format!(
                "check_sender_access lmdb:$config_directory/maps/{}",
                domain_table(keys::SENDER_ACCESS, domain)
            ));
        }
        for rbl in &policy.rbls {
            let zone = normalize_domain(rbl).map_err(invalid("spec.policy.rbls"))?;
            let zone = token(&zone).map_err(invalid("spec.policy.rbls"))?;
            restrictions.push(format!("reject_rbl_client {zone}"));
        }
        if policy.require_tls {
            restrictions.push("reject_plaintext_session".into());
        }
        Ok(Self {
            restrictions,
            sender_access,
            client_access,
        })
    }
}

/// Postfix's cidr tables skip entries with host bits set; `192.0.2.7/24` means its network.
fn network_address(network: &str) -> Result<String, String> {
    let Some((address, bits)) = network.split_once('/') else {
        return Ok(network.to_string());
    };
    let bits: u32 = bits
        .parse()
        .map_err(|_| format!("{network:?} has no valid prefix length"))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{network:?} is not a network"))?;
    let masked = match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    };
    Ok(format!("{masked}/{bits}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::RecipientSet;
    use crate::render::test_support::{domain_spec, input};
    use std::collections::BTreeSet;

    #[test]
    fn a_recipient_the_agent_would_refuse_is_not_rendered() {
        let spec = domain_spec(serde_json::json!({}));
        for address in [
            "2001:db8::1@example.com",
            "a%b@example.com",
            "alice@example.org",
        ] {
            let recipients = BTreeSet::from([address.to_string()]).into();
            let rendered = relay_data(&input(&spec, &recipients, RelayMode::Active));
            assert!(rendered.is_err(), "{address}");
        }
    }

    #[test]
    fn exact_recipients_transport_and_no_policy_by_default() {
        let spec = domain_spec(serde_json::json!({}));
        let recipients =
            BTreeSet::from(["alice@example.com".to_string(), "bob@example.com".into()]).into();
        let data = relay_data(&input(&spec, &recipients, RelayMode::Active)).unwrap();
        assert_eq!(data[keys::DOMAIN], "example.com");
        assert_eq!(data[keys::RELAY_DOMAINS], "example.com OK\n");
        assert_eq!(
            data[keys::RELAY_RECIPIENTS],
            "alice@example.com OK\nbob@example.com OK\n"
        );
        let transport = &data[keys::TRANSPORT];
        assert!(transport.starts_with("example.com mxt"), "{transport}");
        assert!(
            transport.ends_with(":[mail.example.com]:25\n"),
            "{transport}"
        );
        assert!(data[keys::MASTER_CF].contains("smtp -o smtp_tls_security_level=may"));
        assert!(!data.contains_key(keys::RECIPIENT_POLICY));
        assert_eq!(data[keys::MAIN_CF], "");
    }

    #[test]
    fn catch_all_only_on_opt_in() {
        let spec = domain_spec(serde_json::json!({"recipients": {"catchAll": true}}));
        let data = relay_data(&input(&spec, &RecipientSet::default(), RelayMode::Active)).unwrap();
        assert_eq!(data[keys::RELAY_RECIPIENTS], "@example.com OK\n");
        let spec = domain_spec(serde_json::json!({}));
        let data = relay_data(&input(&spec, &RecipientSet::default(), RelayMode::Active)).unwrap();
        assert_eq!(data[keys::RELAY_RECIPIENTS], "");
    }

    #[test]
    fn stale_and_suspended_domains_answer_4xx() {
        let spec = domain_spec(serde_json::json!({}));
        let none = RecipientSet::default();
        for (mode, words) in [
            (RelayMode::Stale, "out of date"),
            (RelayMode::Unsynced, "not synced yet"),
            (RelayMode::Suspended, "suspended"),
        ] {
            let data = relay_data(&input(&spec, &none, mode)).unwrap();
            let policy = &data[keys::RECIPIENT_POLICY];
            assert!(policy.starts_with("example.com 450 4.7.1 "), "{policy}");
            assert!(policy.contains(words));
        }
        let data = relay_data(&input(&spec, &none, RelayMode::Withdrawn)).unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [keys::DOMAIN]);
    }

    #[test]
    fn policy_becomes_a_restriction_class_with_its_own_tables() {
        let spec = domain_spec(serde_json::json!({"policy": {
            "rbls": ["zen.spamhaus.org"],
            "senderDeny": ["@spam.example", "bad@evil.example"],
            "clientDeny": ["192.0.2.7/24", "2001:db8::1"],
            "requireTls": true
        }}));
        let data = relay_data(&input(&spec, &RecipientSet::default(), RelayMode::Active)).unwrap();
        let class = class_name("example.com");
        assert_eq!(
            data[keys::RECIPIENT_POLICY],
            format!("example.com {class}\n")
        );
        assert_eq!(
            data[keys::MAIN_CF],
            format!(
                "{class} = check_client_access cidr:$config_directory/maps/client_access.example.com, \
                 check_sender_access lmdb:$config_directory/maps/sender_access.example.com, \
                 reject_rbl_client zen.spamhaus.org, reject_plaintext_session\n"
            )
        );
        assert!(data[keys::CLIENT_ACCESS].starts_with("192.0.2.0/24 REJECT 5.7.1 "));
        assert!(data[keys::CLIENT_ACCESS].contains("\n2001:db8::1 REJECT"));
        assert!(data[keys::SENDER_ACCESS].starts_with("spam.example REJECT"));
        assert!(data[keys::SENDER_ACCESS].contains("\nbad@evil.example REJECT"));
    }

    #[test]
    fn delivery_limits_make_their_own_transport() {
        let plain = domain_spec(serde_json::json!({}));
        let slow =
            domain_spec(serde_json::json!({"delivery": {"concurrency": 2, "rateDelay": "3s"}}));
        let none = RecipientSet::default();
        let plain = relay_data(&input(&plain, &none, RelayMode::Active)).unwrap();
        let slow = relay_data(&input(&slow, &none, RelayMode::Active)).unwrap();
        assert_ne!(plain[keys::MASTER_CF], slow[keys::MASTER_CF]);
        let name = slow[keys::MASTER_CF].split(' ').next().unwrap().to_string();
        assert_eq!(
            slow[keys::MAIN_CF],
            format!(
                "{name}_destination_concurrency_limit = 2\n{name}_destination_rate_delay = 3s\n"
            )
        );
        assert!(slow[keys::TRANSPORT].starts_with(&format!("example.com {name}:")));
    }

    #[test]
    fn gateway_defaults_apply_when_the_domain_sets_no_limits() {
        let spec = domain_spec(serde_json::json!({}));
        let none = RecipientSet::default();
        let defaults = DeliveryLimits {
            concurrency: Some(4),
            rate_delay: Some("1s".into()),
            hold: false,
        };
        let mut with_defaults = input(&spec, &none, RelayMode::Active);
        with_defaults.gateway_delivery = &defaults;
        let data = relay_data(&with_defaults).unwrap();
        assert!(data[keys::MAIN_CF].contains("_destination_concurrency_limit = 4\n"));
        assert!(data[keys::MAIN_CF].contains("_destination_rate_delay = 1s\n"));
        assert!(!data.contains_key(keys::HOLD));
    }

    #[test]
    fn a_hold_is_marked_and_keeps_the_gateways_limits() {
        let none = RecipientSet::default();
        let defaults = DeliveryLimits {
            concurrency: Some(4),
            rate_delay: None,
            hold: false,
        };
        let held = domain_spec(serde_json::json!({"delivery": {"hold": true}}));
        let mut input_held = input(&held, &none, RelayMode::Active);
        input_held.gateway_delivery = &defaults;
        let data = relay_data(&input_held).unwrap();
        assert_eq!(data[keys::HOLD], "true");
        assert!(data[keys::MAIN_CF].contains("_destination_concurrency_limit = 4\n"));
        // Held by the gateway: every domain it relays.
        let plain = domain_spec(serde_json::json!({}));
        let holding = DeliveryLimits {
            hold: true,
            ..DeliveryLimits::default()
        };
        let mut by_gateway = input(&plain, &none, RelayMode::Active);
        by_gateway.gateway_delivery = &holding;
        assert_eq!(relay_data(&by_gateway).unwrap()[keys::HOLD], "true");
        // Withdrawn: nothing at all, the hold neither.
        let withdrawn = relay_data(&input(&held, &none, RelayMode::Withdrawn)).unwrap();
        assert!(!withdrawn.contains_key(keys::HOLD));
    }

    #[test]
    fn ipv6_primary_is_bracketed() {
        let spec =
            domain_spec(serde_json::json!({"primary": {"host": "[2001:db8::25]", "port": 2525}}));
        let data = relay_data(&input(&spec, &RecipientSet::default(), RelayMode::Active)).unwrap();
        assert!(data[keys::TRANSPORT].ends_with(":[2001:db8::25]:2525\n"));
    }

    #[test]
    fn network_addresses_drop_host_bits() {
        assert_eq!(network_address("192.0.2.77/24").unwrap(), "192.0.2.0/24");
        assert_eq!(network_address("10.1.2.3/0").unwrap(), "0.0.0.0/0");
        assert_eq!(network_address("2001:db8::1/32").unwrap(), "2001:db8::/32");
        assert_eq!(network_address("192.0.2.1").unwrap(), "192.0.2.1");
    }
}
