//! Carries out a MailDomain decision: the finalizer, the MailRelay (and removal of
//! the one a moved domain left behind), the MX record, the drift expectation.

use super::super::context::{Context, Error, FINALIZER};
use super::super::status::Transition;
use super::super::write::{apply_data_unless_cached, hold_finalizer};
use super::decide::{Decision, Relay};
use super::dns::{self, DnsProblem, Published};
use super::fetch::Inputs;
use crate::api::{MailDomain, MailRelay};
use crate::manifests::relay::{is_shard_of, relay_owner, relayed_domain};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

/// What applying a decision found out that status reports.
pub struct Applied {
    /// Why the API server refused the MailRelay, when it did (the previous one, if
    /// any, keeps serving).
    pub relay_refused: Option<String>,
    /// The MX record's outcome; `None` when the decision leaves DNS alone.
    pub published: Option<Result<Published, DnsProblem>>,
    /// Whether the relay ConfigMap of an older operator is gone (`status.relayConfigMap`).
    pub legacy_removed: bool,
}

pub async fn apply(
    domain: &MailDomain,
    ctx: &Context,
    inputs: &Inputs,
    normalized: &str,
    decision: &Decision,
) -> Result<Applied, Error> {
    let namespace = &inputs.namespace;
    if decision.finalizer {
        hold_finalizer(domain, ctx, namespace, FINALIZER).await?;
    }
    let relay_refused = match &decision.relay {
        Some(relay) => apply_relay(domain, ctx, inputs, relay).await?,
        None => None,
    };
    let legacy = domain
        .status
        .as_ref()
        .and_then(|s| s.relay_config_map.as_deref());
    // Only once no agent reads it: an older agent that saw it deleted would stop taking
    // the domain's mail.
    let legacy_removed = match legacy {
        Some(location)
            if decision.relay.is_some() && relay_refused.is_none() && inputs.agents_read_relays =>
        {
            delete_legacy_relay(domain, ctx, namespace, location).await?;
            true
        }
        _ => false,
    };
    let Some(desired_mx) = &decision.mx else {
        return Ok(Applied {
            relay_refused,
            published: None,
            legacy_removed,
        });
    };
    let provider = inputs.provider.as_deref();
    let published = dns::sync(domain, ctx, provider, normalized, desired_mx.as_ref()).await?;
    if let Ok(Published {
        repaired: Some(record),
        ..
    }) = &published
    {
        ctx.metrics.observe_dns_repair();
        let restored = Transition {
            type_: EventType::Warning,
            reason: "DnsDriftRepaired".into(),
            message: format!(
                "MX {record} of {normalized} was missing at the zone's server (removed or changed behind the operator's back); restored"
            ),
        };
        ctx.publish(domain, vec![restored]).await;
    }
    if let (Some(drift), Some(expectation)) = (&ctx.drift, &decision.drift) {
        let mut expectation = expectation.clone();
        expectation.authoritative = published
            .as_ref()
            .ok()
            .and_then(|p| p.server)
            .zip(desired_mx.clone());
        drift.expect(ObjectRef::from_obj(domain), expectation);
    }
    Ok(Applied {
        relay_refused,
        published: Some(published),
        legacy_removed,
    })
}

/// Deletes the relay ConfigMap an operator before MailRelays wrote at `location`
/// (`namespace/name`), if it is this domain's.
pub(super) async fn delete_legacy_relay(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    location: &str,
) -> Result<(), Error> {
    let Some((cm_namespace, cm_name)) = location.split_once('/') else {
        return Ok(());
    };
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), cm_namespace);
    delete_owned(&api, cm_name, domain, namespace).await
}

/// Applies the MailRelay; `Some(why)` when the API server refuses it as invalid or
/// too large: the spec has to change, a retry would only be refused again.
async fn apply_relay(
    domain: &MailDomain,
    ctx: &Context,
    inputs: &Inputs,
    relay: &Relay,
) -> Result<Option<String>, Error> {
    if let Some(previous) = &relay.moved_from {
        // A domain moved to another gateway (or namespace) leaves nothing behind.
        delete_relay(domain, ctx, &inputs.namespace, previous).await?;
    }
    let gateway_namespace = &inputs.gateway_key.0;
    let api = Api::<MailRelay>::namespaced(ctx.client.clone(), gateway_namespace);
    // The shards first: the agents use a domain's shards once its relay names their count
    // and all of them are there, and keep the previous set until then.
    let mut applied = Ok(());
    for shard in &relay.shards {
        let cached = ctx.relays.get(gateway_namespace, &shard.name_any());
        applied = apply_data_unless_cached(&api, shard, cached).await;
        if applied.is_err() {
            break;
        }
        ctx.relays.written(shard);
    }
    if applied.is_ok() {
        applied = apply_data_unless_cached(&api, &relay.object, inputs.relay_live).await;
    }
    match applied {
        Ok(()) => {
            ctx.relays.written(&relay.object);
            let wanted: Vec<String> = relay.shards.iter().map(ResourceExt::name_any).collect();
            let relay_name = relay.object.name_any();
            let relayed = relayed_domain(&relay_name);
            for stale in ctx.relays.names_in(gateway_namespace, |name| {
                is_shard_of(name, relayed) && !wanted.iter().any(|w| w == name)
            }) {
                delete_owned(&api, &stale, domain, &inputs.namespace).await?;
            }
            Ok(None)
        }
        Err(Error::Kube(kube::Error::Api(status)))
            if [413, 422].contains(&status.code) || status.message.contains(TOO_LARGE) =>
        {
            Ok(Some(refusal(relay, &status.message)))
        }
        Err(error) => Err(error),
    }
}

/// etcd's default limit of one request, which bounds the size of one object.
const OBJECT_LIMIT: usize = 1536 * 1024;

/// What the API server answers (with code 500) when etcd refuses an object as too large.
const TOO_LARGE: &str = "request is too large";

fn refusal(relay: &Relay, message: &str) -> String {
    let data = relay.object.data.iter().flatten();
    let size: usize = data.map(|(key, value)| key.len() + value.len()).sum();
    let mut why = format!(
        "the API server refused MailRelay {} ({size} bytes of data",
        relay.location
    );
    if size > OBJECT_LIMIT {
        why.push_str(&format!(
            ", over the {OBJECT_LIMIT} bytes etcd stores in one object by default; fewer or shorter recipients fit"
        ));
    }
    why.push_str(&format!(
        "): {message}; the previous relay config keeps serving"
    ));
    why
}

/// Deletes the MailRelay at `location` (`namespace/name`) if it is this domain's.
pub(super) async fn delete_relay(
    domain: &MailDomain,
    ctx: &Context,
    namespace: &str,
    location: &str,
) -> Result<(), Error> {
    let Some((relay_namespace, relay_name)) = location.split_once('/') else {
        return Ok(());
    };
    let api = Api::<MailRelay>::namespaced(ctx.client.clone(), relay_namespace);
    let relayed = relayed_domain(relay_name);
    let shards = ctx
        .relays
        .names_in(relay_namespace, |name| is_shard_of(name, relayed));
    // The relay first: an agent that saw its shards go first would have none to serve.
    for name in std::iter::once(relay_name).chain(shards.iter().map(String::as_str)) {
        delete_owned(&api, name, domain, namespace).await?;
    }
    Ok(())
}

/// Deletes the MailRelay (or older relay ConfigMap) `name` if it is `domain`'s (of
/// `namespace`).
async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    domain: &MailDomain,
    namespace: &str,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    if relay_owner(existing.meta()) == Some((namespace.to_string(), domain.name_any())) {
        api.delete(name, &Default::default()).await?;
        let kind = K::kind(&());
        tracing::info!(%kind, name, "removed");
    }
    Ok(())
}
