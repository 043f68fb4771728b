//! MailDomain → one relay ConfigMap in its gateway's namespace, and a status that says
//! whether the gateway relays the domain and why not.

use super::dns::{self, DnsProblem, Published};
use super::ownership::{self, OWNERSHIP_VERIFIED};
use super::placement::{claim_winner, gateway_key, namespace_allowed, rivals};
use super::status::Desired;
use super::{Context, Error, FINALIZER, apply_if_changed, namespace_of, write_status};
use crate::api::conditions::READY;
use crate::api::domain::MailDomainStatus;
use crate::api::validate::{normalize_address, normalize_domain, normalize_host, parse_duration};
use crate::api::{KeyRef, MailDomain, MailGateway};
use crate::drift::decide;
use crate::drift::{
    ACCEPTANCE_VERIFIED, DEPARTED, Expectation, PRIMARY_REACHABLE, ProbePlan, ProbeTarget,
};
use crate::manifests::gateway::GatewayNames;
use crate::manifests::relay::{RelayTarget, relay_configmap, relay_configmap_name, relay_owner};
use crate::recipients::{fingerprint, parse_list};
use crate::render::{DomainInput, RelayMode, relay_configmap_data};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const RECIPIENTS_SYNCED: &str = "RecipientsSynced";
pub const RELAY_CONFIGURED: &str = "RelayConfigured";
pub const CONFLICT: &str = "Conflict";
/// Set on a referenced recipient list by whatever keeps it up to date; `maxAge` is
/// measured from it (otherwise from the object's last write).
pub const RECIPIENTS_UPDATED_ANNOTATION: &str = "mx-operator.io/recipients-updated-at";

const RETRY: Duration = Duration::from_secs(30);
/// How often deletion tries to remove the MX record before it lets the object go.
const DNS_CLEANUP_ATTEMPTS: u32 = 5;
const DNS_CLEANUP_ANNOTATION: &str = "mx-operator.io/dns-cleanup-attempts";
/// How long deletion waits for an update that may still add a record it found absent, and
/// when (milliseconds since the epoch) it looks again.
const PENDING_RECHECK: Duration = Duration::from_secs(10);
const DNS_RECHECK_ANNOTATION: &str = "mx-operator.io/dns-recheck-at";

fn cleanup_attempts(domain: &MailDomain) -> u32 {
    domain
        .annotations()
        .get(DNS_CLEANUP_ANNOTATION)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

pub async fn reconcile(domain: Arc<MailDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&domain, &ctx).await;
    ctx.metrics
        .observe_reconcile("MailDomain", started.elapsed(), result.as_ref().err());
    result
}

pub fn error_policy(domain: Arc<MailDomain>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(maildomain = %domain.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[tracing::instrument(skip_all, fields(maildomain = %domain.name_any(), namespace = domain.namespace().unwrap_or_default()))]
async fn reconcile_inner(domain: &MailDomain, ctx: &Context) -> Result<Action, Error> {
    let namespace = namespace_of(domain)?;
    if domain.metadata.deletion_timestamp.is_some() {
        return finalize(domain, ctx, &namespace).await;
    }
    if let Err(problems) = domain.spec.validate() {
        // Nothing else is touched: the last good relay config keeps serving.
        let desired = [Desired::new(
            READY,
            false,
            "InvalidSpec",
            problems.to_string(),
        )];
        write_status(domain, domain.status.as_ref(), ctx, &desired, |_| {}).await?;
        return Ok(Action::await_change());
    }
    let normalized = normalize_domain(&domain.spec.domain).unwrap_or_default();
    let Some((gateway_namespace, gateway_name)) = gateway_key(domain) else {
        return Err(Error::NotNamespaced(domain.name_any()));
    };

    let gateway = ctx
        .gateways
        .get(&ObjectRef::<MailGateway>::new(&gateway_name).within(&gateway_namespace));
    let Some(gateway) = gateway else {
        let message = format!("MailGateway {gateway_namespace}/{gateway_name} does not exist");
        not_relayed(domain, ctx, "GatewayNotFound", message).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    };
    if !allowed(ctx, &gateway, &namespace).await? {
        let message = format!(
            "MailGateway {gateway_namespace}/{gateway_name} does not accept MailDomains from namespace {namespace} (spec.allowedDomains)"
        );
        not_relayed(domain, ctx, "NamespaceNotAllowed", message).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    }
    if let Some(winner) = conflicting_winner(domain, ctx, &gateway, &normalized).await? {
        let message = format!(
            "{normalized} is already relayed by MailGateway {gateway_namespace}/{gateway_name} for MailDomain {}/{}, which claimed it first; nothing of this MailDomain is rendered",
            winner.0, winner.1
        );
        let desired = [
            Desired::new(CONFLICT, true, "DomainClaimed", message.clone()),
            Desired::new(RELAY_CONFIGURED, false, "Conflict", message.clone()),
            Desired::new(READY, false, "Conflict", message),
        ];
        write_status(domain, domain.status.as_ref(), ctx, &desired, |_| {}).await?;
        return Ok(Action::requeue(ctx.settings.resync));
    }

    let ownership = match ownership::required(&gateway, &namespace, &normalized) {
        None => None,
        Some(proof) if ownership::proved(domain, &proof) => {
            let verdict = ownership::verified(&proof);
            Some((proof, verdict))
        }
        Some(proof) => {
            let found = ctx
                .lookups
                .txt_any(&ctx.settings.resolvers, &proof.record)
                .await;
            let verdict = ownership::judge(&found, &proof);
            if !verdict.verified && !ownership::grandfathered(domain, &gateway, &normalized) {
                let desired = [
                    Desired::new(
                        OWNERSHIP_VERIFIED,
                        false,
                        verdict.reason,
                        verdict.message.clone(),
                    ),
                    Desired::new(
                        RELAY_CONFIGURED,
                        false,
                        "OwnershipUnproven",
                        verdict.message.clone(),
                    ),
                    Desired::new(READY, false, "OwnershipUnproven", verdict.message),
                ];
                write_status(domain, domain.status.as_ref(), ctx, &desired, |status| {
                    status.ownership = Some(proof);
                })
                .await?;
                return Ok(Action::requeue(ctx.settings.resync.min(RETRY)));
            }
            Some((proof, verdict))
        }
    };

    let recipients = match collect_recipients(domain, ctx, &namespace, &normalized).await? {
        Ok(recipients) => recipients,
        Err((reason, message)) => {
            let desired = [
                Desired::new(
                    CONFLICT,
                    false,
                    "NoConflict",
                    "no other MailDomain claims this domain",
                ),
                Desired::new(RECIPIENTS_SYNCED, false, reason, message.clone()),
                Desired::new(
                    READY,
                    false,
                    reason,
                    format!("{message}; the previous list keeps serving"),
                ),
            ];
            write_status(domain, domain.status.as_ref(), ctx, &desired, |_| {}).await?;
            return Ok(Action::requeue(ctx.settings.resync));
        }
    };

    let key = ObjectRef::from_obj(domain);
    let ours: Vec<String> = gateway
        .spec
        .mx_hostnames
        .iter()
        .filter_map(|h| normalize_domain(h).ok())
        .collect();
    let observation = ctx.drift.as_ref().and_then(|d| d.observation(&key));
    let departure = match &ctx.drift {
        // Without drift checks nothing is ever departed.
        None => decide::Departure::default(),
        Some(_) => decide::departure(
            domain.condition(DEPARTED),
            observation.as_ref().map(|o| &o.public),
            &ours,
            Timestamp::now(),
            parse_duration(&domain.spec.departure.grace_period).unwrap_or(Duration::MAX),
        ),
    };
    let (departed_mode, withdraw_mx) =
        decide::departure_effect(departure.action_due, domain.spec.departure.action);
    let mode = match departed_mode {
        Some(mode) => mode,
        None if recipients.stale.is_some() => RelayMode::Stale,
        None => RelayMode::Active,
    };
    let data = relay_configmap_data(&DomainInput {
        spec: &domain.spec,
        recipients: &recipients.addresses,
        mode,
        gateway_delivery: &gateway.spec.delivery,
    })?;
    let same_namespace = gateway_namespace == namespace;
    if !same_namespace || domain.spec.dns.is_some() {
        ensure_finalizer(domain, ctx, &namespace).await?;
    }
    let target = RelayTarget {
        gateway_namespace: &gateway_namespace,
        gateway_name: &gateway_name,
        domain: &normalized,
        owner_namespace: &namespace,
        owner_name: &domain.name_any(),
        owner_reference: if same_namespace {
            domain.controller_owner_ref(&())
        } else {
            None
        },
    };
    let configmap = relay_configmap(&target, data);
    let location = format!("{gateway_namespace}/{}", relay_configmap_name(&normalized));
    remove_moved_relay(domain, ctx, &namespace, &location).await?;
    apply_if_changed(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), &gateway_namespace),
        &configmap,
        &["data"],
    )
    .await?;

    let desired_mx = dns::desired_mx(domain, &gateway).filter(|_| !withdraw_mx);
    let published = dns::sync(domain, ctx, &namespace, &normalized, desired_mx.as_ref()).await?;
    if let Ok(Published {
        repaired: Some(record),
        ..
    }) = &published
    {
        ctx.metrics.observe_dns_repair();
        let restored = super::status::Transition {
            type_: kube::runtime::events::EventType::Warning,
            reason: "DnsDriftRepaired".into(),
            message: format!(
                "MX {record} of {normalized} was missing at the zone's server (removed or changed behind the operator's back); restored"
            ),
        };
        ctx.publish(domain, vec![restored]).await;
    }
    if let Some(drift) = &ctx.drift {
        let plan = ProbePlan {
            target: match &gateway.spec.probe_address {
                Some(address) => ProbeTarget::Address(address.clone()),
                None => ProbeTarget::Replicas {
                    namespace: gateway_namespace.clone(),
                    service: GatewayNames::of(&gateway_name).headless,
                },
            },
            helo: ours.first().cloned().unwrap_or_default(),
            domain: normalized.clone(),
            known: recipients.addresses.iter().next().cloned(),
            expect: decide::expect_for(mode, domain.spec.policy.require_tls),
            catch_all: domain.spec.recipients.catch_all,
        };
        let authoritative = published
            .as_ref()
            .ok()
            .and_then(|p| p.server)
            .zip(desired_mx.clone());
        drift.expect(
            key,
            Expectation {
                domain: normalized.clone(),
                ours: ours.clone(),
                primary_host: normalize_host(&domain.spec.primary.host).unwrap_or_default(),
                primary_port: domain.spec.primary.port,
                authoritative,
                probe: Some(plan),
            },
        );
    }

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
        None => Desired::new(
            RECIPIENTS_SYNCED,
            true,
            "Synced",
            format!("{count} recipient(s) from {}", recipients.described),
        ),
    };
    let ready = match (&recipients.stale, &published) {
        _ if departed_mode.is_some() => Desired::new(
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
        ),
        (Some(_), _) => Desired::new(
            READY,
            false,
            "Stale",
            "the recipient list is stale; mail is deferred, not accepted",
        ),
        (None, Err(problem)) => Desired::new(
            READY,
            false,
            problem.reason,
            format!(
                "relayed, but the MX record is not published: {}",
                problem.message
            ),
        ),
        (None, Ok(_)) => Desired::new(
            READY,
            true,
            "Relayed",
            format!("relayed by MailGateway {gateway_namespace}/{gateway_name}"),
        ),
    };
    let mut desired = vec![
        Desired::new(
            CONFLICT,
            false,
            "NoConflict",
            "no other MailDomain claims this domain",
        ),
        synced,
        Desired::new(
            RELAY_CONFIGURED,
            true,
            "Configured",
            format!("relay ConfigMap {location}"),
        ),
    ];
    if domain.spec.dns.is_some() {
        desired.push(match &published {
            Ok(published) => Desired::new(
                dns::DNS_SYNCED,
                true,
                "Published",
                format!("MX {} via {}", published.records.join(", "), published.via),
            ),
            Err(problem) => Desired::new(
                dns::DNS_SYNCED,
                false,
                problem.reason,
                problem.message.clone(),
            ),
        });
    }
    if let Some(verdict) = departure.condition {
        desired.push(Desired::new(
            DEPARTED,
            verdict.status,
            verdict.reason,
            verdict.message,
        ));
    }
    if let Some(observation) = &observation {
        for (type_, verdict) in [
            (ACCEPTANCE_VERIFIED, &observation.acceptance),
            (PRIMARY_REACHABLE, &observation.primary),
        ] {
            if let Some(v) = verdict {
                desired.push(Desired::new(type_, v.status, v.reason, v.message.clone()));
            }
        }
    }
    let proof = ownership.map(|(proof, verdict)| {
        desired.push(Desired::new(
            OWNERSHIP_VERIFIED,
            verdict.verified,
            verdict.reason,
            verdict.message,
        ));
        proof
    });
    desired.push(ready);
    let hash = fingerprint(&recipients.addresses);
    let observed = observation.is_some();
    let dns_retry = published.is_err();
    write_status(
        domain,
        domain.status.as_ref(),
        ctx,
        &desired,
        |status: &mut MailDomainStatus| {
            status.recipient_count = Some(count as i64);
            status.recipients_hash = Some(hash);
            status.relay_config_map = Some(location);
            // On a DNS failure the records published before stay on record: they may still be out there.
            match published {
                Ok(published) => {
                    status.published_records = published.records;
                    status.pending_records = published.pending;
                    status.dns_zone = published.zone;
                }
                Err(DnsProblem {
                    still_listed: Some(listed),
                    ..
                }) => {
                    status.published_records = listed.published;
                    status.pending_records = listed.pending;
                }
                Err(_) => {}
            }
            if observed {
                status.drift = Some(decide::summary(&status.conditions));
            }
            if proof.is_none() {
                // The gateway no longer asks for proof: nothing about it is left to show.
                status.conditions.retain(|c| c.type_ != OWNERSHIP_VERIFIED);
            }
            status.ownership = proof;
        },
    )
    .await?;
    if dns_retry {
        return Ok(Action::requeue(ctx.settings.resync.min(RETRY)));
    }
    let next = [recipients.becomes_stale_in, departure.due_in]
        .into_iter()
        .flatten()
        .fold(ctx.settings.resync, Duration::min);
    Ok(Action::requeue(next))
}

/// The domain is not relayed for a reason outside it; nothing of it is rendered.
async fn not_relayed(
    domain: &MailDomain,
    ctx: &Context,
    reason: &'static str,
    message: String,
) -> Result<(), Error> {
    let desired = [
        Desired::new(RELAY_CONFIGURED, false, reason, message.clone()),
        Desired::new(READY, false, reason, message),
    ];
    write_status(domain, domain.status.as_ref(), ctx, &desired, |_| {}).await
}

async fn namespace_labels(
    ctx: &Context,
    namespace: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, Error> {
    Ok(Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await?
        .map(|ns| ns.metadata.labels.unwrap_or_default()))
}

pub(crate) async fn allowed(
    ctx: &Context,
    gateway: &MailGateway,
    namespace: &str,
) -> Result<bool, Error> {
    let labels = match gateway.spec.allowed_domains.from {
        crate::api::gateway::NamespacesFrom::Selector => namespace_labels(ctx, namespace).await?,
        _ => None,
    };
    Ok(namespace_allowed(gateway, namespace, labels.as_ref()))
}

/// The MailDomain (`namespace`, `name`) that holds the domain when it is not this one.
/// Rivals that are invalid keep their claim (their last config still serves); rivals from
/// namespaces the gateway refuses hold none; where the gateway asks for proof, proved
/// claims beat those kept from before, and unproved ones hold none.
pub(crate) async fn conflicting_winner(
    domain: &MailDomain,
    ctx: &Context,
    gateway: &MailGateway,
    normalized: &str,
) -> Result<Option<(String, String)>, Error> {
    let namespace = namespace_of(domain)?;
    let mut rivals_allowed = vec![];
    for rival in rivals(&ctx.domains, &ctx.claims, domain, normalized) {
        let rival_namespace = rival.namespace().unwrap_or_default();
        if allowed(ctx, gateway, &rival_namespace).await? {
            rivals_allowed.push((rival, rival_namespace));
        }
    }
    let claims = rivals_allowed
        .iter()
        .map(|(rival, rival_namespace)| {
            let claim = ownership::claim(gateway, rival_namespace, normalized, rival);
            (rival.as_ref(), claim)
        })
        .chain([(
            domain,
            ownership::claim(gateway, &namespace, normalized, domain),
        )]);
    let winner = claim_winner(ownership::strongest(claims));
    Ok(winner
        .filter(|w| w.metadata.uid != domain.metadata.uid)
        .map(|w| (w.namespace().unwrap_or_default(), w.name_any())))
}

struct Recipients {
    addresses: BTreeSet<String>,
    described: String,
    /// Set to the age when a referenced list is older than `maxAge`.
    stale: Option<String>,
    becomes_stale_in: Option<Duration>,
}

/// Merges the inline list with the referenced ConfigMap and Secret. `Ok(Err(..))` is a
/// user-fixable problem: `(reason, message)`.
async fn collect_recipients(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    normalized: &str,
) -> Result<Result<Recipients, (&'static str, String)>, Error> {
    let spec = &domain.spec.recipients;
    let mut addresses: BTreeSet<String> = spec
        .inline
        .iter()
        .filter_map(|a| normalize_address(a, normalized).ok())
        .collect();
    let mut sources = vec![format!("{} inline", spec.inline.len())];
    let max_age = spec.max_age.as_deref().and_then(|a| parse_duration(a).ok());
    let mut oldest: Option<(Duration, String)> = None;

    let mut referenced = vec![];
    if let Some(reference) = &spec.config_map_ref {
        let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace);
        let found = api.get_opt(&reference.name).await?;
        let text = found
            .as_ref()
            .and_then(|cm| cm.data.as_ref()?.get(&reference.key).cloned());
        referenced.push(("ConfigMap", reference, found.map(|cm| cm.metadata), text));
    }
    if let Some(reference) = &spec.secret_ref {
        let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
        let found = api.get_opt(&reference.name).await?;
        let text = found.as_ref().and_then(|s| {
            let bytes = s.data.as_ref()?.get(&reference.key)?;
            String::from_utf8(bytes.0.clone()).ok()
        });
        referenced.push(("Secret", reference, found.map(|s| s.metadata), text));
    }
    for (kind, reference, metadata, text) in referenced {
        let KeyRef { name, key } = reference;
        let Some(metadata) = metadata else {
            return Ok(Err((
                "RecipientSourceMissing",
                format!("{kind} {namespace}/{name} does not exist"),
            )));
        };
        let Some(text) = text else {
            return Ok(Err((
                "RecipientSourceMissing",
                format!("{kind} {namespace}/{name} has no key {key:?} (or it is not UTF-8 text)"),
            )));
        };
        let label = format!("{kind} {namespace}/{name} key {key}");
        match parse_list(&label, &text, normalized) {
            Ok(list) => {
                sources.push(format!("{} from {kind} {name}", list.len()));
                addresses.extend(list);
            }
            Err(invalid) => return Ok(Err(("InvalidRecipients", invalid.to_string()))),
        }
        if let Some(age) = age_of(&metadata)
            && oldest.as_ref().is_none_or(|(o, _)| age > *o)
        {
            oldest = Some((age, label));
        }
    }
    let (stale, becomes_stale_in) = match (max_age, &oldest) {
        (Some(max), Some((age, label))) if *age > max => (
            Some(format!("{label}: last updated {}s ago", age.as_secs())),
            None,
        ),
        (Some(max), Some((age, _))) => (None, Some(max - *age + Duration::from_secs(1))),
        _ => (None, None),
    };
    if spec.catch_all {
        sources.push("catch-all".into());
    }
    Ok(Ok(Recipients {
        addresses,
        described: sources.join(", "),
        stale,
        becomes_stale_in,
    }))
}

/// How long ago a referenced list was last updated: its annotation when the tool that
/// keeps it sets one, otherwise the last write recorded in its managed fields.
fn age_of(metadata: &ObjectMeta) -> Option<Duration> {
    let annotated = metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECIPIENTS_UPDATED_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok());
    let written = metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .chain(metadata.creation_timestamp.as_ref().map(|t| t.0))
        .max();
    let updated = annotated.or(written)?;
    let age = Timestamp::now().duration_since(updated);
    Some(Duration::from_secs(age.as_secs().max(0) as u64))
}

async fn ensure_finalizer(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
) -> Result<(), Error> {
    if domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = domain.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    set_finalizers(domain, ctx, namespace, finalizers).await
}

/// Replaces the finalizers, guarded by the resource version the decision was made on.
async fn set_finalizers(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    patch_metadata(
        domain,
        ctx,
        namespace,
        json!({"finalizers": finalizers, "resourceVersion": domain.resource_version()}),
    )
    .await
}

/// Merge-patches the MailDomain's own metadata (finalizers, annotations).
async fn patch_metadata(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    metadata: serde_json::Value,
) -> Result<(), Error> {
    Api::<MailDomain>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &domain.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": metadata})),
        )
        .await?;
    Ok(())
}

/// Deletes the relay ConfigMap at `location` (`namespace/name`) if it is this domain's.
async fn delete_relay(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    location: &str,
) -> Result<(), Error> {
    let Some((cm_namespace, cm_name)) = location.split_once('/') else {
        return Ok(());
    };
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), cm_namespace);
    let Some(existing) = api.get_opt(cm_name).await? else {
        return Ok(());
    };
    if relay_owner(&existing.metadata) == Some((namespace.to_string(), domain.name_any())) {
        api.delete(cm_name, &Default::default()).await?;
        tracing::info!(configmap = location, "removed relay ConfigMap");
    }
    Ok(())
}

/// A domain moved to another gateway (or namespace) leaves nothing behind.
async fn remove_moved_relay(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    location: &str,
) -> Result<(), Error> {
    let previous = domain
        .status
        .as_ref()
        .and_then(|s| s.relay_config_map.as_deref());
    match previous {
        Some(previous) if previous != location => {
            delete_relay(domain, ctx, namespace, previous).await
        }
        _ => Ok(()),
    }
}

async fn finalize(domain: &MailDomain, ctx: &Context, namespace: &str) -> Result<Action, Error> {
    if let Some(drift) = &ctx.drift {
        drift.forget(&ObjectRef::from_obj(domain));
    }
    if !domain.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if let Some(location) = domain
        .status
        .as_ref()
        .and_then(|s| s.relay_config_map.as_deref())
    {
        delete_relay(domain, ctx, namespace, location).await?;
    }
    let normalized = normalize_domain(&domain.spec.domain).unwrap_or_default();
    match dns::sync(domain, ctx, namespace, &normalized, None).await? {
        Ok(published) if !published.pending.is_empty() => {
            // A record listed as ours was absent: an update that adds it (sent by a run
            // that stopped before it saw the answer) may still be applied. Look again a
            // little later, before the object and with it the list are gone.
            let now = Timestamp::now().as_millisecond();
            let due = domain
                .annotations()
                .get(DNS_RECHECK_ANNOTATION)
                .and_then(|at| at.parse::<i64>().ok());
            match due {
                None => {
                    tracing::info!(domain = normalized, records = ?published.pending, "records listed as ours are absent; looking again before letting go");
                    let at = now.saturating_add(PENDING_RECHECK.as_millis() as i64);
                    let annotations =
                        json!({"annotations": {DNS_RECHECK_ANNOTATION: at.to_string()}});
                    patch_metadata(domain, ctx, namespace, annotations).await?;
                    return Ok(Action::requeue(PENDING_RECHECK));
                }
                Some(at) if now < at => {
                    return Ok(Action::requeue(Duration::from_millis((at - now) as u64)));
                }
                // Looked again after the wait, and still absent: they never landed.
                Some(_) => {}
            }
        }
        Ok(_) => {}
        Err(problem) => {
            let attempts = cleanup_attempts(domain) + 1;
            if attempts < DNS_CLEANUP_ATTEMPTS {
                tracing::warn!(attempts, reason = problem.reason, message = %problem.message, "removing the MX record failed; retrying");
                let annotations =
                    json!({"annotations": {DNS_CLEANUP_ANNOTATION: attempts.to_string()}});
                patch_metadata(domain, ctx, namespace, annotations).await?;
                return Ok(Action::requeue(ctx.settings.resync.min(RETRY)));
            }
            // A DNS outage must not block deletion for ever: let go, and say what is left behind.
            let left = domain
                .status
                .as_ref()
                .map(|s| s.published_records.join(", "))
                .unwrap_or_default();
            let message = format!(
                "gave up removing MX {left} of {normalized} after {attempts} attempts ({}); remove it by hand",
                problem.message
            );
            tracing::error!(domain = normalized, records = left, "{message}");
            let abandoned = super::status::Transition {
                type_: kube::runtime::events::EventType::Warning,
                reason: "DnsCleanupAbandoned".into(),
                message,
            };
            ctx.publish(domain, vec![abandoned]).await;
        }
    }
    let remaining: Vec<_> = domain
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(domain, ctx, namespace, remaining).await?;
    Ok(Action::await_change())
}
