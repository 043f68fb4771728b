//! DNSProvider: where and how MX records are published.

use super::validate::{
    Problems, ValidationError, normalize_dns_name, normalize_domain, normalize_host,
};
use super::{Condition, KeyRef};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How MX records are published: RFC 2136 dynamic updates signed with TSIG, or external-dns
/// `DNSEndpoint` objects. Exactly one of `rfc2136` and `externalDNS` is set.
// Every printcolumn(...) repeats the keys name/type_/json_path, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "mx-operator.io",
    version = "v1alpha1",
    kind = "DNSProvider",
    plural = "dnsproviders",
    namespaced,
    status = "DNSProviderStatus",
    shortname = "dnsp",
    category = "mail",
    doc = "How MX records are published: RFC 2136 dynamic updates signed with TSIG, or external-dns DNSEndpoint objects.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.rfc2136.server"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.rfc2136.zone"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.rfc2136) != has(self.externalDNS)").message("set exactly one of rfc2136 and externalDNS"))]
#[serde(rename_all = "camelCase")]
pub struct DNSProviderSpec {
    /// Publish with RFC 2136 dynamic updates, signed with TSIG, sent to the zone's primary
    /// server. Only the gateway's own MX record is ever added or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136>,
    /// Publish by writing external-dns `DNSEndpoint` objects. external-dns must run with
    /// `--managed-record-types=MX`; it owns the whole MX RRset of the name.
    #[serde(
        default,
        rename = "externalDNS",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_dns: Option<ExternalDns>,
}

/// An RFC 2136 server and the TSIG key for it.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136 {
    /// Address or host name of the zone's primary name server.
    pub server: String,
    /// DNS port of the server.
    #[serde(default = "default_dns_port")]
    pub port: u16,
    /// The zone to update, for example `example.com`. Unset: found from the SOA record of
    /// each domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The TSIG key that signs every update.
    pub tsig: Tsig,
}

fn default_dns_port() -> u16 {
    53
}

/// A TSIG key.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tsig {
    /// Name of the key as the server knows it, for example `mx-operator`.
    pub key_name: String,
    /// HMAC algorithm of the key: `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default)]
    pub algorithm: TsigAlgorithm,
    /// The Secret key holding the base64 key material (as in the server's key file).
    pub secret_ref: KeyRef,
}

/// HMAC algorithm of a TSIG key.
#[derive(JsonSchema, Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum TsigAlgorithm {
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

/// Settings for DNSEndpoint objects.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDns {
    /// Extra labels on every DNSEndpoint, for external-dns's `--label-filter`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Observed state of a DNSProvider.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DNSProviderStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and the conditions it summarises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl DNSProviderSpec {
    /// Every problem in the spec, with field paths.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut problems = Problems::default();
        match (&self.rfc2136, &self.external_dns) {
            (Some(rfc2136), None) => rfc2136.validate_into(&mut problems),
            (None, Some(external)) => {
                for key in external.labels.keys() {
                    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        problems.push(
                            "spec.externalDNS.labels",
                            format!("{key:?} is not a label key"),
                        );
                    }
                }
            }
            _ => problems.push("spec", "set exactly one of rfc2136 and externalDNS"),
        }
        problems.finish()
    }
}

impl Rfc2136 {
    fn validate_into(&self, problems: &mut Problems) {
        let server_is_host = normalize_host(&self.server).is_ok();
        let server_is_name = normalize_dns_name(&self.server).is_ok();
        if !server_is_host && !server_is_name {
            problems.push(
                "spec.rfc2136.server",
                format!("{:?} is not an IP address or host name", self.server),
            );
        }
        if self.port == 0 {
            problems.push("spec.rfc2136.port", "must be between 1 and 65535");
        }
        if let Some(zone) = &self.zone {
            problems.check("spec.rfc2136.zone", normalize_domain(zone));
        }
        problems.check(
            "spec.rfc2136.tsig.keyName",
            normalize_dns_name(&self.tsig.key_name),
        );
        problems.k8s_name(
            "spec.rfc2136.tsig.secretRef.name",
            &self.tsig.secret_ref.name,
        );
        problems.k8s_key("spec.rfc2136.tsig.secretRef.key", &self.tsig.secret_ref.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rfc2136(overrides: serde_json::Value) -> DNSProviderSpec {
        crate::api::fixtures::provider(json!({"spec": {"rfc2136": overrides}})).spec
    }

    fn paths(spec: &DNSProviderSpec) -> Vec<String> {
        match spec.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn rfc2136_defaults() {
        let spec = rfc2136(json!({}));
        assert_eq!(spec.validate(), Ok(()));
        let rfc = spec.rfc2136.unwrap();
        assert_eq!(rfc.port, 53);
        assert_eq!(rfc.tsig.algorithm, TsigAlgorithm::HmacSha256);
    }

    #[test]
    fn algorithms_use_the_names_name_servers_use() {
        let spec = rfc2136(json!({"tsig": {
            "keyName": "k", "algorithm": "hmac-sha512", "secretRef": {"name": "t", "key": "s"}
        }}));
        assert_eq!(
            spec.rfc2136.unwrap().tsig.algorithm,
            TsigAlgorithm::HmacSha512
        );
    }

    #[test]
    fn server_may_be_a_name_or_an_address() {
        assert_eq!(
            rfc2136(json!({"server": "ns1.example.net"})).validate(),
            Ok(())
        );
        assert_eq!(rfc2136(json!({"server": "::1"})).validate(), Ok(()));
        assert_eq!(
            paths(&rfc2136(json!({"server": "ns1 example"}))),
            ["spec.rfc2136.server"]
        );
    }

    #[test]
    fn bad_rfc2136_fields_are_reported() {
        let spec = rfc2136(json!({
            "server": "",
            "port": 0,
            "zone": "example..com",
            "tsig": {"keyName": "key\nname", "secretRef": {"name": "Tsig", "key": ""}},
        }));
        assert_eq!(
            paths(&spec),
            [
                "spec.rfc2136.server",
                "spec.rfc2136.port",
                "spec.rfc2136.zone",
                "spec.rfc2136.tsig.keyName",
                "spec.rfc2136.tsig.secretRef.name",
                "spec.rfc2136.tsig.secretRef.key",
            ]
        );
    }

    #[test]
    fn exactly_one_mode() {
        let both: DNSProviderSpec = serde_json::from_value(json!({
            "rfc2136": {"server": "127.0.0.1", "tsig": {"keyName": "k", "secretRef": {"name": "t", "key": "s"}}},
            "externalDNS": {},
        }))
        .unwrap();
        assert_eq!(paths(&both), ["spec"]);
        let neither: DNSProviderSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(paths(&neither), ["spec"]);
        let external: DNSProviderSpec =
            serde_json::from_value(json!({"externalDNS": {"labels": {"dns": "public"}}})).unwrap();
        assert_eq!(external.validate(), Ok(()));
    }
}
