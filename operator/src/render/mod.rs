//! Postfix configuration rendered from the API objects (pure, no I/O): the operator writes
//! it into ConfigMaps, the agent checks and merges it into the files Postfix reads.

mod assemble;
mod gateway;
mod postfix;
mod relay;
pub mod shards;

pub use assemble::{
    Assembled, CheckedRelay, GatewayFiles, HELD_REASON, LocalSettings, Table, TableType, assemble,
    check_agent_token, check_gateway, check_relay,
};
pub use gateway::{DEFAULT_MESSAGE_SIZE_LIMIT, TLS_DIRECTORY, gateway_configmap_data};
pub use postfix::token as postfix_token;
pub use relay::relay_data;

use crate::api::DeliveryLimits;
use crate::api::domain::MailDomainSpec;
use crate::recipients::RecipientSet;

/// MailRelays carry this label with the gateway's name; the agent selects on it.
pub const RELAY_GATEWAY_LABEL: &str = "mx-operator.io/relay-for";
/// The gateway ConfigMap carries this label with the gateway's name.
pub const GATEWAY_CONFIG_LABEL: &str = "mx-operator.io/gateway-config-for";

/// Keys of the gateway and MailRelays.
pub mod keys {
    pub const DOMAIN: &str = "domain";
    pub const RELAY_DOMAINS: &str = "relay_domains";
    pub const RELAY_RECIPIENTS: &str = "relay_recipients";
    pub const TRANSPORT: &str = "transport";
    pub const RECIPIENT_POLICY: &str = "recipient_policy";
    pub const SENDER_ACCESS: &str = "sender_access";
    pub const CLIENT_ACCESS: &str = "client_access";
    pub const MESSAGE_SIZE_LIMIT: &str = "message_size_limit";
    pub const MAIN_CF: &str = "main.cf";
    pub const MASTER_CF: &str = "master.cf";
    /// Gateway ConfigMap: the first replica ordinal a scale-in removes; replicas from it
    /// up take no new mail and deliver their queues.
    pub const RETIRING_FROM: &str = "retiring-from";
    /// Gateway MailRelay: the bearer token the agents ask of whoever reads `/status`.
    pub const AGENT_TOKEN: &str = "agent-token";
    /// MailRelay: `true` while the domain's mail is held (`spec.delivery.hold`).
    pub const HOLD: &str = "hold";
    /// MailRelay: how many shard MailRelays hold the domain's recipients, instead of its
    /// own `relay_recipients` (see `render::shards`).
    pub const RECIPIENT_SHARDS: &str = "recipient_shards";
    /// Shard MailRelay: `index/count`.
    pub const SHARD: &str = "shard";
    /// Every key a domain's MailRelay may have.
    pub const RELAY: [&str; 12] = [
        DOMAIN,
        RELAY_DOMAINS,
        RELAY_RECIPIENTS,
        TRANSPORT,
        RECIPIENT_POLICY,
        SENDER_ACCESS,
        CLIENT_ACCESS,
        MESSAGE_SIZE_LIMIT,
        MAIN_CF,
        MASTER_CF,
        HOLD,
        RECIPIENT_SHARDS,
    ];
}

/// How a domain is relayed right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayMode {
    Active,
    /// The gateway answers 4xx for the domain (departure action `Suspend`).
    Suspended,
    /// The recipient list is older than `recipients.maxAge`: 4xx, never accept-all.
    Stale,
    /// No list of the domain's recipients is in force yet (a first sync failed or is
    /// running, a referenced list is missing): 4xx, the gateway does not know.
    Unsynced,
    /// Not relayed at all (departed and removed).
    Withdrawn,
}

/// What the operator knows about one domain.
pub struct DomainInput<'a> {
    pub spec: &'a MailDomainSpec,
    pub recipients: &'a RecipientSet,
    pub mode: RelayMode,
    /// The gateway's `spec.delivery`, used when the domain sets no limits of its own.
    pub gateway_delivery: &'a DeliveryLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str) -> impl FnOnce(String) -> RenderError {
    move |message| RenderError::Invalid { field, message }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub static NO_LIMITS: DeliveryLimits = DeliveryLimits {
        concurrency: None,
        rate_delay: None,
        hold: false,
    };

    /// A MailDomain spec for example.com with `overrides` merged in.
    /// (No recipients unless the test names them.)
    pub fn domain_spec(overrides: serde_json::Value) -> MailDomainSpec {
        let mut none = serde_json::json!({"recipients": {"inline": []}});
        crate::api::fixtures::merge(&mut none, overrides);
        crate::api::fixtures::domain_spec(none)
    }

    pub fn input<'a>(
        spec: &'a MailDomainSpec,
        recipients: &'a RecipientSet,
        mode: RelayMode,
    ) -> DomainInput<'a> {
        DomainInput {
            spec,
            recipients,
            mode,
            gateway_delivery: &NO_LIMITS,
        }
    }
}
