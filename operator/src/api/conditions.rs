//! Status conditions in the shape cert-manager, Flux (kstatus) and `kubectl wait` read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Ready` summarises every other condition of an object.
pub const READY: &str = "Ready";

/// The state of one aspect of an object.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, in CamelCase (for example `Ready`, `RecipientsSynced`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable reason for the last transition, in CamelCase.
    pub reason: String,
    /// Human-readable explanation, meant for the person who has to act on it.
    pub message: String,
    /// When the status last changed from one value to another.
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a condition: `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The condition of `type_`, if it is set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets `new` in `conditions`, keeping the previous transition time when the status did
/// not flip: `lastTransitionTime` means "since when", not "last checked".
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: ConditionStatus, reason: &str, time: i64) -> Condition {
        Condition {
            type_: READY.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: at(time),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut conditions = vec![ready(ConditionStatus::True, "Configured", 100)];
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "StillConfigured", 200),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].reason, "StillConfigured");

        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "Invalid", 300),
        );
        assert_eq!(conditions[0].last_transition_time, at(300));
        assert_eq!(conditions[0].status, ConditionStatus::False);
    }

    #[test]
    fn new_types_are_appended() {
        let mut conditions = vec![ready(ConditionStatus::True, "Configured", 100)];
        let mut other = ready(ConditionStatus::False, "Conflict", 200);
        other.type_ = "Conflict".into();
        set_condition(&mut conditions, other);
        assert_eq!(conditions.len(), 2);
    }
}
