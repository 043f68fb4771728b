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
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Encode { .. } => "encode",
            Self::NotNamespaced(_) => "not_namespaced",
        }
    }
}
