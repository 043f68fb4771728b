//! The MailDomain decision: one pure function from the domain and its inputs to what the
//! reconcile does (relay config, finalizer, MX record, drift expectation), the conditions
//! it reports and when it looks again. Every way a domain can fail to be relayed is a
//! branch here, with a table test below.

use super::fetch::Inputs;
use super::recipients::{self, Recipients, Unmerged};
use crate::api::MailRelay;
use crate::api::conditions::{
    ACCEPTANCE_VERIFIED, CONFLICT, DEPARTED, Desired, OWNERSHIP_VERIFIED, PRIMARY_REACHABLE,
    PUBLIC_MX_RESOLVED, READY, RECIPIENTS_SYNCED, RELAY_CONFIGURED, Verdict,
};
use crate::api::domain::{DomainRole, OwnershipProof};
use crate::api::validate::{
    host_port, normalize_domain, normalize_host, parse_duration, parse_host_port,
};
use crate::api::{MailDomain, MailGateway};
use crate::controller::ownership;
use crate::controller::placement::{claim_winner, namespace_allowed, primary_refused};
use crate::dns::Mx;
use crate::drift::decide as drift;
use crate::drift::{Expectation, ProbePlan, ProbeTarget};
use crate::manifests::gateway::SMTP_PORT;
use crate::manifests::relay::{RelayTarget, mail_relay, relay_name, shard_relays};
use crate::recipients::fingerprint;
use crate::render::{DomainInput, RelayMode, RenderError, relay_data};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// How soon a domain whose proof is missing, or whose DNS update failed, is looked at
/// again (at most; the resync may be shorter).
pub const RETRY: Duration = Duration::from_secs(30);

/// What one reconcile of a MailDomain does.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Add the cleanup finalizer (when missing): the relay config lives in another
    /// namespace, or there are DNS records to withdraw.
    pub finalizer: bool,
    /// The relay config to apply; `None` leaves what the gateway has as it is.
    pub relay: Option<Relay>,
    /// `Some`: make the MX record at the DNSProvider, if the spec names one, match
    /// (`Some(None)`: withdraw ours).
    pub mx: Option<Option<Mx>>,
    /// Conditions, in the order they are listed: those before `DnsSynced`, then those
    /// after it; `Ready` comes last.
    pub conditions: Vec<Desired>,
    pub conditions_after_dns: Vec<Desired>,
    pub ready: Ready,
    /// Status fields besides conditions.
    pub status: StatusChange,
    /// What the drift checks look at, once the MX record's server is known.
    pub drift: Option<Expectation>,
    pub requeue: Action,
}

/// The MailRelay for the domain, where it goes, and where the last one was when the
/// domain moved.
#[derive(Clone, Debug, PartialEq)]
pub struct Relay {
    pub object: MailRelay,
    /// The recipients in shards, when the list is longer than one MailRelay holds.
    pub shards: Vec<MailRelay>,
    /// `namespace/name`.
    pub location: String,
    pub moved_from: Option<String>,
}

/// The `Ready` condition, which for a relayed domain also depends on the DNS outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Ready {
    Fixed(Desired),
    /// This, unless publishing the MX record fails: then `False` with the DNS reason.
    UnlessDnsFails(Desired),
}

/// Status fields a decision sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusChange {
    /// Recipient count and fingerprint, and the MailRelay's location.
    pub relayed: Option<Relayed>,
    /// `Some(proof)` sets the ownership proof shown (`Some(None)` clears it and its
    /// condition: the gateway no longer asks for one).
    pub ownership: Option<Option<OwnershipProof>>,
    /// Write the one-word drift summary (a drift check has seen the domain).
    pub drift_summary: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Relayed {
    pub count: i64,
    pub hash: String,
    pub location: String,
}

impl Decision {
    /// Nothing of the domain is rendered or published; only conditions change.
    fn report(conditions: Vec<Desired>, ready: Desired, requeue: Action) -> Self {
        Self {
            finalizer: false,
            relay: None,
            mx: None,
            conditions,
            conditions_after_dns: vec![],
            ready: Ready::Fixed(ready),
            status: StatusChange::default(),
            drift: None,
            requeue,
        }
    }
}

fn no_conflict() -> Desired {
    Desired::new(
        CONFLICT,
        false,
        "NoConflict",
        "no other MailDomain claims this domain",
    )
}

/// The domain is not relayed for a reason outside it.
fn not_relayed(reason: &'static str, message: String, resync: Duration) -> Decision {
    Decision::report(
        vec![Desired::new(
            RELAY_CONFIGURED,
            false,
            reason,
            message.clone(),
        )],
        Desired::new(READY, false, reason, message),
        Action::requeue(resync),
    )
}

/// Decides one reconcile of a MailDomain that is not being deleted.
pub fn decide(domain: &MailDomain, inputs: &Inputs, now: Timestamp) -> Decision {
    decide_or_fail(domain, inputs, now).unwrap_or_else(|error| render_failed(&error, inputs.resync))
}

/// validate() accepted the spec, so a render error is a bug of the operator's: said where
/// the user looks, and the relay config that last rendered keeps serving.
fn render_failed(error: &RenderError, resync: Duration) -> Decision {
    let message = format!(
        "the relay configuration could not be rendered: {error}; the previous relay config keeps serving (a bug in mx-operator: the spec passed validation)"
    );
    not_relayed("RenderFailed", message, resync)
}

fn decide_or_fail(
    domain: &MailDomain,
    inputs: &Inputs,
    now: Timestamp,
) -> Result<Decision, RenderError> {
    if let Err(problems) = domain.spec.validate() {
        // Nothing else is touched: the last good relay config keeps serving.
        return Ok(Decision::report(
            vec![],
            Desired::new(READY, false, "InvalidSpec", problems.to_string()),
            Action::await_change(),
        ));
    }
    let normalized = normalize_domain(&domain.spec.domain).unwrap_or_default();
    let namespace = &inputs.namespace;
    let (gateway_namespace, gateway_name) = &inputs.gateway_key;
    let Some(gateway) = inputs.gateway.as_deref() else {
        let message = format!("MailGateway {gateway_namespace}/{gateway_name} does not exist");
        return Ok(not_relayed("GatewayNotFound", message, inputs.resync));
    };
    if gateway.metadata.deletion_timestamp.is_some() {
        let message = format!(
            "MailGateway {gateway_namespace}/{gateway_name} is being deleted: its replicas take no new mail and deliver what they hold"
        );
        return Ok(not_relayed("GatewayDeleting", message, inputs.resync));
    }
    let admits = |ns: &str| namespace_allowed(gateway, ns, inputs.namespace_labels.get(ns));
    if !admits(namespace) {
        let message = format!(
            "MailGateway {gateway_namespace}/{gateway_name} does not accept MailDomains from namespace {namespace} (spec.allowedDomains)"
        );
        return Ok(not_relayed("NamespaceNotAllowed", message, inputs.resync));
    }
    if let Some(target) = primary_is_gateway(domain, gateway, &inputs.gateway_addresses) {
        let message = format!(
            "spec.primary {target} is MailGateway {gateway_namespace}/{gateway_name} itself: mail for {normalized} would loop between the gateway and itself; name the domain's own mail server"
        );
        return Ok(not_relayed("PrimaryIsGateway", message, inputs.resync));
    }
    let primary = normalize_host(&domain.spec.primary.host).unwrap_or_default();
    if let Some(why) = primary_refused(gateway, namespace, &primary, &inputs.primary_addresses) {
        let message = format!(
            "MailGateway {gateway_namespace}/{gateway_name} does not deliver to this primary: {why}"
        );
        return Ok(not_relayed("PrimaryNotAllowed", message, inputs.resync));
    }
    if let Some((winner_namespace, winner_name)) =
        conflicting_winner(domain, inputs, gateway, &normalized, admits)
    {
        let message = format!(
            "{normalized} is already relayed by MailGateway {gateway_namespace}/{gateway_name} for MailDomain {winner_namespace}/{winner_name}, which claimed it first; nothing of this MailDomain is rendered",
        );
        return Ok(Decision::report(
            vec![
                Desired::new(CONFLICT, true, "DomainClaimed", message.clone()),
                Desired::new(RELAY_CONFIGURED, false, "Conflict", message.clone()),
            ],
            Desired::new(READY, false, "Conflict", message),
            Action::requeue(inputs.resync),
        ));
    }

    let ownership = match ownership::required(gateway, namespace, &normalized) {
        None => None,
        Some(proof) if ownership::proved(domain, &proof) => {
            let verdict = ownership::verified(&proof);
            Some((proof, verdict))
        }
        Some(proof) => {
            let found = inputs
                .ownership_txt
                .clone()
                .unwrap_or_else(|| Err("not looked up".into()));
            let verdict = ownership::judge(&found, &proof);
            if !verdict.status && !ownership::grandfathered(domain, gateway, &normalized) {
                let message = verdict.message.clone();
                let mut decision = Decision::report(
                    vec![
                        verdict.on(OWNERSHIP_VERIFIED),
                        Desired::new(
                            RELAY_CONFIGURED,
                            false,
                            "OwnershipUnproven",
                            message.clone(),
                        ),
                    ],
                    Desired::new(READY, false, "OwnershipUnproven", message),
                    Action::requeue(inputs.resync.min(RETRY)),
                );
                decision.status.ownership = Some(Some(proof));
                return Ok(decision);
            }
            Some((proof, verdict))
        }
    };

    let merged = recipients::merge(
        domain,
        &normalized,
        namespace,
        &inputs.lists,
        &inputs.sources,
        now,
    );
    let recipients = match merged {
        Ok(recipients) => recipients,
        // Nothing at the gateway to keep: it answers 4xx until a list is in force, not
        // 554 (a sender bounces that).
        Err(Unmerged { problem, stale_in }) if inputs.relay_live.is_none() => Recipients {
            addresses: Default::default(),
            described: String::new(),
            stale: None,
            unsynced: Some(problem),
            problem: None,
            becomes_stale_in: stale_in,
            refresh_in: inputs.sources.iter().map(|s| s.next_in).min(),
        },
        Err(Unmerged { problem, stale_in }) => {
            let ready = Desired::new(
                READY,
                false,
                problem.reason,
                format!("{}; the previous list keeps serving", problem.message),
            );
            return Ok(Decision::report(
                vec![no_conflict(), problem.on(RECIPIENTS_SYNCED)],
                ready,
                Action::requeue(
                    inputs
                        .sources
                        .iter()
                        .map(|s| s.next_in)
                        .chain(stale_in)
                        .fold(inputs.resync, Duration::min),
                ),
            ));
        }
    };
    relayed(
        domain,
        inputs,
        gateway,
        &normalized,
        ownership,
        recipients,
        now,
    )
}

/// `host:port` of the primary when it is the gateway: one of its MX host names or its
/// Service's addresses on the SMTP port, or its probe address.
fn primary_is_gateway(
    domain: &MailDomain,
    gateway: &MailGateway,
    service_addresses: &[String],
) -> Option<String> {
    let primary = &domain.spec.primary;
    let host = normalize_host(&primary.host).ok()?;
    let target = host_port(&host, primary.port);
    let own_names = gateway
        .spec
        .mx_hostnames
        .iter()
        .chain(&gateway.spec.service.load_balancer_ip)
        .chain(service_addresses)
        .filter_map(|name| normalize_host(name).ok());
    let probe = gateway
        .spec
        .probe_address
        .as_deref()
        .and_then(|address| parse_host_port(address).ok());
    let named = i32::from(primary.port) == SMTP_PORT && { own_names }.any(|name| name == host);
    (named || probe.as_ref() == Some(&target)).then_some(target)
}

/// The domain is relayed (perhaps deferred, suspended or withdrawn after departure).
fn relayed(
    domain: &MailDomain,
    inputs: &Inputs,
    gateway: &MailGateway,
    normalized: &str,
    ownership: Option<(OwnershipProof, Verdict)>,
    recipients: Recipients,
    now: Timestamp,
) -> Result<Decision, RenderError> {
    let namespace = &inputs.namespace;
    let (gateway_namespace, gateway_name) = &inputs.gateway_key;
    let ours: Vec<String> = gateway
        .spec
        .mx_hostnames
        .iter()
        .filter_map(|h| normalize_domain(h).ok())
        .collect();
    let departure = if inputs.drift_on {
        drift::departure(
            domain.condition(DEPARTED),
            inputs.observation.as_ref().map(|o| &o.public),
            &ours,
            now,
            parse_duration(&domain.spec.departure.grace_period).unwrap_or(Duration::MAX),
        )
    } else {
        // Without drift checks nothing is ever departed.
        drift::Departure::default()
    };
    let (departed_mode, withdraw_mx) =
        drift::departure_effect(departure.action_due, domain.spec.departure.action);
    let mode = match departed_mode {
        Some(mode) => mode,
        None if recipients.stale.is_some() => RelayMode::Stale,
        None if recipients.unsynced.is_some() => RelayMode::Unsynced,
        None => RelayMode::Active,
    };
    let data = relay_data(&DomainInput {
        spec: &domain.spec,
        recipients: &recipients.addresses,
        mode,
        gateway_delivery: &gateway.spec.delivery,
    })?;
    let same_namespace = gateway_namespace == namespace;
    let name = domain.name_any();
    let target = RelayTarget {
        gateway_namespace,
        gateway_name,
        domain: normalized,
        owner_namespace: namespace,
        owner_name: &name,
        owner_reference: if same_namespace {
            domain.controller_owner_ref(&())
        } else {
            None
        },
    };
    let location = format!("{gateway_namespace}/{}", relay_name(normalized));
    let previous = domain.status.as_ref().and_then(|s| s.relay.clone());
    let split = crate::render::shards::split(data);
    let relay = Relay {
        object: mail_relay(&target, split.relay),
        shards: shard_relays(&target, split.shards),
        location: location.clone(),
        moved_from: previous.filter(|p| *p != location),
    };
    let configured = match relay.shards.len() {
        0 => format!("MailRelay {location}"),
        count => format!("MailRelay {location}, its recipients in {count} shard MailRelays"),
    };
    let desired_mx = desired_mx(domain, gateway).filter(|_| !withdraw_mx);
    let drift = inputs.drift_on.then(|| Expectation {
        domain: normalized.to_string(),
        ours: ours.clone(),
        primary_host: normalize_host(&domain.spec.primary.host).unwrap_or_default(),
        primary_port: domain.spec.primary.port,
        // Known once the record is published.
        authoritative: None,
        probe: Some(ProbePlan {
            target: match &gateway.spec.probe_address {
                Some(address) => ProbeTarget::Address(address.clone()),
                None => ProbeTarget::Replicas {
                    namespace: gateway_namespace.clone(),
                    gateway: gateway_name.clone(),
                },
            },
            helo: ours.first().cloned().unwrap_or_default(),
            domain: normalized.to_string(),
            known: recipients.addresses.iter().next().map(String::from),
            expect: drift::expect_for(mode, domain.spec.policy.require_tls),
            catch_all: domain.spec.recipients.catch_all,
        }),
    });

    let count = recipients.addresses.len();
    let synced = match &recipients.stale {
        Some(age) => Desired::new(
            RECIPIENTS_SYNCED,
            false,
            "Stale",
            format!(
                "{} is older than recipients.maxAge ({age}); the gateway answers 4xx (try later) for the domain",
                recipients.described
            ),
        ),
        None => match (&recipients.unsynced, &recipients.problem) {
            (Some(unsynced), _) => Desired::new(
                RECIPIENTS_SYNCED,
                false,
                unsynced.reason,
                format!(
                    "{}; the gateway answers 4xx (try later) for the domain until a list is in force",
                    unsynced.message
                ),
            ),
            (None, Some(problem)) => problem.clone().on(RECIPIENTS_SYNCED),
            (None, None) => Desired::new(
                RECIPIENTS_SYNCED,
                true,
                "Synced",
                format!("{count} recipient(s) from {}", recipients.described),
            ),
        },
    };
    let ready = match departed_mode {
        Some(mode) => Ready::Fixed(Desired::new(
            READY,
            false,
            "Departed",
            format!(
                "the domain's MX no longer points at the gateway and the grace period has passed: {}",
                match mode {
                    RelayMode::Suspended =>
                        "the gateway answers 4xx for it (departure.action Suspend)",
                    _ =>
                        "its relay config and MX record are withdrawn (departure.action Remove); it comes back when the MX points here again",
                }
            ),
        )),
        None if recipients.stale.is_some() => Ready::Fixed(Desired::new(
            READY,
            false,
            "Stale",
            "the recipient list is stale; mail is deferred, not accepted",
        )),
        None => match &recipients.unsynced {
            Some(unsynced) => Ready::Fixed(Desired::new(
                READY,
                false,
                unsynced.reason,
                "no recipient list is in force yet; mail is deferred (4xx), not accepted or refused",
            )),
            None => Ready::UnlessDnsFails(Desired::new(
                READY,
                true,
                "Relayed",
                format!("relayed by MailGateway {gateway_namespace}/{gateway_name}"),
            )),
        },
    };
    let mut after_dns = vec![];
    if let Some(verdict) = departure.condition {
        after_dns.push(verdict.on(DEPARTED));
    }
    if let Some(observation) = &inputs.observation {
        after_dns
            .push(drift::public_mx_resolved(&observation.public, &ours).on(PUBLIC_MX_RESOLVED));
        for (type_, verdict) in [
            (ACCEPTANCE_VERIFIED, &observation.acceptance),
            (PRIMARY_REACHABLE, &observation.primary),
        ] {
            if let Some(verdict) = verdict {
                after_dns.push(verdict.clone().on(type_));
            }
        }
    }
    let proof = ownership.map(|(proof, verdict)| {
        after_dns.push(verdict.on(OWNERSHIP_VERIFIED));
        proof
    });
    let requeue = [
        recipients.becomes_stale_in,
        departure.due_in,
        recipients.refresh_in,
    ]
    .into_iter()
    .flatten()
    .fold(inputs.resync, Duration::min);
    Ok(Decision {
        finalizer: !same_namespace || domain.spec.dns.is_some(),
        relay: Some(relay),
        mx: Some(desired_mx),
        conditions: vec![
            no_conflict(),
            synced,
            Desired::new(RELAY_CONFIGURED, true, "Configured", configured),
        ],
        conditions_after_dns: after_dns,
        ready,
        status: StatusChange {
            relayed: Some(Relayed {
                count: count as i64,
                hash: fingerprint(&recipients.addresses),
                location,
            }),
            ownership: Some(proof),
            drift_summary: inputs.observation.is_some(),
        },
        drift,
        requeue: Action::requeue(requeue),
    })
}

/// The MailDomain (`namespace`, `name`) that holds the domain when it is not this one.
/// Rivals that are invalid keep their claim (their last config still serves); rivals from
/// namespaces the gateway refuses hold none; where the gateway asks for proof, proved
/// claims beat those kept from before, and unproved ones hold none.
fn conflicting_winner(
    domain: &MailDomain,
    inputs: &Inputs,
    gateway: &MailGateway,
    normalized: &str,
    admits: impl Fn(&str) -> bool,
) -> Option<(String, String)> {
    let rivals = inputs.rivals.iter().filter_map(|rival| {
        let rival_namespace = rival.namespace().unwrap_or_default();
        admits(&rival_namespace).then(|| {
            let claim = ownership::claim(gateway, &rival_namespace, normalized, rival);
            (rival.as_ref(), claim)
        })
    });
    let own = ownership::claim(gateway, &inputs.namespace, normalized, domain);
    let claims: Vec<_> = rivals.chain([(domain, own)]).collect();
    let winner = claim_winner(ownership::strongest(claims))?;
    (winner.metadata.uid != domain.metadata.uid)
        .then(|| (winner.namespace().unwrap_or_default(), winner.name_any()))
}

/// The gateway's MX record for the domain: its first MX host name, at the spec's
/// preference (default 20 for a backup, 10 for a primary).
pub fn desired_mx(domain: &MailDomain, gateway: &MailGateway) -> Option<Mx> {
    let exchange = gateway
        .spec
        .mx_hostnames
        .first()
        .and_then(|h| normalize_domain(h).ok())?;
    let preference = domain.spec.mx.preference.unwrap_or(match domain.spec.role {
        DomainRole::Backup => 20,
        DomainRole::Primary => 10,
    });
    Some(Mx::new(preference, &exchange))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::Desired;
    use crate::api::fixtures;
    use crate::drift::Observation;
    use crate::drift::decide::MxState;
    use serde_json::json;
    use std::sync::Arc;

    const RESYNC: Duration = Duration::from_secs(300);

    fn now() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    /// The inputs of a domain in `mail` whose gateway `mail/edge` exists.
    fn inputs(gateway: MailGateway) -> Inputs {
        Inputs {
            namespace: "mail".into(),
            gateway_key: ("mail".into(), "edge".into()),
            gateway: Some(Arc::new(gateway)),
            resync: RESYNC,
            ..Default::default()
        }
    }

    fn condition<'a>(decision: &'a Decision, type_: &str) -> Option<&'a Desired> {
        decision
            .conditions
            .iter()
            .chain(&decision.conditions_after_dns)
            .find(|c| c.type_ == type_)
    }

    fn ready(decision: &Decision) -> &Desired {
        match &decision.ready {
            Ready::Fixed(ready) | Ready::UnlessDnsFails(ready) => ready,
        }
    }

    /// A decision that renders and publishes nothing and writes only conditions.
    fn assert_reports_only(decision: &Decision) {
        assert!(!decision.finalizer, "{decision:?}");
        assert_eq!(decision.relay, None);
        assert_eq!(decision.mx, None, "DNS is left alone");
        assert_eq!(decision.drift, None);
        assert_eq!(decision.status.relayed, None);
    }

    /// Every way a domain is not relayed, each once an early exit of the reconcile: what
    /// is reported, and that nothing is rendered.
    #[test]
    fn each_reason_not_to_relay_reports_and_renders_nothing() {
        let rival = Arc::new(fixtures::domain(json!({
            "metadata": {"name": "first", "uid": "uid-first", "creationTimestamp": "2026-01-01T00:00:00Z"}
        })));
        let missing_list = fixtures::domain(json!({
            "spec": {"recipients": {"configMapRef": {"name": "users", "key": "list"}}}
        }));
        let mut no_gateway = inputs(fixtures::gateway(json!({})));
        no_gateway.gateway = None;
        let other_namespace = Inputs {
            namespace: "tenant".into(),
            ..inputs(fixtures::gateway(json!({})))
        };
        let gateway_deleted = inputs(fixtures::gateway(
            json!({"metadata": {"deletionTimestamp": "2026-12-07T00:00:00Z"}}),
        ));
        let contested = Inputs {
            rivals: vec![rival],
            ..inputs(fixtures::gateway(json!({})))
        };
        let proof_asked = inputs(fixtures::gateway(
            json!({"spec": {"requireOwnershipProof": true}}),
        ));
        let proof_absent = Inputs {
            ownership_txt: Some(Ok(vec![])),
            ..proof_asked.clone()
        };
        let list_absent = Inputs {
            lists: vec![super::super::fetch::ListSource {
                kind: "ConfigMap",
                reference: crate::api::KeyRef {
                    name: "users".into(),
                    key: "list".into(),
                },
                found: None,
            }],
            // The gateway holds the list from before the ConfigMap went.
            relay_live: Some([0; 32]),
            ..inputs(fixtures::gateway(json!({})))
        };
        let invalid = fixtures::domain(json!({"spec": {"domain": "bad domain"}}));
        let plain = fixtures::domain(json!({}));
        let primary = |host: &str, port: u16| {
            fixtures::domain(json!({"spec": {"primary": {"host": host, "port": port}}}))
        };
        let at_mx_host = primary("MX1.relay.example.net.", 25);
        let at_service = primary("10.96.0.25", 25);
        let at_probe = primary("127.0.0.1", 2525);
        let with_service = Inputs {
            gateway_addresses: vec!["10.96.0.25".into()],
            ..inputs(fixtures::gateway(
                json!({"spec": {"mxHostnames": ["mx1.relay.example.net"], "probeAddress": "127.0.0.1:2525"}}),
            ))
        };
        let tenant_on_loopback = Inputs {
            namespace: "tenant".into(),
            ..inputs(fixtures::gateway(
                json!({"spec": {"allowedDomains": {"from": "All"}}}),
            ))
        };
        let loopback = primary("127.0.0.1", 2525);
        let cases: [(&str, &MailDomain, &Inputs, &str, &str, Action); 11] = [
            (
                "invalid spec",
                &invalid,
                &no_gateway,
                "InvalidSpec",
                "spec.domain",
                Action::await_change(),
            ),
            (
                "gateway missing",
                &plain,
                &no_gateway,
                "GatewayNotFound",
                "MailGateway mail/edge does not exist",
                Action::requeue(RESYNC),
            ),
            (
                "gateway being deleted",
                &plain,
                &gateway_deleted,
                "GatewayDeleting",
                "MailGateway mail/edge is being deleted: its replicas take no new mail",
                Action::requeue(RESYNC),
            ),
            (
                "namespace refused",
                &plain,
                &other_namespace,
                "NamespaceNotAllowed",
                "does not accept MailDomains from namespace tenant",
                Action::requeue(RESYNC),
            ),
            (
                "primary is the gateway's MX host",
                &at_mx_host,
                &with_service,
                "PrimaryIsGateway",
                "spec.primary mx1.relay.example.net:25 is MailGateway mail/edge itself",
                Action::requeue(RESYNC),
            ),
            (
                "primary is the gateway's Service",
                &at_service,
                &with_service,
                "PrimaryIsGateway",
                "10.96.0.25:25",
                Action::requeue(RESYNC),
            ),
            (
                "primary is the gateway's probe address",
                &at_probe,
                &with_service,
                "PrimaryIsGateway",
                "127.0.0.1:2525",
                Action::requeue(RESYNC),
            ),
            (
                "primary not allowed",
                &loopback,
                &tenant_on_loopback,
                "PrimaryNotAllowed",
                "MailGateway mail/edge does not deliver to this primary: 127.0.0.1 is a loopback",
                Action::requeue(RESYNC),
            ),
            (
                "claimed first by another",
                &plain,
                &contested,
                "Conflict",
                "for MailDomain mail/first, which claimed it first",
                Action::requeue(RESYNC),
            ),
            (
                "proof missing",
                &plain,
                &proof_absent,
                "OwnershipUnproven",
                "no TXT record _mx-operator.example.com",
                Action::requeue(RETRY),
            ),
            (
                "list missing",
                &missing_list,
                &list_absent,
                "RecipientSourceMissing",
                "ConfigMap mail/users does not exist; the previous list keeps serving",
                Action::requeue(RESYNC),
            ),
        ];
        for (case, domain, inputs, reason, message, requeue) in cases {
            let decision = decide(domain, inputs, now());
            assert_reports_only(&decision);
            let ready = ready(&decision);
            assert!(!ready.verdict.status, "{case}");
            assert_eq!(ready.verdict.reason, reason, "{case}");
            assert!(
                ready.verdict.message.contains(message),
                "{case}: {}",
                ready.verdict.message
            );
            assert_eq!(decision.requeue, requeue, "{case}");
        }
    }

    #[test]
    fn a_render_error_is_a_condition_and_renders_nothing() {
        let error = RenderError::Invalid {
            field: "spec.policy.rbls",
            message: "x".into(),
        };
        let decision = render_failed(&error, RESYNC);
        assert_reports_only(&decision);
        let ready = ready(&decision);
        assert_eq!(
            (ready.verdict.status, ready.verdict.reason),
            (false, "RenderFailed")
        );
        assert!(ready.verdict.message.contains("spec.policy.rbls: x"));
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
    }

    #[test]
    fn a_primary_on_another_port_of_the_gateway_host_is_no_loop() {
        let gateway = fixtures::gateway(
            json!({"spec": {"mxHostnames": ["mx1.relay.example.net"], "probeAddress": "127.0.0.1:2525"}}),
        );
        for (host, port) in [("mx1.relay.example.net", 2525), ("127.0.0.1", 25)] {
            let domain =
                fixtures::domain(json!({"spec": {"primary": {"host": host, "port": port}}}));
            assert_eq!(
                primary_is_gateway(&domain, &gateway, &[]),
                None,
                "{host}:{port}"
            );
        }
    }

    #[test]
    fn a_conflict_is_reported_on_three_conditions() {
        let rival = Arc::new(fixtures::domain(json!({
            "metadata": {"name": "first", "uid": "uid-first", "creationTimestamp": "2026-01-01T00:00:00Z"}
        })));
        let contested = Inputs {
            rivals: vec![rival],
            ..inputs(fixtures::gateway(json!({})))
        };
        let decision = decide(&fixtures::domain(json!({})), &contested, now());
        assert_eq!(
            condition(&decision, CONFLICT).unwrap().verdict.reason,
            "DomainClaimed"
        );
        assert!(condition(&decision, CONFLICT).unwrap().verdict.status);
        assert_eq!(
            condition(&decision, RELAY_CONFIGURED)
                .unwrap()
                .verdict
                .reason,
            "Conflict"
        );
        // A younger rival does not take the domain.
        let younger = Arc::new(fixtures::domain(json!({
            "metadata": {"name": "late", "uid": "uid-late", "creationTimestamp": "2026-11-30T00:00:00Z"}
        })));
        let late = Inputs {
            rivals: vec![younger],
            ..inputs(fixtures::gateway(json!({})))
        };
        let decision = decide(&fixtures::domain(json!({})), &late, now());
        assert_eq!(ready(&decision).verdict.reason, "Relayed");
    }

    #[test]
    fn an_unproved_claim_shows_what_to_publish() {
        let asked = inputs(fixtures::gateway(
            json!({"spec": {"requireOwnershipProof": true}}),
        ));
        let failed = Inputs {
            ownership_txt: Some(Err("no answer in time".into())),
            ..asked.clone()
        };
        let decision = decide(&fixtures::domain(json!({})), &failed, now());
        let verified = condition(&decision, OWNERSHIP_VERIFIED).unwrap();
        assert_eq!(verified.verdict.reason, "LookupFailed");
        let Some(Some(proof)) = &decision.status.ownership else {
            panic!("the proof to publish is shown: {decision:?}");
        };
        assert!(verified.verdict.message.contains(&proof.value));
        // Found: relayed, and proved.
        let found = Inputs {
            ownership_txt: Some(Ok(vec![proof.value.clone()])),
            ..asked
        };
        let decision = decide(&fixtures::domain(json!({})), &found, now());
        assert_eq!(ready(&decision).verdict.reason, "Relayed");
        assert!(
            condition(&decision, OWNERSHIP_VERIFIED)
                .unwrap()
                .verdict
                .status
        );
    }

    #[test]
    fn a_relayed_domain_gets_its_relay_config_and_mx() {
        let domain = fixtures::domain(json!({}));
        let decision = decide(&domain, &inputs(fixtures::gateway(json!({}))), now());
        assert!(
            matches!(&decision.ready, Ready::UnlessDnsFails(r) if r.verdict.reason == "Relayed"),
            "{:?}",
            decision.ready
        );
        let relay = decision.relay.as_ref().unwrap();
        assert_eq!(relay.location, "mail/relay-example.com");
        assert_eq!(relay.moved_from, None);
        assert!(
            relay.object.metadata.owner_references.is_some(),
            "same namespace: the garbage collector removes it"
        );
        assert!(!decision.finalizer, "nothing outside the namespace, no DNS");
        assert_eq!(decision.mx, Some(Some(Mx::new(20, "edge.mx.example.net"))));
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
        let relayed = decision.status.relayed.as_ref().unwrap();
        assert_eq!(relayed.count, 1);
        assert_eq!(
            decision.status.ownership,
            Some(None),
            "no proof asked: none shown"
        );
        let types: Vec<_> = decision.conditions.iter().map(|c| c.type_).collect();
        assert_eq!(types, [CONFLICT, RECIPIENTS_SYNCED, RELAY_CONFIGURED]);
    }

    #[test]
    fn finalizer_only_where_the_garbage_collector_cannot_clean_up() {
        let elsewhere = fixtures::domain(json!({
            "metadata": {"namespace": "tenant"},
            "spec": {"gatewayRef": {"name": "edge", "namespace": "mail"}}
        }));
        let tenant = Inputs {
            namespace: "tenant".into(),
            ..inputs(fixtures::gateway(
                json!({"spec": {"allowedDomains": {"from": "All"}}}),
            ))
        };
        let decision = decide(&elsewhere, &tenant, now());
        assert!(decision.finalizer, "relay config in another namespace");
        assert!(
            decision
                .relay
                .unwrap()
                .object
                .metadata
                .owner_references
                .is_none()
        );
        let with_dns = fixtures::domain(json!({"spec": {"dns": {"providerRef": {"name": "dns"}}}}));
        let decision = decide(&with_dns, &inputs(fixtures::gateway(json!({}))), now());
        assert!(decision.finalizer, "MX records to withdraw");
    }

    #[test]
    fn a_moved_domain_removes_its_old_relay_config() {
        let moved = fixtures::domain(json!({"status": {"relay": "old/relay-example.com"}}));
        let decision = decide(&moved, &inputs(fixtures::gateway(json!({}))), now());
        assert_eq!(
            decision.relay.unwrap().moved_from.as_deref(),
            Some("old/relay-example.com")
        );
    }

    #[test]
    fn a_stale_list_defers_and_a_fresh_one_says_when_it_goes_stale() {
        let domain = fixtures::domain(json!({"spec": {"recipients": {
            "configMapRef": {"name": "users", "key": "list"}, "maxAge": "5m"}}}));
        let list = |written: &str| super::super::fetch::ListSource {
            kind: "ConfigMap",
            reference: crate::api::KeyRef {
                name: "users".into(),
                key: "list".into(),
            },
            found: Some((
                serde_json::from_value(json!({"creationTimestamp": written})).unwrap(),
                super::super::fetch::ListText::Text("bob@example.com\n".into()),
            )),
        };
        let stale = Inputs {
            lists: vec![list("2026-11-30T23:50:00Z")],
            ..inputs(fixtures::gateway(json!({})))
        };
        let decision = decide(&domain, &stale, now());
        assert_eq!(ready(&decision).verdict.reason, "Stale");
        assert!(matches!(decision.ready, Ready::Fixed(_)));
        assert!(decision.relay.is_some(), "rendered in Stale mode (4xx)");
        let fresh = Inputs {
            lists: vec![list("2026-11-30T23:58:00Z")],
            ..inputs(fixtures::gateway(json!({})))
        };
        let decision = decide(&domain, &fresh, now());
        assert_eq!(decision.status.relayed.unwrap().count, 2);
        // 3 minutes (and a second) left: sooner than the resync.
        assert_eq!(decision.requeue, Action::requeue(Duration::from_secs(181)));
    }

    #[test]
    fn a_directory_serves_its_last_good_list_and_none_before_its_first() {
        use super::super::super::sources::{InForce, SourceState};
        use crate::recipients::extract::SourceError;
        let domain = fixtures::domain(json!({"spec": {"recipients": {"maxAge": "5m", "ldap": {
            "url": "ldap://ldap.example.com", "bindDN": "cn=mx", "baseDN": "dc=example,dc=com",
            "passwordSecretRef": {"name": "ldap", "key": "password"}}}}}));
        let listed = |minutes_ago: i64| InForce {
            addresses: crate::recipients::AddressList::of_normalized(
                ["carol@example.com", "dave@example.com"]
                    .map(String::from)
                    .into(),
            ),
            at: Timestamp::from_second(now().as_second() - minutes_ago * 60).unwrap(),
            skipped: None,
        };
        let with = |in_force: Option<InForce>, error: Option<SourceError>| Inputs {
            sources: vec![SourceState {
                kind: "ldap",
                described: "the directory ldap://ldap.example.com".into(),
                in_force,
                earlier: None,
                error,
                held: None,
                syncing: false,
                next_in: Duration::from_secs(60),
            }],
            ..inputs(fixtures::gateway(json!({})))
        };
        let refused = SourceError::AuthFailed("invalid credentials".into());

        // Never synced: the gateway does not know the domain's users and answers 4xx for
        // all of them, inline ones included, never 5xx.
        let never = decide(&domain, &with(None, Some(refused.clone())), now());
        assert_eq!(ready(&never).verdict.reason, "AuthFailed");
        let synced = condition(&never, RECIPIENTS_SYNCED).unwrap();
        assert!(
            synced
                .verdict
                .message
                .contains("no sync of the directory ldap://ldap.example.com has succeeded"),
            "{}",
            synced.verdict.message
        );
        let relay = never.relay.as_ref().expect("rendered to answer 4xx");
        let data = relay.object.data.as_ref().unwrap();
        assert!(
            data[crate::render::keys::RECIPIENT_POLICY].contains("450 4.7.1"),
            "{data:?}"
        );
        assert_eq!(never.requeue, Action::requeue(Duration::from_secs(60)));

        let fresh = decide(&domain, &with(Some(listed(2)), None), now());
        assert_eq!(ready(&fresh).verdict.reason, "Relayed");
        let relayed = fresh.status.relayed.as_ref().unwrap();
        assert_eq!(relayed.count, 3, "inline and directory merged");
        assert_eq!(fresh.requeue, Action::requeue(Duration::from_secs(60)));

        let failing = decide(
            &domain,
            &with(Some(listed(3)), Some(refused.clone())),
            now(),
        );
        assert_eq!(ready(&failing).verdict.reason, "Relayed");
        let failing_synced = condition(&failing, RECIPIENTS_SYNCED).unwrap();
        assert!(!failing_synced.verdict.status, "a failing source is said");
        assert_eq!(failing_synced.verdict.reason, "AuthFailed");
        assert!(
            failing_synced
                .verdict
                .message
                .contains("the last sync of the directory")
                && failing_synced.verdict.message.contains("keeps serving"),
            "{}",
            failing_synced.verdict.message
        );

        let stale = decide(&domain, &with(Some(listed(6)), Some(refused)), now());
        assert_eq!(ready(&stale).verdict.reason, "Stale");
        assert!(stale.relay.is_some(), "rendered in Stale mode (4xx)");
    }

    #[test]
    fn after_a_restart_max_age_counts_from_the_success_an_earlier_operator_recorded() {
        use super::super::super::sources::{EarlierSuccess, SourceState};
        use crate::recipients::extract::SourceError;
        let domain = |max_age: Option<&str>| {
            fixtures::domain(json!({"spec": {"recipients": {"maxAge": max_age, "ldap": {
                "url": "ldap://ldap.example.com", "bindDN": "cn=mx", "baseDN": "dc=example,dc=com",
                "passwordSecretRef": {"name": "ldap", "key": "password"}}}}}))
        };
        let down = |minutes_ago: i64| Inputs {
            sources: vec![SourceState {
                kind: "ldap",
                described: "the directory ldap://ldap.example.com".into(),
                in_force: None,
                earlier: Some(EarlierSuccess {
                    at: Timestamp::from_second(now().as_second() - minutes_ago * 60).unwrap(),
                    addresses: Some(2),
                }),
                error: Some(SourceError::Unreachable("connection refused".into())),
                held: None,
                syncing: false,
                next_in: Duration::from_secs(200),
            }],
            relay_live: Some([0; 32]),
            ..inputs(fixtures::gateway(json!({})))
        };
        // (maxAge, minutes since the recorded success, the verdict, rendered, requeue)
        let table = [
            (Some("5m"), 2, "Unreachable", false, 181),
            (Some("5m"), 4, "Unreachable", false, 61),
            (Some("5m"), 6, "Stale", true, 200),
            (None, 600, "Unreachable", false, 200),
        ];
        for (max_age, minutes_ago, reason, rendered, requeue) in table {
            let decision = decide(&domain(max_age), &down(minutes_ago), now());
            let what = format!("{max_age:?} {minutes_ago}m");
            assert_deferred_or_kept(&decision, reason, rendered, requeue, &what);
        }
        let kept = decide(&domain(Some("5m")), &down(2), now());
        assert!(
            ready(&kept)
                .verdict
                .message
                .contains("the last success was at 2026-11-30T23:58:00Z"),
            "{}",
            ready(&kept).verdict.message
        );
        let stale = decide(&domain(Some("5m")), &down(6), now());
        let relay = stale.relay.unwrap();
        let data = relay.object.data.unwrap_or_default();
        let policy = data.get(crate::render::keys::RECIPIENT_POLICY);
        assert!(
            policy.is_some_and(|p| p.contains("450 4.7.1")),
            "the gateway answers 4xx: {policy:?}"
        );
    }

    #[test]
    fn a_list_past_max_age_defers_the_domain_while_another_source_has_none_yet() {
        use super::super::super::sources::{EarlierSuccess, SourceState};
        use crate::recipients::extract::SourceError;
        let domain = fixtures::domain(json!({"spec": {"recipients": {"maxAge": "5m",
            "ldap": {"url": "ldap://ldap.example.com", "bindDN": "cn=mx", "baseDN": "dc=example,dc=com",
                     "passwordSecretRef": {"name": "ldap", "key": "password"}},
            "http": {"url": "https://lists.example.com/users"}}}}));
        let unsynced = |kind: &'static str, minutes_ago: Option<i64>| SourceState {
            kind,
            described: format!("the {kind} source"),
            in_force: None,
            earlier: minutes_ago.map(|m| EarlierSuccess {
                at: Timestamp::from_second(now().as_second() - m * 60).unwrap(),
                addresses: Some(2),
            }),
            error: Some(SourceError::Unreachable("connection refused".into())),
            held: None,
            syncing: false,
            next_in: Duration::from_secs(200),
        };
        // (the LDAP source's last success, the HTTP source's, the verdict, rendered, requeue)
        let table = [
            (Some(6), None, "Stale", true, 200),
            (None, Some(6), "Stale", true, 200),
            (Some(2), Some(4), "Unreachable", false, 61),
            (Some(2), None, "Unreachable", true, 181),
        ];
        for (ldap, http, reason, rendered, requeue) in table {
            let inputs = Inputs {
                sources: vec![unsynced("ldap", ldap), unsynced("http", http)],
                // The gateway holds the list the earlier operator synced.
                relay_live: Some([0; 32]),
                ..inputs(fixtures::gateway(json!({})))
            };
            let decision = decide(&domain, &inputs, now());
            let what = format!("{ldap:?} {http:?}");
            assert_deferred_or_kept(&decision, reason, rendered, requeue, &what);
        }
    }

    /// A domain whose synced source has no list: its Ready reason, whether it is rendered
    /// (Stale, or 4xx while a source never synced) or the gateway keeps its list, and when
    /// it is looked at again.
    fn assert_deferred_or_kept(
        decision: &Decision,
        reason: &str,
        rendered: bool,
        requeue_seconds: u64,
        what: &str,
    ) {
        assert_eq!(ready(decision).verdict.reason, reason, "{what}");
        assert_eq!(decision.relay.is_some(), rendered, "{what}");
        let requeue = Action::requeue(Duration::from_secs(requeue_seconds));
        assert_eq!(decision.requeue, requeue, "{what}");
    }

    #[test]
    fn a_departed_domain_past_its_grace_is_withdrawn() {
        let departed_since = json!({"conditions": [{"type": "Departed", "status": "True",
            "reason": "NxDomain", "message": "", "lastTransitionTime": "2026-11-01T00:00:00Z"}]});
        let domain = fixtures::domain(json!({"status": departed_since}));
        let watched = Inputs {
            drift_on: true,
            observation: Some(Observation {
                public: MxState::NxDomain,
                authoritative_ok: None,
                acceptance: None,
                primary: None,
            }),
            ..inputs(fixtures::gateway(json!({})))
        };
        let decision = decide(&domain, &watched, now());
        assert_eq!(ready(&decision).verdict.reason, "Departed");
        assert_eq!(decision.mx, Some(None), "our MX record is withdrawn");
        assert!(decision.status.drift_summary);
        assert_eq!(
            decision.drift.unwrap().probe.unwrap().expect,
            drift::Expect::Deny
        );
        // Without drift checks, the same domain is simply relayed.
        let unwatched = inputs(fixtures::gateway(json!({})));
        let decision = decide(&domain, &unwatched, now());
        assert_eq!(ready(&decision).verdict.reason, "Relayed");
        assert_eq!(decision.drift, None);
    }
}
