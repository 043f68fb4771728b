//! MailDomains indexed by the domain they claim, kept from the same watch events as the
//! controller's cache: finding a domain's rivals is a lookup, not a scan of every domain
//! (which made each reconcile linear, and a 10,000-domain start quadratic).

use crate::api::MailDomain;
use crate::api::validate::normalize_domain;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct ClaimIndex {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_domain: HashMap<String, HashSet<ObjectRef<MailDomain>>>,
    claim_of: HashMap<ObjectRef<MailDomain>, String>,
    /// A relist in progress: the claims seen so far, swapped in when it completes.
    relisting: Option<HashMap<ObjectRef<MailDomain>, String>>,
}

impl State {
    fn remove(&mut self, key: &ObjectRef<MailDomain>) {
        if let Some(old) = self.claim_of.remove(key)
            && let Some(set) = self.by_domain.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                self.by_domain.remove(&old);
            }
        }
    }

    fn insert(&mut self, key: ObjectRef<MailDomain>, claim: String) {
        self.remove(&key);
        self.by_domain
            .entry(claim.clone())
            .or_default()
            .insert(key.clone());
        self.claim_of.insert(key, claim);
    }
}

impl ClaimIndex {
    /// Follows one watch event of the MailDomain watch.
    pub fn observe(&self, event: &Event<MailDomain>) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            Event::Apply(domain) => {
                let key = ObjectRef::from(domain);
                match normalize_domain(&domain.spec.domain) {
                    Ok(claim) => state.insert(key, claim),
                    Err(_) => state.remove(&key),
                }
            }
            Event::Delete(domain) => state.remove(&ObjectRef::from(domain)),
            Event::Init => state.relisting = Some(HashMap::new()),
            Event::InitApply(domain) => {
                if let (Some(relisting), Ok(claim)) = (
                    state.relisting.as_mut(),
                    normalize_domain(&domain.spec.domain),
                ) {
                    relisting.insert(ObjectRef::from(domain), claim);
                }
            }
            Event::InitDone => {
                let claims = state.relisting.take().unwrap_or_default();
                *state = State::default();
                for (key, claim) in claims {
                    state.insert(key, claim);
                }
            }
        }
    }

    /// Every MailDomain that claims `normalized`, by namespace and name.
    pub fn claimants(&self, normalized: &str) -> Vec<ObjectRef<MailDomain>> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut claimants: Vec<_> = state
            .by_domain
            .get(normalized)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        claimants.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        claimants
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn domain(name: &str, domain: &str) -> MailDomain {
        crate::api::fixtures::domain(json!({
            "metadata": {"name": name, "namespace": "ns"}, "spec": {"domain": domain}}))
    }

    fn names(index: &ClaimIndex, claim: &str) -> Vec<String> {
        index.claimants(claim).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn claims_follow_applies_edits_and_deletes() {
        let index = ClaimIndex::default();
        index.observe(&Event::Apply(domain("a", "Example.COM.")));
        index.observe(&Event::Apply(domain("b", "example.com")));
        assert_eq!(names(&index, "example.com"), ["a", "b"]);
        index.observe(&Event::Apply(domain("b", "other.test")));
        assert_eq!(names(&index, "example.com"), ["a"]);
        assert_eq!(names(&index, "other.test"), ["b"]);
        index.observe(&Event::Delete(domain("a", "example.com")));
        assert!(names(&index, "example.com").is_empty());
        index.observe(&Event::Apply(domain("b", "not a domain")));
        assert!(names(&index, "other.test").is_empty());
    }

    #[test]
    fn a_relist_replaces_everything_when_it_completes() {
        let index = ClaimIndex::default();
        index.observe(&Event::Apply(domain("gone", "example.com")));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(domain("new", "example.com")));
        assert_eq!(
            names(&index, "example.com"),
            ["gone"],
            "until the relist is done"
        );
        index.observe(&Event::InitDone);
        assert_eq!(names(&index, "example.com"), ["new"]);
    }

    #[test]
    fn internationalised_names_meet_their_punycode() {
        let index = ClaimIndex::default();
        index.observe(&Event::Apply(domain("u", "bücher.example")));
        index.observe(&Event::Apply(domain("p", "xn--bcher-kva.example")));
        assert_eq!(names(&index, "xn--bcher-kva.example"), ["p", "u"]);
    }
}
