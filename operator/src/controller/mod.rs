//! The controllers: MailGateway and MailDomain reconciled into Kubernetes objects, with
//! status that tells the truth.

mod claims;
mod dns;
pub mod domain;
pub mod gateway;
mod leader;
mod ownership;
mod placement;
mod status;

use crate::api::{Condition, MailDomain, MailGateway};
use crate::telemetry::Metrics;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{Controller, WatchStreamExt, controller, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

pub use leader::{LeaseSettings, run_with_leader_election};

/// Completes when the controllers should stop.
pub type Shutdown = futures::future::BoxFuture<'static, ()>;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "mx-operator";
/// Holds a MailDomain until its children outside its namespace (and DNS records) are gone.
pub const FINALIZER: &str = "mx-operator.io/cleanup";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("rendering the relay configuration: {0}")]
    Render(#[from] crate::render::RenderError),
    #[error("encoding {kind} {name}: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// A short label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Render(_) => "render",
            Self::Encode { .. } => "encode",
            Self::NotNamespaced(_) => "not_namespaced",
        }
    }
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of gateways that do not name their own.
    pub gateway_image: String,
    /// How often every object is looked at again although nothing changed.
    pub resync: Duration,
    /// MailDomains reconciled at the same time. Unbounded, thousands of reconciles pile up
    /// on a slow API server: memory grows and requests time out and are retried.
    pub concurrency: u16,
    /// Drift checks (DNS, SMTP probes, departure); `None` turns them off.
    pub drift: Option<crate::drift::DriftSettings>,
    /// Where ownership proofs (TXT records) are looked up; none, no proof is found.
    pub resolvers: Vec<std::net::SocketAddr>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub domains: Store<MailDomain>,
    pub gateways: Store<MailGateway>,
    /// Whether the server serves `policy/v1` PodDisruptionBudgets (Kubernetes 1.21+).
    pub pdb_served: bool,
    /// MailDomains by the domain they claim.
    pub claims: Arc<claims::ClaimIndex>,
    /// The drift checks' registry, when drift is on.
    pub drift: Option<Arc<crate::drift::Drift>>,
    /// DNS clients for ownership proofs.
    pub lookups: crate::drift::check::DnsClients,
}

impl Context {
    async fn publish(
        &self,
        object: &impl Resource<DynamicType = ()>,
        transitions: Vec<status::Transition>,
    ) {
        for transition in transitions {
            let event = Event {
                type_: transition.type_,
                reason: transition.reason,
                note: Some(transition.message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(%error, "publishing an Event failed");
            }
        }
    }
}

/// Server-side applies `desired` unless the live object already has every field of it,
/// so a steady-state resync makes no write request. `exact` names top-level fields that
/// must match exactly (a ConfigMap's `data`, where a removed key matters).
pub(crate) async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: &K,
    exact: &[&str],
) -> Result<K, Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let encode = |source| Error::Encode {
        kind: std::any::type_name::<K>(),
        name: name.clone(),
        source,
    };
    let want = serde_json::to_value(desired).map_err(encode)?;
    let mut foreign_keys = serde_json::Map::new();
    if let Some(live) = api.get_opt(&name).await? {
        let have = serde_json::to_value(&live).map_err(encode)?;
        let same_exact = exact.iter().all(|field| want.get(field) == have.get(field));
        if same_exact && is_subset(&want, &have) {
            return Ok(live);
        }
        foreign_keys = keys_to_remove(&want, &have, exact);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(desired)).await?;
    tracing::info!(
        kind = K::kind(&Default::default()).as_ref(),
        name,
        "applied"
    );
    if foreign_keys.is_empty() {
        return Ok(applied);
    }
    // Server-side apply leaves keys another manager added (a hand edit); an exact field
    // must not keep them.
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    Ok(api
        .patch(
            &name,
            &params,
            &Patch::Merge(serde_json::Value::Object(foreign_keys)),
        )
        .await?)
}

/// A merge patch that deletes the keys of each `exact` object field that `have` holds and
/// `want` does not.
fn keys_to_remove(
    want: &serde_json::Value,
    have: &serde_json::Value,
    exact: &[&str],
) -> serde_json::Map<String, serde_json::Value> {
    let mut patch = serde_json::Map::new();
    for field in exact {
        let Some(live) = have.get(field).and_then(|v| v.as_object()) else {
            continue;
        };
        let wanted = want.get(field).and_then(|v| v.as_object());
        let extra: serde_json::Map<_, _> = live
            .keys()
            .filter(|key| !wanted.is_some_and(|w| w.contains_key(*key)))
            .map(|key| (key.clone(), serde_json::Value::Null))
            .collect();
        if !extra.is_empty() {
            patch.insert(field.to_string(), serde_json::Value::Object(extra));
        }
    }
    patch
}

/// Whether every field of `want` is in `have` with the same value (`have` may hold more,
/// such as fields the server sets).
fn is_subset(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|live| is_subset(value, live))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (want, have) => want == have,
    }
}

/// A status with conditions, written by [`write_status`].
pub(crate) trait ConditionedStatus: Clone + Default + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>, observed_generation: Option<i64>);
}

macro_rules! conditioned_status {
    ($($status:ty),*) => {$(
        impl ConditionedStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<Condition>, observed_generation: Option<i64>) {
                self.conditions = conditions;
                self.observed_generation = observed_generation;
            }
        }
    )*};
}
conditioned_status!(crate::api::MailDomainStatus, crate::api::MailGatewayStatus);

/// Writes status (server-side apply of the status subresource) only when it differs from
/// what is stored, and publishes an Event for each condition that changed status or reason.
pub(crate) async fn write_status<K, S>(
    object: &K,
    current: Option<&S>,
    ctx: &Context,
    desired: &[status::Desired],
    fill: impl FnOnce(&mut S),
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
    S: ConditionedStatus,
{
    let current = current.cloned().unwrap_or_default();
    let generation = object.meta().generation;
    let now = Time(Timestamp::now());
    let mut next = current.clone();
    next.set_conditions(
        status::merge(current.conditions(), desired, generation, &now),
        generation,
    );
    fill(&mut next);
    if next == current {
        return Ok(());
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object
        .meta()
        .namespace
        .clone()
        .ok_or_else(|| Error::NotNamespaced(name.clone()))?;
    apply_status(
        &Api::<K>::namespaced(ctx.client.clone(), &namespace),
        &name,
        &next,
    )
    .await?;
    ctx.publish(
        object,
        status::transitions(current.conditions(), next.conditions()),
    )
    .await;
    Ok(())
}

/// Server-side applies `status` as the whole status of object `name`: the operator's
/// field manager owns all of it, so a field left out is removed.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The namespace of an object that must have one.
pub(crate) fn namespace_of(object: &impl ResourceExt) -> Result<String, Error> {
    object
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(object.name_any()))
}

/// How long one watch waits before trying again after errors: 0.5 s doubling to 5 s, plus
/// up to as much again of jitter, back to 0.5 s after 30 s without one. kube's default (up
/// to 30 s plus jitter, reset only after 2 min quiet) is made for thousands of clients of a
/// struggling API server; for one operator it meant a minute or more of ignored changes
/// after a short API server restart.
fn watch_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    backoff(Duration::from_millis(500), Duration::from_secs(5))
}

/// The pause of all of a controller's watches after an error of any one of them (kube
/// shares one backoff among a controller's triggers): short, or after an API server
/// restart each watch's error (a dropped stream, then a resource version the restarted
/// server no longer knows) delays every other watch's recovery in turn. The watches built
/// here back off on their own as well.
fn trigger_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    backoff(Duration::from_millis(250), Duration::from_secs(1))
}

fn backoff(min: Duration, max: Duration) -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(30))
}

/// Runs both controllers until `shutdown` completes.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, shutdown: Shutdown) {
    let pdb_served = policy_v1_served(&client).await;
    if !pdb_served {
        tracing::info!(
            "policy/v1 is not served (Kubernetes < 1.21): gateways get no PodDisruptionBudget"
        );
    }
    let domains_api: Api<MailDomain> = Api::all(client.clone());
    let gateways_api: Api<MailGateway> = Api::all(client.clone());
    // Only metadata is watched: what changed is enough to know which domains to look at.
    let configmaps = Api::<PartialObjectMeta<ConfigMap>>::all(client.clone());
    let secrets = Api::<PartialObjectMeta<Secret>>::all(client.clone());
    let namespaces = Api::<PartialObjectMeta<Namespace>>::all(client.clone());

    // The MailDomain watch feeds the controller's cache and the claim index alike.
    // Lists are consistent reads (not `any_semantic`): after an API server restart its
    // watch cache answers a list with a version it then calls too old to watch from, and a
    // watcher relisting from that cache would never get a working watch again.
    let (domains, writer) = reflector::store();
    let claims = Arc::new(claims::ClaimIndex::default());
    let observer = claims.clone();
    let domain_events = watcher(domains_api.clone(), watcher::Config::default())
        .backoff(watch_backoff())
        // Nothing reads the managed fields of a cached MailDomain; at 10,000 domains they are
        // a good part of the operator's memory.
        .modify(|domain: &mut MailDomain| domain.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                observer.observe(event);
            }
        })
        .touched_objects();
    let domain_controller = Controller::for_stream(domain_events, domains.clone())
        .trigger_backoff(trigger_backoff())
        .with_config(controller::Config::default().concurrency(settings.concurrency));
    let gateway_controller = Controller::new(gateways_api.clone(), watcher::Config::default())
        .trigger_backoff(trigger_backoff());
    let gateways = gateway_controller.store();

    let domain_controller = {
        let by_configmap = domains.clone();
        let by_secret = domains.clone();
        let by_gateway = domains.clone();
        let by_namespace = domains.clone();
        domain_controller
            .watches(
                configmaps,
                watcher::Config::default(),
                move |cm: PartialObjectMeta<ConfigMap>| {
                    placement::domains_using_configmap(&by_configmap, &cm.metadata)
                },
            )
            .watches(
                secrets,
                watcher::Config::default(),
                move |secret: PartialObjectMeta<Secret>| {
                    placement::domains_using_secret(&by_secret, &secret.metadata)
                },
            )
            // Only a gateway's spec matters to its domains: its status changes with every
            // domain it counts, and must not send all of them round again. (A deleted
            // gateway is noticed at the domains' next resync.)
            .watches_stream(
                watcher(gateways_api.clone(), watcher::Config::default())
                    .backoff(watch_backoff())
                    .touched_objects()
                    .predicate_filter(predicates::generation, Default::default()),
                move |gw: MailGateway| placement::domains_of_gateway(&by_gateway, &gw),
            )
            .watches(
                namespaces,
                watcher::Config::default(),
                move |ns: PartialObjectMeta<Namespace>| {
                    placement::domains_in_namespace(&by_namespace, &ns.name_any())
                },
            )
    };
    let gateway_controller = gateway_controller
        .owns(
            Api::<k8s_openapi::api::apps::v1::StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<k8s_openapi::api::core::v1::Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(crate::render::GATEWAY_CONFIG_LABEL),
        )
        // A gateway counts and configures its domains from their specs: their status writes
        // are no reason to look again. (Deletion marks bump the generation; a domain deleted
        // without a finalizer leaves the count until the gateway's next resync.)
        .watches_stream(
            watcher(domains_api, watcher::Config::default())
                .backoff(watch_backoff())
                .touched_objects()
                .predicate_filter(predicates::generation, Default::default()),
            |md: MailDomain| placement::gateway_of(&md),
        )
        // While many domains arrive at once, one gateway reconcile after they settle.
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)));

    // The SMTP probe asks each ready gateway replica, found in the Endpoints of the
    // gateways' headless Services (they carry the Services' labels).
    let (endpoints, endpoints_writer) = reflector::store();
    let endpoints_watch = settings.drift.as_ref().map(|_| {
        let events = watcher(
            Api::<k8s_openapi::api::core::v1::Endpoints>::all(client.clone()),
            watcher::Config::default().labels(GATEWAY_ENDPOINTS_SELECTOR),
        )
        .backoff(watch_backoff())
        .reflect(endpoints_writer);
        tokio::spawn(async move {
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching the gateways' Endpoints failed; retrying");
                }
            }
        })
    });
    let drift = settings.drift.clone().map(|drift| {
        Arc::new(crate::drift::Drift::new(
            drift,
            Arc::new(crate::drift::replicas::EndpointsReplicas(endpoints)),
            metrics.clone(),
        ))
    });
    let (changed, drift_triggers) = futures::channel::mpsc::unbounded();
    let domain_controller = domain_controller.reconcile_on(drift_triggers);
    let drift_loop = drift.clone().map(|drift| {
        let store = domains.clone();
        tokio::spawn(drift.run(move |key| store.get(key).is_some(), changed))
    });
    metrics.count_domains_from(domains.clone());
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        settings,
        metrics,
        domains,
        gateways,
        pdb_served,
        claims,
        drift,
        lookups: crate::drift::check::DnsClients::new(Duration::from_secs(3)),
    });

    let shutdown = futures::future::FutureExt::shared(shutdown);
    let domains_done = domain_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(domain::reconcile, domain::error_policy, context.clone())
        .for_each(|result| {
            log_result("MailDomain", result);
            futures::future::ready(())
        });
    let gateways_done = gateway_controller
        .graceful_shutdown_on(shutdown)
        .run(gateway::reconcile, gateway::error_policy, context)
        .for_each(|result| {
            log_result("MailGateway", result);
            futures::future::ready(())
        });
    futures::join!(domains_done, gateways_done);
    if let Some(drift_loop) = drift_loop {
        drift_loop.abort();
    }
    if let Some(endpoints_watch) = endpoints_watch {
        endpoints_watch.abort();
    }
}

/// The Endpoints of the gateways' Services.
const GATEWAY_ENDPOINTS_SELECTOR: &str =
    "app.kubernetes.io/name=mx-gateway,app.kubernetes.io/managed-by=mx-operator";

use futures::StreamExt;

fn log_result<K: Resource, E: std::error::Error, W: std::error::Error>(
    kind: &str,
    result: Result<
        (ObjectRef<K>, kube::runtime::controller::Action),
        kube::runtime::controller::Error<E, W>,
    >,
) {
    if let Err(error) = result {
        tracing::debug!(kind, %error, "reconcile did not finish");
    }
}

async fn policy_v1_served(client: &Client) -> bool {
    client
        .list_api_group_resources("policy/v1")
        .await
        .is_ok_and(|list| {
            list.resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn foreign_keys_of_exact_fields_are_removed() {
        let want = json!({"data": {"a": "1"}, "metadata": {"labels": {"x": "1"}}});
        let have = json!({"data": {"a": "2", "injected": "x"}, "metadata": {"labels": {"x": "1", "y": "2"}}});
        let patch = keys_to_remove(&want, &have, &["data"]);
        assert_eq!(
            serde_json::Value::Object(patch),
            json!({"data": {"injected": null}})
        );
    }

    #[test]
    fn subset_ignores_server_fields_but_not_changes() {
        let have = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1"}}, "data": {"k": "v"}});
        assert!(is_subset(
            &json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            &have
        ));
        assert!(!is_subset(
            &json!({"metadata": {"labels": {"x": "2"}}}),
            &have
        ));
        assert!(!is_subset(&json!({"data": {"k": "v", "new": "1"}}), &have));
        assert!(!is_subset(&json!({"list": [1]}), &json!({"list": [1, 2]})));
    }
}
