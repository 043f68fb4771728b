//! The controllers' wiring: the watches, the caches they fill, and the two controllers
//! that run on them until shutdown.

use super::changes::spec_changes_and_deletions;
use super::claims::ClaimIndex;
use super::context::{Context, FIELD_MANAGER, Listings, Settings, WrittenStatus};
use super::digests::DataDigests;
use super::listed::Listed;
use super::metrics::Metrics;
use super::supervise::Supervisor;
use super::write::status_key;
use super::{dnsprovider, maildomain, mailgateway, placement};
use crate::api::{DNSProvider, MailDomain, MailGateway, MailRelay};
use crate::shutdown::Shutdown;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

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

/// Runs the three controllers until `shutdown` completes, or until one of the operator's
/// loops ends without it (then all stop, and its name is returned).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Option<&'static str> {
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
    let claims = Arc::new(ClaimIndex::default());
    let observer = claims.clone();
    let written = Arc::new(WrittenStatus::default());
    let written_observer = written.clone();
    let mut listed = Listings::default();
    let domains_listed = Listed::default();
    listed.gateway_inputs.push(domains_listed.clone());
    let domain_events = watcher(domains_api.clone(), watcher::Config::default())
        .backoff(watch_backoff())
        // Nothing reads the managed fields of a cached MailDomain; at 10,000 domains they are
        // a good part of the operator's memory.
        .modify(|domain: &mut MailDomain| domain.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                observer.observe(event);
                domains_listed.observe(event);
                // Not from a relist's objects: the cache takes them only at its end, and
                // a reconcile until then still reads the version the write was made on.
                match event {
                    watcher::Event::Apply(domain) => written_observer
                        .observe(&status_key(domain), domain.resource_version().as_deref()),
                    watcher::Event::Delete(domain) => {
                        written_observer.observe(&status_key(domain), None)
                    }
                    watcher::Event::Init
                    | watcher::Event::InitApply(_)
                    | watcher::Event::InitDone => {}
                }
            }
        })
        .touched_objects();
    let domain_controller = Controller::for_stream(domain_events, domains.clone())
        .trigger_backoff(trigger_backoff())
        .with_config(controller::Config::default().concurrency(settings.concurrency));
    let (gateway_objects, gateway_objects_writer) = reflector::store();
    let gateway_events = watcher(gateways_api.clone(), watcher::Config::default())
        .backoff(watch_backoff())
        .reflect(gateway_objects_writer)
        .touched_objects();
    let gateway_controller =
        Controller::for_stream(gateway_events, gateway_objects).trigger_backoff(trigger_backoff());
    // The domains read gateways from a cache of their own, filled by the watch that
    // triggers them: a domain sent round by its gateway's deletion finds it gone.
    let (gateways, gateways_writer) = reflector::store();

    let (namespaces_store, namespaces_writer) = reflector::store();
    let (secret_versions, secrets_writer) = reflector::store();
    let relays = Arc::new(DataDigests::default());
    let relays_observer = relays.clone();
    let (providers, providers_writer) = reflector::store();
    let (gateway_services, services_writer) = reflector::store();
    let gateway_configs = Arc::new(DataDigests::default());
    let configs_observer = gateway_configs.clone();
    let gateway_relays = Arc::new(DataDigests::default());
    let gateway_relays_observer = gateway_relays.clone();
    let (gateway_workloads, workloads_writer) = reflector::store();
    let (gateway_accounts, accounts_writer) = reflector::store();
    let (gateway_roles, roles_writer) = reflector::store();
    let (gateway_bindings, bindings_writer) = reflector::store();
    let (gateway_budgets, budgets_writer) = reflector::store();
    let domain_controller = {
        let by_configmap = domains.clone();
        let by_secret = domains.clone();
        let by_gateway = domains.clone();
        let by_namespace = domains.clone();
        let by_provider = domains.clone();
        domain_controller
            .watches(
                configmaps,
                watcher::Config::default(),
                move |cm: PartialObjectMeta<ConfigMap>| {
                    placement::domains_using_configmap(&by_configmap, &cm.metadata)
                },
            )
            // The Secrets' metadata is cached for their resource versions and the label that
            // lets recipient sources read them, without other labels, annotations (a
            // kubectl apply's holds the data) or managed fields: a changed credential is
            // synced at once.
            .watches_stream(
                watcher(secrets, watcher::Config::default())
                    .backoff(watch_backoff())
                    .modify(|secret: &mut PartialObjectMeta<Secret>| {
                        secret.metadata.managed_fields = None;
                        secret.metadata.annotations = None;
                        if let Some(labels) = secret.metadata.labels.as_mut() {
                            labels.retain(|key, _| key == super::sources::SOURCE_SECRET_LABEL);
                        }
                    })
                    .reflect(secrets_writer)
                    .inspect(marks(listed_by(&mut listed.domain_inputs)))
                    .touched_objects(),
                move |secret: PartialObjectMeta<Secret>| {
                    placement::domains_using_secret(&by_secret, &secret.metadata)
                },
            )
            // Only a gateway's spec and its deletion matter to its domains: its status
            // changes with every domain it counts, and must not send all of them round.
            .watches_stream(
                spec_changes_and_deletions(
                    watcher(gateways_api.clone(), watcher::Config::default())
                        .backoff(watch_backoff())
                        .reflect(gateways_writer)
                        .inspect(marks(listed_by(&mut listed.domain_inputs))),
                ),
                move |gw: MailGateway| placement::domains_of_gateway(&by_gateway, &gw),
            )
            // The namespaces' labels are cached for gateways that admit MailDomains by
            // namespace selector; a change of them sends the namespace's domains round.
            .watches_stream(
                watcher(namespaces, watcher::Config::default())
                    .backoff(watch_backoff())
                    .reflect(namespaces_writer)
                    .inspect(marks(listed_by(&mut listed.domain_inputs)))
                    .touched_objects(),
                move |ns: PartialObjectMeta<Namespace>| {
                    placement::domains_in_namespace(&by_namespace, &ns.name_any())
                },
            )
            // The MailRelays are cached as digests (compared before each write); a hand
            // edit sends its domain round once the cache holds it, and is repaired.
            .watches_stream(
                watcher(
                    Api::<MailRelay>::all(client.clone()),
                    watcher::Config::default().labels(crate::render::RELAY_GATEWAY_LABEL),
                )
                .backoff(watch_backoff())
                .inspect(move |event| {
                    if let Ok(event) = event {
                        relays_observer.observe(event);
                    }
                })
                .inspect(marks(listed_by(&mut listed.domain_inputs)))
                .touched_objects(),
                |relay: MailRelay| placement::domain_of_relay(&relay.metadata),
            )
            // DNSProviders are cached; a change of one's spec sends the domains that name
            // it round (its status, which the provider controller writes, does not).
            .watches_stream(
                spec_changes_and_deletions(
                    watcher(
                        Api::<DNSProvider>::all(client.clone()),
                        watcher::Config::default(),
                    )
                    .backoff(watch_backoff())
                    .reflect(providers_writer)
                    .inspect(marks(listed_by(&mut listed.domain_inputs))),
                ),
                move |provider: DNSProvider| {
                    placement::domains_using_provider(&by_provider, &provider.metadata)
                },
            )
    };
    let gateway_controller = gateway_controller
        // The children it compares before writing are cached from the watches that send
        // it round when they change (the cache is filled before the trigger).
        .owns_stream(gateway_children(
            &client,
            workloads_writer,
            &mut listed.gateway_inputs,
        ))
        .owns_stream(gateway_children(
            &client,
            services_writer,
            &mut listed.gateway_inputs,
        ))
        .owns_stream(gateway_children(
            &client,
            accounts_writer,
            &mut listed.gateway_inputs,
        ))
        .owns_stream(gateway_children(
            &client,
            roles_writer,
            &mut listed.gateway_inputs,
        ))
        .owns_stream(gateway_children(
            &client,
            bindings_writer,
            &mut listed.gateway_inputs,
        ))
        .owns_stream(
            watcher(
                Api::<ConfigMap>::all(client.clone()),
                watcher::Config::default().labels(crate::render::GATEWAY_CONFIG_LABEL),
            )
            .backoff(watch_backoff())
            .inspect(move |event| {
                if let Ok(event) = event {
                    configs_observer.observe(event);
                }
            })
            .inspect(marks(listed_by(&mut listed.gateway_inputs)))
            .touched_objects(),
        )
        // The gateways' own MailRelays: a hand edit is repaired like any child's.
        .owns_stream(
            watcher(
                Api::<MailRelay>::all(client.clone()),
                watcher::Config::default().labels(crate::render::GATEWAY_CONFIG_LABEL),
            )
            .backoff(watch_backoff())
            .inspect(move |event| {
                if let Ok(event) = event {
                    gateway_relays_observer.observe(event);
                }
            })
            .inspect(marks(listed_by(&mut listed.gateway_inputs)))
            .touched_objects(),
        )
        // A gateway counts and configures its domains from their specs: their status writes
        // are no reason to look again, their deletions are.
        .watches_stream(
            spec_changes_and_deletions(
                watcher(domains_api, watcher::Config::default()).backoff(watch_backoff()),
            ),
            |md: MailDomain| placement::gateway_of(&md),
        )
        // While many domains arrive at once, one gateway reconcile after they settle.
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)));
    // PodDisruptionBudgets only where policy/v1 is served (a watch of it fails elsewhere).
    let gateway_controller = if pdb_served {
        gateway_controller.owns_stream(gateway_children(
            &client,
            budgets_writer,
            &mut listed.gateway_inputs,
        ))
    } else {
        gateway_controller
    };

    // The SMTP probe asks each ready gateway replica, and the gateway controller each
    // agent, found from the gateways' pods (label-selected, trimmed to what is read).
    let (pods, pods_writer) = reflector::store();
    let pods_watch = {
        let events = watcher(
            Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone()),
            watcher::Config::default().labels(GATEWAY_POD_SELECTOR),
        )
        .backoff(watch_backoff())
        .modify(crate::drift::replicas::trimmed)
        .reflect(pods_writer);
        tokio::spawn(async move {
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching the gateways' pods failed; retrying");
                }
            }
        })
    };
    let drift = settings.drift.clone().map(|drift| {
        Arc::new(crate::drift::Drift::new(
            drift,
            Arc::new(crate::drift::replicas::PodReplicas(pods.clone())),
            metrics.drift.clone(),
        ))
    });
    let (changed, drift_triggers) = futures::channel::mpsc::unbounded();
    let (held_triggers, held_changed) = futures::channel::mpsc::unbounded();
    // A domain whose source a worker finished syncing is reconciled with the result.
    let (synced_triggers, synced) = futures::channel::mpsc::unbounded();
    let domain_controller = domain_controller.reconcile_on(futures::stream::select(
        futures::stream::select(drift_triggers, held_changed),
        synced,
    ));
    let sources = Arc::new(super::sources::SourceSyncs::new(
        settings.sources.clone(),
        Some(synced_triggers),
    ));
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
        namespaces: namespaces_store,
        secret_versions,
        relays,
        providers,
        gateway_services,
        gateway_pods: pods,
        gateway_configs,
        gateway_relays,
        agent_tokens: Default::default(),
        gateway_workloads,
        gateway_accounts,
        gateway_roles,
        gateway_bindings,
        gateway_budgets,
        claims,
        drift,
        network: crate::net::Network::real(Duration::from_secs(3)),
        held_triggers,
        draining: Default::default(),
        queues: Default::default(),
        sources,
        written,
        listed,
    });

    // Each DNSProvider's own status: its server and key checked once per provider.
    let (provider_objects, provider_objects_writer) = reflector::store();
    let provider_controller = Controller::for_stream(
        watcher(
            Api::<DNSProvider>::all(context.client.clone()),
            watcher::Config::default(),
        )
        .backoff(watch_backoff())
        .reflect(provider_objects_writer)
        .touched_objects(),
        provider_objects,
    )
    .trigger_backoff(trigger_backoff());
    let queue_poll = context
        .settings
        .queue_poll
        .map(|interval| tokio::spawn(super::agents::poll_queues(context.clone(), interval)));
    let supervisor = Supervisor::new(shutdown);
    let stopping = supervisor.stopping();
    let domains_done = supervisor.watch(
        "the MailDomain controller",
        logged(
            "MailDomain",
            domain_controller
                .graceful_shutdown_on(stopping.clone())
                .run(
                    maildomain::reconcile,
                    maildomain::error_policy,
                    context.clone(),
                ),
        ),
    );
    let gateways_done = supervisor.watch(
        "the MailGateway controller",
        logged(
            "MailGateway",
            gateway_controller
                .graceful_shutdown_on(stopping.clone())
                .run(
                    mailgateway::reconcile,
                    mailgateway::error_policy,
                    context.clone(),
                ),
        ),
    );
    let providers_done = supervisor.watch(
        "the DNSProvider controller",
        logged(
            "DNSProvider",
            provider_controller.graceful_shutdown_on(stopping).run(
                dnsprovider::reconcile,
                dnsprovider::error_policy,
                context,
            ),
        ),
    );
    let tasks = [
        ("the drift loop", drift_loop),
        ("the queue poll", queue_poll),
        ("the watch of the gateways' pods", Some(pods_watch)),
    ]
    .into_iter()
    .filter_map(|(name, task)| Some((name, task?)))
    .collect();
    supervisor
        .run(
            futures::future::join3(domains_done, gateways_done, providers_done),
            tasks,
        )
        .await
}

/// A watch of the gateways' children of one kind (by label), filling `writer` before it
/// sends the gateway round.
fn gateway_children<K>(
    client: &Client,
    writer: Writer<K>,
    inputs: &mut Vec<Listed>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(
        Api::<K>::all(client.clone()),
        watcher::Config::default().labels(GATEWAY_SELECTOR),
    )
    .backoff(watch_backoff())
    .reflect(writer)
    .inspect(marks(listed_by(inputs)))
    .touched_objects()
}

/// A new [`Listed`], waited for as one of `inputs`.
fn listed_by(inputs: &mut Vec<Listed>) -> Listed {
    let listed = Listed::default();
    inputs.push(listed.clone());
    listed
}

/// Marks `listed` from a watch's events.
fn marks<K>(listed: Listed) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if let Ok(event) = event {
            listed.observe(event);
        }
    }
}

/// The gateways' children (StatefulSets, Services, agent RBAC, PodDisruptionBudgets).
const GATEWAY_SELECTOR: &str =
    "app.kubernetes.io/name=mx-gateway,app.kubernetes.io/managed-by=mx-operator";

/// The gateways' pods (their template carries the component `smtp`).
const GATEWAY_POD_SELECTOR: &str = "app.kubernetes.io/name=mx-gateway,app.kubernetes.io/managed-by=mx-operator,app.kubernetes.io/component=smtp";

/// Drives a controller's stream of reconcile results to its end, logging the failures.
async fn logged<K: Resource, E: std::error::Error + 'static, W: std::error::Error + 'static>(
    kind: &str,
    results: impl futures::Stream<
        Item = Result<
            (ObjectRef<K>, kube::runtime::controller::Action),
            kube::runtime::controller::Error<E, W>,
        >,
    >,
) {
    results
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(kind, %error, "reconcile did not finish");
            }
            futures::future::ready(())
        })
        .await
}

/// Whether `policy/v1` PodDisruptionBudgets are served. Only the API server's 404 for the
/// group version says no: any other failure (a server still starting, a timeout) is asked
/// again, so a moment's error at start does not leave every gateway without its budget
/// until the operator restarts.
async fn policy_v1_served(client: &Client) -> bool {
    use backon::Retryable;
    let not_served =
        |error: &kube::Error| matches!(error, kube::Error::Api(status) if status.code == 404);
    let discovery = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times();
    (|| client.list_api_group_resources("policy/v1"))
        .retry(discovery)
        .when(|error| !not_served(error))
        .notify(|error, retry_in| {
            tracing::warn!(%error, ?retry_in, "asking whether policy/v1 is served failed; asking again");
        })
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
    use http::{Request, Response};
    use kube::client::Body;

    /// A client whose API server answers each request with the next of `answers`.
    fn answering(answers: Vec<(u16, serde_json::Value)>) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            for (code, body) in answers {
                let Some((_, respond)) = handle.next_request().await else {
                    return;
                };
                respond.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        Client::new(service, "default")
    }

    fn status(code: u16, reason: &str) -> (u16, serde_json::Value) {
        (
            code,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "code": code, "reason": reason, "message": reason}),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_404_means_policy_v1_is_not_served() {
        let served = (
            200,
            serde_json::json!({"kind": "APIResourceList", "groupVersion": "policy/v1",
                "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                               "kind": "PodDisruptionBudget", "verbs": ["get"]}]}),
        );
        assert!(
            policy_v1_served(&answering(vec![
                status(503, "ServiceUnavailable"),
                status(500, "InternalError"),
                served.clone()
            ]))
            .await
        );
        assert!(!policy_v1_served(&answering(vec![status(404, "NotFound")])).await);
        assert!(
            !policy_v1_served(&answering(vec![
                status(503, "ServiceUnavailable"),
                status(404, "NotFound")
            ]))
            .await
        );
    }
}
