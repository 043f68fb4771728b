//! The Helm chart through Helm's own engine (helm-python-sdk, offline) and the Kubernetes
//! schemas (kubernetes-validate), both from the virtualenv `bootstrap.sh` prepares.

use crate::control_plane::cache_dir;
use crate::repository;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

pub fn chart() -> PathBuf {
    repository().join("charts/mx-operator")
}

fn venv_bin(name: &str) -> PathBuf {
    cache_dir().join("venv/bin").join(name)
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(venv_bin("python3"))
        .arg(repository().join("tests/harness/helm.py"))
        .args(args)
        .output()
        .expect("tests/harness/helm.py runs (bootstrap.sh installs its virtualenv)")
}

/// Each `(rule, self)` evaluated as a CEL validation rule (tests/harness/cel.py, cel-python):
/// `Ok(verdict)`, or `Err` when the rule does not compile or evaluate.
pub fn cel(cases: &[(String, Value)]) -> Vec<Result<bool, String>> {
    use std::io::Write;
    let input: Vec<Value> = cases
        .iter()
        .map(|(rule, value)| serde_json::json!({"rule": rule, "self": value}))
        .collect();
    let mut child = Command::new(venv_bin("python3"))
        .arg(repository().join("tests/harness/cel.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tests/harness/cel.py runs (bootstrap.sh installs its virtualenv)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(&input).expect("JSON"))
        .expect("cases written");
    let output = child.wait_with_output().expect("cel.py ends");
    let verdicts: Vec<Value> = serde_json::from_slice(&output.stdout).expect("cel.py answers JSON");
    verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Value::Bool(verdict) => Ok(verdict),
            other => Err(other.to_string()),
        })
        .collect()
}

/// The Kubernetes minors `kubernetes-validate` knows from `from` (`1.29`) on, as it names
/// them (`1.29.0`), oldest first.
pub fn minors_from(from: u32) -> Vec<String> {
    let output = Command::new(venv_bin("python3"))
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print('\\n'.join(sorted(set(u.all_versions()))))",
        ])
        .output()
        .expect("kubernetes-validate's Python runs (bootstrap.sh installs its virtualenv)");
    let mut minors: Vec<(u32, String)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|version| {
            let minor: u32 = version
                .strip_prefix("1.")?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            (minor >= from).then(|| (minor, version.to_string()))
        })
        .collect();
    minors.sort();
    minors.into_iter().map(|(_, version)| version).collect()
}

/// The chart's manifests as one YAML stream, and NOTES.txt; or the exit code and stderr.
pub fn render(
    values: &Value,
    name: &str,
    namespace: &str,
) -> Result<(String, String), (i32, String)> {
    let chart = chart();
    let output = helm(&[
        "render",
        &chart.to_string_lossy(),
        &values.to_string(),
        name,
        namespace,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok((String::from_utf8_lossy(&output.stdout).into_owned(), stderr)),
        code => Err((code.unwrap_or(-1), stderr)),
    }
}

/// `helm lint --strict`: whether it passed, and its findings.
pub fn lint() -> (bool, String) {
    let output = helm(&["lint", &chart().to_string_lossy()]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The documents of a YAML stream.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("rendered YAML parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Checks objects of built-in kinds against the Kubernetes schemas of `version` (strict:
/// unknown fields fail).
pub fn validate(objects: &[Value], version: &str) -> Result<(), String> {
    let file =
        std::env::temp_dir().join(format!("mx-validate-{}-{version}.yaml", std::process::id()));
    let stream: String = objects
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string(o).unwrap_or_default()))
        .collect();
    std::fs::write(&file, stream).map_err(|e| e.to_string())?;
    let output = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&file);
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
