//! What can go wrong in a subcommand, and the exit status it gives.

/// What can go wrong in a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    AuditInput(#[from] crate::drift::audit::AuditError),
    #[error("{0} domain(s) with problems")]
    AuditFindings(usize),
    #[error(transparent)]
    Render(#[from] crate::api::crd::RenderError),
    #[error("connecting to the Kubernetes API: {0}")]
    Connect(#[from] kube::Error),
    #[error("serving metrics on {address}: {source}")]
    Serve {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] crate::controller::LeaderError),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::remote::QueueError),
    #[error("{0}")]
    Postfix(#[from] crate::agent::PostfixError),
    #[error("{0}")]
    Usage(String),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// Exit status: 2 for input that cannot be used, 1 for a failure or (audit) problems
    /// found.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } | Self::AuditInput(_) | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
