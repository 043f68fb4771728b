//! Running the real `kubectl` against the local control plane.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `kubectl --kubeconfig <kubeconfig> <args>` and returns its output.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
}
