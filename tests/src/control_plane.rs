//! A real Kubernetes control plane on loopback: etcd plus kube-apiserver v1.20 (built by
//! `tests/harness/bootstrap.sh`), token authentication, RBAC on.

use crate::process::{Guarded, free_port, spawn_tied};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
/// The field manager the harness uses for what it installs itself (CRDs, namespaces).
pub const HARNESS_MANAGER: &str = "mx-operator-test-harness";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kube-apiserver not found at {0}: run `make bootstrap` (tests/harness/bootstrap.sh) first"
    )]
    MissingApiServer(PathBuf),
    #[error("{name} exited during start-up ({status}); its log: {log}")]
    Exited {
        name: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("kube-apiserver did not answer /readyz within {READY_TIMEOUT:?}; its log: {0}")]
    NotReady(PathBuf),
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{0}")]
    Timeout(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("API call: {0}")]
    Kube(#[from] kube::Error),
    #[error("waiting for the CRD {0} to be established timed out")]
    CrdNotEstablished(String),
    #[error("rendering CRDs: {0}")]
    Crd(#[from] mx_operator::api::crd::RenderError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// Whether the servers die with this process (tests) or keep running after it (demo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    TiedToThisProcess,
    Detached,
}

/// A started control plane. In `TiedToThisProcess` mode its servers stop when it is
/// dropped or when the process ends, whichever comes first.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub url: String,
    pub kubeconfig: PathBuf,
    /// Credentials of the user `mx-operator`, whose requests the audit log tells apart.
    pub operator_kubeconfig: PathBuf,
    /// A second operator user, for a second replica in leader-election tests.
    pub standby_kubeconfig: PathBuf,
    pub admin_token: String,
    operator_token: String,
    standby_token: String,
    servers: Vec<Guarded>,
    /// How etcd and kube-apiserver were started, to start them again in `restart`.
    storage_and_api: Vec<(&'static str, Launch)>,
    namespaces: AtomicUsize,
}

/// A server's program and arguments.
struct Launch {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
}

impl Launch {
    fn of(command: &Command) -> Self {
        Self {
            program: command.get_program().to_owned(),
            args: command.get_args().map(|a| a.to_owned()).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

/// Where the bootstrap script caches the API server binary.
pub fn cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MX_OPERATOR_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/mx-operator")
}

fn apiserver_binary() -> PathBuf {
    std::env::var("KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("bin/kube-apiserver"))
}

fn run(command: &mut Command) -> Result<(), HarnessError> {
    let output = command
        .output()
        .map_err(io_error(format!("running {command:?}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            command: format!("{command:?}"),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// A server's log, appended to when it is started again.
fn log_file(dir: &Path, name: &str) -> Result<fs::File, HarnessError> {
    let path = dir.join(format!("{name}.log"));
    fs::File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(format!("opening {}", path.display())))
}

impl ControlPlane {
    /// The control plane shared by all tests of this test binary, started on first use.
    pub async fn shared() -> Result<&'static ControlPlane, HarnessError> {
        static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let root = std::env::temp_dir().join("mx-operator-tests");
                remove_stale_runs(&root);
                let dir = root.join(std::process::id().to_string());
                let plane = ControlPlane::start(&dir, Lifetime::TiedToThisProcess).await?;
                plane.install_crds().await?;
                Ok(plane)
            })
            .await
    }

    /// Starts etcd and kube-apiserver with their state and logs in `dir`.
    pub async fn start(dir: &Path, lifetime: Lifetime) -> Result<Self, HarnessError> {
        let apiserver = apiserver_binary();
        if !apiserver.exists() {
            return Err(HarnessError::MissingApiServer(apiserver));
        }
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("certs"))
            .map_err(io_error(format!("creating {}", dir.display())))?;

        let admin_token = random_token("admin");
        let operator_token = random_token("operator");
        let standby_token = random_token("standby");
        fs::write(
            dir.join("tokens.csv"),
            format!(
                "{admin_token},admin,admin,\"system:masters\"\n{operator_token},{OPERATOR_USER},{OPERATOR_USER},\"system:masters\"\n{standby_token},{STANDBY_USER},{STANDBY_USER},\"system:masters\"\n"
            ),
        )
        .map_err(io_error("writing tokens.csv"))?;
        fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY)
            .map_err(io_error("writing the audit policy"))?;
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(dir.join("sa.key"))
            .arg("-out")
            .arg(dir.join("sa.pub")))?;

        let etcd_client = free_port().map_err(io_error("finding a free port"))?;
        let etcd_peer = free_port().map_err(io_error("finding a free port"))?;
        let apiserver_port = free_port().map_err(io_error("finding a free port"))?;

        let mut servers = Vec::new();
        let mut etcd = Command::new("etcd");
        etcd.arg("--name=local")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=local=http://127.0.0.1:{etcd_peer}"
            ))
            .arg("--logger=zap")
            .arg("--log-level=warn");
        let mut storage_and_api = vec![("etcd", Launch::of(&etcd))];
        servers.push(start_server("etcd", etcd, dir, lifetime)?);

        let mut kube = Command::new(&apiserver);
        kube.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={apiserver_port}"))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg(format!(
                "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
            ))
            .arg("--endpoint-reconciler-type=none")
            .arg(format!(
                "--audit-policy-file={}",
                dir.join("audit-policy.yaml").display()
            ))
            .arg(format!(
                "--audit-log-path={}",
                dir.join("audit.log").display()
            ))
            .arg("--v=1");
        storage_and_api.push(("kube-apiserver", Launch::of(&kube)));
        servers.push(start_server("kube-apiserver", kube, dir, lifetime)?);

        let url = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            url,
            kubeconfig,
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            standby_kubeconfig: dir.join("standby.kubeconfig"),
            admin_token,
            operator_token,
            standby_token,
            servers: Vec::new(),
            storage_and_api,
            namespaces: AtomicUsize::new(0),
        };
        plane.wait_until_ready(&mut servers).await?;
        servers.push(start_server(
            "kube-controller-manager",
            plane.controller_manager_command(),
            dir,
            lifetime,
        )?);
        match lifetime {
            Lifetime::TiedToThisProcess => plane.servers = servers,
            // Detached servers keep running: forget their handles instead of killing them.
            Lifetime::Detached => servers.into_iter().for_each(std::mem::forget),
        }
        Ok(plane)
    }

    /// Kills etcd, kube-apiserver and kube-controller-manager (SIGKILL, as when their
    /// machine fails), leaves them down for `down_for`, then starts them again on the same
    /// ports and data. Only for a control plane whose servers this process holds.
    pub async fn restart(&mut self, down_for: Duration) -> Result<(), HarnessError> {
        if self.servers.is_empty() {
            return Err(HarnessError::Command {
                command: "restarting the control plane".into(),
                stderr: "its servers are detached from this process".into(),
            });
        }
        self.servers.clear();
        tokio::time::sleep(down_for).await;
        let mut servers = Vec::new();
        for (name, launch) in &self.storage_and_api {
            servers.push(start_server(
                name,
                launch.command(),
                &self.dir,
                Lifetime::TiedToThisProcess,
            )?);
        }
        self.wait_until_ready(&mut servers).await?;
        servers.push(start_server(
            "kube-controller-manager",
            self.controller_manager_command(),
            &self.dir,
            Lifetime::TiedToThisProcess,
        )?);
        self.servers = servers;
        Ok(())
    }

    async fn wait_until_ready(&self, servers: &mut [Guarded]) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut kubeconfig_written = false;
        loop {
            // The API server writes its self-signed certificate shortly after it starts.
            if !kubeconfig_written && self.dir.join("certs/apiserver.crt").exists() {
                self.write_kubeconfig(&self.kubeconfig, &self.admin_token)?;
                self.write_kubeconfig(&self.operator_kubeconfig, &self.operator_token)?;
                self.write_kubeconfig(&self.standby_kubeconfig, &self.standby_token)?;
                kubeconfig_written = true;
            }
            if kubeconfig_written && self.answers_ready().await {
                return Ok(());
            }
            if let Some(exited) = first_exited(&self.dir, servers) {
                return Err(exited);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady(self.dir.join("kube-apiserver.log")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn answers_ready(&self) -> bool {
        let Ok(client) = self.client().await else {
            return false;
        };
        let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
            return false;
        };
        client
            .request_text(request)
            .await
            .is_ok_and(|body| body.trim() == "ok")
    }

    /// The garbage collector (owner references), namespace deletion, service-account tokens
    /// and the rules of the aggregated roles (`view`, `edit`, `admin`, as a cluster hands
    /// them to tenants) need kube-controller-manager; nothing else of it is wanted.
    fn controller_manager_command(&self) -> Command {
        let mut command = Command::new(cache_dir().join("bin/kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation")
            .arg(format!(
                "--service-account-private-key-file={}",
                self.dir.join("sa.key").display()
            ))
            .arg(format!(
                "--root-ca-file={}",
                self.dir.join("certs/apiserver.crt").display()
            ))
            .arg("--leader-elect=false")
            .arg("--port=0")
            .arg("--secure-port=0")
            .arg("--v=1");
        command
    }

    /// A client that authenticates as the operator's user.
    pub async fn operator_client(&self) -> Result<Client, HarnessError> {
        Self::client_from(&self.operator_kubeconfig).await
    }

    /// A client that authenticates as the second operator user.
    pub async fn standby_client(&self) -> Result<Client, HarnessError> {
        Self::client_from(&self.standby_kubeconfig).await
    }

    /// A client that authenticates with `token` (a ServiceAccount's), and the kubeconfig
    /// written for it as `<name>.kubeconfig`.
    pub async fn token_client(
        &self,
        name: &str,
        token: &str,
    ) -> Result<(Client, PathBuf), HarnessError> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        self.write_kubeconfig(&path, token)?;
        Ok((Self::client_from(&path).await?, path))
    }

    async fn client_from(path: &Path) -> Result<Client, HarnessError> {
        client_from(path).await
    }

    /// Write requests (create, update, patch, delete) the API server has audited for `user`.
    pub fn audited_writes(&self, user: &str) -> Result<Vec<AuditedWrite>, HarnessError> {
        let log = fs::read_to_string(self.dir.join("audit.log"))
            .map_err(io_error("reading the audit log"))?;
        Ok(log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                entry["stage"] == "ResponseComplete" && entry["user"]["username"] == user
            })
            .map(|entry| {
                let text =
                    |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
                AuditedWrite {
                    verb: text(&entry["verb"]),
                    uri: text(&entry["requestURI"]),
                    resource: text(&entry["objectRef"]["resource"]),
                    name: text(&entry["objectRef"]["name"]),
                }
            })
            .collect())
    }

    /// Writes a kubeconfig for this control plane that authenticates with `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<(), HarnessError> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: user\ncurrent-context: local\n",
            url = self.url,
            ca = self.dir.join("certs/apiserver.crt").display(),
        );
        fs::write(path, kubeconfig).map_err(io_error("writing a kubeconfig"))
    }

    /// A new client with the admin token. Make one per test: a client belongs to the tokio
    /// runtime it was made in.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// The client configuration for the admin user.
    pub async fn config(&self) -> Result<Config, HarnessError> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// Installs (server-side applies) every CRD of the operator and waits until each is
    /// served. Servers older than 1.25 do not know CEL rules, and server-side apply there
    /// refuses the undeclared `x-kubernetes-validations` field, so it is left out for them
    /// (what a client-side create would silently do anyway).
    pub async fn install_crds(&self) -> Result<(), HarnessError> {
        let client = self.client().await?;
        let version = client.apiserver_version().await?;
        let knows_cel = supports_cel(&version.major, &version.minor);
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let params = PatchParams::apply(HARNESS_MANAGER).force();
        for crd in mx_operator::api::crd::all() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = if knows_cel {
                serde_json::to_value(&crd).map_err(|e| HarnessError::Command {
                    command: format!("serializing CRD {name}"),
                    stderr: e.to_string(),
                })?
            } else {
                mx_operator::api::crd::without_cel(&crd)
            };
            api.patch(&name, &params, &Patch::Apply(&body)).await?;
            crd_established(&api, &name, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// A fresh namespace for one test, with a client made in the caller's runtime.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, HarnessError> {
        let client = self.client().await?;
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        create_namespace(client, format!("{prefix}-{n}")).await
    }
}

/// Waits up to `limit` until CRD `name` is established (served). Not `kubectl wait
/// --for=condition=Established`: a CRD the API server has not looked at yet stores
/// `status.conditions: null`, and kubectl fails on that instead of waiting.
pub async fn crd_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    limit: Duration,
) -> Result<(), HarnessError> {
    let established = await_condition(api.clone(), name, conditions::is_crd_established());
    tokio::time::timeout(limit, established)
        .await
        .map_err(|_| HarnessError::CrdNotEstablished(name.to_string()))?
        .map_err(|_| HarnessError::CrdNotEstablished(name.to_string()))?;
    Ok(())
}

/// Creates the namespace `name` with `client`.
pub async fn create_namespace(client: Client, name: String) -> Result<TestNamespace, HarnessError> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(TestNamespace { client, name })
}

/// A namespace of its own for one test. Namespaces are not deleted: no namespace
/// controller runs, and the whole control plane goes away with the test binary.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// The token the API server issued for ServiceAccount `account` of this namespace (the
    /// token controller writes it into a Secret shortly after the account appears).
    pub async fn service_account_token(&self, account: &str) -> String {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = self.api();
        crate::wait::until(
            Duration::from_secs(30),
            &format!("a token of ServiceAccount {account}"),
            || async {
                let list = secrets.list(&Default::default()).await.ok()?;
                list.items.into_iter().find_map(|secret| {
                    let owner = secret
                        .metadata
                        .annotations
                        .as_ref()?
                        .get("kubernetes.io/service-account.name")?
                        .clone();
                    if secret.type_.as_deref() != Some("kubernetes.io/service-account-token")
                        || owner != account
                    {
                        return None;
                    }
                    let token = secret.data.as_ref()?.get("token")?;
                    Some(String::from_utf8_lossy(&token.0).into_owned())
                })
            },
        )
        .await
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// A client with the credentials of the kubeconfig at `path`, made in the caller's runtime.
pub async fn client_from(path: &Path) -> Result<Client, HarnessError> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn start_server(
    name: &'static str,
    mut command: Command,
    dir: &Path,
    lifetime: Lifetime,
) -> Result<Guarded, HarnessError> {
    let log = log_file(dir, name)?;
    let stderr = log
        .try_clone()
        .map_err(io_error("duplicating a log handle"))?;
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .current_dir(dir);
    let child = match lifetime {
        Lifetime::TiedToThisProcess => spawn_tied(command),
        Lifetime::Detached => {
            use std::os::unix::process::CommandExt;
            command.process_group(0).spawn()
        }
    }
    .map_err(io_error(format!("starting {name}")))?;
    if lifetime == Lifetime::Detached {
        fs::write(dir.join(format!("{name}.pid")), child.id().to_string())
            .map_err(io_error("writing a pid file"))?;
    }
    Ok(Guarded::new(name, child))
}

fn first_exited(dir: &Path, servers: &mut [Guarded]) -> Option<HarnessError> {
    servers.iter_mut().find_map(|server| {
        server.exited().map(|status| HarnessError::Exited {
            name: server.name,
            status,
            log: dir.join(format!("{}.log", server.name)),
        })
    })
}

/// Removes the state of earlier test runs whose process is gone.
fn remove_stale_runs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// One write request from the audit log.
#[derive(Clone, Debug)]
pub struct AuditedWrite {
    pub verb: String,
    pub uri: String,
    /// The object written (`objectRef`): its resource, and its name, which the server
    /// fills in from the body of a create.
    pub resource: String,
    pub name: String,
}

/// The user name of the operator's credentials.
pub const OPERATOR_USER: &str = "mx-operator";
/// The user name of the second operator credentials.
pub const STANDBY_USER: &str = "mx-operator-standby";

/// Only write requests are audited: tests count them (a steady-state resync must make none).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

fn random_token(prefix: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let value = RandomState::new().hash_one((prefix, std::process::id(), Instant::now()));
    format!("{prefix}-{value:016x}")
}

/// Whether the server evaluates CEL validation rules (`x-kubernetes-validations`, 1.25+).
pub fn supports_cel(major: &str, minor: &str) -> bool {
    let minor: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    major != "1" || minor >= 25
}
