//! Leader election: of several operator replicas only the holder of a Lease runs the
//! controllers; the others wait and take over when it goes away.

use super::context::Settings;
use super::metrics::Metrics;
use super::run::run;
use crate::shutdown::Shutdown;
use crate::telemetry::Health;
use futures::FutureExt;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use std::sync::Arc;

/// The Lease the replicas compete for.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique per replica, such as the pod name.
    pub identity: String,
    /// Seconds a lease stays valid without renewal.
    pub duration_seconds: u64,
}

/// Why leading stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Lease(#[from] LeaseManagerError),
    #[error("{0} stopped although no shutdown was asked; exiting so that it starts again")]
    LoopDied(&'static str),
}

/// Runs the controllers whenever this replica holds the lease, until `shutdown`. A loop of
/// the operator that dies ends it with an error (and the lease is released).
pub async fn run_with_leader_election(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    lease: LeaseSettings,
    shutdown: Shutdown,
) -> Result<(), LeaderError> {
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_seconds)
        .with_grace(lease.duration_seconds.div_ceil(3))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    let shutdown = shutdown.shared();
    let mut dead = None;
    loop {
        tokio::select! {
            () = shutdown.clone() => break,
            changed = leading.wait_for(|leader| *leader) => if changed.is_err() { break },
        }
        tracing::info!(identity = %lease.identity, "became the leader; starting the controllers");
        health.set_leader(true);
        let mut watch = leading.clone();
        let stopping = shutdown.clone();
        let stop = async move {
            tokio::select! {
                () = stopping => {},
                _ = watch.wait_for(|leader| !*leader) => {},
            }
        };
        let died = run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            stop.boxed(),
        )
        .await;
        health.set_leader(false);
        if let Some(what) = died {
            health.set_broken();
            dead = Some(what);
            break;
        }
        if shutdown.peek().is_some() {
            break;
        }
        tracing::warn!(identity = %lease.identity, "lost the lease; controllers stopped, waiting to lead again");
    }
    // Closing the channel makes the manager release the lease for the next replica.
    drop(leading);
    let released = match task.await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Ok(()),
    };
    match dead {
        Some(what) => Err(LeaderError::LoopDied(what)),
        None => Ok(released?),
    }
}
