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
    #[error("the system's random source gave no agent token")]
    Random,
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

    /// Whether the API server asked only to try again: a conflict with a concurrent write
    /// (409) or throttling (429). Nothing a user must fix, and the next try passes.
    pub fn is_retry_request(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if [409, 429].contains(&status.code))
    }

    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Encode { .. } => "encode",
            Self::NotNamespaced(_) => "not_namespaced",
            Self::Random => "random",
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

    #[test]
    fn only_conflicts_and_throttling_ask_merely_for_another_try() {
        let answer = |code: u16| {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": "", "message": ""
            }))
            .unwrap();
            Error::Kube(kube::Error::Api(Box::new(status))).is_retry_request()
        };
        assert!(answer(409) && answer(429));
        // Refusals a user can act on: quota, RBAC, admission, size; and a webhook or the
        // API server failing, which may last.
        for code in [400, 403, 404, 413, 422, 500, 503] {
            assert!(!answer(code), "{code}");
        }
        assert!(!Error::NotNamespaced("edge".into()).is_retry_request());
    }
}
