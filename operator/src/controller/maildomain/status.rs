//! The one status write of a MailDomain reconcile: the decision's conditions and fields,
//! with what applying it found out (the MX record's outcome).

use super::super::context::{Context, Error};
use super::super::write::write_status;
use super::apply::Applied;
use super::decide::{Decision, Ready};
use super::dns::DnsProblem;
use super::fetch::HeldMail;
use crate::api::MailDomain;
use crate::api::conditions::{DNS_SYNCED, Desired, OWNERSHIP_VERIFIED, READY, RELAY_CONFIGURED};
use crate::api::domain::{MailDomainStatus, RecipientSourceStatus};
use crate::drift::decide::summary;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;

/// The conditions to write, in their order.
pub fn conditions(domain: &MailDomain, decision: &Decision, applied: &Applied) -> Vec<Desired> {
    let mut desired = decision.conditions.clone();
    if let Some(why) = &applied.relay_refused {
        for condition in desired.iter_mut().filter(|c| c.type_ == RELAY_CONFIGURED) {
            *condition = Desired::new(RELAY_CONFIGURED, false, "RelayConfigRefused", why.clone());
        }
    }
    let published = applied.published.as_ref();
    if domain.spec.dns.is_some()
        && let Some(published) = published
    {
        desired.push(match published {
            Ok(published) => Desired::new(
                DNS_SYNCED,
                true,
                "Published",
                format!("MX {} via {}", published.records.join(", "), published.via),
            ),
            Err(problem) => problem.verdict.clone().on(DNS_SYNCED),
        });
    }
    desired.extend(decision.conditions_after_dns.iter().cloned());
    let ready = match (&decision.ready, published) {
        (Ready::UnlessDnsFails(_), Some(Err(problem))) => Desired::new(
            READY,
            false,
            problem.verdict.reason,
            format!(
                "relayed, but the MX record is not published: {}",
                problem.verdict.message
            ),
        ),
        (Ready::Fixed(ready) | Ready::UnlessDnsFails(ready), _) => ready.clone(),
    };
    desired.push(match &applied.relay_refused {
        Some(why) => Desired::new(READY, false, "RelayConfigRefused", why.clone()),
        None => ready,
    });
    desired
}

/// The cache's copy of `domain` when it is newer and of the same generation: what status
/// compares with. A reconcile's object is the cache's copy from when it started; a status
/// write the watch has delivered since (often this operator's own, from the reconcile just
/// before) is only in the newer copy, and compared with the older one the same status would
/// be written again and its Event published twice. A newer generation is not taken: its
/// spec is the next reconcile's to observe.
pub fn freshest(domain: &MailDomain, ctx: &Context) -> Option<Arc<MailDomain>> {
    ctx.domains
        .get(&ObjectRef::from_obj(domain))
        .filter(|cached| {
            cached.metadata.generation == domain.metadata.generation
                && cached.metadata.resource_version != domain.metadata.resource_version
        })
}

pub async fn write(
    domain: &MailDomain,
    ctx: &Context,
    decision: &Decision,
    applied: Applied,
    held: HeldMail,
    sources: Vec<RecipientSourceStatus>,
) -> Result<(), Error> {
    let fresher = freshest(domain, ctx);
    let domain = fresher.as_deref().unwrap_or(domain);
    let desired = conditions(domain, decision, &applied);
    let change = decision.status.clone();
    write_status(
        domain,
        domain.status.as_ref(),
        ctx,
        &desired,
        |status: &mut MailDomainStatus| {
            if let Some(relayed) = change.relayed {
                status.recipient_count = Some(relayed.count);
                status.recipients_hash = Some(relayed.hash);
                status.relay = Some(relayed.location);
            }
            if applied.legacy_removed {
                status.relay_config_map = None;
            }
            // On a DNS failure the records published before stay on record: they may
            // still be out there.
            match applied.published {
                Some(Ok(published)) => {
                    status.published_records = published.records;
                    status.pending_records = published.pending;
                    status.dns_zone = published.zone;
                }
                Some(Err(DnsProblem {
                    still_listed: Some(listed),
                    ..
                })) => {
                    status.published_records = listed.published;
                    status.pending_records = listed.pending;
                }
                Some(Err(_)) | None => {}
            }
            status.draining = held.draining;
            status.queue = held.queue;
            status.recipient_sources = sources;
            if change.drift_summary {
                status.drift = Some(summary(&status.conditions));
            }
            if let Some(proof) = change.ownership {
                if proof.is_none() {
                    // The gateway no longer asks for proof: nothing about it is left.
                    status.conditions.retain(|c| c.type_ != OWNERSHIP_VERIFIED);
                }
                status.ownership = proof;
            }
        },
    )
    .await
}

/// Whether the MX record failed to publish (the domain is looked at again sooner).
pub fn dns_failed(applied: &Applied) -> bool {
    matches!(applied.published, Some(Err(_)))
}
