//! What several subcommands share: the log format flag, resolver addresses, and the
//! `/metrics`, `/healthz` and `/readyz` server.

use super::error::CliError;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// `ip` (port 53) or `ip:port`.
pub fn parse_resolver(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or ip:port"))
}

/// Starts the /metrics, /healthz and /readyz server; a bind failure ends the command.
pub async fn serve_endpoints(
    address: std::net::SocketAddr,
    endpoints: std::sync::Arc<dyn crate::telemetry::Endpoints>,
) -> Result<(), CliError> {
    crate::telemetry::serve(address, endpoints)
        .await
        .map_err(|source| CliError::Serve { address, source })
}
