//! `mx-operator run`: the controllers, with leader election, metrics and health.

use super::common::{LogFormat, parse_resolver, serve_endpoints};
use super::error::CliError;

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
    /// How often the gateways' agents are asked what their queues hold, for the
    /// MailDomains' `status.queue` (seconds); 0 turns it off.
    #[arg(long, env = "MX_OPERATOR_QUEUE_POLL_SECONDS", default_value_t = 15)]
    pub queue_poll_seconds: u64,
    /// SMTP probes of the gateways (RCPT only) and banner checks of the primaries.
    #[arg(long, env = "MX_OPERATOR_SMTP_PROBES", default_value_t = true, action = clap::ArgAction::Set)]
    pub smtp_probes: bool,
    /// Recipient sources (LDAP, HTTP) synced at the same time, in all.
    #[arg(long, env = "MX_OPERATOR_SOURCE_WORKERS", default_value_t = 8)]
    pub source_workers: usize,
    /// Recipient sources of one namespace synced at the same time: a tenant's slow
    /// directory cannot take every worker.
    #[arg(
        long,
        env = "MX_OPERATOR_SOURCE_WORKERS_PER_NAMESPACE",
        default_value_t = 2
    )]
    pub source_workers_per_namespace: usize,
    /// Longest a whole sync of a recipient source may take (seconds), every LDAP page and
    /// the whole HTTP body included.
    #[arg(
        long,
        env = "MX_OPERATOR_SOURCE_DEADLINE_SECONDS",
        default_value_t = 300
    )]
    pub source_deadline_seconds: u64,
    /// Recipient sources are not asked more often than this (seconds), whatever their
    /// `refreshInterval` says.
    #[arg(
        long,
        env = "MX_OPERATOR_SOURCE_MIN_REFRESH_SECONDS",
        default_value_t = 60
    )]
    pub source_min_refresh_seconds: u64,
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

pub async fn run(args: RunArgs) -> Result<(), CliError> {
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
        queue_poll: (args.queue_poll_seconds > 0)
            .then(|| std::time::Duration::from_secs(args.queue_poll_seconds)),
        sources: crate::controller::SyncSettings {
            workers: args.source_workers.max(1),
            per_namespace: args.source_workers_per_namespace.max(1),
            deadline: std::time::Duration::from_secs(args.source_deadline_seconds.max(1)),
            min_refresh: std::time::Duration::from_secs(args.source_min_refresh_seconds),
        },
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
        let died = crate::controller::run(
            client,
            settings,
            metrics,
            Box::pin(crate::shutdown::signal()),
        )
        .await;
        if let Some(what) = died {
            health.set_broken();
            return Err(crate::controller::LeaderError::LoopDied(what).into());
        }
    }
    tracing::info!("stopped");
    Ok(())
}
