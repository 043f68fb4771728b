//! Ownership proof on a shared gateway: a stranger who claims a domain first gets nothing
//! and blocks nobody; the owner who publishes the TXT record from status goes live.
//! Its own test binary: its operator looks TXT records up at this test's Knot.

use kube::api::{Patch, PatchParams};
use mx_operator::api::{ConditionStatus, MailDomain, MailGateway, MailRelay};
use mx_operator::manifests::relay::relay_owner;
use mx_operator_tests::ControlPlane;
use mx_operator_tests::fixtures::{apply, domain, gateway};
use mx_operator_tests::knot::Knot;
use mx_operator_tests::operator::operator_resolving_at;
use mx_operator_tests::wait::domain_condition;
use serde_json::json;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);
const DOMAIN: &str = "owned.example";
const LEGACY: &str = "legacy.owned.example";

#[tokio::test]
async fn only_the_claim_whose_token_is_published_goes_live() {
    let plane = ControlPlane::shared().await.expect("control plane");
    let knot = Knot::start(&plane.dir.join("knot-ownership"), &[(DOMAIN, "")]).unwrap();
    let operator = operator_resolving_at(plane, vec![knot.address]).await;

    let fleet = plane.namespace("fleet").await.unwrap();
    let stranger = plane.namespace("stranger").await.unwrap();
    let owner = plane.namespace("owner").await.unwrap();
    let on_fleet = json!({"gatewayRef": {"name": "edge", "namespace": fleet.name}});
    let edge = |require: bool| {
        gateway(
            "edge",
            json!({"allowedDomains": {"from": "All"}, "requireOwnershipProof": require}),
        )
    };
    // A domain relayed before the gateway asks for proof stays relayed when it starts to.
    apply::<MailGateway>(&fleet, edge(false)).await;
    apply::<MailDomain>(&owner, domain("legacy", LEGACY, on_fleet.clone())).await;
    domain_condition(
        &owner.api(),
        LIMIT,
        "legacy",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
    apply::<MailGateway>(&fleet, edge(true)).await;
    let legacy = domain_condition(
        &owner.api(),
        LIMIT,
        "legacy",
        "OwnershipVerified",
        ConditionStatus::False,
        "ProofMissing",
    )
    .await;
    assert_eq!(
        legacy.condition("Ready").map(|c| c.status),
        Some(ConditionStatus::True),
        "still relayed"
    );
    let legacy_relay = format!("relay-{LEGACY}");
    assert!(
        fleet
            .api::<MailRelay>()
            .get_opt(&legacy_relay)
            .await
            .unwrap()
            .is_some()
    );

    // The stranger claims the domain first (its MX still points at the shared gateway).
    apply::<MailDomain>(&stranger, domain("grab", DOMAIN, on_fleet.clone())).await;
    let grab = domain_condition(
        &stranger.api(),
        LIMIT,
        "grab",
        "OwnershipVerified",
        ConditionStatus::False,
        "ProofMissing",
    )
    .await;
    let grab_proof = grab
        .status
        .clone()
        .unwrap()
        .ownership
        .expect("proof in status");
    assert_eq!(grab_proof.record, format!("_mx-operator.{DOMAIN}"));
    let ready = grab.condition("Ready").unwrap();
    assert_eq!(ready.reason, "OwnershipUnproven");
    assert!(
        ready.message.contains(&grab_proof.value),
        "{}",
        ready.message
    );

    // The owner's later claim is not blocked by the unproved one: it gets its own token.
    apply::<MailDomain>(&owner, domain("mine", DOMAIN, on_fleet)).await;
    let mine = domain_condition(
        &owner.api(),
        LIMIT,
        "mine",
        "OwnershipVerified",
        ConditionStatus::False,
        "ProofMissing",
    )
    .await;
    let mine_proof = mine.status.unwrap().ownership.expect("proof in status");
    assert_ne!(mine_proof.value, grab_proof.value);
    let relay = format!("relay-{DOMAIN}");
    assert!(
        fleet
            .api::<MailRelay>()
            .get_opt(&relay)
            .await
            .unwrap()
            .is_none(),
        "nothing is relayed before a proof"
    );

    // The owner publishes its token.
    knot.nsupdate(
        DOMAIN,
        &format!(
            "update add {}. 300 TXT \"{}\"",
            mine_proof.record, mine_proof.value
        ),
    )
    .unwrap();
    domain_condition(
        &owner.api(),
        LIMIT,
        "mine",
        "Ready",
        ConditionStatus::True,
        "Relayed",
    )
    .await;
    let written = fleet.api::<MailRelay>().get(&relay).await.unwrap();
    assert_eq!(
        relay_owner(&written.metadata),
        Some((owner.name.clone(), "mine".to_string()))
    );
    // The stranger's claim now meets a proved one.
    domain_condition(
        &stranger.api(),
        LIMIT,
        "grab",
        "Ready",
        ConditionStatus::False,
        "Conflict",
    )
    .await;

    // A proof holds once given: the record may go, the domain stays live and changes apply.
    knot.nsupdate(DOMAIN, &format!("update delete {}. TXT", mine_proof.record))
        .unwrap();
    owner
        .api::<MailDomain>()
        .patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"recipients": {"inline": ["alice@owned.example", "bob@owned.example"]}}})),
        )
        .await
        .unwrap();
    mx_operator_tests::wait::until(LIMIT, "the change relayed", || async {
        let data = fleet.api::<MailRelay>().get(&relay).await.ok()?.data?;
        data.values()
            .any(|v| v.contains("bob@owned.example"))
            .then_some(())
    })
    .await;
    let mine = owner.api::<MailDomain>().get("mine").await.unwrap();
    assert_eq!(
        mine.condition("OwnershipVerified").map(|c| c.status),
        Some(ConditionStatus::True)
    );

    // Proof no longer asked: nothing about it is left in status.
    apply::<MailGateway>(&fleet, edge(false)).await;
    mx_operator_tests::wait::until(LIMIT, "the proof gone from status", || async {
        let legacy = owner.api::<MailDomain>().get("legacy").await.ok()?;
        (legacy.condition("OwnershipVerified").is_none()
            && legacy.status.as_ref()?.ownership.is_none())
        .then_some(())
    })
    .await;
    operator.abort();
}
