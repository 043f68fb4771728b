//! Deletion of a MailGateway: its finalizer holds the object, and with it every child the
//! garbage collector would remove, until each replica has delivered its queue. The
//! replicas retire as in a scale-in (no new mail, out of the Services), the status says
//! what each still holds, and an annotation lets the object go at once.

use super::super::agents::{AgentReport, agent_reports};
use super::super::context::{Context, Error};
use super::super::status::Transition;
use super::super::write::{release_finalizer, write_status};
use super::fetch::{Running, running};
use super::scale::{held_until, leavers};
use crate::api::MailGateway;
use crate::api::MailRelay;
use crate::api::conditions::{Desired, READY};
use crate::manifests::gateway::{GatewayNames, queue_volume_selector};
use crate::render::keys::RETIRING_FROM;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Held by every MailGateway until its replicas have delivered their queues.
pub const GATEWAY_FINALIZER: &str = "mx-operator.io/deliver-queues";

/// `"true"` on a MailGateway being deleted lets it go without waiting for its queues.
pub const FORCE_DELETE: &str = "mx-operator.io/force-delete";

/// How soon a gateway being deleted is looked at again while its replicas deliver.
const LEAVING_RECHECK: Duration = Duration::from_secs(15);

/// Where a gateway being deleted stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaving {
    /// Every replica has delivered its queue, or none runs: the object may go.
    pub done: bool,
    /// `Ready`, saying what each replica still holds.
    pub condition: Desired,
    /// The queue volumes of replicas whose agent said their queue is delivered.
    pub empty_volumes: Vec<String>,
}

/// Pure: whether the replicas of a gateway being deleted have delivered their queues.
pub fn leaving(
    gateway: &str,
    running: Option<Running>,
    agents: &[AgentReport],
    lifetime: &str,
) -> Leaving {
    let names = GatewayNames::of(gateway);
    let leavers = leavers(0, running, &names.workload, agents);
    let empty_volumes = leavers
        .delivered
        .iter()
        .map(|&ordinal| names.queue_volume(ordinal))
        .collect();
    if leavers.waits.is_empty() {
        return Leaving {
            done: true,
            condition: Desired::new(
                READY,
                false,
                "Deleting",
                "the MailGateway is being deleted; no replica holds mail",
            ),
            empty_volumes,
        };
    }
    Leaving {
        done: false,
        condition: Desired::new(
            READY,
            false,
            if leavers.blocked {
                "DeletionBlocked"
            } else {
                "DeliveringBeforeDeletion"
            },
            format!(
                "the MailGateway is being deleted once its replicas have delivered their queues (they take no new mail; {}); annotate it {FORCE_DELETE}=true to delete it now and leave their mail on the queue volumes: {}",
                held_until(lifetime),
                leavers.waits.join("; ")
            ),
        ),
        empty_volumes,
    }
}

/// A MailGateway being deleted: its replicas retire and deliver, then its proven-empty
/// queue volumes and its finalizer go.
pub async fn finalize(
    gateway: &MailGateway,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    if !gateway.finalizers().iter().any(|f| f == GATEWAY_FINALIZER) {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let name = gateway.name_any();
    let agents = agent_reports(&(namespace.to_string(), name.clone()), ctx).await;
    let leaving = leaving(
        &name,
        running(gateway, ctx),
        &agents,
        &gateway.spec.queue.max_queue_lifetime,
    );
    let forced = gateway
        .annotations()
        .get(FORCE_DELETE)
        .is_some_and(|value| value == "true");
    if !leaving.done && !forced {
        retire_every_replica(ctx, namespace, &name).await?;
        write_status(
            gateway,
            gateway.status.as_ref(),
            ctx,
            &[leaving.condition],
            |_| {},
        )
        .await?;
        return Ok(Action::requeue(LEAVING_RECHECK));
    }
    let mut said = Vec::new();
    if !leaving.done {
        said.push(Transition {
            type_: EventType::Warning,
            reason: "DeletedWithQueuedMail".into(),
            message: format!(
                "{FORCE_DELETE}=true: deleted without waiting for the queues; {}",
                leaving.condition.verdict.message
            ),
        });
    }
    let kept = remove_empty_volumes(ctx, namespace, &name, &leaving.empty_volumes).await?;
    if !kept.is_empty() {
        said.push(Transition {
            type_: EventType::Warning,
            reason: "QueueVolumesKept".into(),
            message: format!(
                "queue volumes kept, since no replica proved them empty: {}; a MailGateway named {name} created again in namespace {namespace} runs on them and delivers what they hold",
                kept.join(", ")
            ),
        });
    }
    ctx.publish(gateway, said).await;
    release_finalizer(gateway, ctx, namespace, GATEWAY_FINALIZER).await?;
    tracing::info!(
        volumes = leaving.empty_volumes.len(),
        "the gateway's replicas hold no mail: its finalizer goes"
    );
    Ok(Action::await_change())
}

/// Marks every replica as leaving in the gateway's MailRelay: the agents stop taking mail
/// and deliver their queues, as in a scale-in to zero. A merge patch, so that a MailRelay
/// already removed is not created again.
async fn retire_every_replica(ctx: &Context, namespace: &str, gateway: &str) -> Result<(), Error> {
    let api = Api::<MailRelay>::namespaced(ctx.client.clone(), namespace);
    let patch = json!({"data": {RETIRING_FROM: "0"}});
    match api
        .patch(
            &GatewayNames::of(gateway).config,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        result => result.map(|_| ()).map_err(Error::from),
    }
}

/// Deletes the queue volumes proven empty; the names of the gateway's other queue volumes,
/// which stay.
async fn remove_empty_volumes(
    ctx: &Context,
    namespace: &str,
    gateway: &str,
    empty: &[String],
) -> Result<Vec<String>, Error> {
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace);
    for volume in empty {
        match api.delete(volume, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(volume, "removed a queue volume its replica delivered"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let empty: BTreeSet<&str> = empty.iter().map(String::as_str).collect();
    let listed = api
        .list_metadata(&ListParams::default().labels(&queue_volume_selector(gateway)))
        .await?;
    Ok(listed
        .items
        .iter()
        .map(|volume| volume.name_any())
        .filter(|volume| !empty.contains(volume.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::scale::tests::agent;
    use super::*;

    fn two() -> Option<Running> {
        Some(Running {
            replicas: 2,
            pods: 2,
        })
    }

    #[test]
    fn a_gateway_being_deleted_waits_for_every_replica_to_deliver() {
        // (case, agents, done, Ready's reason, volumes proven empty)
        type Case<'a> = (&'a str, Vec<AgentReport>, bool, &'a str, &'a [&'a str]);
        let cases: [Case; 5] = [
            (
                "not yet retired",
                vec![agent("edge-0", None), agent("edge-1", None)],
                false,
                "DeliveringBeforeDeletion",
                &[],
            ),
            (
                "both hold mail",
                vec![
                    agent("edge-0", Some((10, false))),
                    agent("edge-1", Some((10, false))),
                ],
                false,
                "DeliveringBeforeDeletion",
                &[],
            ),
            (
                "one delivered",
                vec![
                    agent("edge-0", Some((3, false))),
                    agent("edge-1", Some((0, true))),
                ],
                false,
                "DeliveringBeforeDeletion",
                &["queue-edge-1"],
            ),
            (
                "both delivered",
                vec![
                    agent("edge-0", Some((0, true))),
                    agent("edge-1", Some((0, true))),
                ],
                true,
                "Deleting",
                &["queue-edge-0", "queue-edge-1"],
            ),
            (
                "one unlisted",
                vec![agent("edge-1", Some((0, true)))],
                false,
                "DeletionBlocked",
                &["queue-edge-1"],
            ),
        ];
        for (case, agents, done, reason, volumes) in cases {
            let leaving = leaving("edge", two(), &agents, "5d");
            assert_eq!(leaving.done, done, "{case}");
            assert_eq!(leaving.condition.verdict.reason, reason, "{case}");
            assert!(!leaving.condition.verdict.status, "{case}");
            assert_eq!(leaving.empty_volumes, volumes, "{case}");
        }
    }

    #[test]
    fn the_condition_names_what_each_replica_holds_and_how_to_force() {
        let agents = [
            agent("edge-0", Some((10, false))),
            agent("edge-1", Some((2, false))),
        ];
        let message = leaving("edge", two(), &agents, "5d")
            .condition
            .verdict
            .message;
        assert!(
            message.ends_with("edge-0 holds 10 messages; edge-1 holds 2 messages"),
            "{message}"
        );
        assert!(
            message.contains("mx-operator.io/force-delete=true"),
            "{message}"
        );
        assert!(message.contains("maxQueueLifetime, 5d"), "{message}");
    }

    #[test]
    fn a_gateway_without_replicas_goes_at_once() {
        // Never rolled out, or its pods already removed (foreground deletion): nothing
        // holds mail that a replica could deliver, and no volume is proven empty.
        for running in [
            None,
            Some(Running {
                replicas: 2,
                pods: 0,
            }),
        ] {
            let leaving = leaving("edge", running, &[], "5d");
            assert!(leaving.done, "{running:?}");
            assert!(leaving.empty_volumes.is_empty());
        }
    }
}
