//! The `mx-operator.io/v1alpha1` API: MailGateway, MailDomain and DNSProvider, and the
//! MailRelay the operator writes for the agents.

pub mod conditions;
pub mod crd;
pub mod dnsprovider;
pub mod domain;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod gateway;
pub mod reference;
pub mod relay;
pub mod validate;

pub use conditions::{Condition, ConditionStatus};
pub use dnsprovider::{DNSProvider, DNSProviderSpec, DNSProviderStatus};
pub use domain::{MailDomain, MailDomainSpec, MailDomainStatus};
pub use gateway::{MailGateway, MailGatewaySpec, MailGatewayStatus};
pub use relay::MailRelay;
pub use validate::{Problem, ValidationError};

/// The API group of every mx-operator resource.
pub const GROUP: &str = "mx-operator.io";

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names one key of a ConfigMap or Secret in the object's own namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the ConfigMap or Secret.
    pub name: String,
    /// Key inside it.
    pub key: String,
}

/// Delivery limits towards a primary: how gently queued mail is released after an outage.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryLimits {
    /// Parallel SMTP connections to the primary (1–100). Unset: Postfix's default (20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The API server stores any integer the schema allows; one outside the Rust type makes
    // the object undecodable, and every watch event of it costs the operator a backoff.
    #[schemars(range(min = i32::MIN, max = i32::MAX))]
    pub concurrency: Option<i32>,
    /// Pause between two deliveries to the primary, for example `2s`, so a queue that grew
    /// during an outage is not flushed all at once. With a pause Postfix delivers one
    /// message at a time (`concurrency` is then 1), and its timer counts whole seconds: a
    /// pause of `2s` leaves 1 to 2 s between two deliveries. Unset: no pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_delay: Option<String>,
    /// Keep the mail queued: the gateway goes on accepting it, and delivers none (for
    /// example during the primary's maintenance window). Setting it back to false
    /// releases the held mail at once, at the pace above. Held mail ages like any queued
    /// mail: it is returned to its sender after the gateway's `queue.maxQueueLifetime`.
    /// On a MailGateway it holds every domain the gateway relays. A MailDomain whose
    /// `spec.delivery` sets only `hold` keeps the gateway's limits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

const MAX_CONCURRENCY: i32 = 100;
const MAX_RATE_DELAY_SECONDS: u64 = 3_600;

impl DeliveryLimits {
    pub(crate) fn validate_into(&self, path: &str, problems: &mut validate::Problems) {
        if let Some(concurrency) = self.concurrency
            && !(1..=MAX_CONCURRENCY).contains(&concurrency)
        {
            problems.push(
                format!("{path}.concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}, not {concurrency}"),
            );
        }
        if let Some(delay) = &self.rate_delay
            && let Some(delay) =
                problems.check(format!("{path}.rateDelay"), validate::parse_duration(delay))
            && delay.as_secs() > MAX_RATE_DELAY_SECONDS
        {
            problems.push(
                format!("{path}.rateDelay"),
                format!("must be at most 1h, not {}s", delay.as_secs()),
            );
        }
    }
}
