//! What can stop a reconcile; every variant has a short label for metrics.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding {kind} {name}: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// The error in a status message: the API server's own words for a refusal (its
    /// `message`, code and reason), not the client's debug dump.
    pub fn readable(&self) -> String {
        match self {
            Self::Kube(kube::Error::Api(status)) => {
                format!(
                    "{} (HTTP {} {})",
                    status.message, status.code, status.reason
                )
            }
            other => other.to_string(),
        }
    }

    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Encode { .. } => "encode",
            Self::NotNamespaced(_) => "not_namespaced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_the_api_servers_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "configmaps \"relay-example-com\" is forbidden: exceeded quota: cms"
        }))
        .unwrap();
        assert_eq!(
            Error::Kube(kube::Error::Api(Box::new(status))).readable(),
            "configmaps \"relay-example-com\" is forbidden: exceeded quota: cms (HTTP 403 Forbidden)"
        );
        assert_eq!(
            Error::NotNamespaced("edge".into()).readable(),
            "edge has no namespace"
        );
    }
}
