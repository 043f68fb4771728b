//! The operator's controllers running in-process against the test control plane, the way
//! `mx-operator run` runs them, with the operator's own credentials.

use crate::control_plane::{ControlPlane, HarnessError};
use mx_operator::controller::Metrics;
use mx_operator::controller::{LeaseSettings, Settings, run, run_with_leader_election};
use mx_operator::telemetry::Health;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// How often the test operator resyncs: short, so the steady-state test is quick.
pub const TEST_RESYNC: Duration = Duration::from_secs(3);

/// How often the test operator asks the agents about their queues.
pub const TEST_QUEUE_POLL: Duration = Duration::from_secs(1);

pub fn test_settings() -> Settings {
    Settings {
        gateway_image: "mx-operator/gateway:test".into(),
        resync: TEST_RESYNC,
        concurrency: 16,
        // Off: tests use names like example.com, whose real DNS must never be asked.
        drift: None,
        resolvers: vec![],
        queue_poll: Some(TEST_QUEUE_POLL),
        // Tests refresh sources every 10 s; the deadline is short so a hanging source ends.
        sources: mx_operator::controller::SyncSettings {
            min_refresh: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            ..Default::default()
        },
    }
}

/// An operator on this test's runtime that looks names up at `resolvers` (a test's Knot);
/// for a test binary of its own. Abort the handle to stop it.
pub async fn operator_resolving_at(
    plane: &ControlPlane,
    resolvers: Vec<std::net::SocketAddr>,
) -> tokio::task::JoinHandle<Option<&'static str>> {
    let settings = Settings {
        resolvers,
        ..test_settings()
    };
    let client = plane.operator_client().await.expect("operator client");
    tokio::spawn(run(
        client,
        settings,
        Arc::new(Metrics::default()),
        Box::pin(std::future::pending()),
    ))
}

/// One operator for the whole test binary, on a runtime of its own (a test's runtime ends
/// with the test). Tests that need their own operators live in a binary of their own.
pub fn ensure_shared_operator(plane: &'static ControlPlane) {
    ensure_shared_operator_with(plane, test_settings);
}

/// Like `ensure_shared_operator`, with the settings `settings` makes (used by the first
/// caller only); returns the operator's metrics.
pub fn ensure_shared_operator_with(
    plane: &'static ControlPlane,
    settings: impl FnOnce() -> Settings,
) -> Arc<Metrics> {
    static STARTED: OnceLock<Arc<Metrics>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let metrics = Arc::new(Metrics::default());
            let shared = metrics.clone();
            let settings = settings();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("operator runtime");
                runtime.block_on(async move {
                    let client = plane.operator_client().await.expect("operator client");
                    run(client, settings, shared, Box::pin(std::future::pending())).await;
                });
            });
            metrics
        })
        .clone()
}

/// An operator replica competing for leadership; stopped when dropped.
pub struct Replica {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    pub health: Arc<Health>,
}

impl Replica {
    /// Starts a replica with the operator's credentials, or the standby user's.
    pub async fn start(
        plane: &ControlPlane,
        lease_namespace: &str,
        identity: &str,
        standby_user: bool,
    ) -> Result<Self, HarnessError> {
        let client = if standby_user {
            plane.standby_client().await?
        } else {
            plane.operator_client().await?
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let health = Arc::new(Health::default());
        let lease = LeaseSettings {
            namespace: lease_namespace.into(),
            name: "mx-operator-leader".into(),
            identity: identity.into(),
            duration_seconds: 6,
        };
        let replica_health = health.clone();
        let task = tokio::spawn(async move {
            let shutdown = Box::pin(async {
                let _ = stopped.await;
            });
            let result = run_with_leader_election(
                client,
                test_settings(),
                Arc::new(Metrics::default()),
                replica_health,
                lease,
                shutdown,
            )
            .await;
            if let Err(error) = result {
                eprintln!("replica stopped with an error: {error}");
            }
        });
        Ok(Self {
            stop: Some(stop),
            task,
            health,
        })
    }

    /// Asks the replica to shut down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shared control plane with the shared operator running, and a fresh namespace.
pub async fn namespace_with_operator(
    prefix: &str,
) -> (&'static ControlPlane, crate::TestNamespace) {
    let plane = ControlPlane::shared().await.expect("control plane");
    ensure_shared_operator(plane);
    let ns = plane.namespace(prefix).await.expect("namespace");
    (plane, ns)
}
