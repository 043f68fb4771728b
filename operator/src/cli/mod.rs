//! The `mx-operator` command line: one binary, one subcommand per role, each in its own
//! file.

mod agent;
mod audit;
mod common;
mod crd;
mod error;
mod queue;
mod run;

pub use error::CliError;

use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
    /// Run the gateway sidecar that loads relay configuration into Postfix.
    Agent(agent::AgentArgs),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crd(crd::CrdArgs),
    /// Check a list of domains' MX records (and optionally the gateway's answers) against
    /// the gateway host names, without a cluster. Exit status: 0 all ok, 1 problems found,
    /// 2 unusable input.
    Audit(audit::AuditArgs),
    /// List, flush or delete the mail a domain or gateway has queued, on every replica,
    /// through the API server's pods/exec with your kubeconfig: permission to exec into the
    /// gateway's pods is permission to handle its queue.
    Queue(queue::QueueArgs),
    /// Inside a gateway's agent container: one replica's queue as JSON, listed, flushed or
    /// deleted (what `mx-operator queue` runs there).
    AgentQueue(queue::AgentQueueArgs),
}

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => block_on(run::run(args)),
        Command::Agent(args) => block_on(agent::agent(args)),
        Command::Audit(args) => block_on(audit::audit(args)),
        Command::Crd(args) => crd::crd(args),
        Command::Queue(args) => block_on(queue::queue(args)),
        Command::AgentQueue(args) => block_on(queue::agent_queue(args)),
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?
        .block_on(work)
}
