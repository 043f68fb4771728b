//! The requests one MailDomain reconcile makes, against a mocked API server: the exact
//! method and path of each, in order. Caches are filled by hand, as the watches would.

use super::super::claims::ClaimIndex;
use super::super::context::{Context, Settings};
use super::super::digests::DataDigests;
use super::super::metrics::Metrics;
use super::super::write::status_key;
use crate::api::fixtures;
use crate::api::{MailDomain, MailGateway, MailRelay};
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the API server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store_and_writer(objects).0
}

/// A listed cache, and the writer that delivers later watch events to it.
fn store_and_writer<K>(objects: Vec<K>) -> (Store<K>, Writer<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for object in objects {
        writer.apply_watcher_event(&Event::InitApply(object));
    }
    writer.apply_watcher_event(&Event::InitDone);
    (store, writer)
}

/// As the watch keeps them.
fn digests(relays: Vec<MailRelay>) -> Arc<DataDigests> {
    let digests = DataDigests::default();
    digests.observe(&Event::<MailRelay>::Init);
    for relay in relays {
        digests.observe(&Event::InitApply(relay));
    }
    digests.observe(&Event::<MailRelay>::InitDone);
    Arc::new(digests)
}

/// A Context over a mocked API server that answers every request: a write to the
/// MailDomain with `domain` (its status replaced by a status write), any other write with
/// what was sent.
fn context(
    domain: &MailDomain,
    gateways: Vec<MailGateway>,
    relays: Vec<MailRelay>,
) -> (Arc<Context>, Arc<Mutex<Vec<Seen>>>) {
    let (ctx, seen, _) = context_with_watch(domain, gateways, relays);
    (ctx, seen)
}

/// Like [`context`], with the writer of the MailDomain cache, to deliver watch events.
fn context_with_watch(
    domain: &MailDomain,
    gateways: Vec<MailGateway>,
    relays: Vec<MailRelay>,
) -> (Arc<Context>, Arc<Mutex<Vec<Seen>>>, Writer<MailDomain>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(vec![]));
    let record = seen.clone();
    let answer_status = serde_json::to_value(domain).unwrap();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut answer = if path.contains("/maildomains/") {
                let mut object = answer_status.clone();
                if path.ends_with("/status") {
                    object["status"] = body["status"].clone();
                }
                object
            } else {
                body.clone()
            };
            if answer.get("metadata").is_some() {
                answer["metadata"]["resourceVersion"] = json!("2");
            }
            record.lock().unwrap().push(Seen { method, path, body });
            let response = Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    let client = Client::new(service, "default");
    let (domains, domains_writer) = store_and_writer(vec![domain.clone()]);
    let settings = Settings {
        gateway_image: "localhost/mx-gateway:dev".into(),
        resync: Duration::from_secs(300),
        concurrency: 1,
        drift: None,
        resolvers: vec![],
        queue_poll: None,
        sources: Default::default(),
    };
    let context = Context {
        recorder: Recorder::new(client.clone(), Reporter::from("mx-operator")),
        client,
        settings,
        metrics: Arc::new(Metrics::default()),
        domains,
        gateways: store(gateways),
        pdb_served: true,
        namespaces: store(vec![]),
        secret_versions: store(vec![]),
        relays: digests(relays),
        providers: store(vec![]),
        gateway_services: store(vec![]),
        gateway_pods: store(vec![]),
        gateway_configs: digests(vec![]),
        gateway_relays: digests(vec![]),
        agent_tokens: Default::default(),
        gateway_workloads: store(vec![]),
        gateway_accounts: store(vec![]),
        gateway_roles: store(vec![]),
        gateway_bindings: store(vec![]),
        gateway_budgets: store(vec![]),
        claims: Arc::new(ClaimIndex::default()),
        drift: None,
        network: crate::net::Network::real(Duration::from_secs(1)),
        held_triggers: futures::channel::mpsc::unbounded().0,
        draining: Default::default(),
        queues: Default::default(),
        sources: Default::default(),
        written: Default::default(),
        listed: Default::default(),
    };
    (Arc::new(context), seen, domains_writer)
}

async fn reconcile(
    domain: &MailDomain,
    gateways: Vec<MailGateway>,
    relays: Vec<MailRelay>,
) -> Vec<Seen> {
    let (ctx, seen) = context(domain, gateways, relays);
    super::reconcile(Arc::new(domain.clone()), ctx)
        .await
        .unwrap();
    seen.lock().unwrap().clone()
}

/// The reconcile that follows a status write often starts before the watch delivers the
/// write: the cache still holds the version the write was made on. It must not write the
/// same status (and its Event) again.
#[tokio::test]
async fn a_status_just_written_is_not_written_again_from_a_stale_cache() {
    let domain = fixtures::domain(json!({"metadata": {"resourceVersion": "7"}}));
    let (ctx, seen) = context(&domain, vec![fixtures::gateway(json!({}))], vec![]);
    let stale = Arc::new(domain);
    super::reconcile(stale.clone(), ctx.clone()).await.unwrap();
    assert_eq!(lines(&seen.lock().unwrap()), [RELAY, STATUS, EVENT]);
    seen.lock().unwrap().clear();
    super::reconcile(stale, ctx).await.unwrap();
    let again = lines(&seen.lock().unwrap());
    assert!(
        !again.iter().any(|l| l == STATUS || l == EVENT),
        "the status written a moment ago stands: {again:?}"
    );
}

/// The watch delivered the write, so the memo of it is gone, while a reconcile that took
/// its copy of the domain before that still runs: it compares with the cache's newer copy,
/// not with its own older one.
#[tokio::test]
async fn a_status_the_watch_delivered_meanwhile_is_not_written_again() {
    let domain = fixtures::domain(json!({"metadata": {"resourceVersion": "7"}}));
    let (ctx, seen, mut watch) =
        context_with_watch(&domain, vec![fixtures::gateway(json!({}))], vec![]);
    let stale = Arc::new(domain.clone());
    super::reconcile(stale.clone(), ctx.clone()).await.unwrap();
    assert_eq!(lines(&seen.lock().unwrap()), [RELAY, STATUS, EVENT]);
    let mut delivered = domain;
    delivered.status =
        serde_json::from_value(seen.lock().unwrap()[1].body["status"].clone()).unwrap();
    delivered.metadata.resource_version = Some("8".into());
    watch.apply_watcher_event(&Event::Apply(delivered.clone()));
    ctx.written.observe(&status_key(&delivered), Some("8"));
    seen.lock().unwrap().clear();
    super::reconcile(stale, ctx).await.unwrap();
    let again = lines(&seen.lock().unwrap());
    assert!(
        !again.iter().any(|l| l == STATUS || l == EVENT),
        "the status the watch delivered stands: {again:?}"
    );
}

fn lines(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(Seen::line).collect()
}

const STATUS: &str = "PATCH /apis/mx-operator.io/v1alpha1/namespaces/mail/maildomains/md/status";
const EVENT: &str = "POST /apis/events.k8s.io/v1/namespaces/mail/events";
const RELAY: &str =
    "PATCH /apis/mx-operator.io/v1alpha1/namespaces/mail/mailrelays/relay-example.com";

#[tokio::test]
async fn an_invalid_spec_makes_one_status_write() {
    let invalid = fixtures::domain(json!({"spec": {"domain": "bad domain"}}));
    let seen = reconcile(&invalid, vec![fixtures::gateway(json!({}))], vec![]).await;
    assert_eq!(lines(&seen), [STATUS, EVENT], "{seen:?}");
    let ready = &seen[0].body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "InvalidSpec");
}

#[tokio::test]
async fn a_new_domain_makes_the_relay_config_status_and_one_event_then_nothing() {
    let gateway = fixtures::gateway(json!({}));
    let domain = fixtures::domain(json!({}));
    let seen = reconcile(&domain, vec![gateway.clone()], vec![]).await;
    assert_eq!(lines(&seen), [RELAY, STATUS, EVENT], "{seen:?}");

    // The same domain again, with that status stored and that MailRelay cached (as
    // the watches deliver them): the reconcile reads only caches.
    let mut converged = domain.clone();
    converged.status = serde_json::from_value(seen[1].body["status"].clone()).unwrap();
    let relay: MailRelay = serde_json::from_value(seen[0].body.clone()).unwrap();
    let again = reconcile(&converged, vec![gateway], vec![relay]).await;
    assert_eq!(lines(&again), Vec::<String>::new(), "{again:?}");
}

#[tokio::test]
async fn a_finalizer_is_added_only_when_needed() {
    let same_namespace = fixtures::domain(json!({}));
    let seen = reconcile(&same_namespace, vec![fixtures::gateway(json!({}))], vec![]).await;
    assert!(
        !seen.iter().any(|s| s.path.ends_with("/maildomains/md")),
        "the garbage collector removes a relay config in the domain's namespace: {seen:?}"
    );

    let elsewhere = fixtures::domain(json!({
        "metadata": {"namespace": "tenant"},
        "spec": {"gatewayRef": {"name": "edge", "namespace": "mail"}}
    }));
    let gateway = fixtures::gateway(json!({"spec": {"allowedDomains": {"from": "All"}}}));
    let seen = reconcile(&elsewhere, vec![gateway], vec![]).await;
    assert_eq!(
        seen.first().map(Seen::line).as_deref(),
        Some("PATCH /apis/mx-operator.io/v1alpha1/namespaces/tenant/maildomains/md"),
        "{seen:?}"
    );
    assert_eq!(
        seen[0].body["metadata"]["finalizers"],
        json!([crate::controller::FINALIZER])
    );
    assert_eq!(
        seen[1].line(),
        RELAY,
        "then the relay config in the gateway's namespace"
    );
}
