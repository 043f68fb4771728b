//! Carries out a MailDomain decision: the finalizer, the relay ConfigMap (and removal of
//! the one a moved domain left behind), the MX record, the drift expectation.

use super::super::context::{Context, Error, FINALIZER};
use super::super::status::Transition;
use super::super::write::apply_configmap_unless_cached;
use super::decide::{Decision, Relay};
use super::dns::{self, DnsProblem, Published};
use super::fetch::Inputs;
use crate::api::MailDomain;
use crate::manifests::relay::relay_owner;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

/// What applying a decision found out that status reports.
pub struct Applied {
    /// Why the API server refused the relay ConfigMap, when it did (the previous one, if
    /// any, keeps serving).
    pub relay_refused: Option<String>,
    /// The MX record's outcome; `None` when the decision leaves DNS alone.
    pub published: Option<Result<Published, DnsProblem>>,
}

pub async fn apply(
    domain: &MailDomain,
    ctx: &Context,
    inputs: &Inputs,
    normalized: &str,
    decision: &Decision,
) -> Result<Applied, Error> {
    let namespace = &inputs.namespace;
    if decision.finalizer && !domain.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = domain.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        set_finalizers(domain, ctx, namespace, finalizers).await?;
    }
    let relay_refused = match &decision.relay {
        Some(relay) => apply_relay(domain, ctx, inputs, relay).await?,
        None => None,
    };
    let Some(desired_mx) = &decision.mx else {
        return Ok(Applied {
            relay_refused,
            published: None,
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
    })
}

/// Applies the relay ConfigMap; `Some(why)` when the API server refuses it as invalid or
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
    let applied = apply_configmap_unless_cached(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), gateway_namespace),
        &relay.configmap,
        inputs.relay_live,
    )
    .await;
    match applied {
        Ok(()) => {
            ctx.relays.written(&relay.configmap);
            Ok(None)
        }
        Err(Error::Kube(kube::Error::Api(status))) if [413, 422].contains(&status.code) => {
            Ok(Some(refusal(relay, &status.message)))
        }
        Err(error) => Err(error),
    }
}

/// A ConfigMap holds at most this many bytes of data (the API server's limit).
const CONFIGMAP_LIMIT: usize = 1024 * 1024;

fn refusal(relay: &Relay, message: &str) -> String {
    let data = relay.configmap.data.iter().flatten();
    let size: usize = data.map(|(key, value)| key.len() + value.len()).sum();
    let mut why = format!(
        "the API server refused relay ConfigMap {} ({size} bytes of data",
        relay.location
    );
    if size > CONFIGMAP_LIMIT {
        why.push_str(&format!(
            ", over the {CONFIGMAP_LIMIT} bytes a ConfigMap holds; fewer or shorter recipients fit"
        ));
    }
    why.push_str(&format!(
        "): {message}; the previous relay config keeps serving"
    ));
    why
}

/// Replaces the finalizers, guarded by the resource version the decision was made on.
pub(super) async fn set_finalizers(
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
pub(super) async fn patch_metadata(
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
pub(super) async fn delete_relay(
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
