//! Polling for a condition with a deadline (correctness timeouts, not performance targets).

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn until<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_every(Duration::from_millis(100), limit, what, check).await {
        Ok(value) => value,
        Err(timed_out) => panic!("{timed_out}"),
    }
}

/// Polls `check` every `interval` until it returns `Some`; an error naming `what` after
/// `limit`.
pub async fn poll_every<T, F, Fut>(
    interval: Duration,
    limit: Duration,
    what: &str,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(interval).await;
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

/// Waits until MailDomain `name` has condition `type_` with `status` and `reason`, and
/// returns it as it was then.
pub async fn domain_condition(
    api: &kube::Api<mx_operator::api::MailDomain>,
    limit: Duration,
    name: &str,
    type_: &str,
    status: mx_operator::api::ConditionStatus,
    reason: &str,
) -> mx_operator::api::MailDomain {
    until(
        limit,
        &format!("{name}: {type_}={status:?} ({reason})"),
        || async {
            let domain = api.get(name).await.ok()?;
            let found = domain.condition(type_)?;
            (found.status == status && found.reason == reason).then_some(domain.clone())
        },
    )
    .await
}

/// MailGateway `name`'s condition `type_` as the API server holds it now.
pub async fn gateway_condition(
    api: &kube::Api<mx_operator::api::MailGateway>,
    name: &str,
    type_: &str,
) -> Option<mx_operator::api::Condition> {
    api.get(name).await.ok()?.condition(type_).cloned()
}

/// The first of MailDomain `name`'s `status.recipientSources` once `check` accepts it.
pub async fn recipient_source(
    domains: &kube::Api<mx_operator::api::MailDomain>,
    name: &str,
    what: &str,
    check: impl Fn(&mx_operator::api::domain::RecipientSourceStatus) -> bool,
) -> mx_operator::api::domain::RecipientSourceStatus {
    until(
        Duration::from_secs(60),
        &format!("{name}: {what}"),
        || async {
            let domain = domains.get(name).await.ok()?;
            let source = domain.status?.recipient_sources.into_iter().next()?;
            check(&source).then_some(source)
        },
    )
    .await
}

/// Waits up to a minute until RCPT `recipient` at `smtp` gets an answer `expected`
/// accepts; returns its code.
pub async fn rcpt_answer(
    smtp: std::net::SocketAddr,
    recipient: &str,
    expected: impl Fn(u16) -> bool,
) -> u16 {
    until(
        Duration::from_secs(60),
        &format!("the answer to RCPT {recipient}"),
        || async {
            crate::smtp::rcpt_reply(smtp, "sender@client.test", recipient)
                .ok()
                .map(|reply| reply.code)
                .filter(|code| expected(*code))
        },
    )
    .await
}
