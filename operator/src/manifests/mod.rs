//! Kubernetes objects built from the API objects (pure: no API calls).

pub mod gateway;
pub mod relay;

use std::collections::BTreeMap;

/// Labels every object the operator creates carries, in the `app.kubernetes.io` scheme.
pub fn common_labels(component: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "mx-gateway".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "mx-operator".to_string(),
        ),
    ])
}
