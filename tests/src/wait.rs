//! Polling for a condition with a deadline (correctness timeouts, not performance targets).

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the object `name` no longer exists (finalizers released, deletion done).
pub async fn gone<K>(api: &kube::Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    until(
        Duration::from_secs(60),
        &format!("{name} to be deleted"),
        || async { api.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await
}
