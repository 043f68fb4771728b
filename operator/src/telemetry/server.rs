//! `/metrics`, `/healthz` and `/readyz` over HTTP.

use super::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the probes report.
#[derive(Default)]
pub struct Health {
    /// Set once the process can talk to the API server.
    connected: AtomicBool,
    /// Set when a controller loop ended although no shutdown was asked for.
    broken: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
    pub fn set_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serves until the listener fails; binding errors are returned at once.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { metrics, health });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics and health server stopped");
        }
    });
    Ok(())
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    match state.metrics.encode() {
        Ok(text) => (StatusCode::OK, text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n".into(),
        ),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.health.broken.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a controller loop stopped\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    let health = &state.health;
    if health.broken.load(Ordering::Relaxed) || !health.connected.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the API server\n",
        )
    } else if health.is_leader() {
        (StatusCode::OK, "ok: leading\n")
    } else {
        (StatusCode::OK, "ok: standby\n")
    }
}
