//! Property tests: no input, however hostile, yields a Postfix file with an injected line,
//! map entry or parameter. Whatever the renderer does not refuse must pass the agent's
//! line-by-line checks, which accept nothing outside the domain's own entries.

use super::test_support::NO_LIMITS;
use super::*;
use crate::api::gateway::MailGatewaySpec;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Strings built from the pieces attacks on Postfix files are made of, plus arbitrary text.
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        ",",
        "#",
        "$",
        "=",
        "{",
        "}",
        "@",
        "%",
        "!",
        ":",
        "\"",
        "[",
        "]",
        "/",
        "\\",
        "\u{0}",
        "\u{85}",
        "\u{2028}",
        "Ü",
        "ß",
        // Look-alikes and what IDNA maps away: Cyrillic а, fullwidth e, soft hyphen, ZWJ,
        // ideographic full stop.
        "а",
        "\u{ff45}",
        "\u{ad}",
        "\u{200d}",
        "\u{3002}",
        "xn--",
        ".",
        "-",
        "example.com",
        "evil.test",
        "alice",
        "relayhost = evil",
        "OK",
        "permit",
        "24",
        "10s",
        "192.0.2.1",
        "2001:db8::1",
    ]);
    prop_oneof![
        prop::collection::vec(pieces, 0..8).prop_map(|p| p.concat()),
        "\\PC{0,24}",
        ".{0,24}",
    ]
}

/// A valid value most of the time, a hostile one otherwise.
fn field(valid: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(valid).prop_map(str::to_string),
        1 => hostile(),
    ]
}

fn list(valid: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(field(valid), 0..3)
}

fn spec_value() -> impl Strategy<Value = serde_json::Value> {
    (
        field(&["example.com", "Bücher.Example", "EXAMPLE.com."]),
        field(&["mail.example.com", "192.0.2.25", "[2001:db8::25]"]),
        list(&["zen.spamhaus.org"]),
        list(&["@spam.example", "bad@evil.example", "evil.example"]),
        list(&["192.0.2.0/24", "2001:db8::1"]),
        field(&["25Mi", "10000000"]),
        field(&["1s", "0s", "2m"]),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(domain, host, rbls, senders, clients, size, delay, flags)| {
                serde_json::json!({
                    "domain": domain,
                    "gatewayRef": {"name": "edge"},
                    "primary": {"host": host, "port": 25},
                    "recipients": {"catchAll": flags.0},
                    "policy": {
                        "rbls": rbls,
                        "senderDeny": senders,
                        "clientDeny": clients,
                        "requireTls": flags.1,
                        "maxMessageSize": size,
                    },
                    "delivery": {"rateDelay": delay},
                })
            },
        )
}

fn parameter_names(main_cf: &str) -> Vec<&str> {
    main_cf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once(" =").map(|(name, _)| name))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases()))]

    #[test]
    fn relay_output_is_refused_or_contained(
        value in spec_value(),
        recipients in prop::collection::btree_set(field(&["alice@example.com", "bob@xn--bcher-kva.example"]), 0..4),
        mode in prop::sample::select(vec![RelayMode::Active, RelayMode::Stale, RelayMode::Unsynced, RelayMode::Suspended]),
    ) {
        let Ok(spec) = serde_json::from_value::<MailDomainSpec>(value) else {
            return Ok(());
        };
        let set = RecipientSet::from(recipients.clone());
        let input = DomainInput { spec: &spec, recipients: &set, mode, gateway_delivery: &NO_LIMITS };
        let rendered = relay_data(&input);
        // Valid input must render: the property is not allowed to hold by refusing everything.
        if spec.validate().is_ok() && recipients.iter().all(|r| postfix::is_recipient_of(r, "example.com")) {
            prop_assert!(rendered.is_ok(), "{:?}", rendered);
        }
        if let Ok(data) = rendered {
            let checked = check_relay(&data);
            prop_assert!(checked.is_ok(), "{:?} for {:?}", checked, data);
            if !spec.recipients.catch_all {
                prop_assert_eq!(data[keys::RELAY_RECIPIENTS].lines().count(), recipients.len());
            }
            for value in data.values() {
                prop_assert!(!value.contains(['\r', '\u{0}']), "control character in {:?}", value);
            }
        }
    }

    #[test]
    fn gateway_output_is_refused_or_contained(
        hostname in hostile(),
        lifetime in prop_oneof![Just("5d".to_string()), hostile()],
        address in prop::option::of(any::<std::net::IpAddr>()),
        mode in prop::sample::select(vec!["Direct", "RelayHost", "Off"]),
        relay_host in prop::option::of(prop_oneof![Just("[smtp.example.net]:25".to_string()), hostile()]),
        postmaster in prop::option::of(prop_oneof![Just("pm@example.net".to_string()), hostile()]),
        warning in prop::option::of(prop_oneof![Just("4h".to_string()), hostile()]),
    ) {
        let benign: MailGatewaySpec = serde_json::from_value(serde_json::json!({"mxHostnames": []})).unwrap();
        let reference = gateway_configmap_data("edge", &benign, Some("192.0.2.1".parse().unwrap())).unwrap();
        let Ok(spec) = serde_json::from_value::<MailGatewaySpec>(serde_json::json!({
            "mxHostnames": [hostname],
            "queue": {"maxQueueLifetime": lifetime},
            "notifications": {"mode": mode, "relayHost": relay_host, "postmaster": postmaster,
                "delayWarningTime": warning},
        })) else {
            return Ok(());
        };
        let rendered = gateway_configmap_data("edge", &spec, address);
        // Whatever validation accepts, the renderer renders.
        if spec.validate().is_ok() {
            prop_assert!(rendered.is_ok(), "valid spec refused: {:?}", rendered);
        }
        if let Ok(data) = rendered {
            prop_assert!(check_gateway(&data).is_ok());
            let mut names = parameter_names(&data[keys::MAIN_CF]);
            let mut expected = parameter_names(&reference[keys::MAIN_CF]);
            if address.is_none() {
                expected.retain(|n| *n != "proxy_interfaces");
            }
            if spec.notifications.postmaster.is_some() {
                expected.extend(["bounce_notice_recipient", "2bounce_notice_recipient", "error_notice_recipient"]);
            }
            names.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(names, expected);
        }
    }

    #[test]
    fn assembled_main_cf_has_only_known_parameters(
        extra in prop::collection::btree_map("[a-z_]{1,12}", hostile(), 0..4),
    ) {
        // A MailRelay edited by anyone: every key the renderer uses plus hostile values.
        let spec = super::test_support::domain_spec(serde_json::json!({"policy": {"requireTls": true}}));
        let recipients = BTreeSet::from(["alice@example.com".to_string()]).into();
        let good = relay_data(&super::test_support::input(&spec, &recipients, RelayMode::Active)).unwrap();
        let mut edited: BTreeMap<String, String> = good.clone();
        for (i, (key, value)) in extra.into_iter().enumerate() {
            let key = keys::RELAY.get(i % keys::RELAY.len()).map(|k| k.to_string()).unwrap_or(key);
            edited.insert(key, value);
        }
        if let Ok(checked) = check_relay(&edited) {
            let gateway = check_gateway(&gateway_configmap_data("edge", &serde_json::from_value(serde_json::json!({"mxHostnames": []})).unwrap(), None).unwrap()).unwrap();
            let (files, _) = assemble(&gateway, &[checked], &Default::default(), &[], &LocalSettings::default());
            let (reference, _) = assemble(&gateway, &[check_relay(&good).unwrap()], &Default::default(), &[], &LocalSettings::default());
            let names: BTreeSet<&str> = parameter_names(&files.main_cf).into_iter().collect();
            let allowed: BTreeSet<&str> = parameter_names(&reference.main_cf).into_iter().collect();
            for name in names {
                prop_assert!(allowed.contains(name) || name.starts_with("mxt"), "injected parameter {}", name);
            }
            prop_assert_eq!(files.master_cf.lines().count(), reference.master_cf.lines().count());
        }
    }
}
