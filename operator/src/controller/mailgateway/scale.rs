//! How many replicas a gateway runs: `spec.replicas`, except that a scale-in removes a
//! replica only once its agent says its queue is delivered. Until then the replicas being
//! removed take no new mail and deliver what they hold: the gateway ConfigMap always says
//! from which ordinal on replicas retire (`spec.replicas`), so a replica stays retired
//! until the StatefulSet has deleted it. Pure.

use super::super::agents::AgentReport;
use super::fetch::Running;
use crate::agent::{Retirement, ordinal};
use crate::api::conditions::{Desired, SCALED};

#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    /// The StatefulSet's replicas.
    pub replicas: i32,
    pub condition: Desired,
}

impl Scale {
    /// Whether replicas wait to be removed (the gateway is looked at again soon).
    pub fn waiting(&self) -> bool {
        !self.condition.verdict.status
    }
}

/// `wanted` is `spec.replicas`, `running` the StatefulSet (None before it exists, or once
/// it is gone); `workload` names the pods (`<workload>-<ordinal>`); `agents` are those of
/// its pods with an address; `lifetime` is `spec.queue.maxQueueLifetime`.
pub fn scale(
    wanted: i32,
    running: Option<Running>,
    workload: &str,
    agents: &[AgentReport],
    lifetime: &str,
) -> Scale {
    let leavers = leavers(wanted, running, workload, agents);
    if leavers.waits.is_empty() {
        let removed = if leavers.removed {
            "; the replicas removed had delivered their queues"
        } else {
            ""
        };
        return Scale {
            replicas: wanted,
            condition: Desired::new(
                SCALED,
                true,
                "AtSpec",
                format!(
                    "{}, as spec.replicas asks{removed}",
                    count(wanted, "replica")
                ),
            ),
        };
    }
    Scale {
        replicas: leavers.replicas,
        condition: Desired::new(
            SCALED,
            false,
            if leavers.blocked {
                "ScaleInBlocked"
            } else {
                "DrainingBeforeScaleIn"
            },
            format!(
                "spec.replicas is {wanted}; {} stay until those removed have delivered their queues (they take no new mail; {}): {}",
                count(leavers.replicas, "replica"),
                held_until(lifetime),
                leavers.waits.join("; ")
            ),
        ),
    }
}

/// How long mail that waits for its primary may wait.
pub fn held_until(lifetime: &str) -> String {
    format!(
        "mail their primary does not take waits until it is delivered or maxQueueLifetime, {lifetime}, returns it to its sender"
    )
}

/// The replicas from ordinal `wanted` on, which are leaving, and what they still hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leavers {
    /// The lowest ordinal from which every replica may go (`wanted` once all may).
    pub replicas: i32,
    /// Why the others wait, lowest ordinal first.
    pub waits: Vec<String>,
    /// Whether a replica cannot say what it holds.
    pub blocked: bool,
    /// Whether any replica at or above `wanted` runs.
    pub removed: bool,
    /// The ordinals whose agent said their queue is delivered and nothing more comes.
    pub delivered: Vec<i32>,
}

/// What the replicas a StatefulSet of `running` replicas loses when it goes down to
/// `wanted` still hold: see [`scale`].
pub fn leavers(
    wanted: i32,
    running: Option<Running>,
    workload: &str,
    agents: &[AgentReport],
) -> Leavers {
    // A replica an agent answers for counts even when the StatefulSet says otherwise (it
    // was deleted, or edited by hand): a held scale-in is not dropped.
    let listed = agents
        .iter()
        .filter_map(|agent| ordinal(&agent.replica, workload))
        .map(|ordinal| i32::try_from(ordinal).map_or(i32::MAX, |o| o.saturating_add(1)))
        .max()
        .unwrap_or(0);
    let pods = running.map_or(0, |running| running.pods);
    let running = running
        .map_or(wanted, |running| running.replicas)
        .max(listed);
    // The StatefulSet removes the highest ordinals first: it may go down to the lowest
    // ordinal above which every replica has delivered its queue.
    let mut leavers = Leavers {
        replicas: running.max(wanted),
        removed: running > wanted,
        ..Leavers::default()
    };
    for ordinal in (wanted..running).rev() {
        let pod = format!("{workload}-{ordinal}");
        let report = agents.iter().find(|agent| agent.replica == pod);
        // None: the replica may go.
        let wait = match report.map(|agent| &agent.status) {
            // No pod, so nothing to wait for: its volume, if any, stays, and a scale-out
            // brings it back. (Pods are counted, not named: a pod deleted and not yet
            // recreated could be missed for the moment it takes the StatefulSet
            // controller to recreate it.)
            None if ordinal >= pods => None,
            None => {
                leavers.blocked = true;
                Some(format!(
                    "{pod} has no pod address (not running?), and its queue volume may hold mail"
                ))
            }
            Some(Err(why)) => {
                leavers.blocked = true;
                Some(format!("{pod}'s agent could not be asked: {why}"))
            }
            Some(Ok(status)) => match status.retiring {
                None => Some(format!("{pod} has not yet stopped taking mail")),
                Some(retirement) if retirement.delivered => {
                    leavers.delivered.push(ordinal);
                    None
                }
                Some(retirement) => Some(holding(&pod, retirement)),
            },
        };
        match wait {
            None if leavers.waits.is_empty() => leavers.replicas = ordinal,
            None => {}
            Some(wait) => leavers.waits.push(wait),
        }
    }
    leavers.waits.reverse();
    leavers.delivered.reverse();
    leavers
}

/// `n` and the noun, in the plural unless `n` is 1.
fn count(n: impl Into<i128>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Why a retiring replica may not go yet.
fn holding(pod: &str, retirement: Retirement) -> String {
    match (retirement.queued, retirement.sessions) {
        (0, 0) => format!(
            "{pod} holds no mail and goes a minute after it stopped taking mail, once connections opened before have ended"
        ),
        (queued, 0) => format!("{pod} holds {}", count(queued, "message")),
        (0, sessions) => format!(
            "{pod} holds no mail yet but has {} open",
            count(sessions, "SMTP session")
        ),
        (queued, sessions) => format!(
            "{pod} holds {} and has {} open",
            count(queued, "message"),
            count(sessions, "SMTP session")
        ),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::agent::StatusReport;

    /// The report of `replica`'s agent: retiring with (queued, delivered), or not.
    pub(in super::super) fn agent(replica: &str, retiring: Option<(u64, bool)>) -> AgentReport {
        AgentReport {
            replica: replica.into(),
            address: ([10, 0, 0, 1], 8080).into(),
            status: Ok(StatusReport {
                draining: Default::default(),
                queued: Default::default(),
                retiring: retiring.map(|(queued, delivered)| Retirement {
                    queued,
                    sessions: 0,
                    delivered,
                }),
            }),
        }
    }

    /// A StatefulSet of `replicas` that has all its pods.
    fn at(wanted: i32, replicas: Option<i32>, agents: &[AgentReport]) -> Scale {
        let running = replicas.map(|replicas| Running {
            replicas,
            pods: replicas,
        });
        scale(wanted, running, "edge", agents, "5d")
    }

    #[test]
    fn scaling_out_or_standing_still_runs_the_spec() {
        for running in [None, Some(1), Some(3)] {
            let scale = at(3, running, &[]);
            assert_eq!(scale.replicas, 3);
            assert_eq!(scale.condition.verdict.reason, "AtSpec");
            assert!(!scale.waiting());
        }
    }

    #[test]
    fn a_scale_in_waits_for_the_replicas_it_removes_to_deliver_their_queues() {
        let keep = agent("edge-0", None);
        let holding = at(
            1,
            Some(3),
            &[
                keep.clone(),
                agent("edge-1", Some((2, false))),
                agent("edge-2", Some((1, false))),
            ],
        );
        assert_eq!(holding.replicas, 3);
        assert_eq!(holding.condition.verdict.reason, "DrainingBeforeScaleIn");
        assert!(
            holding
                .condition
                .verdict
                .message
                .ends_with("edge-1 holds 2 messages; edge-2 holds 1 message"),
            "{}",
            holding.condition.verdict.message
        );
        assert!(holding.waiting());

        // The highest ordinal goes first, as soon as it is empty; a lower one cannot go
        // before a higher one.
        let leaving = |edge_1, edge_2| {
            at(
                1,
                Some(3),
                &[
                    keep.clone(),
                    agent("edge-1", Some(edge_1)),
                    agent("edge-2", Some(edge_2)),
                ],
            )
        };
        assert_eq!(leaving((2, false), (0, true)).replicas, 2);
        assert_eq!(leaving((0, true), (0, false)).replicas, 3);
        let done = leaving((0, true), (0, true));
        assert_eq!(done.replicas, 1);
        assert!(done.condition.verdict.status);
    }

    #[test]
    fn a_retiring_replica_says_what_it_still_holds() {
        let says = |queued, sessions| {
            holding(
                "edge-1",
                Retirement {
                    queued,
                    sessions,
                    delivered: false,
                },
            )
        };
        assert_eq!(says(1, 0), "edge-1 holds 1 message");
        assert_eq!(
            says(0, 2),
            "edge-1 holds no mail yet but has 2 SMTP sessions open"
        );
        assert_eq!(
            says(3, 1),
            "edge-1 holds 3 messages and has 1 SMTP session open"
        );
        assert!(says(0, 0).starts_with("edge-1 holds no mail and goes a minute after"));
    }

    #[test]
    fn a_replica_that_cannot_say_what_it_holds_blocks_the_scale_in() {
        let mut silent = agent("edge-1", None);
        silent.status = Err("connection refused".into());
        let blocked = at(1, Some(2), &[silent]);
        assert_eq!(
            (blocked.replicas, blocked.condition.verdict.reason),
            (2, "ScaleInBlocked")
        );
        assert!(
            blocked
                .condition
                .verdict
                .message
                .contains("edge-1's agent could not be asked: connection refused")
        );

        let unlisted = at(1, Some(2), &[agent("edge-0", None)]);
        assert_eq!(unlisted.replicas, 2);
        assert!(
            unlisted
                .condition
                .verdict
                .message
                .contains("edge-1 has no pod address (not running?)")
        );

        let unaware = at(1, Some(2), &[agent("edge-1", None)]);
        assert_eq!(
            (unaware.replicas, unaware.condition.verdict.reason),
            (2, "DrainingBeforeScaleIn")
        );
        assert!(
            unaware
                .condition
                .verdict
                .message
                .contains("edge-1 has not yet stopped taking mail")
        );
    }

    #[test]
    fn replicas_without_pods_go_at_once_and_listed_ones_are_held_without_a_stateful_set() {
        // spec.replicas of the StatefulSet raised by hand, no pod created yet.
        let edited = Running {
            replicas: 7,
            pods: 2,
        };
        let repaired = scale(2, Some(edited), "edge", &[], "5d");
        assert_eq!((repaired.replicas, repaired.waiting()), (2, false));

        // The StatefulSet is gone (deleted by hand), but edge-2 still answers with mail.
        let holding = [agent("edge-0", None), agent("edge-2", Some((3, false)))];
        let held = scale(1, None, "edge", &holding, "5d");
        assert_eq!(held.replicas, 3);
        assert!(
            held.condition
                .verdict
                .message
                .ends_with("edge-2 holds 3 messages"),
            "{}",
            held.condition.verdict.message
        );
    }
}
