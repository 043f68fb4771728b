//! Which MX records to add and remove so that the gateway's record is exactly as the spec
//! says — touching only records the operator published, never the customer's own.

use std::collections::BTreeSet;

/// One MX record's data at a name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mx {
    pub preference: u16,
    /// The exchange host, normalized (lower case, no trailing dot).
    pub exchange: String,
}

impl Mx {
    pub fn new(preference: u16, exchange: &str) -> Self {
        Self {
            preference,
            exchange: exchange.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for Mx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.preference, self.exchange)
    }
}

/// The changes, in the order they must be made: additions first, so that a change of
/// preference or gateway never leaves the domain without our MX.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Option<Mx>,
    pub remove: Vec<Mx>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_none() && self.remove.is_empty()
    }
}

/// `current` is the RRset at the name; `published` what the operator published before
/// (from status); `desired` the record it should have now (None: withdraw).
pub fn plan(current: &[Mx], published: &[Mx], desired: Option<&Mx>) -> Plan {
    let present: BTreeSet<&Mx> = current.iter().collect();
    let add = desired.filter(|want| !present.contains(want)).cloned();
    let remove = published
        .iter()
        .filter(|old| Some(*old) != desired && present.contains(old))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Plan { add, remove }
}

/// What status must list as published before `plan` is sent, when it adds a record
/// `published` does not list yet (None: nothing to record first). A crash between the
/// update and the status write would otherwise leave a record of ours that no later run
/// knows to remove.
pub fn intent(published: &[Mx], plan: &Plan) -> Option<Vec<Mx>> {
    let add = plan.add.as_ref()?;
    if published.contains(add) {
        return None;
    }
    Some(published.iter().chain([add]).cloned().collect())
}

/// What status lists after a successful update made from `current` (the RRset read before
/// it): `desired` as published, and as pending every other record it listed that was
/// absent then. An update sent by an operator that stopped before it saw the answer, or
/// one that timed out, may still be applied by the server, seconds later when its update
/// queue is long; such a record stays listed until it appears and a later update removes
/// it (or the MailDomain is deleted). Only a crash or a timeout during an update adds one.
pub fn after_update(
    current: &[Mx],
    published: &[Mx],
    pending: &[Mx],
    desired: Option<&Mx>,
) -> (Vec<Mx>, Vec<Mx>) {
    let still_pending = published
        .iter()
        .chain(pending)
        .filter(|r| Some(*r) != desired && !current.contains(r))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (desired.cloned().into_iter().collect(), still_pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> Mx {
        Mx::new(10, "mail.example.com")
    }

    #[test]
    fn publishing_adds_only_ours() {
        let ours = Mx::new(20, "mx1.relay.example.net");
        let plan = plan(&[customer()], &[], Some(&ours));
        assert_eq!(
            plan,
            Plan {
                add: Some(ours),
                remove: vec![]
            }
        );
    }

    #[test]
    fn nothing_to_do_when_present() {
        let ours = Mx::new(20, "mx1.relay.example.net");
        assert!(
            plan(
                &[customer(), ours.clone()],
                std::slice::from_ref(&ours),
                Some(&ours)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_new_preference_adds_before_it_removes() {
        let old = Mx::new(20, "mx1.relay.example.net");
        let new = Mx::new(30, "mx1.relay.example.net");
        let plan = plan(
            &[customer(), old.clone()],
            std::slice::from_ref(&old),
            Some(&new),
        );
        assert_eq!(
            plan,
            Plan {
                add: Some(new),
                remove: vec![old]
            }
        );
    }

    #[test]
    fn the_customers_records_are_never_removed() {
        // Even a customer record that looks like one of ours stays unless we published it.
        let lookalike = Mx::new(50, "mx1.relay.example.net");
        let plan = plan(&[customer(), lookalike], &[], None);
        assert!(plan.is_empty());
    }

    #[test]
    fn withdrawing_removes_what_we_published() {
        let ours = Mx::new(20, "mx1.relay.example.net");
        let plan = plan(
            &[customer(), ours.clone()],
            std::slice::from_ref(&ours),
            None,
        );
        assert_eq!(
            plan,
            Plan {
                add: None,
                remove: vec![ours]
            }
        );
    }

    #[test]
    fn a_record_deleted_behind_our_back_is_restored() {
        let ours = Mx::new(20, "mx1.relay.example.net");
        let plan = plan(&[customer()], std::slice::from_ref(&ours), Some(&ours));
        assert_eq!(
            plan,
            Plan {
                add: Some(ours),
                remove: vec![]
            }
        );
    }

    #[test]
    fn a_new_record_is_recorded_beside_the_old_before_it_is_sent() {
        let old = Mx::new(20, "mx1.relay.example.net");
        let new = Mx::new(30, "mx1.relay.example.net");
        let change = plan(
            std::slice::from_ref(&old),
            std::slice::from_ref(&old),
            Some(&new),
        );
        assert_eq!(
            intent(std::slice::from_ref(&old), &change),
            Some(vec![old.clone(), new.clone()])
        );
    }

    #[test]
    fn nothing_is_recorded_for_a_removal_or_a_known_record() {
        let ours = Mx::new(20, "mx1.relay.example.net");
        let withdraw = plan(
            std::slice::from_ref(&ours),
            std::slice::from_ref(&ours),
            None,
        );
        assert_eq!(intent(std::slice::from_ref(&ours), &withdraw), None);
        // Restoring a record deleted behind our back: status lists it already.
        let restore = plan(&[], std::slice::from_ref(&ours), Some(&ours));
        assert_eq!(intent(std::slice::from_ref(&ours), &restore), None);
    }

    #[test]
    fn a_record_left_by_a_crash_is_removed_by_the_next_change() {
        // Status listed 20 and 30 (30 recorded, then the process died before the status
        // write); the server has 30. A change to 40 removes 30.
        let (r20, r30, r40) = (
            Mx::new(20, "mx1.relay.example.net"),
            Mx::new(30, "mx1.relay.example.net"),
            Mx::new(40, "mx1.relay.example.net"),
        );
        let change = plan(&[customer(), r30.clone()], &[r20, r30.clone()], Some(&r40));
        assert_eq!(change.add, Some(r40));
        assert_eq!(change.remove, vec![r30]);
    }

    #[test]
    fn a_record_absent_when_read_stays_pending_until_it_is_seen_and_removed() {
        let (r20, r40) = (
            Mx::new(20, "mx1.relay.example.net"),
            Mx::new(40, "mx1.relay.example.net"),
        );
        // 20 was recorded by an operator that died after sending it; 40 is being published.
        let (published, pending) =
            after_update(&[customer()], &[r20.clone(), r40.clone()], &[], Some(&r40));
        assert_eq!(published, vec![r40.clone()]);
        assert_eq!(pending, vec![r20.clone()]);
        // Still absent at the next check: the update may yet land, so it stays.
        let (_, pending) = after_update(
            &[customer(), r40.clone()],
            std::slice::from_ref(&r40),
            std::slice::from_ref(&r20),
            Some(&r40),
        );
        assert_eq!(pending, vec![r20.clone()]);
        // The late update lands: the next plan removes 20, and nothing stays pending.
        let present = [customer(), r20.clone(), r40.clone()];
        let change = plan(&present, &[r40.clone(), r20.clone()], Some(&r40));
        assert_eq!(change.remove, vec![r20.clone()]);
        let (_, pending) = after_update(
            &present,
            std::slice::from_ref(&r40),
            std::slice::from_ref(&r20),
            Some(&r40),
        );
        assert!(pending.is_empty());
        // Chosen again, a pending record is published, not pending.
        let (published, pending) = after_update(
            &[customer(), r40.clone()],
            &[r40],
            std::slice::from_ref(&r20),
            Some(&r20),
        );
        assert_eq!((published, pending), (vec![r20], vec![]));
    }

    #[test]
    fn names_are_compared_normalized() {
        assert_eq!(
            Mx::new(20, "MX1.Relay.Example.NET."),
            Mx::new(20, "mx1.relay.example.net")
        );
        assert_eq!(
            Mx::new(20, "mx1.relay.example.net").to_string(),
            "20 mx1.relay.example.net"
        );
    }
}
