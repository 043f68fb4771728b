//! `mx-operator crd`: the CustomResourceDefinitions as YAML, one file per CRD, or the API
//! reference.

use super::error::CliError;
use std::io::Write;
use std::path::PathBuf;

/// Flags of `mx-operator crd`.
#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<plural>.<group>.yaml` files (and a kustomization.yaml listing them) into
    /// this folder instead of printing.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Print the API reference (Markdown, docs/api.md) instead.
    #[arg(long, conflicts_with = "out_dir")]
    pub reference: bool,
    /// Print the CRDs without their CEL validation rules, for Kubernetes before 1.25
    /// (its API server refuses them on server-side apply; the operator checks the same
    /// rules itself).
    #[arg(long, conflicts_with_all = ["out_dir", "reference"])]
    pub without_cel: bool,
}

pub fn crd(args: CrdArgs) -> Result<(), CliError> {
    if let Some(dir) = &args.out_dir {
        return write_crd_files(dir);
    }
    let text = if args.reference {
        crate::api::reference::markdown()
    } else if args.without_cel {
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
