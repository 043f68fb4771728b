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
    Agent(AgentArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd {
        /// Write `<plural>.<group>.yaml` files (and a kustomization.yaml listing them) into
        /// this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Print the API reference (Markdown, docs/api.md) instead.
        #[arg(long, conflicts_with = "out_dir")]
        reference: bool,
        /// Print the CRDs without their CEL validation rules, for Kubernetes before 1.25
        /// (its API server refuses them on server-side apply; the operator checks the same
        /// rules itself).
        #[arg(long, conflicts_with_all = ["out_dir", "reference"])]
        without_cel: bool,
    },
    /// Check a list of domains' MX records (and optionally the gateway's answers) against
    /// the gateway host names, without a cluster. Exit status: 0 all ok, 1 problems found,
    /// 2 unusable input.
    Audit(AuditArgs),
}

/// Flags of `mx-operator audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The domains: a list (one per line), CSV (`domain[,primary[,recipient]]`) or YAML
    /// MailDomains; `-` reads standard input.
    #[arg(long)]
    pub domains: String,
    /// How to read --domains (auto: by the file name).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: crate::drift::audit::InputFormat,
    /// A host name of the gateway that the domains' MX must name (repeatable).
    #[arg(long = "gateway-hostname", required = true)]
    pub gateway_hostnames: Vec<String>,
    /// DNS resolver to ask, `ip` or `ip:port` (repeatable; default: /etc/resolv.conf).
    #[arg(long = "resolver", value_parser = parse_resolver)]
    pub resolvers: Vec<std::net::SocketAddr>,
    /// Also ask the gateway at this `host:port` about each domain (RCPT only; nothing is sent).
    #[arg(long)]
    pub probe: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: AuditOutput,
    /// Domains checked at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Time limit of one DNS query or SMTP dialogue (seconds).
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AuditOutput {
    Table,
    Json,
}

/// `ip` (port 53) or `ip:port`.
fn parse_resolver(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or ip:port"))
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
    /// MailDomains reconciled at the same time.
    #[arg(long, env = "MX_OPERATOR_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
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
    /// How often each domain's DNS, gateway and primary are checked (seconds, jittered ±10 %);
    /// 0 turns drift detection and departure off.
    #[arg(
        long,
        env = "MX_OPERATOR_DRIFT_INTERVAL_SECONDS",
        default_value_t = 300
    )]
    pub drift_interval_seconds: u64,
    /// Domains checked at the same time.
    #[arg(long, env = "MX_OPERATOR_DRIFT_CONCURRENCY", default_value_t = 32)]
    pub drift_concurrency: usize,
    /// Resolver for the public MX check and ownership proofs (TXT), `ip` or `ip:port`
    /// (repeatable, or comma-separated in the variable; default: /etc/resolv.conf).
    #[arg(long = "resolver", env = "MX_OPERATOR_RESOLVERS", value_delimiter = ',', value_parser = parse_resolver)]
    pub resolvers: Vec<std::net::SocketAddr>,
    /// SMTP probes of the gateways (RCPT only) and banner checks of the primaries.
    #[arg(long, env = "MX_OPERATOR_SMTP_PROBES", default_value_t = true, action = clap::ArgAction::Set)]
    pub smtp_probes: bool,
}

impl RunArgs {
    /// `--resolver`, or the resolvers of /etc/resolv.conf.
    fn resolvers(&self) -> Vec<std::net::SocketAddr> {
        if self.resolvers.is_empty() {
            crate::net::resolver::system_resolvers()
        } else {
            self.resolvers.clone()
        }
    }

    fn drift(&self) -> Option<crate::drift::DriftSettings> {
        use std::time::Duration;
        if self.drift_interval_seconds == 0 {
            return None;
        }
        Some(crate::drift::DriftSettings {
            interval: Duration::from_secs(self.drift_interval_seconds),
            concurrency: self.drift_concurrency,
            dns_timeout: Duration::from_secs(3),
            checks: crate::drift::CheckSettings {
                resolvers: self.resolvers(),
                smtp: self.smtp_probes,
                smtp_timeout: Duration::from_secs(15),
                confirm_after: Duration::from_secs(5),
            },
        })
    }
}

/// Flags of `mx-operator agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The MailGateway whose ConfigMaps this agent loads.
    #[arg(long, env = "MX_AGENT_GATEWAY")]
    pub gateway: String,
    /// Namespace of the gateway (the pod's own).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Postfix configuration folder the agent writes (`postfix -c`).
    #[arg(long, default_value = crate::manifests::gateway::POSTFIX_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "MX_AGENT_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: std::net::SocketAddr,
    /// Address of the SMTP listener instead of port 25 on every interface, e.g. 127.0.0.1:2525.
    #[arg(long)]
    pub smtp_listen: Option<String>,
    /// A main.cf parameter of this host that overrides the gateway's, as name=value
    /// (repeatable), e.g. queue_directory=/var/tmp/queue.
    #[arg(long = "set", value_parser = parse_parameter)]
    pub overrides: Vec<(String, String)>,
    /// How often the queue is read for the metrics (seconds).
    #[arg(long, default_value_t = 15)]
    pub queue_interval_seconds: u64,
    /// Log format: json (default) or text.
    #[arg(long, env = "MX_OPERATOR_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

fn parse_parameter(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    crate::render::postfix_token(name).map_err(|e| format!("parameter name {e}"))?;
    if value.chars().any(char::is_control) {
        return Err(format!("the value of {name} must be one line"));
    }
    Ok((name.to_string(), value.to_string()))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

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
    /// Exit status: 2 for input that cannot be used, 1 for a failure or (audit) problems
    /// found.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } | Self::AuditInput(_) => 2,
            _ => 1,
        }
    }
}

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => block_on(run(args)),
        Command::Agent(args) => block_on(agent(args)),
        Command::Audit(args) => block_on(audit(args)),
        Command::Crd {
            out_dir: None,
            reference,
            without_cel,
        } => {
            let text = if reference {
                crate::api::reference::markdown()
            } else if without_cel {
                crate::api::crd::all_as_yaml_without_cel()?
            } else {
                crate::api::crd::all_as_yaml()?
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|source| CliError::Write {
                    path: "standard output".into(),
                    source,
                })
        }
        Command::Crd {
            out_dir: Some(dir), ..
        } => write_crd_files(&dir),
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(work)
}

/// Starts the /metrics, /healthz and /readyz server; a bind failure ends the command.
async fn serve_endpoints(
    address: std::net::SocketAddr,
    endpoints: std::sync::Arc<dyn crate::telemetry::Endpoints>,
) -> Result<(), CliError> {
    crate::telemetry::serve(address, endpoints)
        .await
        .map_err(|source| CliError::Serve { address, source })
}

fn write_crd_files(dir: &std::path::Path) -> Result<(), CliError> {
    use crate::api::crd;
    let mut files = vec![(crd::KUSTOMIZATION_FILE.to_string(), crd::kustomization())];
    for definition in crd::all() {
        files.push((crd::file_name(&definition), crd::to_yaml(&definition)?));
    }
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| CliError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), CliError> {
    use crate::controller::{LeaseSettings, Settings, run_with_leader_election};
    use crate::controller::{Metrics, OperatorEndpoints};
    use crate::telemetry::{Health, init_logging};
    use std::sync::Arc;

    init_logging(matches!(args.log_format, LogFormat::Json));
    let client = kube::Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the Kubernetes API");
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    health.set_connected(true);
    let endpoints = OperatorEndpoints {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    serve_endpoints(args.metrics_address, Arc::new(endpoints)).await?;
    let settings = Settings {
        drift: args.drift(),
        resolvers: args.resolvers(),
        concurrency: args.concurrency.max(1),
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
            Box::pin(crate::shutdown::signal()),
        )
        .await?;
    } else {
        health.set_leader(true);
        crate::controller::run(
            client,
            settings,
            metrics,
            Box::pin(crate::shutdown::signal()),
        )
        .await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn audit(args: AuditArgs) -> Result<(), CliError> {
    use crate::drift::audit::{AuditSettings, parse, run, table};
    let read_error = |source| CliError::Read {
        path: args.domains.clone(),
        source,
    };
    let text = if args.domains == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(read_error)?
    } else {
        std::fs::read_to_string(&args.domains).map_err(read_error)?
    };
    let domains = parse(&text, args.format.for_path(&args.domains))?;
    let resolvers = if args.resolvers.is_empty() {
        crate::net::resolver::system_resolvers()
    } else {
        args.resolvers
    };
    let timeout = std::time::Duration::from_secs(args.timeout_seconds.max(1));
    let settings = AuditSettings {
        ours: args.gateway_hostnames,
        resolvers,
        probe: args.probe,
        concurrency: args.concurrency,
        dns_timeout: timeout,
        smtp_timeout: timeout,
    };
    let findings = run(&domains, &settings).await;
    let report = match args.output {
        AuditOutput::Table => table(&findings),
        AuditOutput::Json => {
            let mut json =
                serde_json::to_string_pretty(&findings).map_err(|source| CliError::Write {
                    path: "standard output".into(),
                    source: source.into(),
                })?;
            json.push('\n');
            json
        }
    };
    std::io::stdout()
        .write_all(report.as_bytes())
        .map_err(|source| CliError::Write {
            path: "standard output".into(),
            source,
        })?;
    match findings.iter().filter(|f| !f.is_ok()).count() {
        0 => Ok(()),
        wrong => Err(CliError::AuditFindings(wrong)),
    }
}

async fn agent(args: AgentArgs) -> Result<(), CliError> {
    use crate::agent::{AgentMetrics, AgentSettings, Postfix};
    use crate::render::LocalSettings;
    use std::sync::Arc;

    crate::telemetry::init_logging(matches!(args.log_format, LogFormat::Json));
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(AgentMetrics::default());
    serve_endpoints(args.metrics_address, metrics.clone()).await?;
    let settings = AgentSettings {
        namespace: args.namespace,
        gateway: args.gateway,
        postfix: Postfix::new(args.config_dir),
        local: LocalSettings {
            overrides: args.overrides,
            smtp_listen: args.smtp_listen,
        },
        queue_interval: std::time::Duration::from_secs(args.queue_interval_seconds.max(1)),
    };
    tracing::info!(gateway = %settings.gateway, namespace = %settings.namespace, "agent starting");
    crate::agent::run(
        client,
        settings,
        metrics,
        Box::pin(crate::shutdown::signal()),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}
