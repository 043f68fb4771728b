//! `local-cluster up|down|dns|sink|gateway`: the local parts of `make demo`, left running in
//! the background: the control plane (when no node can start), the demo zone's Knot, and a
//! stand-in for the customer's primary.

use mx_operator_tests::control_plane::{ControlPlane, Lifetime, cache_dir};
use mx_operator_tests::knot::Knot;

/// Knot for the demo: the zone of examples/ with the customer's own MX, on a fixed port
/// that `make demo` points the example DNSProvider at.
const DEMO_DNS_PORT: u16 = 15353;
use std::path::PathBuf;
use std::process::ExitCode;

fn demo_dir() -> PathBuf {
    cache_dir().join("demo")
}

/// The demo gateway replica's folder: not under the cache in $HOME, which Postfix's
/// unprivileged daemons cannot enter.
fn gateway_dir() -> PathBuf {
    PathBuf::from("/var/tmp/mx-operator-demo/gateway")
}

/// SMTP port of the demo gateway replica.
const DEMO_SMTP_PORT: u16 = 2525;

fn pids() -> Vec<(String, i32)> {
    [
        "gateway/agent",
        "knot/knotd",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ]
    .iter()
    .filter_map(|name| {
        let path = match name.strip_prefix("gateway/") {
            Some(file) => gateway_dir().join(format!("{file}.pid")),
            None => demo_dir().join(format!("{name}.pid")),
        };
        let pid = std::fs::read_to_string(path).ok()?;
        Some((name.to_string(), pid.trim().parse().ok()?))
    })
    .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn stop_gateway() {
    let config = gateway_dir().join("conf");
    if config.join("main.cf").exists() {
        let _ = std::process::Command::new("postfix")
            .arg("-c")
            .arg(&config)
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    if let Some((_, pid)) = pids().into_iter().find(|(name, _)| name == "gateway/agent")
        && alive(pid)
    {
        // SAFETY: plain kill(2) of a process this tool started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        println!("stopped the gateway agent (pid {pid})");
    }
}

fn down() {
    stop_gateway();
    for (name, pid) in pids()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("gateway/"))
    {
        if alive(pid) {
            // SAFETY: plain kill(2) of a process this tool started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            println!("stopped {name} (pid {pid})");
        }
        let _ = std::fs::remove_file(demo_dir().join(format!("{name}.pid")));
    }
}

/// One replica of MailGateway `namespace/name` as local processes (agent + Postfix).
async fn gateway(namespace: &str, name: &str) -> Result<(), String> {
    stop_gateway();
    let replica = mx_operator_tests::gateway::Gateway::start_on(
        &gateway_dir(),
        &demo_dir().join("kubeconfig"),
        namespace,
        name,
        Some(DEMO_SMTP_PORT),
        &[],
        Lifetime::Detached,
    )
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "gateway {namespace}/{name}: Postfix on {}, agent on {} (logs in {})",
        replica.smtp,
        replica.agent_address,
        replica.dir.display()
    );
    Ok(())
}

async fn up() -> Result<(), String> {
    let running: Vec<_> = pids()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("gateway/"))
        .collect();
    if running.len() == 4 && running.iter().all(|(_, pid)| alive(*pid)) {
        println!(
            "already running; kubeconfig: {}",
            demo_dir().join("kubeconfig").display()
        );
        return Ok(());
    }
    down();
    let plane = ControlPlane::start(&demo_dir(), Lifetime::Detached)
        .await
        .map_err(|e| e.to_string())?;
    plane.install_crds().await.map_err(|e| e.to_string())?;
    dns()?;
    println!("control plane up at {}", plane.url);
    println!("kubeconfig: {}", plane.kubeconfig.display());
    Ok(())
}

/// The demo zone at Knot, alone (the node's API server serves the rest).
fn dns() -> Result<(), String> {
    if let Some((_, pid)) = pids().into_iter().find(|(name, _)| name == "knot/knotd")
        && alive(pid)
    {
        println!("Knot DNS for example.com already running (pid {pid})");
        return Ok(());
    }
    let knot = Knot::start_on(
        &demo_dir().join("knot"),
        &[(
            "example.com",
            "@ MX 10 mail.example.com.\nmail A 192.0.2.25",
        )],
        Some(DEMO_DNS_PORT),
        Lifetime::Detached,
    )
    .map_err(|e| e.to_string())?;
    println!("Knot DNS for example.com at {}", knot.address);
    Ok(())
}

/// The customer's primary for the demo: an SMTP sink on `address` that prints a line for
/// each message it takes, until it is killed.
fn sink(address: &str) -> Result<(), String> {
    let address: std::net::SocketAddr = address.parse().map_err(|e| format!("{address}: {e}"))?;
    let sink = mx_operator_tests::smtp::Sink::start_on(address).map_err(|e| e.to_string())?;
    println!("primary (SMTP sink) listening on {}", sink.address);
    let mut printed = 0;
    loop {
        let received = sink.received();
        for message in &received[printed..] {
            let subject = message
                .data
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default();
            println!(
                "received from <{}> for {:?}: {subject:?}",
                message.sender, message.recipients
            );
        }
        printed = received.len();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("up") => match up().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("gateway") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let [namespace, name] = args.as_slice() else {
                eprintln!("usage: local-cluster gateway NAMESPACE NAME");
                return ExitCode::from(2);
            };
            match gateway(namespace, name).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("dns") => match dns() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("sink") => match std::env::args().nth(2).map(|address| sink(&address)) {
            Some(Err(e)) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
            _ => {
                eprintln!("usage: local-cluster sink ADDRESS:PORT");
                ExitCode::from(2)
            }
        },
        Some("down") => {
            down();
            ExitCode::SUCCESS
        }
        Some("kubeconfig") => {
            println!("{}", demo_dir().join("kubeconfig").display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: local-cluster up|down|dns|kubeconfig|sink ADDRESS:PORT|gateway NAMESPACE NAME"
            );
            ExitCode::from(2)
        }
    }
}
