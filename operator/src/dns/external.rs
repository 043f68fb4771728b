//! external-dns `DNSEndpoint` objects (`externaldns.k8s.io/v1alpha1`).

use super::plan::Mx;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;
use std::collections::BTreeMap;

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The DNSEndpoint for `domain`. external-dns owns the whole MX RRset of the name, so the
/// endpoint lists every MX the name must have: ours, and for a backup MX the primary's.
pub fn endpoint(
    name: &str,
    namespace: &str,
    domain: &str,
    ttl: u32,
    records: &[Mx],
    labels: &BTreeMap<String, String>,
) -> DynamicObject {
    let targets: Vec<String> = records.iter().map(Mx::to_string).collect();
    let mut object = DynamicObject::new(name, &api_resource()).within(namespace);
    object.metadata.labels = Some(labels.clone());
    object.data = json!({
        "spec": {
            "endpoints": [{
                "dnsName": domain,
                "recordType": "MX",
                "recordTTL": ttl,
                "targets": targets,
            }]
        }
    });
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_preference_and_host() {
        let records = [
            Mx::new(10, "mail.example.com"),
            Mx::new(20, "mx1.relay.example.net"),
        ];
        let labels = BTreeMap::from([("dns".to_string(), "public".to_string())]);
        let object = endpoint(
            "mx-example.com",
            "mail",
            "example.com",
            3600,
            &records,
            &labels,
        );
        let endpoint = &object.data["spec"]["endpoints"][0];
        assert_eq!(endpoint["dnsName"], "example.com");
        assert_eq!(endpoint["recordType"], "MX");
        assert_eq!(endpoint["recordTTL"], 3600);
        assert_eq!(
            endpoint["targets"],
            json!(["10 mail.example.com", "20 mx1.relay.example.net"])
        );
        assert_eq!(object.metadata.labels.unwrap()["dns"], "public");
        assert_eq!(object.types.unwrap().kind, "DNSEndpoint");
    }
}
