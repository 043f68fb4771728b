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
    /// Run the controllers against the cluster of the current kubeconfig.
    Run,
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

/// What can go wrong in a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("`mx-operator {0}` is not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Render(#[from] crate::api::crd::RenderError),
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
            Self::Render(_) | Self::Write { .. } => 1,
        }
    }
}

/// Runs one parsed command line.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run => Err(CliError::NotImplemented("run")),
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
