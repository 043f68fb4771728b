//! The CustomResourceDefinitions, as `mx-operator crd` prints them and `crds/` holds them.

use super::{DNSProvider, MailDomain, MailGateway};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Why CRDs could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("rendering the CRD {name} as YAML failed: {source}")]
pub struct RenderError {
    name: String,
    #[source]
    source: serde_saphyr::SerializeError,
}

/// Every CRD of the operator, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![MailGateway::crd(), MailDomain::crd(), DNSProvider::crd()]
}

/// The file a CRD is kept in under `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!(
        "{}.yaml",
        crd.metadata
            .name
            .as_deref()
            .unwrap_or(&crd.spec.names.plural)
    )
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    serde_saphyr::to_string(crd).map_err(|source| RenderError {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// All CRDs as one multi-document YAML stream (what `kubectl apply -f -` takes).
pub fn all_as_yaml() -> Result<String, RenderError> {
    let documents = all().iter().map(to_yaml).collect::<Result<Vec<_>, _>>()?;
    Ok(documents
        .iter()
        .map(|document| format!("---\n{document}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_kinds_and_short_names() {
        let crds = all();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "mailgateways.mx-operator.io",
                "maildomains.mx-operator.io",
                "dnsproviders.mx-operator.io"
            ]
        );
        let short: Vec<_> = crds
            .iter()
            .map(|c| c.spec.names.short_names.clone().unwrap())
            .collect();
        assert_eq!(short, [vec!["mgw"], vec!["md"], vec!["dnsp"]]);
        for crd in &crds {
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["mail".to_string()][..])
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version.subresources.as_ref().unwrap().status.is_some());
        }
    }

    #[test]
    fn maildomain_columns() {
        let crd = MailDomain::crd();
        let columns: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Domain", "Gateway", "Role", "Ready", "Drift", "Age"]
        );
    }

    #[test]
    fn conditions_are_a_list_map_keyed_by_type() {
        let yaml = all_as_yaml().unwrap();
        assert_eq!(yaml.matches("x-kubernetes-list-type: map").count(), 3);
        assert!(yaml.contains("x-kubernetes-validations"));
        assert_eq!(yaml.matches("\n---\n").count() + 1, 3);
    }

    #[test]
    fn every_field_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, undocumented: &mut Vec<String>) {
            let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
                return;
            };
            for (name, property) in properties {
                let path = format!("{path}.{name}");
                let inherited = ["metadata", "apiVersion", "kind"].contains(&name.as_str());
                if property.get("description").is_none()
                    && !inherited
                    && !path.contains(".selector.")
                    && !path.contains(".resources.")
                {
                    undocumented.push(path.clone());
                }
                walk(&path, property, undocumented);
                if let Some(items) = property.get("items") {
                    walk(&path, items, undocumented);
                }
            }
        }
        let mut undocumented = vec![];
        for crd in all() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            walk(
                &crd.spec.names.kind,
                &schema["openAPIV3Schema"],
                &mut undocumented,
            );
        }
        assert!(
            undocumented.is_empty(),
            "fields without a description: {undocumented:?}"
        );
    }
}
