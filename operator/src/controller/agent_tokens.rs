//! The token each gateway's agents ask of whoever reads their `/status`, by gateway, as
//! the operator holds it: read once per gateway and start from the gateway's MailRelay,
//! or drawn for a new gateway (`agents::agent_token`).

use super::draining::GatewayKey;
use std::collections::HashMap;
use std::sync::Mutex;

/// The tokens the agents of each gateway ask of `/status`, by gateway. Each is kept in
/// the gateway's MailRelay, which only the operator may write and only it and the
/// gateway's agents may read; this holds what was read or drawn, so that it is read once
/// per gateway and start.
#[derive(Default)]
pub struct AgentTokens(Mutex<HashMap<GatewayKey, String>>);

impl AgentTokens {
    pub fn get(&self, gateway: &GatewayKey) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(gateway)
            .cloned()
    }

    /// Keeps `token` unless one was kept meanwhile; the one kept.
    pub fn keep(&self, gateway: &GatewayKey, token: String) -> String {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(gateway.clone())
            .or_insert(token)
            .clone()
    }

    pub fn forget(&self, gateway: &GatewayKey) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(gateway);
    }
}
