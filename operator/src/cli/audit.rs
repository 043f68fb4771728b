//! `mx-operator audit`: a list of domains' MX records (and the gateway's answers) checked
//! without a cluster.

use super::common::parse_resolver;
use super::error::CliError;
use std::io::Write;

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

pub async fn audit(args: AuditArgs) -> Result<(), CliError> {
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
