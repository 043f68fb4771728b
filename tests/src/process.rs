//! Starting server processes so that they never outlive the test binary.
//!
//! Children get `PR_SET_PDEATHSIG = SIGKILL`, which fires when the *thread* that spawned them
//! exits. Test threads come and go, so every child is spawned from one dedicated thread
//! that lives as long as the process: when the test binary ends — passed, failed, panicked
//! or killed — the kernel kills what it started.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type Request = (Command, Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
                // Keep the thread (and with it the death signal) alive for good.
                loop {
                    std::thread::park();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("cannot start the child-spawner thread: {e}"));
        Mutex::new(requests)
    })
}

/// Spawns `command` so that it dies with this process.
pub fn spawn_tied(command: Command) -> io::Result<Child> {
    let (reply, answer) = channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("child-spawner lock poisoned"))?
        .send((command, reply))
        .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("child-spawner thread did not answer"))?
}

/// A running child that is killed and reaped when dropped.
pub struct Guarded {
    pub name: &'static str,
    child: Child,
}

impl Guarded {
    pub fn new(name: &'static str, child: Child) -> Self {
        Self { name, child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` when the process has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with `input` on its standard input; its standard output, or its standard
/// error as the error when it fails.
pub fn run_with_input(
    mut command: std::process::Command,
    input: &str,
) -> Result<String, crate::HarnessError> {
    use std::io::Write;
    use std::process::Stdio;
    let tool = command.get_program().to_string_lossy().into_owned();
    let io = |what: String| move |source| crate::HarnessError::Io { what, source };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("starting {tool}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(io(format!("feeding {tool}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(io(format!("waiting for {tool}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(crate::HarnessError::Command {
            command: tool,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// `path` opened for appending (created if need be): a server's log.
pub fn append_log(path: &std::path::Path) -> Result<std::fs::File, crate::HarnessError> {
    std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| crate::HarnessError::Io {
            what: format!("opening {}", path.display()),
            source,
        })
}

/// Waits up to 15 s until `server` (started with its log at `log`) accepts connections at
/// `address`.
pub fn wait_listening(
    server: &str,
    address: std::net::SocketAddr,
    log: &std::path::Path,
) -> Result<(), crate::HarnessError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(crate::HarnessError::Command {
        command: server.into(),
        stderr: format!("did not listen on {address}; see {}", log.display()),
    })
}

/// A free TCP port on 127.0.0.1 (the kernel picks it; the listener is closed again).
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// This machine's own address (of the interface its default route leaves by): what a
/// pod's address may be, unlike loopback. Found by connecting a UDP socket to a
/// documentation address, which sends nothing.
pub fn machine_address() -> io::Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    socket.connect(("192.0.2.1", 9))?;
    Ok(socket.local_addr()?.ip())
}

/// The `mx-operator` binary of this workspace's debug build, or `$MX_OPERATOR_BINARY`.
pub fn operator_binary() -> std::path::PathBuf {
    // `make bench` measures the release build.
    if let Some(binary) = std::env::var_os("MX_OPERATOR_BINARY") {
        return binary.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::repository().join("target"));
    target.join("debug/mx-operator")
}

/// `mx-operator run` as a process (one replica, no leader election, drift off) against the
/// API server of `kubeconfig`, resyncing every `resync_seconds`, its output appended to
/// `log`; SIGKILLed when dropped.
pub fn start_operator(
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    rust_log: &str,
    resync_seconds: u64,
) -> io::Result<Guarded> {
    let binary = operator_binary();
    if !binary.exists() {
        return Err(io::Error::other(format!(
            "{} is missing: run `cargo build --workspace` first (make test does)",
            binary.display()
        )));
    }
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = Command::new(binary);
    command
        .args([
            "run",
            "--leader-elect",
            "false",
            "--drift-interval-seconds",
            "0",
        ])
        .arg(format!("--resync-seconds={resync_seconds}"))
        .arg(format!("--metrics-address=127.0.0.1:{}", free_port()?))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(Guarded::new("mx-operator", spawn_tied(command)?))
}
