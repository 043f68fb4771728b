//! MailGateway → StatefulSet, Services, PodDisruptionBudget, agent RBAC and the gateway
//! ConfigMap; status says how many replicas serve and how many domains they relay.
//!
//! ```text
//! fetch (caches) → decide (pure) → apply (children) → status (one write)
//! ```

mod apply;
mod decide;
mod fetch;
mod finalize;
mod scale;

use super::context::{Context, Error};
use super::write::{hold_finalizer, namespace_of, report_apply_failure, write_status};
use crate::api::MailGateway;
use crate::api::conditions::{CONFIGURED, Desired};
use crate::api::gateway::MailGatewayStatus;
use apply::Applied;
use decide::Decision;
pub use finalize::{FORCE_DELETE, GATEWAY_FINALIZER};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_secs(30);

pub async fn reconcile(gateway: Arc<MailGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&gateway, &ctx).await;
    ctx.metrics
        .observe_reconcile("MailGateway", started.elapsed(), result.as_ref().err());
    result
}

pub fn error_policy(gateway: Arc<MailGateway>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(mailgateway = %gateway.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[tracing::instrument(skip_all, fields(mailgateway = %gateway.name_any(), namespace = gateway.namespace().unwrap_or_default()))]
async fn reconcile_inner(gateway: &MailGateway, ctx: &Context) -> Result<Action, Error> {
    ctx.gateway_caches_listed().await;
    let namespace = namespace_of(gateway)?;
    if gateway.metadata.deletion_timestamp.is_some() {
        return finalize::finalize(gateway, ctx, &namespace).await;
    }
    // Before any replica runs: a gateway deleted from then on delivers its queues.
    match hold_finalizer(gateway, ctx, &namespace, GATEWAY_FINALIZER).await {
        // The cached copy was older than the server's (the patch is guarded by its
        // version): read again at once rather than after the error back-off.
        Err(error) if error.is_retry_request() => return Ok(Action::requeue(STALE_RECHECK)),
        result => result?,
    }
    let mut inputs = fetch::fetch(gateway, ctx)?;
    let key = (namespace.clone(), gateway.name_any());
    inputs.agent_token = super::agents::agent_token(&key, ctx).await?;
    inputs.agents = super::agents::agent_reports(&key, ctx).await;
    inputs.pods_refused = fetch::pods_refused(gateway, ctx, inputs.running).await?;
    let children = match decide::decide(gateway, &inputs) {
        Decision::Invalid(ready) => {
            write_status(gateway, gateway.status.as_ref(), ctx, &[ready], |_| {}).await?;
            return Ok(Action::await_change());
        }
        Decision::Apply(children) => children,
    };
    let applied = apply::apply(ctx, &namespace, &children).await;
    if let Err(error) = &applied {
        // Said where the user looks (quota, admission, RBAC), not only in the log.
        let then = format!(
            "retried every {} s, and the children as they are keep running",
            RETRY.as_secs()
        );
        report_apply_failure(
            gateway,
            gateway.status.as_ref(),
            ctx,
            CONFIGURED,
            error,
            &then,
        )
        .await;
    }
    let mut conditions = children.conditions.clone();
    let replacing = match applied? {
        Applied::All => false,
        Applied::Replacing(why) => {
            replacing_condition(&mut conditions, &why);
            true
        }
        Applied::Migrating(unmigrated) => {
            migrating_condition(&mut conditions, unmigrated);
            true
        }
    };
    write_status(
        gateway,
        gateway.status.as_ref(),
        ctx,
        &conditions,
        |status: &mut MailGatewayStatus| {
            status.ready_replicas = Some(children.ready_replicas);
            status.domains = Some(children.served as i32);
            status.notifications = Some(children.notifications.clone());
            status.draining = children.draining_domains.clone();
        },
    )
    .await?;
    ctx.draining_changed(
        (namespace.clone(), gateway.name_any()),
        children.draining_domains.clone(),
    );
    // Mail still draining is looked at again soon: the counts go down, then the condition
    // turns (and a held scale-in goes on).
    Ok(Action::requeue(if replacing {
        REPLACING_RECHECK
    } else if children.draining {
        DRAINING_RECHECK
    } else if children.ready_replicas < gateway.spec.replicas {
        ctx.settings.resync.min(DRAINING_RECHECK)
    } else {
        ctx.settings.resync
    }))
}

/// `Configured` while the StatefulSet is replaced.
fn replacing_condition(conditions: &mut [Desired], why: &str) {
    for condition in conditions.iter_mut().filter(|c| c.type_ == CONFIGURED) {
        *condition = Desired::new(
            CONFIGURED,
            false,
            "ReplacingStatefulSet",
            format!(
                "the StatefulSet is replaced, its pods and queue volumes kept (the new one adopts them), because Kubernetes does not change it in place: {why}"
            ),
        );
    }
}

/// `Configured` while domains an older operator relayed wait for their MailRelays.
fn migrating_condition(conditions: &mut [Desired], unmigrated: usize) {
    for condition in conditions.iter_mut().filter(|c| c.type_ == CONFIGURED) {
        *condition = Desired::new(
            CONFIGURED,
            false,
            "MigratingRelays",
            format!(
                "{unmigrated} domains still have only the relay ConfigMap of an older operator; the StatefulSet (and with it the pods, whose agents read only MailRelays) is updated once each has its MailRelay"
            ),
        );
    }
}

/// How soon a gateway read from a stale cache is read again.
const STALE_RECHECK: Duration = Duration::from_secs(1);

/// How soon a gateway whose StatefulSet is being replaced is read again.
const REPLACING_RECHECK: Duration = Duration::from_secs(2);

/// How soon a gateway whose replicas hold mail to deliver, or whose replicas are not all
/// ready (a pod refused, one starting), is read again.
const DRAINING_RECHECK: Duration = Duration::from_secs(15);
