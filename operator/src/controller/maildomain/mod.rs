//! MailDomain → one MailRelay in its gateway's namespace, its MX record, and a status
//! that says whether the gateway relays the domain and why not.
//!
//! One reconcile is a pipeline:
//!
//! ```text
//! fetch (caches; lists and TXT proof) → decide (pure) → apply (writes, DNS) → status (one write)
//! ```
//!
//! and deletion is `finalize`.

mod apply;
mod decide;
pub(crate) mod dns;
mod fetch;
mod finalize;
mod recipients;
#[cfg(test)]
mod requests;
mod status;

use super::context::{Context, Error};
use super::write::report_apply_failure;
use crate::api::MailDomain;
use crate::api::conditions::READY;
use crate::api::validate::normalize_domain;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Instant;

pub async fn reconcile(domain: Arc<MailDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&domain, &ctx).await;
    ctx.metrics
        .observe_reconcile("MailDomain", started.elapsed(), result.as_ref().err());
    result
}

pub fn error_policy(domain: Arc<MailDomain>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(maildomain = %domain.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(decide::RETRY)
}

#[tracing::instrument(skip_all, fields(maildomain = %domain.name_any(), namespace = domain.namespace().unwrap_or_default()))]
async fn reconcile_inner(domain: &MailDomain, ctx: &Context) -> Result<Action, Error> {
    ctx.domain_caches_listed().await;
    if domain.metadata.deletion_timestamp.is_some() {
        let namespace = domain
            .namespace()
            .ok_or_else(|| Error::NotNamespaced(domain.name_any()))?;
        return finalize::finalize(domain, ctx, &namespace).await;
    }
    let inputs = fetch::fetch(domain, ctx).await?;
    // After an operator restart the gateway holds the list an earlier operator synced:
    // while the first sync since runs, nothing is known to have changed, and the worker
    // sends the domain round when it is done. (A status written now would flap `Ready`.)
    let observed = domain.status.as_ref().and_then(|s| s.observed_generation);
    if let Some(waiting) = inputs.sources.iter().find(|s| s.first_sync_running())
        && observed == domain.metadata.generation
    {
        return Ok(Action::requeue(waiting.next_in));
    }
    let decision = decide::decide(domain, &inputs, Timestamp::now());
    let normalized = normalize_domain(&domain.spec.domain).unwrap_or_default();
    let applied = match apply::apply(domain, ctx, &inputs, &normalized, &decision).await {
        Ok(applied) => applied,
        Err(error) => {
            let then = format!(
                "retried every {} s, and what the gateway relayed before keeps serving",
                decide::RETRY.as_secs()
            );
            let fresher = status::freshest(domain, ctx);
            let domain = fresher.as_deref().unwrap_or(domain);
            report_apply_failure(domain, domain.status.as_ref(), ctx, READY, &error, &then).await;
            return Err(error);
        }
    };
    let dns_failed = status::dns_failed(&applied);
    // Sources not looked at (an invalid spec, a missing gateway) keep what status recorded:
    // a later operator counts maxAge and shrinks from it.
    let sources = match inputs.sources.is_empty() && domain.spec.recipients.has_synced_sources() {
        true => domain
            .status
            .as_ref()
            .map(|s| s.recipient_sources.clone())
            .unwrap_or_default(),
        false => inputs.sources.iter().map(|s| s.status()).collect(),
    };
    status::write(domain, ctx, &decision, applied, inputs.held, sources).await?;
    if dns_failed {
        return Ok(Action::requeue(ctx.settings.resync.min(decide::RETRY)));
    }
    Ok(decision.requeue)
}
