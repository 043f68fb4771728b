//! Deletion of a MailDomain: its relay config and MX record go, then its finalizer. A
//! DNS outage does not hold the object for ever.

use super::super::context::{Context, Error, FINALIZER};
use super::super::status::Transition;
use super::super::write::{patch_metadata, release_finalizer};
use super::apply::{delete_legacy_relay, delete_relay};
use super::decide::RETRY;
use super::dns;
use crate::api::MailDomain;
use crate::api::validate::normalize_domain;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::time::Duration;

/// How often deletion tries to remove the MX record before it lets the object go.
const DNS_CLEANUP_ATTEMPTS: u32 = 5;
const DNS_CLEANUP_ANNOTATION: &str = "mx-operator.io/dns-cleanup-attempts";
/// How long deletion waits for an update that may still add a record it found absent, and
/// when (milliseconds since the epoch) it looks again.
const PENDING_RECHECK: Duration = Duration::from_secs(10);
const DNS_RECHECK_ANNOTATION: &str = "mx-operator.io/dns-recheck-at";

fn cleanup_attempts(domain: &MailDomain) -> u32 {
    domain
        .annotations()
        .get(DNS_CLEANUP_ANNOTATION)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// A deleted MailDomain: its relay config and MX record are withdrawn, then the
/// finalizer is released.
pub async fn finalize(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    if let Some(drift) = &ctx.drift {
        drift.forget(&ObjectRef::from_obj(domain));
    }
    ctx.sources.forget(namespace, &domain.name_any());
    if !domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Some(location) = domain.status.as_ref().and_then(|s| s.relay.as_deref()) {
        delete_relay(domain, ctx, namespace, location).await?;
    }
    if let Some(legacy) = domain
        .status
        .as_ref()
        .and_then(|s| s.relay_config_map.as_deref())
    {
        delete_legacy_relay(domain, ctx, namespace, legacy).await?;
    }
    let normalized = normalize_domain(&domain.spec.domain).unwrap_or_default();
    let provider = dns::provider(domain, ctx);
    match dns::sync(domain, ctx, provider.as_deref(), &normalized, None).await? {
        Ok(published) if !published.pending.is_empty() => {
            // A record listed as ours was absent: an update that adds it (sent by a run
            // that stopped before it saw the answer) may still be applied. Look again a
            // little later, before the object and with it the list are gone.
            let now = Timestamp::now().as_millisecond();
            let due = domain
                .annotations()
                .get(DNS_RECHECK_ANNOTATION)
                .and_then(|at| at.parse::<i64>().ok());
            match due {
                None => {
                    tracing::info!(domain = normalized, records = ?published.pending, "records listed as ours are absent; looking again before letting go");
                    let at = now.saturating_add(PENDING_RECHECK.as_millis() as i64);
                    let annotations =
                        json!({"annotations": {DNS_RECHECK_ANNOTATION: at.to_string()}});
                    patch_metadata(domain, ctx, namespace, annotations).await?;
                    return Ok(Action::requeue(PENDING_RECHECK));
                }
                Some(at) if now < at => {
                    return Ok(Action::requeue(Duration::from_millis((at - now) as u64)));
                }
                // Looked again after the wait, and still absent: they never landed.
                Some(_) => {}
            }
        }
        Ok(_) => {}
        Err(problem) => {
            let attempts = cleanup_attempts(domain) + 1;
            if attempts < DNS_CLEANUP_ATTEMPTS {
                tracing::warn!(attempts, reason = problem.verdict.reason, message = %problem.verdict.message, "removing the MX record failed; retrying");
                let annotations =
                    json!({"annotations": {DNS_CLEANUP_ANNOTATION: attempts.to_string()}});
                patch_metadata(domain, ctx, namespace, annotations).await?;
                return Ok(Action::requeue(ctx.settings.resync.min(RETRY)));
            }
            // A DNS outage must not block deletion for ever: let go, and say what is left behind.
            let left = domain
                .status
                .as_ref()
                .map(|s| s.published_records.join(", "))
                .unwrap_or_default();
            let message = format!(
                "gave up removing MX {left} of {normalized} after {attempts} attempts ({}); remove it by hand",
                problem.verdict.message
            );
            tracing::error!(domain = normalized, records = left, "{message}");
            let abandoned = Transition {
                type_: EventType::Warning,
                reason: "DnsCleanupAbandoned".into(),
                message,
            };
            ctx.publish(domain, vec![abandoned]).await;
        }
    }
    release_finalizer(domain, ctx, namespace, FINALIZER).await?;
    Ok(Action::await_change())
}
