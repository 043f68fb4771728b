//! `/metrics`, `/healthz` and `/readyz` over HTTP.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }
}

/// What a process reports on `/metrics`, `/healthz`, `/healthz/<part>` and `/readyz`;
/// `Err` answers 503.
pub trait Endpoints: Send + Sync + 'static {
    fn metrics(&self) -> Result<String, std::fmt::Error>;
    fn health(&self) -> Result<&'static str, &'static str>;
    fn readiness(&self) -> Result<&'static str, &'static str>;
    /// The health of a part the process watches over, for the liveness probe of that
    /// part's own container; `None` (404) for a part it does not have.
    fn part_health(&self, _part: &str) -> Option<Result<String, String>> {
        None
    }
    /// `/status`: what the process reports to the operator, as JSON, for the bearer token
    /// the request presented; `None` (404) if nothing.
    fn status(&self, _bearer: Option<&str>) -> Option<StatusAnswer> {
        None
    }
}

/// What `/status` answers.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusAnswer {
    /// 200, the JSON report.
    Report(String),
    /// 401: no token, or not the one this process expects.
    Unauthorized,
    /// 503, why: no token to check against yet.
    Unavailable(&'static str),
}

/// Serves until the listener fails; binding errors are returned at once.
pub async fn serve(address: SocketAddr, endpoints: Arc<dyn Endpoints>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/healthz/{part}", get(part_healthz))
        .route("/status", get(status))
        .route("/readyz", get(readyz))
        .with_state(endpoints);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics and health server stopped");
        }
    });
    Ok(())
}

type Shared = State<Arc<dyn Endpoints>>;

async fn metrics_text(State(endpoints): Shared) -> (StatusCode, String) {
    match endpoints.metrics() {
        Ok(text) => (StatusCode::OK, text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n".into(),
        ),
    }
}

fn answer(result: Result<&'static str, &'static str>) -> (StatusCode, &'static str) {
    match result {
        Ok(text) => (StatusCode::OK, text),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text),
    }
}

async fn healthz(State(endpoints): Shared) -> (StatusCode, &'static str) {
    answer(endpoints.health())
}

async fn readyz(State(endpoints): Shared) -> (StatusCode, &'static str) {
    answer(endpoints.readiness())
}

async fn status(State(endpoints): Shared, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match endpoints.status(bearer) {
        Some(StatusAnswer::Report(json)) => (StatusCode::OK, json).into_response(),
        Some(StatusAnswer::Unauthorized) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "/status answers only the operator, which presents the gateway's agent token\n",
        )
            .into_response(),
        Some(StatusAnswer::Unavailable(why)) => {
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no status here\n").into_response(),
    }
}

async fn part_healthz(State(endpoints): Shared, Path(part): Path<String>) -> (StatusCode, String) {
    match endpoints.part_health(&part) {
        Some(Ok(text)) => (StatusCode::OK, text),
        Some(Err(text)) => (StatusCode::SERVICE_UNAVAILABLE, text),
        None => (StatusCode::NOT_FOUND, format!("no part {part:?}\n")),
    }
}
