//! `local-cluster up|down|status`: the local control plane for `make demo`, left running in
//! the background with its kubeconfig in a fixed place.

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

fn pids() -> Vec<(String, i32)> {
    [
        "knot/knotd",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
    ]
    .iter()
    .filter_map(|name| {
        let pid = std::fs::read_to_string(demo_dir().join(format!("{name}.pid"))).ok()?;
        Some((name.to_string(), pid.trim().parse().ok()?))
    })
    .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn down() {
    for (name, pid) in pids() {
        if alive(pid) {
            // SAFETY: plain kill(2) of a process this tool started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            println!("stopped {name} (pid {pid})");
        }
        let _ = std::fs::remove_file(demo_dir().join(format!("{name}.pid")));
    }
}

async fn up() -> Result<(), String> {
    let running = pids();
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
    println!("control plane up at {}", plane.url);
    println!("kubeconfig: {}", plane.kubeconfig.display());
    Ok(())
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
        Some("down") => {
            down();
            ExitCode::SUCCESS
        }
        Some("kubeconfig") => {
            println!("{}", demo_dir().join("kubeconfig").display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: local-cluster up|down|kubeconfig");
            ExitCode::from(2)
        }
    }
}
