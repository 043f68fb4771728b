//! Status conditions as decisions: what the conditions should be, whether anything changed,
//! and which changes deserve an Event.

use crate::api::conditions::{
    Condition, ConditionStatus, Desired, READY, set_condition, true_is_bad,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

/// `current` with every desired condition set; transition times move only on a flip.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut conditions = current.to_vec();
    for want in desired {
        set_condition(
            &mut conditions,
            Condition {
                type_: want.type_.to_string(),
                status: want.status(),
                reason: want.verdict.reason.to_string(),
                message: want.verdict.message.clone(),
                last_transition_time: now.clone(),
                observed_generation: generation,
            },
        );
    }
    conditions
}

/// An Event to publish for a condition that changed its status or reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

/// The changes between two condition lists that a person should hear about: a new status
/// or a new reason. A reworded message alone is not news. An object's first status is one
/// Event, its `Ready` (which names the reason), not one per condition: at thousands of new
/// objects those writes add up.
pub fn transitions(before: &[Condition], after: &[Condition]) -> Vec<Transition> {
    after
        .iter()
        .filter(|new| !before.is_empty() || new.type_ == READY)
        .filter(|new| {
            !before.iter().any(|old| {
                old.type_ == new.type_ && old.status == new.status && old.reason == new.reason
            })
        })
        .map(|new| {
            let healthy = match new.status {
                ConditionStatus::True => !true_is_bad(&new.type_),
                ConditionStatus::False => true_is_bad(&new.type_),
                ConditionStatus::Unknown => false,
            };
            Transition {
                type_: if healthy {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: new.reason.clone(),
                message: format!("{}={:?}: {}", new.type_, new.status, new.message),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_conditions_merge_to_the_same_list() {
        let desired = [Desired::new("Ready", true, "Ready", "relayed")];
        let first = merge(&[], &desired, Some(1), &at(100));
        let second = merge(&first, &desired, Some(1), &at(200));
        assert_eq!(
            first, second,
            "a resync with nothing new must not change status"
        );
        assert!(transitions(&first, &second).is_empty());
    }

    #[test]
    fn a_flip_is_an_event_and_moves_the_time() {
        let first = merge(
            &[],
            &[Desired::new("Ready", true, "Ready", "ok")],
            Some(1),
            &at(100),
        );
        let second = merge(
            &first,
            &[Desired::new("Ready", false, "GatewayNotFound", "gone")],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(200));
        let events = transitions(&first, &second);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].reason, "GatewayNotFound");
    }

    #[test]
    fn conflict_true_is_a_warning_and_false_is_normal() {
        let before = merge(
            &[],
            &[Desired::new("Ready", true, "Relayed", "")],
            None,
            &at(0),
        );
        let conflict = merge(
            &before,
            &[Desired::new("Conflict", true, "DomainClaimed", "x")],
            None,
            &at(1),
        );
        assert_eq!(transitions(&before, &conflict)[0].type_, EventType::Warning);
        let clear = merge(
            &conflict,
            &[Desired::new("Conflict", false, "NoConflict", "")],
            None,
            &at(2),
        );
        assert_eq!(transitions(&conflict, &clear)[0].type_, EventType::Normal);
    }

    #[test]
    fn a_first_status_is_one_event_for_ready() {
        let first = merge(
            &[],
            &[
                Desired::new("RecipientsSynced", true, "Synced", "3 recipients"),
                Desired::new("Ready", false, "GatewayNotFound", "no gateway"),
            ],
            None,
            &at(1),
        );
        let events = transitions(&[], &first);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "GatewayNotFound");
    }

    #[test]
    fn a_new_message_alone_is_not_an_event() {
        let first = merge(
            &[],
            &[Desired::new(
                "RecipientsSynced",
                true,
                "Synced",
                "3 recipients",
            )],
            None,
            &at(1),
        );
        let second = merge(
            &first,
            &[Desired::new(
                "RecipientsSynced",
                true,
                "Synced",
                "4 recipients",
            )],
            None,
            &at(2),
        );
        assert!(transitions(&first, &second).is_empty());
        assert_ne!(first, second, "the message itself is still updated");
    }
}
