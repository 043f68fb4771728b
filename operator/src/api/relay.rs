//! MailRelay: what the agents of one gateway load for one domain (or, for the gateway's own
//! `main.cf` and `master.cf`, for the gateway), written only by the operator. Not a ConfigMap, so that neither of the two things a ConfigMap allows can
//! happen: anyone who may create ConfigMaps in the gateway's namespace adding a domain or
//! recipients, and anyone who may read them (the aggregated `view` role) harvesting the
//! recipient lists. No aggregated role includes this kind; only the operator's ClusterRole
//! writes it, and the agents' Role reads it.

use super::GROUP;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "MailRelay";
const PLURAL: &str = "mailrelays";

/// One domain's relay configuration in one gateway's namespace. Its `data` has the keys a
/// ConfigMap would (lookup-table lines, `main.cf` and `master.cf` lines), at the top level
/// like a ConfigMap's, so that comparing and repairing it works alike.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailRelay {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

fn kind() -> String {
    KIND.into()
}

impl MailRelay {
    /// Keys with an empty value are left out: the agent reads a missing key as empty, and
    /// the API server (seen with 1.20) turns an empty string in a custom resource's map
    /// into `null` under server-side apply, which the schema then refuses.
    pub fn new(metadata: ObjectMeta, mut data: BTreeMap<String, String>) -> Self {
        data.retain(|_, value| !value.is_empty());
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata,
            data: Some(data),
        }
    }
}

impl kube::Resource for MailRelay {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The CRD of MailRelay. Written by hand rather than derived: the derive puts everything
/// under `spec`, and the relay's `data` sits where a ConfigMap's does.
pub fn crd() -> CustomResourceDefinition {
    let string = JSONSchemaProps {
        type_: Some("string".into()),
        ..Default::default()
    };
    let data = JSONSchemaProps {
        description: Some(
            "Lookup-table lines and the `main.cf` and `master.cf` lines of one domain, by \
             key, as the operator renders them. The agent checks every key before loading \
             it and refuses lines that reach beyond the domain."
                .into(),
        ),
        type_: Some("object".into()),
        additional_properties: Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
                Box::new(string),
            ),
        ),
        ..Default::default()
    };
    let schema = JSONSchemaProps {
        description: Some(
            "What the agents of one MailGateway load for one MailDomain (`relay-<domain>`, \
             shards `recipients-<i>-of-<n>.<domain>`) or for the gateway itself \
             (`gateway-<gateway>`: its main.cf and master.cf), in the gateway's \
             namespace. Written only by the operator (do not edit: a change is repaired); \
             readable by the gateway's agents and by whoever may read this kind, which no \
             aggregated role (view, edit, admin) includes, as it holds recipient lists."
                .into(),
        ),
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([
            (
                "apiVersion".into(),
                JSONSchemaProps {
                    type_: Some("string".into()),
                    ..Default::default()
                },
            ),
            (
                "kind".into(),
                JSONSchemaProps {
                    type_: Some("string".into()),
                    ..Default::default()
                },
            ),
            (
                "metadata".into(),
                JSONSchemaProps {
                    type_: Some("object".into()),
                    ..Default::default()
                },
            ),
            ("data".into(), data),
        ])),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{PLURAL}.{GROUP}")),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: KIND.into(),
                plural: PLURAL.into(),
                singular: Some("mailrelay".into()),
                short_names: Some(vec!["mrl".into()]),
                // Not in the `mail` category: `kubectl get mail` by a tenant, who may not
                // read this kind, would print an error for it.
                ..Default::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_serializes_like_a_configmap_of_its_kind() {
        let relay = MailRelay::new(
            ObjectMeta {
                name: Some("relay-example.com".into()),
                ..Default::default()
            },
            BTreeMap::from([("relay_domains".into(), "example.com OK\n".into())]),
        );
        let json = serde_json::to_value(&relay).unwrap();
        assert_eq!(json["apiVersion"], "mx-operator.io/v1alpha1");
        assert_eq!(json["kind"], "MailRelay");
        assert_eq!(json["data"]["relay_domains"], "example.com OK\n");
        let back: MailRelay = serde_json::from_value(json).unwrap();
        assert_eq!(back, relay);
        let empty = MailRelay::new(
            ObjectMeta::default(),
            BTreeMap::from([("main.cf".into(), String::new())]),
        );
        assert_eq!(empty.data, Some(BTreeMap::new()));
    }
}
