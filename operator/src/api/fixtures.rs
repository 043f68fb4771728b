//! Objects for tests, built from one valid default each with overrides merged in (objects
//! key by key, anything else replaced), so a test states only what it is about.

use super::{DNSProvider, MailDomain, MailGateway, merge_json};
use serde_json::{Value, json};

fn build<K: serde::de::DeserializeOwned>(mut object: Value, overrides: Value) -> K {
    merge_json(&mut object, overrides);
    serde_json::from_value(object).unwrap_or_else(|e| panic!("fixture: {e}"))
}

/// MailDomain `md` in namespace `mail` for example.com on gateway `edge`, primary
/// mail.example.com, recipient alice.
pub fn domain(overrides: Value) -> MailDomain {
    build(
        json!({
            "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain",
            "metadata": {"name": "md", "namespace": "mail", "uid": "uid-md",
                         "creationTimestamp": "2026-11-01T00:00:00Z", "generation": 1},
            "spec": {"domain": "example.com", "gatewayRef": {"name": "edge"},
                     "primary": {"host": "mail.example.com"},
                     "recipients": {"inline": ["alice@example.com"]}}
        }),
        overrides,
    )
}

/// MailGateway `edge` in namespace `mail` with MX host mx1.relay.example.net.
pub fn gateway(overrides: Value) -> MailGateway {
    build(
        json!({
            "apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway",
            "metadata": {"name": "edge", "namespace": "mail", "uid": "uid-edge", "generation": 1},
            "spec": {"mxHostnames": ["mx1.relay.example.net"]}
        }),
        overrides,
    )
}

/// DNSProvider `dns` in namespace `mail`: RFC 2136 at 127.0.0.1 (port and algorithm left
/// to their defaults) with a TSIG key Secret.
pub fn provider(overrides: Value) -> DNSProvider {
    build(
        json!({
            "apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider",
            "metadata": {"name": "dns", "namespace": "mail", "generation": 1},
            "spec": {"rfc2136": {"server": "127.0.0.1",
                     "tsig": {"keyName": "mx-operator",
                              "secretRef": {"name": "tsig", "key": "secret"}}}}
        }),
        overrides,
    )
}
