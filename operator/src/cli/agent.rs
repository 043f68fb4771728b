//! `mx-operator agent`: the gateway sidecar that loads relay configuration into Postfix.

use super::common::{LogFormat, serve_endpoints};
use super::error::CliError;
use std::path::PathBuf;

/// Flags of `mx-operator agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The MailGateway whose ConfigMaps this agent loads.
    #[arg(long, env = "MX_AGENT_GATEWAY")]
    pub gateway: String,
    /// This replica's pod name, `<gateway>-<ordinal>`: a scale-in that removes its ordinal
    /// makes it stop taking mail and deliver its queue first.
    #[arg(long, env = "POD_NAME")]
    pub replica: Option<String>,
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
    /// How long a queue read may wait for output from a running Postfix (seconds); a
    /// listing that stalls this long makes /healthz/postfix and /readyz fail until one
    /// answers. A large queue that keeps printing is not a stall.
    #[arg(long, default_value_t = 20)]
    pub postfix_answer_seconds: u64,
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

pub async fn agent(args: AgentArgs) -> Result<(), CliError> {
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
        replica: args.replica,
        postfix: Postfix::new(args.config_dir),
        local: LocalSettings {
            overrides: args.overrides,
            smtp_listen: args.smtp_listen,
        },
        queue_interval: std::time::Duration::from_secs(args.queue_interval_seconds.max(1)),
        postfix_answer_timeout: std::time::Duration::from_secs(args.postfix_answer_seconds.max(1)),
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
