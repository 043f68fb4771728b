//! Status conditions in the shape cert-manager, Flux (kstatus) and `kubectl wait` read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Ready` summarises every other condition of an object (MailDomain, MailGateway).
pub const READY: &str = "Ready";
/// MailGateway: its children are applied.
pub const CONFIGURED: &str = "Configured";
/// MailDomain: the MailRelay at its gateway holds the domain.
pub const RELAY_CONFIGURED: &str = "RelayConfigured";
/// MailDomain: its recipient list is complete and current.
pub const RECIPIENTS_SYNCED: &str = "RecipientsSynced";
/// MailDomain: another MailDomain holds the domain at the same gateway (`True` is bad).
pub const CONFLICT: &str = "Conflict";
/// MailDomain: the gateway's MX record is published through its DNSProvider.
pub const DNS_SYNCED: &str = "DnsSynced";
/// MailDomain: its claim on the domain is proved, where the gateway asks for proof.
pub const OWNERSHIP_VERIFIED: &str = "OwnershipVerified";
/// MailDomain: its public MX no longer points at the gateway (`True` is bad).
pub const DEPARTED: &str = "Departed";
/// MailDomain: the public MX lookup of the departure check answered (`False`: departure
/// is neither detected nor cleared while it fails).
pub const PUBLIC_MX_RESOLVED: &str = "PublicMxResolved";
/// MailDomain: the gateway's replicas answer SMTP for it as the spec says.
pub const ACCEPTANCE_VERIFIED: &str = "AcceptanceVerified";
/// MailDomain: its primary answers SMTP.
pub const PRIMARY_REACHABLE: &str = "PrimaryReachable";

/// MailGateway: no replica holds mail for a domain it no longer relays (deleted, withdrawn
/// or moved); `False` while some does, with the counts.
pub const QUEUE_DRAINED: &str = "QueueDrained";
/// MailGateway: the StatefulSet runs `spec.replicas`; `False` while a scale-in waits for
/// the replicas it removes to deliver their queues.
pub const SCALED: &str = "Scaled";

/// Whether `True` is the bad news for conditions of `type_` (polarity, for Events and
/// summaries): `Conflict` and `Departed`; for every other type `True` is healthy.
pub fn true_is_bad(type_: &str) -> bool {
    [CONFLICT, DEPARTED].contains(&type_)
}

/// What a decision says about one aspect: the status, a CamelCase reason and a message
/// for the person who has to act on it. Times are attached when it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    /// A `False` verdict: something is wrong, and the message says what.
    pub fn failed(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(false, reason, message)
    }

    /// This verdict as the condition `type_`.
    pub fn on(self, type_: &'static str) -> Desired {
        Desired {
            type_,
            verdict: self,
        }
    }
}

/// A condition a reconcile wants: its type and verdict, before times are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub verdict: Verdict,
}

impl Desired {
    /// `status` is `True` when `true`; see [`true_is_bad`] for what `True` means.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Verdict::new(status, reason, message).on(type_)
    }

    pub fn status(&self) -> ConditionStatus {
        if self.verdict.status {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

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

impl ConditionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
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
