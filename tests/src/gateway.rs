//! One gateway replica as local processes, the way the StatefulSet runs it: the
//! `mx-operator agent` binary writing a Postfix configuration folder from the API server,
//! and a real Postfix (`postfix -c DIR start-fg`) on a free loopback port.

use crate::control_plane::{HarnessError, Lifetime};
use crate::process::{Guarded, free_port, operator_binary, spawn_tied};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gateway {
    pub dir: PathBuf,
    pub smtp: SocketAddr,
    /// Where the agent serves /metrics, /healthz and /readyz: this machine's own address,
    /// as a pod's would be (not loopback).
    pub agent_address: SocketAddr,
    agent: Option<Guarded>,
    postfix: Option<Guarded>,
    agent_args: Vec<String>,
    kubeconfig: PathBuf,
    lifetime: Lifetime,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> HarnessError {
    move |source| HarnessError::Io { what, source }
}

/// The Postfix settings of a test replica: its own folders and a fast retry schedule, so
/// queued mail is retried within seconds of `flush`.
fn local_settings(dir: &Path, smtp: SocketAddr) -> Vec<String> {
    let dir = dir.display();
    [
        format!("--smtp-listen={smtp}"),
        format!("--set=queue_directory={dir}/queue"),
        format!("--set=data_directory={dir}/data"),
        format!("--set=maillog_file={dir}/maillog"),
        format!("--set=maillog_file_prefixes={dir}"),
        "--set=inet_interfaces=127.0.0.1".into(),
        "--set=inet_protocols=ipv4".into(),
        "--set=smtp_connect_timeout=2s".into(),
        "--set=queue_run_delay=2s".into(),
        "--set=minimal_backoff_time=2s".into(),
        "--set=maximal_backoff_time=4s".into(),
    ]
    .into()
}

impl Gateway {
    /// Starts the agent for `gateway` in `namespace` and, once it has loaded the
    /// configuration, Postfix.
    pub async fn start(
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        gateway: &str,
        lifetime: Lifetime,
    ) -> Result<Self, HarnessError> {
        Self::start_on(dir, kubeconfig, namespace, gateway, None, &[], lifetime).await
    }

    /// A replica of gateway `gateway` in the test namespace, its agent reading with the
    /// operator's credentials, in a folder of the test's control plane.
    pub async fn of_namespace(
        plane: &crate::ControlPlane,
        ns: &crate::TestNamespace,
        gateway: &str,
    ) -> Result<Self, HarnessError> {
        Self::start(
            &plane.dir.join(format!("gateway-{}-{gateway}", ns.name)),
            &plane.operator_kubeconfig,
            &ns.name,
            gateway,
            Lifetime::TiedToThisProcess,
        )
        .await
    }

    /// Like `start`, on a chosen SMTP port, with agent arguments of the test's own after
    /// the harness's (`--set=name=value` for a `main.cf` setting).
    pub async fn start_on(
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        gateway: &str,
        smtp_port: Option<u16>,
        extra_agent_args: &[&str],
        lifetime: Lifetime,
    ) -> Result<Self, HarnessError> {
        let _ = fs::remove_dir_all(dir);
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io_error(format!("creating {}", dir.display())))?;
        }
        // Postfix's daemons write their state here as the `postfix` user.
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(dir.join("data"))
            .status()
            .map_err(io_error("running chown".into()))?;
        if !chown.success() {
            return Err(HarnessError::Command {
                command: "chown postfix data".into(),
                stderr: String::new(),
            });
        }
        let port_error = io_error("finding a free port".into());
        let smtp: SocketAddr = (
            [127, 0, 0, 1],
            match smtp_port {
                Some(port) => port,
                None => free_port().map_err(port_error)?,
            },
        )
            .into();
        let agent_ip = crate::process::machine_address()
            .map_err(io_error("finding this machine's address".into()))?;
        let agent_address = SocketAddr::new(
            agent_ip,
            free_port().map_err(io_error("finding a free port".into()))?,
        );
        let mut agent_args = vec![
            "agent".to_string(),
            format!("--gateway={gateway}"),
            format!("--namespace={namespace}"),
            format!("--config-dir={}", dir.join("conf").display()),
            format!("--metrics-address={agent_address}"),
            "--queue-interval-seconds=1".into(),
            "--log-format=text".into(),
        ];
        agent_args.extend(local_settings(dir, smtp));
        agent_args.extend(extra_agent_args.iter().map(|arg| arg.to_string()));
        let mut replica = Self {
            dir: dir.to_path_buf(),
            smtp,
            agent_address,
            agent: None,
            postfix: None,
            agent_args,
            kubeconfig: kubeconfig.to_path_buf(),
            lifetime,
        };
        replica.start_agent()?;
        replica.wait_for_config().await?;
        replica.start_postfix().await?;
        replica.wait_ready().await?;
        Ok(replica)
    }

    fn spawn(
        &self,
        name: &'static str,
        mut command: Command,
    ) -> Result<Option<Guarded>, HarnessError> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(io_error(format!("creating {name}.log")))?;
        let err = log
            .try_clone()
            .map_err(io_error(format!("opening {name}.log")))?;
        command.stdin(Stdio::null()).stdout(log).stderr(err);
        match self.lifetime {
            Lifetime::TiedToThisProcess => {
                let child = spawn_tied(command).map_err(io_error(format!("starting {name}")))?;
                Ok(Some(Guarded::new(name, child)))
            }
            Lifetime::Detached => {
                let child = command
                    .spawn()
                    .map_err(io_error(format!("starting {name}")))?;
                fs::write(self.dir.join(format!("{name}.pid")), child.id().to_string())
                    .map_err(io_error(format!("writing {name}.pid")))?;
                Ok(None)
            }
        }
    }

    /// Starts the agent (again, after `stop_agent`).
    pub fn start_agent(&mut self) -> Result<(), HarnessError> {
        let mut command = Command::new(operator_binary());
        command
            .args(&self.agent_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info");
        self.agent = self.spawn("agent", command)?;
        Ok(())
    }

    /// Kills the agent (SIGKILL); Postfix keeps running on what the agent last wrote.
    pub fn stop_agent(&mut self) {
        self.agent = None;
    }

    /// Waits for the agent's first complete configuration, as the image's entrypoint does
    /// before it starts Postfix (the agent is ready only once Postfix runs).
    async fn wait_for_config(&self) -> Result<(), HarnessError> {
        let loaded = self
            .dir
            .join("conf")
            .join(mx_operator::agent::LAST_GOOD_FILE);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if fs::metadata(&loaded).is_ok_and(|m| m.len() > 0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::Timeout(format!(
            "agent: no complete configuration within 60 s; see {}",
            self.dir.join("agent.log").display()
        )))
    }

    /// Waits until the agent answers /readyz (configuration loaded, Postfix seen running).
    async fn wait_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get_at(self.agent_address, "/readyz").is_some_and(|(status, _)| status == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::Timeout(format!(
            "agent: not ready within 30 s although Postfix listens; see {}",
            self.dir.join("agent.log").display()
        )))
    }

    async fn start_postfix(&mut self) -> Result<(), HarnessError> {
        let mut command = Command::new("postfix");
        command.arg("-c").arg(self.dir.join("conf")).arg("start-fg");
        self.postfix = self.spawn("postfix", command)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&self.smtp, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::Timeout(format!(
            "postfix: not listening on {} within 30 s; see {}",
            self.smtp,
            self.dir.join("maillog").display()
        )))
    }

    /// Stops Postfix (what a pod restart does) and starts it again on the same queue.
    pub async fn restart_postfix(&mut self) -> Result<(), HarnessError> {
        self.postfix_command(&["stop"])?;
        self.postfix = None;
        self.start_postfix().await
    }

    /// What a pod deleted and started again does: Postfix and the agent stop, the
    /// configuration folder (an emptyDir) is lost, the queue (a volume) stays; then the
    /// agent starts, writes a new configuration, and Postfix starts on it.
    pub async fn recreate(&mut self) -> Result<(), HarnessError> {
        self.postfix_command(&["stop"])?;
        self.postfix = None;
        self.agent = None;
        let conf = self.dir.join("conf");
        fs::remove_dir_all(&conf).map_err(io_error(format!("removing {}", conf.display())))?;
        fs::create_dir_all(&conf).map_err(io_error(format!("creating {}", conf.display())))?;
        self.start_agent()?;
        self.wait_for_config().await?;
        self.start_postfix().await?;
        self.wait_ready().await
    }

    /// The Postfix master's process id (it changes only on a restart, not on a reload).
    /// The agent's process id while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Guarded::id)
    }

    pub fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// Creates pod `replica` of gateway `gateway` for this replica (see [`list_as_pods`]),
    /// so that the operator asks its agent.
    pub async fn list_as_pod(
        &self,
        ns: &crate::TestNamespace,
        gateway: &str,
        replica: &str,
    ) -> Result<(), kube::Error> {
        list_as_pods(ns, gateway, &[(replica, self)]).await
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the Postfix master and every daemon
    /// it started: a Postfix that hangs, as on a volume that stopped answering.
    pub fn freeze_postfix(&self, frozen: bool) -> Result<(), HarnessError> {
        let master = self.master_pid().ok_or_else(|| HarnessError::Command {
            command: "reading master.pid".into(),
            stderr: "no master pid".into(),
        })?;
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let kill = |pid: u32| {
            Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .map_err(io_error("running kill".into()))
        };
        // A daemon may exit between the listing and its signal (showq serves one listing);
        // only the master must take it.
        for child in children_of(master) {
            kill(child)?;
        }
        if kill(master)?.success() {
            Ok(())
        } else {
            Err(HarnessError::Command {
                command: format!("kill {signal} {master}"),
                stderr: "the master is gone".into(),
            })
        }
    }

    /// `postfix -c DIR <args>`, output discarded: `stop` and `reload` leave daemons
    /// holding inherited pipes, so reading their output would never end.
    pub fn postfix_command(&self, args: &[&str]) -> Result<(), HarnessError> {
        let status = bounded("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(io_error("running postfix".into()))?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Command {
                command: format!("postfix {}", args.join(" ")),
                stderr: format!("exit {status}; see {}", self.dir.join("maillog").display()),
            })
        }
    }

    /// Asks Postfix to retry every queued message now.
    pub fn flush(&self) -> Result<(), HarnessError> {
        self.tool("postqueue", &["-f"]).map(|_| ())
    }

    /// Number of messages in the queue.
    pub fn queued(&self) -> Result<usize, HarnessError> {
        Ok(self
            .tool("postqueue", &["-j"])?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }

    fn tool(&self, program: &str, args: &[&str]) -> Result<String, HarnessError> {
        let output = bounded(program)
            .arg("-c")
            .arg(self.dir.join("conf"))
            .args(args)
            .output()
            .map_err(io_error(format!("running {program}")))?;
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: format!("{program} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Lines of the mail log that contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        fs::read_to_string(self.dir.join("maillog"))
            .unwrap_or_default()
            .matches(text)
            .count()
    }

    /// The agent's /metrics text.
    pub fn metrics(&self) -> String {
        http_get_at(self.agent_address, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of one metric sample (`name{labels}` as printed), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::TiedToThisProcess {
            // A test that failed while Postfix was frozen would leave it stopped for good.
            let _ = self.freeze_postfix(false);
            // start-fg's master stops with SIGTERM from the guard; `stop` also ends its
            // children at once.
            let _ = self.postfix_command(&["stop"]);
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: status code and body.
/// Creates a pod for each of `replicas` (pod name, replica) of gateway `gateway`, with its
/// agent's port and address and a Ready condition, as the StatefulSet controller and the
/// kubelet would (the test control plane runs neither), so that the operator asks its
/// agent. The pod names no SMTP port: the SMTP probe leaves it alone.
pub async fn list_as_pods(
    ns: &crate::TestNamespace,
    gateway: &str,
    replicas: &[(&str, &Gateway)],
) -> Result<(), kube::Error> {
    for (name, replica) in replicas {
        gateway_pod(ns, gateway, name, replica.agent_address, true).await?;
    }
    Ok(())
}

/// Pod `name` of gateway `gateway`, its agent at `agent`, Ready or not (see
/// [`list_as_pods`]).
pub async fn gateway_pod(
    ns: &crate::TestNamespace,
    gateway: &str,
    name: &str,
    agent: SocketAddr,
    ready: bool,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    let pods = ns.api::<Pod>();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "mx-gateway",
            "app.kubernetes.io/instance": gateway,
            "app.kubernetes.io/component": "smtp",
            "app.kubernetes.io/managed-by": "mx-operator"}},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "agent", "image": "mx-gateway:local",
            "ports": [{"name": "agent", "containerPort": agent.port()}]}]},
    });
    let params = PatchParams::apply("test-pods").force();
    // In a namespace just made, admission refuses pods until its default ServiceAccount
    // exists (500, "retry after"): ask again, as a StatefulSet controller would.
    let started = Instant::now();
    loop {
        match pods.patch(name, &params, &Patch::Apply(&pod)).await {
            Err(kube::Error::Api(status))
                if status.code == 500 && started.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            result => {
                result?;
                break;
            }
        }
    }
    // A merge patch, as a kubelet's: an apply by the same manager without the labels
    // would remove them.
    let ip = agent.ip().to_string();
    let status = serde_json::json!({
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), path)
}

/// A plain HTTP/1.0 GET to `address`: status code and body.
pub fn http_get_at(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_with(address, path, None)
}

/// Like `http_get_at`, with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_with(
    address: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{authorization}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name in parentheses may hold spaces: fields after it.
                    let after = stat.rsplit_once(") ")?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// `program` run under coreutils' `timeout`: a Postfix tool that hangs (a wedged master)
/// fails the test that waits on it instead of stalling the whole suite.
fn bounded(program: &str) -> Command {
    let mut command = Command::new("timeout");
    command.args(["--kill-after=5", "60", program]);
    command
}
