//! Pure decisions about drift: how a domain's public MX relates to the gateway, when a
//! domain counts as departed and when its departure action is due, what a probe's replies
//! mean, and the one-word summary in `kubectl get md`.

use crate::api::conditions::{
    ACCEPTANCE_VERIFIED, Condition, ConditionStatus, DEPARTED, PRIMARY_REACHABLE,
    PUBLIC_MX_RESOLVED, Verdict,
};
use crate::api::domain::DepartureAction;
use crate::dns::Mx;
use crate::net::{MxLookup, ProbeReplies, Reply};
use crate::render::RelayMode;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// How a domain's public MX relates to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxState {
    /// One of the MX targets is one of the gateway's host names.
    Ours,
    /// The MX still names the primary but not the gateway: the zone lacks our record.
    OurMxMissing(Vec<Mx>),
    /// The MX names neither the gateway nor the primary.
    Elsewhere(Vec<Mx>),
    NoMx,
    NxDomain,
    /// The public view is not counted: our own record is being restored at the zone's
    /// server, which explains it.
    Repairing,
    /// The lookup failed.
    Unknown(String),
}

/// `ours` and `primary` are normalized host names (lower case, no trailing dot).
pub fn classify(lookup: &MxLookup, ours: &[String], primary: Option<&str>) -> MxState {
    match lookup {
        MxLookup::Records(records) if records.iter().any(|mx| ours.contains(&mx.exchange)) => {
            MxState::Ours
        }
        MxLookup::Records(records)
            if primary.is_some_and(|p| records.iter().any(|mx| mx.exchange == p)) =>
        {
            MxState::OurMxMissing(records.clone())
        }
        MxLookup::Records(records) if records.is_empty() => MxState::NoMx,
        MxLookup::Records(records) => MxState::Elsewhere(records.clone()),
        MxLookup::NoMx => MxState::NoMx,
        MxLookup::NxDomain => MxState::NxDomain,
        MxLookup::Failed(error) => MxState::Unknown(error.clone()),
    }
}

impl MxState {
    /// Whether this is evidence that the domain no longer sends its mail to the gateway.
    pub fn is_departure(&self) -> bool {
        !matches!(self, Self::Ours | Self::Repairing | Self::Unknown(_))
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Ours => "MxPointsHere",
            Self::OurMxMissing(_) => "OurMxMissing",
            Self::Elsewhere(_) => "MxElsewhere",
            Self::NoMx => "NoMx",
            Self::NxDomain => "NxDomain",
            Self::Repairing => "OurMxBeingRestored",
            Self::Unknown(_) => "LookupFailed",
        }
    }

    /// The evidence, in words.
    pub fn describe(&self, ours: &[String]) -> String {
        let list = |records: &[Mx]| {
            records
                .iter()
                .map(Mx::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ours = ours.join(", ");
        match self {
            Self::Ours => format!("the public MX names the gateway ({ours})"),
            Self::OurMxMissing(records) => format!(
                "the public MX is [{}]: the primary, but none of the gateway's host names ({ours})",
                list(records)
            ),
            Self::Elsewhere(records) => format!(
                "the public MX is [{}]: none of the gateway's host names ({ours})",
                list(records)
            ),
            Self::NoMx => "the domain has no MX records".into(),
            Self::NxDomain => "the domain does not exist (NXDOMAIN)".into(),
            Self::Repairing => {
                "our MX record is being restored at the zone's server; the public MX is not counted until then".into()
            }
            Self::Unknown(error) => format!("the MX lookup failed: {error}"),
        }
    }
}

/// The `PublicMxResolved` verdict: whether the lookup answered, and what it said.
pub fn public_mx_resolved(state: &MxState, ours: &[String]) -> Verdict {
    match state {
        MxState::Unknown(_) => Verdict::failed(
            "LookupFailed",
            format!(
                "{}; whether the domain still sends its mail here is not known until the lookup answers",
                state.describe(ours)
            ),
        ),
        MxState::Repairing => Verdict::new(true, state.reason(), state.describe(ours)),
        _ => Verdict::new(true, "Resolved", state.describe(ours)),
    }
}

/// Where a domain stands with respect to departure (the default: in service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Departure {
    /// The `Departed` condition to write; `None` leaves the stored one as it is (no fresh
    /// evidence either way).
    pub condition: Option<Verdict>,
    /// The departure action must run now.
    pub action_due: bool,
    /// How long until the action is due, while the grace period runs.
    pub due_in: Option<Duration>,
}

/// Decides departure from the stored `Departed` condition (its transition time is the
/// since-time, so it survives restarts) and the latest public MX state. A failed lookup
/// never counts: it keeps whatever was decided before.
pub fn departure(
    previous: Option<&Condition>,
    state: Option<&MxState>,
    ours: &[String],
    now: Timestamp,
    grace: Duration,
) -> Departure {
    let departed_since = previous
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time.0);
    let (condition, since) = match state {
        Some(state) if state.is_departure() => {
            let since = departed_since.unwrap_or(now);
            let due = since
                .checked_add(jiff_span(grace))
                .unwrap_or(Timestamp::MAX);
            let message = format!(
                "{}; departed since {since}, the departure action runs at {due}",
                state.describe(ours)
            );
            (
                Some(Verdict::new(true, state.reason(), message)),
                Some(since),
            )
        }
        Some(MxState::Ours) => (
            Some(Verdict::new(
                false,
                "MxPointsHere",
                MxState::Ours.describe(ours),
            )),
            None,
        ),
        _ => (None, departed_since),
    };
    let elapsed = since.map(|since| {
        let seconds = now.duration_since(since).as_secs_f64().max(0.0);
        Duration::from_secs_f64(seconds)
    });
    Departure {
        condition,
        action_due: elapsed.is_some_and(|e| e >= grace),
        due_in: elapsed.filter(|e| *e < grace).map(|e| grace - e),
    }
}

fn jiff_span(duration: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(duration)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

/// What a due departure action does to the relay config, and whether our MX record is
/// withdrawn with it. `Report` changes nothing but the condition.
pub fn departure_effect(action_due: bool, action: DepartureAction) -> (Option<RelayMode>, bool) {
    match (action_due, action) {
        (true, DepartureAction::Remove) => (Some(RelayMode::Withdrawn), true),
        (true, DepartureAction::Suspend) => (Some(RelayMode::Suspended), false),
        _ => (None, false),
    }
}

/// What the gateway should answer for a known recipient given the relay config.
pub fn expect_for(mode: RelayMode, require_tls: bool) -> Expect {
    match mode {
        RelayMode::Withdrawn => Expect::Deny,
        RelayMode::Stale | RelayMode::Unsynced | RelayMode::Suspended => Expect::Defer,
        // The probe speaks plain text, which such a domain defers.
        RelayMode::Active if require_tls => Expect::Defer,
        RelayMode::Active => Expect::Accept,
    }
}

/// What the gateway should answer for a known recipient of the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// 2xx: the domain is relayed.
    Accept,
    /// 4xx: stale list, suspended domain, or TLS required (the probe speaks plain text).
    Defer,
    /// 5xx: the domain's relay config is withdrawn.
    Deny,
}

/// What the probe's replies say about the gateway. Messages carry reply codes, not the
/// random addresses, so that an unchanged gateway gives an unchanged message.
pub fn acceptance(
    replies: &Result<ProbeReplies, String>,
    expect: Expect,
    catch_all: bool,
) -> Verdict {
    let replies = match replies {
        Ok(replies) => replies,
        Err(error) => return Verdict::new(false, "ProbeFailed", error.clone()),
    };
    if replies.foreign.class() == 2 {
        return Verdict::new(
            false,
            "OpenRelay",
            format!(
                "the gateway accepted a recipient in a domain it does not serve ({}): it is an open relay",
                replies.foreign.code
            ),
        );
    }
    if !catch_all && replies.random.class() == 2 {
        return Verdict::new(
            false,
            "BackscatterRisk",
            format!(
                "the gateway accepted a random recipient ({}) although the domain is not catch-all: mail to non-existent users would be bounced later (backscatter)",
                replies.random.code
            ),
        );
    }
    if replies.known.is_none()
        && expect == Expect::Accept
        && !catch_all
        && replies.random.code == 554
    {
        // Without a known address to ask, "relay access denied" for a random one still
        // shows that the gateway does not serve the domain (an unknown user gets 550).
        return Verdict::new(
            false,
            "NotAccepting",
            format!(
                "the gateway refuses the domain itself ({} for a random recipient): it does not relay it",
                replies.random.code
            ),
        );
    }
    // The address asked is a real user's: status names it as "a listed recipient" only.
    if let Some((_, reply)) = &replies.known {
        let wanted = match expect {
            Expect::Accept => 2,
            Expect::Defer => 4,
            Expect::Deny => 5,
        };
        if reply.class() != wanted {
            let (reason, what) = match expect {
                Expect::Accept => ("NotAccepting", "should accept"),
                Expect::Defer => ("ConfigMismatch", "should defer (4xx)"),
                Expect::Deny => ("ConfigMismatch", "should refuse (5xx)"),
            };
            return Verdict::new(
                false,
                reason,
                format!(
                    "the gateway answered {reply} for a listed recipient, which it {what}: it is not running the current relay config"
                ),
            );
        }
    }
    let known = replies
        .known
        .as_ref()
        .map(|(_, reply)| format!("a listed recipient → {}, ", reply.code))
        .unwrap_or_default();
    Verdict::new(
        true,
        "Verified",
        format!(
            "{known}random recipient → {}, foreign domain → {}",
            replies.random.code, replies.foreign.code
        ),
    )
}

/// A gateway replica ready to take mail.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Replica {
    /// The pod's name.
    pub name: String,
    pub address: std::net::SocketAddr,
}

/// The gateway's acceptance from the verdicts of its ready replicas (in the same order):
/// verified only when every one is, otherwise the first that is not, named.
pub fn acceptance_of_replicas(
    namespace: &str,
    gateway: &str,
    replicas: &[Replica],
    verdicts: Vec<Verdict>,
) -> Verdict {
    let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
    let mut answers = replicas.iter().zip(verdicts);
    if let Some((replica, verdict)) = answers.clone().find(|(_, v)| !v.status) {
        return Verdict::new(
            false,
            verdict.reason,
            format!(
                "replica {} ({}): {}",
                replica.name, replica.address, verdict.message
            ),
        );
    }
    match answers.next() {
        None => Verdict::new(
            false,
            "NoReadyReplica",
            format!(
                "no replica of MailGateway {namespace}/{gateway} is ready: none of its pods is"
            ),
        ),
        Some((_, first)) => Verdict::new(
            true,
            first.reason,
            format!(
                "{} (all {} ready replicas: {})",
                first.message,
                names.len(),
                names.join(", ")
            ),
        ),
    }
}

/// What the primary's greeting says.
pub fn primary_reachable(target: &str, banner: &Result<Reply, String>) -> Verdict {
    match banner {
        Ok(reply) if reply.code == 220 => {
            Verdict::new(true, "BannerReceived", format!("{target} greets with 220"))
        }
        Ok(reply) => Verdict::new(
            false,
            "NotAcceptingConnections",
            format!(
                "{target} greets with {reply}: queued mail waits on the gateway until it accepts"
            ),
        ),
        Err(error) => Verdict::new(
            false,
            "Unreachable",
            format!("{error}; queued mail waits on the gateway"),
        ),
    }
}

/// The DRIFT column: `None`, or what is off, worst first.
pub fn summary(conditions: &[Condition]) -> String {
    let bad = |type_: &str, status: ConditionStatus| {
        crate::api::conditions::find(conditions, type_).filter(|c| c.status == status)
    };
    let mut parts = vec![];
    if let Some(c) = bad(ACCEPTANCE_VERIFIED, ConditionStatus::False) {
        parts.push(c.reason.clone());
    }
    if let Some(c) = bad(DEPARTED, ConditionStatus::True) {
        parts.push(format!("Departed({})", c.reason));
    }
    if bad(PUBLIC_MX_RESOLVED, ConditionStatus::False).is_some() {
        parts.push("MxLookupFailed".into());
    }
    if bad(PRIMARY_REACHABLE, ConditionStatus::False).is_some() {
        parts.push("PrimaryUnreachable".into());
    }
    if parts.is_empty() {
        "None".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, last: u8) -> Replica {
        Replica {
            name: name.into(),
            address: std::net::SocketAddr::from(([10, 244, 0, last], 25)),
        }
    }

    #[test]
    fn every_ready_replica_must_answer_right_and_the_first_wrong_one_is_named() {
        let ok = || {
            Verdict::new(
                true,
                "Verified",
                "a listed recipient → 250, random recipient → 550, foreign domain → 554",
            )
        };
        let stale = || Verdict::new(false, "NotAccepting", "the gateway answered 554 for a@x");
        let replicas = [replica("edge-0", 5), replica("edge-1", 6)];
        let cases = [
            (
                vec![ok(), ok()],
                true,
                "Verified",
                "a listed recipient → 250, random recipient → 550, foreign domain → 554 (all 2 ready replicas: edge-0, edge-1)",
            ),
            (
                vec![ok(), stale()],
                false,
                "NotAccepting",
                "replica edge-1 (10.244.0.6:25): the gateway answered 554 for a@x",
            ),
            (
                vec![stale(), stale()],
                false,
                "NotAccepting",
                "replica edge-0 (10.244.0.5:25): the gateway answered 554 for a@x",
            ),
        ];
        for (verdicts, status, reason, message) in cases {
            let verdict = acceptance_of_replicas("mail", "edge", &replicas, verdicts);
            assert_eq!(
                (verdict.status, verdict.reason, verdict.message.as_str()),
                (status, reason, message)
            );
        }
        let none = acceptance_of_replicas("mail", "edge", &[], vec![]);
        assert_eq!((none.status, none.reason), (false, "NoReadyReplica"));
        assert!(
            none.message.contains("MailGateway mail/edge"),
            "{}",
            none.message
        );
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ours() -> Vec<String> {
        vec!["mx1.relay.test".into(), "mx2.relay.test".into()]
    }

    fn records(list: &[(u16, &str)]) -> MxLookup {
        MxLookup::Records(list.iter().map(|(p, h)| Mx::new(*p, h)).collect())
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn departed(status: ConditionStatus, since: i64) -> Condition {
        Condition {
            type_: DEPARTED.into(),
            status,
            reason: "MxElsewhere".into(),
            message: String::new(),
            last_transition_time: Time(at(since)),
            observed_generation: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(3_600);

    #[test]
    fn any_of_our_host_names_counts() {
        let lookup = records(&[(10, "mail.example.com"), (20, "MX2.relay.test.")]);
        assert_eq!(
            classify(&lookup, &ours(), Some("mail.example.com")),
            MxState::Ours
        );
    }

    #[test]
    fn the_primary_without_us_is_a_missing_record_not_a_move() {
        let lookup = records(&[(10, "mail.example.com")]);
        assert!(matches!(
            classify(&lookup, &ours(), Some("mail.example.com")),
            MxState::OurMxMissing(_)
        ));
        assert!(matches!(
            classify(&lookup, &ours(), None),
            MxState::Elsewhere(_)
        ));
        assert!(matches!(
            classify(&lookup, &ours(), Some("other.example.com")),
            MxState::Elsewhere(_)
        ));
    }

    #[test]
    fn every_kind_of_absence_is_a_departure_but_a_failed_lookup_is_not() {
        for lookup in [
            MxLookup::NoMx,
            MxLookup::NxDomain,
            records(&[]),
            records(&[(10, "mx.elsewhere.test")]),
        ] {
            assert!(
                classify(&lookup, &ours(), None).is_departure(),
                "{lookup:?}"
            );
        }
        let failed = classify(&MxLookup::Failed("timeout".into()), &ours(), None);
        assert!(!failed.is_departure());
        assert!(!MxState::Ours.is_departure());
    }

    #[test]
    fn a_first_departure_starts_the_grace_period_now() {
        let state = MxState::Elsewhere(vec![Mx::new(10, "mx.elsewhere.test")]);
        let decision = departure(None, Some(&state), &ours(), at(0), GRACE);
        let condition = decision.condition.unwrap();
        assert!(condition.status);
        assert_eq!(condition.reason, "MxElsewhere");
        assert!(
            condition.message.contains("10 mx.elsewhere.test"),
            "{}",
            condition.message
        );
        assert!(!decision.action_due);
        assert_eq!(decision.due_in, Some(GRACE));
    }

    #[test]
    fn the_action_is_due_once_the_grace_period_has_passed_since_the_stored_time() {
        let state = MxState::NxDomain;
        let previous = departed(ConditionStatus::True, 0);
        let waiting = departure(Some(&previous), Some(&state), &ours(), at(3_599), GRACE);
        assert!(!waiting.action_due);
        assert_eq!(waiting.due_in, Some(Duration::from_secs(1)));
        let due = departure(Some(&previous), Some(&state), &ours(), at(3_600), GRACE);
        assert!(due.action_due);
        assert_eq!(due.due_in, None);
    }

    #[test]
    fn the_message_is_the_same_on_every_check() {
        let state = MxState::NoMx;
        let previous = departed(ConditionStatus::True, 0);
        let first = departure(Some(&previous), Some(&state), &ours(), at(10), GRACE);
        let later = departure(Some(&previous), Some(&state), &ours(), at(20), GRACE);
        assert_eq!(first.condition, later.condition);
    }

    #[test]
    fn a_failed_lookup_changes_nothing_but_time_still_runs() {
        let failed = MxState::Unknown("timed out".into());
        let fresh = departure(None, Some(&failed), &ours(), at(0), GRACE);
        assert_eq!(
            fresh,
            Departure {
                condition: None,
                action_due: false,
                due_in: None
            }
        );
        let previous = departed(ConditionStatus::True, 0);
        let during = departure(Some(&previous), Some(&failed), &ours(), at(7_200), GRACE);
        assert_eq!(during.condition, None);
        assert!(
            during.action_due,
            "the evidence before the outage still stands"
        );
        let in_service = departed(ConditionStatus::False, 0);
        let unknown = departure(Some(&in_service), Some(&failed), &ours(), at(7_200), GRACE);
        assert!(!unknown.action_due);
    }

    #[test]
    fn pointing_back_ends_the_departure() {
        let previous = departed(ConditionStatus::True, 0);
        let back = departure(
            Some(&previous),
            Some(&MxState::Ours),
            &ours(),
            at(9_999),
            GRACE,
        );
        assert!(!back.condition.unwrap().status);
        assert!(!back.action_due);
    }

    #[test]
    fn no_observation_yet_keeps_a_stored_departure() {
        let previous = departed(ConditionStatus::True, 0);
        let restarted = departure(Some(&previous), None, &ours(), at(3_600), GRACE);
        assert_eq!(restarted.condition, None);
        assert!(restarted.action_due);
    }

    #[test]
    fn each_action_has_its_effect_once_due() {
        assert_eq!(
            departure_effect(true, DepartureAction::Remove),
            (Some(RelayMode::Withdrawn), true)
        );
        assert_eq!(
            departure_effect(true, DepartureAction::Suspend),
            (Some(RelayMode::Suspended), false)
        );
        assert_eq!(
            departure_effect(true, DepartureAction::Report),
            (None, false)
        );
        assert_eq!(
            departure_effect(false, DepartureAction::Remove),
            (None, false)
        );
    }

    #[test]
    fn the_probe_expects_what_the_config_says() {
        assert_eq!(expect_for(RelayMode::Active, false), Expect::Accept);
        assert_eq!(expect_for(RelayMode::Active, true), Expect::Defer);
        assert_eq!(expect_for(RelayMode::Stale, false), Expect::Defer);
        assert_eq!(expect_for(RelayMode::Suspended, false), Expect::Defer);
        assert_eq!(expect_for(RelayMode::Withdrawn, false), Expect::Deny);
    }

    fn reply(code: u16) -> Reply {
        Reply {
            code,
            text: "x".into(),
        }
    }

    fn replies(known: Option<u16>, random: u16, foreign: u16) -> Result<ProbeReplies, String> {
        Ok(ProbeReplies {
            known: known.map(|code| ("alice@example.com".into(), reply(code))),
            random: reply(random),
            foreign: reply(foreign),
        })
    }

    #[test]
    fn a_healthy_gateway_is_verified() {
        let verdict = acceptance(&replies(Some(250), 550, 554), Expect::Accept, false);
        assert_eq!(verdict.reason, "Verified");
        assert!(verdict.status);
        assert_eq!(
            verdict.message,
            "a listed recipient → 250, random recipient → 550, foreign domain → 554"
        );
    }

    #[test]
    fn an_open_relay_is_the_worst_finding() {
        let verdict = acceptance(&replies(Some(550), 250, 250), Expect::Accept, false);
        assert_eq!(verdict.reason, "OpenRelay");
    }

    #[test]
    fn accepting_random_recipients_is_a_backscatter_risk_unless_catch_all() {
        let risky = acceptance(&replies(Some(250), 250, 554), Expect::Accept, false);
        assert_eq!(risky.reason, "BackscatterRisk");
        let opted_in = acceptance(&replies(None, 250, 554), Expect::Accept, true);
        assert_eq!(opted_in.reason, "Verified");
    }

    #[test]
    fn a_gateway_with_an_old_config_is_caught() {
        let stale = acceptance(&replies(Some(554), 554, 554), Expect::Accept, false);
        assert_eq!(stale.reason, "NotAccepting");
        let still_relaying = acceptance(&replies(Some(250), 550, 554), Expect::Deny, false);
        assert_eq!(still_relaying.reason, "ConfigMismatch");
        let deferring = acceptance(&replies(Some(450), 450, 554), Expect::Defer, false);
        assert!(deferring.status);
    }

    #[test]
    fn without_a_known_recipient_relay_denied_still_shows_a_missing_domain() {
        let refused = acceptance(&replies(None, 554, 554), Expect::Accept, false);
        assert_eq!(refused.reason, "NotAccepting");
        let served = acceptance(&replies(None, 550, 554), Expect::Accept, false);
        assert!(served.status);
    }

    #[test]
    fn a_failed_probe_says_why() {
        let verdict = acceptance(&Err("connection refused".into()), Expect::Accept, false);
        assert_eq!(
            verdict,
            Verdict::new(false, "ProbeFailed", "connection refused")
        );
    }

    #[test]
    fn the_primary_must_greet_with_220() {
        assert!(primary_reachable("mail:25", &Ok(reply(220))).status);
        let busy = primary_reachable("mail:25", &Ok(reply(554)));
        assert_eq!(busy.reason, "NotAcceptingConnections");
        let down = primary_reachable("mail:25", &Err("connection refused".into()));
        assert_eq!(down.reason, "Unreachable");
    }

    #[test]
    fn the_summary_lists_what_is_off() {
        let condition = |type_: &str, status, reason: &str| Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(at(0)),
            observed_generation: None,
        };
        assert_eq!(summary(&[]), "None");
        let all = [
            condition(DEPARTED, ConditionStatus::True, "NxDomain"),
            condition(ACCEPTANCE_VERIFIED, ConditionStatus::False, "NotAccepting"),
            condition(PRIMARY_REACHABLE, ConditionStatus::False, "Unreachable"),
        ];
        assert_eq!(
            summary(&all),
            "NotAccepting,Departed(NxDomain),PrimaryUnreachable"
        );
        let fine = [
            condition(DEPARTED, ConditionStatus::False, "MxPointsHere"),
            condition(ACCEPTANCE_VERIFIED, ConditionStatus::True, "Verified"),
        ];
        assert_eq!(summary(&fine), "None");
        // A failed lookup is not "all well": the departure check is blind while it lasts.
        let blind = [
            condition(DEPARTED, ConditionStatus::False, "MxPointsHere"),
            condition(PUBLIC_MX_RESOLVED, ConditionStatus::False, "LookupFailed"),
        ];
        assert_eq!(summary(&blind), "MxLookupFailed");
    }

    #[test]
    fn a_failed_public_lookup_is_its_own_condition() {
        let ours = ["edge.mx.example.net".to_string()];
        let failed = public_mx_resolved(&MxState::Unknown("timed out".into()), &ours);
        assert_eq!((failed.status, failed.reason), (false, "LookupFailed"));
        assert!(
            failed
                .message
                .starts_with("the MX lookup failed: timed out; whether")
        );
        let answered = public_mx_resolved(&MxState::NoMx, &ours);
        assert_eq!((answered.status, answered.reason), (true, "Resolved"));
        assert_eq!(answered.message, "the domain has no MX records");
    }
}
