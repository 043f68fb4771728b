//! Stopping: what every long-running role (controllers, agent) waits on.

/// Completes when the work should stop.
pub type Shutdown = futures::future::BoxFuture<'static, ()>;

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: finishing the work under way");
}
