//! What each gateway's replicas still hold for domains they no longer relay, as its last
//! reconcile read it from the agents. The gateway controller records it; a MailDomain's
//! `status.draining` reads it here rather than from the gateway's cached status, which
//! lags behind the write that triggers the domain's reconcile.

use crate::api::domain::DrainingAt;
use crate::api::gateway::DrainingDomain;
use std::collections::HashMap;
use std::sync::Mutex;

/// A gateway: namespace and name.
pub type GatewayKey = (String, String);

#[derive(Default)]
pub struct DrainingIndex(Mutex<HashMap<GatewayKey, Vec<DrainingDomain>>>);

impl DrainingIndex {
    /// Records what `gateway` drains now; returns the domains whose figures changed.
    pub fn record(&self, gateway: GatewayKey, now: Vec<DrainingDomain>) -> Vec<String> {
        let mut index = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = index.remove(&gateway).unwrap_or_default();
        let mut changed: Vec<String> = before
            .iter()
            .filter(|d| !now.contains(d))
            .chain(now.iter().filter(|d| !before.contains(d)))
            .map(|d| d.domain.clone())
            .collect();
        changed.sort();
        changed.dedup();
        if !now.is_empty() {
            index.insert(gateway, now);
        }
        changed
    }

    /// The gateways (those `exists` still knows) that hold mail for `normalized`.
    pub fn at(&self, normalized: &str, exists: impl Fn(&GatewayKey) -> bool) -> Vec<DrainingAt> {
        let index = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut draining: Vec<DrainingAt> = index
            .iter()
            .filter(|(gateway, _)| exists(gateway))
            .filter_map(|((namespace, name), domains)| {
                let held = domains.iter().find(|d| d.domain == normalized)?;
                Some(DrainingAt {
                    gateway: format!("{namespace}/{name}"),
                    messages: held.messages,
                })
            })
            .collect();
        draining.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        draining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(domain: &str, messages: u64) -> DrainingDomain {
        DrainingDomain {
            domain: domain.into(),
            messages,
        }
    }

    #[test]
    fn changes_name_their_domains_and_only_known_gateways_count() {
        let index = DrainingIndex::default();
        let edge = ("mail".to_string(), "edge".to_string());
        let other = ("mail".to_string(), "other".to_string());
        assert_eq!(
            index.record(edge.clone(), vec![held("a.example", 3)]),
            ["a.example"]
        );
        assert!(
            index
                .record(edge.clone(), vec![held("a.example", 3)])
                .is_empty()
        );
        assert_eq!(
            index.record(
                edge.clone(),
                vec![held("a.example", 1), held("b.example", 2)]
            ),
            ["a.example", "b.example"]
        );
        index.record(other.clone(), vec![held("a.example", 5)]);
        let everywhere = index.at("a.example", |_| true);
        assert_eq!(
            everywhere
                .iter()
                .map(|d| (d.gateway.as_str(), d.messages))
                .collect::<Vec<_>>(),
            [("mail/edge", 1), ("mail/other", 5)]
        );
        assert_eq!(index.at("a.example", |g| g != &other).len(), 1);
        assert_eq!(index.record(edge, vec![]), ["a.example", "b.example"]);
        assert!(index.at("b.example", |_| true).is_empty());
    }
}
