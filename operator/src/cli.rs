//! The `mx-operator` command line: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mx-operator",
    version,
    about = "Kubernetes operator for managed inbound mail gateways (MX relays)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
    /// Run the gateway sidecar that loads relay configuration into Postfix.
    Agent,
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<plural>.<group>.yaml` files into this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Check a list of domains' MX records against the gateways, without a cluster.
    Audit,
}

/// Flags of `mx-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(
        long,
        env = "MX_OPERATOR_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_address: std::net::SocketAddr,
    /// Image of gateways that do not name one.
    #[arg(long, env = "MX_OPERATOR_GATEWAY_IMAGE", default_value = concat!("ghcr.io/mx-operator/gateway:", env!("CARGO_PKG_VERSION")))]
    pub gateway_image: String,
    /// How often every object is checked again although nothing changed (seconds).
    #[arg(long, env = "MX_OPERATOR_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Compete for a Lease so that only one replica runs the controllers.
    #[arg(long, env = "MX_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mx-operator-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format: json (default) or text.
    #[arg(long, env = "MX_OPERATOR_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// What can go wrong in a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("`mx-operator {0}` is not implemented yet")]
    NotImplemented(&'static str),
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
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// Exit status: 2 for a subcommand that does not exist yet, 1 for a failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotImplemented(_) => 2,
            _ => 1,
        }
    }
}

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?
            .block_on(run(args)),
        Command::Agent => Err(CliError::NotImplemented("agent")),
        Command::Audit => Err(CliError::NotImplemented("audit")),
        Command::Crd { out_dir: None } => {
            let yaml = crate::api::crd::all_as_yaml()?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .map_err(|source| CliError::Write {
                    path: "standard output".into(),
                    source,
                })
        }
        Command::Crd { out_dir: Some(dir) } => write_crd_files(&dir),
    }
}

fn write_crd_files(dir: &std::path::Path) -> Result<(), CliError> {
    for crd in crate::api::crd::all() {
        let path = dir.join(crate::api::crd::file_name(&crd));
        let yaml = crate::api::crd::to_yaml(&crd)?;
        std::fs::write(&path, yaml).map_err(|source| CliError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), CliError> {
    use crate::controller::{LeaseSettings, Settings, run_with_leader_election};
    use crate::telemetry::{Health, Metrics, init_logging, serve};
    use std::sync::Arc;

    init_logging(matches!(args.log_format, LogFormat::Json));
    let client = kube::Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the Kubernetes API");
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health.set_connected(true);
    serve(args.metrics_address, metrics.clone(), health.clone())
        .await
        .map_err(|source| CliError::Serve {
            address: args.metrics_address,
            source,
        })?;
    let settings = Settings {
        gateway_image: args.gateway_image,
        resync: std::time::Duration::from_secs(args.resync_seconds),
    };
    if args.leader_elect {
        let identity = args
            .identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("mx-operator-{}", std::process::id()));
        let lease = LeaseSettings {
            namespace: args.lease_namespace,
            name: "mx-operator-leader".into(),
            identity,
            duration_seconds: 15,
        };
        run_with_leader_election(
            client,
            settings,
            metrics,
            health,
            lease,
            Box::pin(shutdown_signal()),
        )
        .await?;
    } else {
        health.set_leader(true);
        crate::controller::run(client, settings, metrics, Box::pin(shutdown_signal())).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: finishing the reconciles under way");
}
