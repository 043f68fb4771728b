//! Running the real `kubectl` against the local control plane.

use std::path::Path;
use std::process::{Command, Output};

/// Runs kubectl like [`kubectl`] and returns its standard output; panics with the command
/// and kubectl's error output when it fails.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args).expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `kubectl --kubeconfig <kubeconfig> <args>` and returns its output.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
}
