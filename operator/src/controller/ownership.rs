//! Proof of domain ownership for gateways that require it: a TXT record
//! `_mx-operator.<domain>` whose value only the operator can tell the claimant, and only
//! someone controlling the domain's DNS can publish.

use crate::api::conditions::{ConditionStatus, OWNERSHIP_VERIFIED, RELAY_CONFIGURED, Verdict};
use crate::api::domain::OwnershipProof;
use crate::api::{MailDomain, MailGateway};
use crate::manifests::relay::relay_name;
use sha2::{Digest, Sha256};

const RECORD_PREFIX: &str = "_mx-operator";
const VALUE_PREFIX: &str = "mx-operator-verification=";

/// The record that proves `namespace`'s claim on `domain` at the gateway with UID
/// `gateway_uid`. The token differs per claimant namespace, so a stranger cannot reuse
/// the owner's record, and per gateway, so a proof for one fleet does not open another.
pub fn proof(gateway_uid: &str, namespace: &str, domain: &str) -> OwnershipProof {
    let digest = Sha256::new()
        .chain_update(b"mx-operator ownership proof\0")
        .chain_update(gateway_uid.as_bytes())
        .chain_update(b"\0")
        .chain_update(namespace.as_bytes())
        .chain_update(b"\0")
        .chain_update(domain.as_bytes())
        .finalize();
    let token: String = digest
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    OwnershipProof {
        record: format!("{RECORD_PREFIX}.{domain}"),
        value: format!("{VALUE_PREFIX}{token}"),
    }
}

/// The proof `domain` needs at `gateway`, when the gateway requires one.
pub fn required(gateway: &MailGateway, namespace: &str, domain: &str) -> Option<OwnershipProof> {
    gateway.spec.require_ownership_proof.then(|| {
        proof(
            gateway.metadata.uid.as_deref().unwrap_or_default(),
            namespace,
            domain,
        )
    })
}

/// Whether `domain` has shown `proof` before (verified once, a claim stays proved: the
/// record may be removed afterwards).
pub fn proved(domain: &MailDomain, proof: &OwnershipProof) -> bool {
    domain
        .condition(OWNERSHIP_VERIFIED)
        .is_some_and(|c| c.status == ConditionStatus::True)
        && domain.status.as_ref().and_then(|s| s.ownership.as_ref()) == Some(proof)
}

/// Whether `domain` is relayed at `gateway` already, from before the gateway required
/// proof: it stays relayed while its proof is missing, so that turning the requirement on
/// loses no mail. A claim that was never live here (or was live at another gateway) has
/// to prove itself first.
pub fn grandfathered(domain: &MailDomain, gateway: &MailGateway, normalized: &str) -> bool {
    let here = format!(
        "{}/{}",
        gateway.metadata.namespace.as_deref().unwrap_or_default(),
        relay_name(normalized)
    );
    domain
        .condition(RELAY_CONFIGURED)
        .is_some_and(|c| c.status == ConditionStatus::True)
        && domain.status.as_ref().is_some_and(|s| {
            s.relay.as_deref() == Some(&here) || s.relay_config_map.as_deref() == Some(&here)
        })
}

/// How strongly a MailDomain holds its claim on a name at a gateway, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    /// Not proved where the gateway asks for proof: holds nothing.
    Unproved,
    /// Relayed here from before the gateway asked for proof.
    Grandfathered,
    /// Proved, or no proof asked.
    Held,
}

/// How `domain` (from `namespace`) holds its claim on `normalized` at `gateway`.
pub fn claim(
    gateway: &MailGateway,
    namespace: &str,
    normalized: &str,
    domain: &MailDomain,
) -> Claim {
    match required(gateway, namespace, normalized) {
        None => Claim::Held,
        Some(proof) if proved(domain, &proof) => Claim::Held,
        Some(_) if grandfathered(domain, gateway, normalized) => Claim::Grandfathered,
        Some(_) => Claim::Unproved,
    }
}

/// The claimants that compete for a name: those with the strongest claim, so that a
/// proved owner wins over a claim kept from before proof was asked; none when nobody
/// holds one.
pub fn strongest<'a>(
    claims: impl IntoIterator<Item = (&'a MailDomain, Claim)>,
) -> Vec<&'a MailDomain> {
    let claims: Vec<_> = claims.into_iter().collect();
    let best = claims.iter().map(|(_, claim)| *claim).max();
    match best {
        None | Some(Claim::Unproved) => vec![],
        Some(best) => claims
            .into_iter()
            .filter(|(_, claim)| *claim == best)
            .map(|(domain, _)| domain)
            .collect(),
    }
}

/// The verdict for a claim whose record was found.
pub fn verified(proof: &OwnershipProof) -> Verdict {
    Verdict::new(
        true,
        "Verified",
        format!("TXT record {} holds this claim's token", proof.record),
    )
}

/// Judges the TXT strings found at the proof's record (`Err`: the lookup failed): the
/// `OwnershipVerified` verdict.
pub fn judge(found: &Result<Vec<String>, String>, proof: &OwnershipProof) -> Verdict {
    let publish = format!(
        "publish the TXT record {} with the value \"{}\" to prove control of the domain",
        proof.record, proof.value
    );
    match found {
        Ok(values) if values.iter().any(|v| v.trim() == proof.value) => verified(proof),
        Ok(values) if values.is_empty() => Verdict::failed(
            "ProofMissing",
            format!("no TXT record {}: {publish}", proof.record),
        ),
        Ok(_) => Verdict::failed(
            "ProofMismatch",
            format!(
                "TXT record {} does not hold this claim's token (another claim's, or an old one): {publish}",
                proof.record
            ),
        ),
        Err(error) => Verdict::failed(
            "LookupFailed",
            format!("looking up {} failed ({error}); {publish}", proof.record),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use serde_json::json;

    fn gateway(require: bool) -> MailGateway {
        fixtures::gateway(json!({"metadata": {"namespace": "fleet", "uid": "uid-1"},
            "spec": {"requireOwnershipProof": require}}))
    }

    /// A MailDomain in `owner` with the given conditions (`(type, status)`), proof and
    /// MailRelay location.
    fn domain(
        conditions: &[(&str, &str)],
        ownership: Option<&OwnershipProof>,
        relay: Option<&str>,
    ) -> MailDomain {
        let conditions: Vec<_> = conditions
            .iter()
            .map(|(type_, status)| {
                json!({"type": type_, "status": status, "reason": "R", "message": "",
                "lastTransitionTime": "2026-11-23T00:00:00Z"})
            })
            .collect();
        fixtures::domain(json!({
            "metadata": {"name": "d", "namespace": "owner"},
            "spec": {"gatewayRef": {"name": "edge", "namespace": "fleet"}},
            "status": {"conditions": conditions, "ownership": ownership, "relay": relay}}))
    }

    #[test]
    fn claims_by_strength() {
        let proof = proof("uid-1", "owner", "example.com");
        let claim_at =
            |require, d: &MailDomain| claim(&gateway(require), "owner", "example.com", d);
        let new_claim = domain(&[], None, None);
        assert_eq!(claim_at(false, &new_claim), Claim::Held, "no proof asked");
        assert_eq!(
            claim_at(true, &new_claim),
            Claim::Unproved,
            "a new claim proves itself first"
        );
        let proved_one = domain(&[(OWNERSHIP_VERIFIED, "True")], Some(&proof), None);
        assert_eq!(claim_at(true, &proved_one), Claim::Held);
        let stranger_proof = super::proof("uid-1", "stranger", "example.com");
        let wrong = domain(&[(OWNERSHIP_VERIFIED, "True")], Some(&stranger_proof), None);
        assert_eq!(
            claim_at(true, &wrong),
            Claim::Unproved,
            "another claimant's proof"
        );
        let relayed = [(RELAY_CONFIGURED, "True"), (OWNERSHIP_VERIFIED, "False")];
        let live_here = domain(&relayed, Some(&proof), Some("fleet/relay-example.com"));
        assert_eq!(claim_at(true, &live_here), Claim::Grandfathered);
        let live_elsewhere = domain(&relayed, Some(&proof), Some("open/relay-example.com"));
        assert_eq!(
            claim_at(true, &live_elsewhere),
            Claim::Unproved,
            "moved from another gateway"
        );
        let refused = domain(
            &[(RELAY_CONFIGURED, "False")],
            Some(&proof),
            Some("fleet/relay-example.com"),
        );
        assert_eq!(claim_at(true, &refused), Claim::Unproved);
    }

    #[test]
    fn the_strongest_claims_compete() {
        let (a, b, c) = (
            domain(&[], None, None),
            domain(&[], None, None),
            domain(&[], None, None),
        );
        let names = |winners: Vec<&MailDomain>| {
            winners
                .iter()
                .map(|d| std::ptr::from_ref(*d))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(strongest([
                (&a, Claim::Grandfathered),
                (&b, Claim::Held),
                (&c, Claim::Held)
            ])),
            names(vec![&b, &c])
        );
        assert_eq!(
            names(strongest([
                (&a, Claim::Grandfathered),
                (&b, Claim::Unproved)
            ])),
            names(vec![&a])
        );
        assert!(strongest([(&a, Claim::Unproved), (&b, Claim::Unproved)]).is_empty());
    }

    #[test]
    fn tokens_differ_per_claimant_gateway_and_domain() {
        let owner = proof("uid-1", "owner", "example.com");
        assert_eq!(owner.record, "_mx-operator.example.com");
        assert!(owner.value.starts_with("mx-operator-verification="));
        assert_eq!(owner.value.len(), VALUE_PREFIX.len() + 32);
        assert_eq!(owner, proof("uid-1", "owner", "example.com"), "stable");
        for other in [
            proof("uid-1", "stranger", "example.com"),
            proof("uid-2", "owner", "example.com"),
            proof("uid-1", "owner", "example.org"),
        ] {
            assert_ne!(other.value, owner.value);
        }
    }

    #[test]
    fn only_this_claims_token_verifies() {
        let wanted = proof("uid", "owner", "example.com");
        let stranger = proof("uid", "stranger", "example.com");
        let verdict = |found: Result<Vec<String>, String>| judge(&found, &wanted);
        assert!(verdict(Ok(vec![wanted.value.clone()])).status);
        assert!(verdict(Ok(vec!["v=spf1 -all".into(), wanted.value.clone()])).status);
        assert_eq!(verdict(Ok(vec![])).reason, "ProofMissing");
        assert_eq!(verdict(Ok(vec![stranger.value])).reason, "ProofMismatch");
        let failed = verdict(Err("127.0.0.1:53: no answer in time".into()));
        assert_eq!(failed.reason, "LookupFailed");
        assert!(!failed.status);
        assert!(
            failed.message.contains(&wanted.value),
            "every message says what to publish: {}",
            failed.message
        );
    }
}
