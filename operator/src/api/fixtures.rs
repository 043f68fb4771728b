//! Objects for tests, unit and integration alike: one valid default of each kind, with
//! overrides merged in (objects key by key, anything else replaced), so a test states
//! only what it is about. The `*_object` builders give JSON for the API server (no
//! server-set metadata); the typed builders, for unit tests, add what a cached object
//! carries.

#[cfg(test)]
use super::{DNSProvider, MailDomain, MailDomainSpec, MailGateway};
use serde_json::{Value, json};

/// Deep-merges `overrides` into `base`.
pub fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, overrides) => *base = overrides,
    }
}

fn merged(mut base: Value, overrides: Value) -> Value {
    merge(&mut base, overrides);
    base
}

#[cfg(test)]
fn typed<K: serde::de::DeserializeOwned>(object: Value) -> K {
    serde_json::from_value(object).unwrap_or_else(|e| panic!("fixture: {e}"))
}

/// A MailDomain spec for `domain` on gateway `edge`, primary mail.example.com, alice as
/// the one recipient.
pub fn domain_spec_object(domain: &str) -> Value {
    json!({
        "domain": domain,
        "gatewayRef": {"name": "edge"},
        "primary": {"host": "mail.example.com"},
        "recipients": {"inline": [format!("alice@{domain}")]},
    })
}

/// MailDomain `name` for `domain` (see [`domain_spec_object`]), `overrides` merged in.
pub fn domain_object(name: &str, domain: &str, overrides: Value) -> Value {
    merged(
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailDomain",
               "metadata": {"name": name}, "spec": domain_spec_object(domain)}),
        overrides,
    )
}

/// MailGateway `name` with two replicas and the MX host `<name>.mx.example.net`.
pub fn gateway_object(name: &str, overrides: Value) -> Value {
    merged(
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "MailGateway",
               "metadata": {"name": name},
               "spec": {"mxHostnames": [format!("{name}.mx.example.net")], "replicas": 2}}),
        overrides,
    )
}

/// DNSProvider `name`: RFC 2136 at 127.0.0.1 (port and algorithm left to their defaults)
/// with the TSIG key in Secret `tsig`, key `secret`.
pub fn provider_object(name: &str, overrides: Value) -> Value {
    merged(
        json!({"apiVersion": "mx-operator.io/v1alpha1", "kind": "DNSProvider",
               "metadata": {"name": name},
               "spec": {"rfc2136": {"server": "127.0.0.1",
                        "tsig": {"keyName": "mx-operator",
                                 "secretRef": {"name": "tsig", "key": "secret"}}}}}),
        overrides,
    )
}

/// What a cached object in namespace `mail` carries besides its spec.
#[cfg(test)]
fn cached(uid: &str) -> Value {
    json!({"metadata": {"namespace": "mail", "uid": uid, "generation": 1,
                        "creationTimestamp": "2026-11-01T00:00:00Z"}})
}

#[cfg(test)]
pub fn domain_spec(overrides: Value) -> MailDomainSpec {
    typed(merged(domain_spec_object("example.com"), overrides))
}

/// MailDomain `md` in namespace `mail` for example.com (see [`domain_spec_object`]).
#[cfg(test)]
pub fn domain(overrides: Value) -> MailDomain {
    let object = domain_object("md", "example.com", cached("uid-md"));
    typed(merged(object, overrides))
}

/// MailGateway `edge` in namespace `mail` (see [`gateway_object`]).
#[cfg(test)]
pub fn gateway(overrides: Value) -> MailGateway {
    typed(merged(
        gateway_object("edge", cached("uid-edge")),
        overrides,
    ))
}

/// DNSProvider `dns` in namespace `mail` (see [`provider_object`]).
#[cfg(test)]
pub fn provider(overrides: Value) -> DNSProvider {
    typed(merged(provider_object("dns", cached("uid-dns")), overrides))
}
