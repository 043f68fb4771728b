//! The real single-node cluster of `tests/harness/node.sh`, with the project's images built
//! by `tests/harness/images.sh` from its Dockerfiles. One node serves every node test of a
//! test binary, one test at a time (`Node::exclusive`); it is stopped when the binary exits.

use crate::control_plane::{HarnessError, TestNamespace};
use crate::repository;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// The images `images.sh` builds, as the node knows them.
pub const OPERATOR_IMAGE: &str = "localhost/mx-operator:dev";
pub const GATEWAY_IMAGE: &str = "localhost/mx-gateway:dev";

/// A running node, as `node.sh up` describes it in its state file.
pub struct Node {
    pub kubeconfig: PathBuf,
    /// The machine's own address: the API server's, the node's, and where pods reach the host.
    pub ip: IpAddr,
    pub containerd_socket: PathBuf,
    namespaces: AtomicUsize,
}

fn harness_script(name: &str) -> PathBuf {
    repository().join("tests/harness").join(name)
}

/// Runs a harness script, its output passed through (the steps print their timings).
fn script(name: &str, args: &[&str]) -> Result<String, HarnessError> {
    let output = Command::new("bash")
        .arg(harness_script(name))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| HarnessError::Io {
            what: format!("running {name}"),
            source,
        })?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: format!("{name} {}", args.join(" ")),
            stderr: format!("exit {} (its log is above)", output.status),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `node.sh down` when the test binary exits, unless MX_NODE_KEEP=1 (to look at it after).
extern "C" fn stop_node_at_exit() {
    if std::env::var("MX_NODE_KEEP").as_deref() == Ok("1") {
        eprintln!(
            "[node] MX_NODE_KEEP=1: the node keeps running; stop it with tests/harness/node.sh down"
        );
        return;
    }
    let _ = Command::new("bash")
        .arg(harness_script("node.sh"))
        .arg("down")
        .status();
}

impl Node {
    /// The node of this test binary: the images built from the current debug binary, the
    /// node started (or a running one reused, and then left running) and the images loaded
    /// into it.
    pub async fn shared() -> Result<&'static Node, HarnessError> {
        static SHARED: OnceCell<Node> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let binary = crate::process::operator_binary()
                    .to_string_lossy()
                    .into_owned();
                tokio::task::spawn_blocking(move || -> Result<Node, HarnessError> {
                    script("images.sh", &[&binary])?;
                    // A node that was running already (make demo's, or one kept with
                    // MX_NODE_KEEP=1) is used and left running; one started here is stopped.
                    if script("node.sh", &["status"]).is_err() {
                        // SAFETY: registering a plain function with atexit has no preconditions.
                        unsafe {
                            libc::atexit(stop_node_at_exit);
                        }
                    }
                    let state = script("node.sh", &["up"])?;
                    let node = Node::from_state(Path::new(state.trim()))?;
                    // A reused node gets the images just built.
                    let images = crate::control_plane::cache_dir().join("images");
                    let archives: Vec<String> = ["mx-operator.oci.tar", "mx-gateway.oci.tar"]
                        .iter()
                        .map(|a| images.join(a).to_string_lossy().into_owned())
                        .collect();
                    let archives: Vec<&str> = archives.iter().map(String::as_str).collect();
                    script("node.sh", &[&["load"], &archives[..]].concat())?;
                    Ok(node)
                })
                .await
                .map_err(|e| HarnessError::Command {
                    command: "starting the node".into(),
                    stderr: e.to_string(),
                })?
            })
            .await
    }

    fn from_state(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let values: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let value = |key: &str| {
            values
                .get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| HarnessError::Command {
                    command: format!("reading {}", path.display()),
                    stderr: format!("{key} is missing"),
                })
        };
        Ok(Self {
            kubeconfig: PathBuf::from(value("KUBECONFIG")?),
            ip: value("NODE_IP")?
                .parse()
                .map_err(|e: std::net::AddrParseError| HarnessError::Command {
                    command: format!("reading {}", path.display()),
                    stderr: e.to_string(),
                })?,
            containerd_socket: PathBuf::from(value("CONTAINERD_SOCKET")?),
            namespaces: AtomicUsize::new(0),
        })
    }

    /// Node tests run one at a time: each holds this while it uses the node.
    pub async fn exclusive() -> MutexGuard<'static, ()> {
        static TURN: Mutex<()> = Mutex::const_new(());
        TURN.lock().await
    }

    /// A new admin client, made in the caller's runtime.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        crate::control_plane::client_from(&self.kubeconfig).await
    }

    /// A fresh namespace for one test, deleted (with its pods and claims) when dropped: the
    /// node has room for a few gateways at a time, not for every test's.
    pub async fn namespace(&self, prefix: &str) -> Result<NodeNamespace, HarnessError> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            self.namespaces.fetch_add(1, Ordering::Relaxed)
        );
        Ok(NodeNamespace {
            namespace: crate::control_plane::create_namespace(self.client().await?, name).await?,
            kubeconfig: self.kubeconfig.clone(),
        })
    }

    /// `kubectl` against the node; its standard output, or what it printed on failure.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let output = crate::kubectl::kubectl(&self.kubeconfig, args).map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs `command` in a container of a pod (`kubectl exec`), returning its output.
    pub fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> Result<String, String> {
        let args = [
            &["exec", "-n", namespace, pod, "-c", container, "--"],
            command,
        ]
        .concat();
        self.kubectl(&args)
    }

    /// Tags an image of the node's containerd under another name (a "new version" to roll
    /// out without building one).
    pub fn tag_image(&self, source: &str, target: &str) -> Result<(), String> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["-n", "k8s.io", "images", "tag", "--force", source, target])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// A test's namespace on the node; deleted when dropped.
pub struct NodeNamespace {
    namespace: TestNamespace,
    kubeconfig: PathBuf,
}

impl std::ops::Deref for NodeNamespace {
    type Target = TestNamespace;
    fn deref(&self) -> &TestNamespace {
        &self.namespace
    }
}

impl Drop for NodeNamespace {
    fn drop(&mut self) {
        // Synchronous, and not waiting: a test that failed still frees the node for the next.
        let _ = crate::kubectl::kubectl(
            &self.kubeconfig,
            &["delete", "namespace", &self.namespace.name, "--wait=false"],
        );
    }
}

/// The pods of a MailGateway, by name.
pub async fn gateway_pods(ns: &TestNamespace, gateway: &str) -> Vec<Pod> {
    let pods: Api<Pod> = ns.api();
    let selector = mx_operator::manifests::gateway::pod_selector(gateway);
    let mut list = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.sort_by_key(|p| p.metadata.name.clone());
    list
}

/// Whether a pod is Ready and not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's IP address.
pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// The sum of a pod's container restarts.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or_default()
}
