//! `mx-operator agent`: runs beside Postfix in each gateway pod. It watches (read-only) the
//! MailRelays of its gateway (its own main.cf and master.cf, and one per domain), checks
//! each one, and writes what Postfix reads. An object that fails the checks is reported
//! and its last good version keeps serving. Everything it loads comes from MailRelays,
//! which only the operator may write: nothing that someone with rights in the namespace
//! can write (a ConfigMap, say) changes a Postfix parameter, a domain or a recipient.
//!
//! A domain that stops being relayed here (its MailRelay deleted, withdrawn, or moved to
//! another gateway) keeps its route to the primary while this replica's queue holds mail
//! for it: new mail for it is refused, queued mail is still delivered, never bounced
//! because the configuration changed.

mod metrics;
mod postfix;
mod queue;
mod retire;
mod sessions;
mod shards;

pub use metrics::{AgentMetrics, StatusReport};
pub use postfix::{LAST_GOOD_FILE, Postfix, PostfixError};
pub use queue::{DomainQueue, QueuedMessage, QueuedRecipient, commonest, parse as parse_queue};
pub use retire::{Retirement, ordinal};

use crate::api::MailRelay;
use crate::manifests::gateway::GatewayNames;
use crate::render::shards::is_shard;
use crate::render::{
    Assembled, CheckedRelay, GATEWAY_CONFIG_LABEL, GatewayFiles, LocalSettings,
    RELAY_GATEWAY_LABEL, assemble, check_gateway, check_relay,
};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// How often the agent looks whether the Postfix master runs (for /readyz).
const SUPERVISION_INTERVAL: Duration = Duration::from_secs(2);

/// What the agent needs to know about its place.
pub struct AgentSettings {
    pub namespace: String,
    pub gateway: String,
    /// This replica's pod name (`<gateway>-<ordinal>`); without one, no scale-in retires it.
    pub replica: Option<String>,
    pub postfix: Postfix,
    pub local: LocalSettings,
    /// How often the queue is read for the metrics.
    pub queue_interval: Duration,
    /// How long a queue read may go without output from a running Postfix before it counts
    /// as hung.
    pub postfix_answer_timeout: Duration,
}

/// The `data` of the last good gateway configuration and MailRelays, kept on disk beside the
/// Postfix files so that a restarted agent still has them when one went bad while it was
/// down.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct LastGood {
    gateway: Option<BTreeMap<String, String>>,
    relays: BTreeMap<String, BTreeMap<String, String>>,
}

/// The relays of draining domains, by domain, kept on the queue volume beside the mail
/// they route: a pod deleted and started again has a new configuration folder, but the
/// same queue.
pub type DrainingRoutes = BTreeMap<String, BTreeMap<String, String>>;

/// Queue reads in a row that must find no mail for a draining domain before its route
/// goes: `showq` skips a message while the queue manager moves it, so one empty read
/// does not prove an empty queue.
const EMPTY_READS_TO_DRAIN: u8 = 2;

/// A domain no longer relayed here whose queued mail still goes to its primary.
struct Draining {
    relay: CheckedRelay,
    empty_reads: u8,
}

/// What was last loaded, and the last good version of every object it came from.
#[derive(Default)]
struct Loaded {
    gateway: Option<GatewayFiles>,
    relays: BTreeMap<String, CheckedRelay>,
    /// The recipient shards of sharded domains (not saved: a restarted agent answers 450
    /// for those domains until their shards have been listed again).
    shards: shards::Shards,
    last_good: LastGood,
    applied: Option<Assembled>,
    /// The refusal last logged per object, so a bad object is reported once.
    refused: BTreeMap<String, String>,
    /// By domain.
    draining: BTreeMap<String, Draining>,
    /// Whether the draining routes saved on the queue volume have been read.
    draining_restored: bool,
    /// What was last saved there.
    saved_draining: Option<DrainingRoutes>,
    /// Set while a scale-in removes this replica.
    retiring: Option<retire::Retiring>,
    /// Domains whose hold the last loads lifted, released at the next queue read.
    releasing: BTreeSet<String>,
}

impl Loaded {
    fn served_domains(&self) -> BTreeMap<String, CheckedRelay> {
        self.relays
            .values()
            .filter(|relay| relay.relayed())
            .map(|relay| (relay.domain.clone(), relay.clone()))
            .collect()
    }

    /// Relays served `before` and no longer served start draining; a domain served again
    /// stops draining (its relay carries the route).
    fn update_draining(&mut self, before: BTreeMap<String, CheckedRelay>) {
        let now = self.served_domains();
        for (domain, relay) in before {
            if !now.contains_key(&domain) && !self.draining.contains_key(&domain) {
                tracing::info!(
                    %domain,
                    "no longer relayed here; its route stays until the mail queued for it is delivered"
                );
                self.draining.insert(
                    domain,
                    Draining {
                        relay,
                        empty_reads: 0,
                    },
                );
            }
        }
        self.draining.retain(|domain, _| !now.contains_key(domain));
    }

    /// Takes the routes saved on the queue volume, of domains not served here.
    fn restore_draining(&mut self, saved: DrainingRoutes) {
        let served = self.served_domains();
        for (domain, data) in saved {
            match check_relay(&data) {
                Ok(relay) if relay.domain == domain && !served.contains_key(&domain) => {
                    tracing::info!(%domain, "draining: its route is kept until the mail queued for it is delivered");
                    self.draining.entry(domain).or_insert(Draining {
                        relay,
                        empty_reads: 0,
                    });
                }
                Ok(_) => {}
                Err(problem) => {
                    tracing::error!(%domain, %problem, "a saved draining route is unreadable; mail queued for the domain may bounce")
                }
            }
        }
        self.draining_restored = true;
    }

    fn draining_routes(&self) -> DrainingRoutes {
        self.draining
            .iter()
            .map(|(domain, d)| (domain.clone(), d.relay.source().clone()))
            .collect()
    }

    /// Drops the routes of draining domains the queue has held no mail for in the last
    /// reads, and returns the messages still queued per draining domain.
    fn drain(&mut self, queue: &BTreeMap<String, queue::DomainQueue>) -> BTreeMap<String, u64> {
        for (domain, draining) in self.draining.iter_mut() {
            match queue.get(domain) {
                Some(queued) if queued.messages > 0 => draining.empty_reads = 0,
                _ => draining.empty_reads = draining.empty_reads.saturating_add(1),
            }
        }
        self.draining.retain(|domain, draining| {
            let drained = draining.empty_reads >= EMPTY_READS_TO_DRAIN;
            if drained {
                tracing::info!(%domain, "its queued mail is delivered; its route is removed");
            }
            !drained
        });
        self.draining
            .keys()
            .map(|domain| {
                let messages = queue.get(domain).map(|q| q.messages).unwrap_or_default();
                (domain.clone(), messages)
            })
            .collect()
    }
}

/// Runs until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: AgentSettings,
    metrics: Arc<AgentMetrics>,
    shutdown: crate::shutdown::Shutdown,
) {
    let changed = Arc::new(Notify::new());
    let relays = watch(
        &Api::<MailRelay>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(&format!("{RELAY_GATEWAY_LABEL}={}", settings.gateway)),
        changed.clone(),
        metrics.clone(),
    );
    // By name as well: another gateway's in the namespace is not this one's.
    let gateway = watch(
        &Api::<MailRelay>::namespaced(client, &settings.namespace),
        watcher::Config::default()
            .labels(&format!("{GATEWAY_CONFIG_LABEL}={}", settings.gateway))
            .fields(&format!(
                "metadata.name={}",
                GatewayNames::of(&settings.gateway).config
            )),
        changed.clone(),
        metrics.clone(),
    );
    let mut loaded = Loaded::default();
    match settings.postfix.load_last_good().await {
        Ok(Some(last_good)) => {
            loaded.gateway = last_good
                .gateway
                .as_ref()
                .and_then(|data| check_gateway(data).ok());
            loaded.relays = last_good
                .relays
                .iter()
                .filter_map(|(name, data)| Some((name.clone(), check_relay(data).ok()?)))
                .collect();
            loaded.last_good = last_good;
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "the last good configuration could not be read; starting without it")
        }
    }
    let work = async {
        if relays.wait_until_ready().await.is_err() || gateway.wait_until_ready().await.is_err() {
            return;
        }
        // A tick missed during a long load is not made up in a burst.
        let timer = |period| {
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        };
        let mut queue_timer = timer(settings.queue_interval);
        let mut supervision_timer = timer(SUPERVISION_INTERVAL);
        let mut retry_timer = timer(Duration::from_secs(10));
        // Loads follow changes, and are retried at every queue read (a load that failed);
        // the frequent supervision ticks do not load.
        let mut load = true;
        let mut last_read = BTreeMap::new();
        loop {
            if load {
                sync(&settings, &relays, &gateway, &mut loaded, &metrics).await;
            }
            load = true;
            tokio::select! {
                _ = supervision_timer.tick() => {
                    metrics.set_postfix_running(settings.postfix.running().await);
                    load = false;
                }
                () = changed.notified() => {
                    // Let a burst of changes settle into one load.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = queue_timer.tick() => {
                    if let Some(queue) = read_queue(&settings, &metrics, &mut last_read).await {
                        release_unheld(&settings, &mut loaded, &queue).await;
                        metrics.set_draining(&loaded.drain(&queue.domains));
                        deliver_if_retiring(&settings, &mut loaded, queue.messages, &metrics).await;
                    }
                }
                // Retry a failed load (for example Postfix tools missing for a moment).
                _ = retry_timer.tick(), if loaded.applied.is_none() => {}
                // A reload put off so that a burst of changes makes one.
                () = reload_turn(settings.postfix.reload_due()) => {
                    load = false;
                    match settings.postfix.reload_when_spaced().await {
                        Ok(reloaded) => metrics.reloaded(reloaded),
                        Err(error) => {
                            metrics.load_error(error.reason());
                            tracing::error!(%error, "reloading Postfix failed; retried shortly");
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = work => metrics.stopped(),
        () = shutdown => tracing::info!("stopping"),
    }
}

/// Waits until `due`, or forever when no reload waits.
async fn reload_turn(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// A reflector of the labelled objects, driven in the background; `changed` is notified
/// on every event. A watch that ends (it retries every error, so only by a panic) makes
/// /healthz fail: the cache it fills would silently go stale.
fn watch<K>(
    api: &Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    metrics: Arc<AgentMetrics>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api.clone(), config)).default_backoff();
    tokio::spawn(async move {
        let _unhealthy_when_dropped = StopsHealth(metrics);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                let kind = K::kind(&());
                tracing::warn!(%error, %kind, "watching failed; retrying");
            }
            changed.notify_one();
        }
    });
    reader
}

/// Marks the agent unhealthy when the task holding it ends, however it ends.
struct StopsHealth(Arc<AgentMetrics>);

impl Drop for StopsHealth {
    fn drop(&mut self) {
        self.0.stopped();
    }
}

async fn sync(
    settings: &AgentSettings,
    relays: &Store<MailRelay>,
    gateway: &Store<MailRelay>,
    loaded: &mut Loaded,
    metrics: &AgentMetrics,
) {
    let mut gateways = gateway.state();
    gateways.sort_by_key(|relay| relay.name_any());
    match gateways.first() {
        None => {
            if loaded.gateway.is_none() {
                refuse(
                    loaded,
                    metrics,
                    "gateway",
                    "gateway_missing",
                    format!(
                        "no MailRelay labelled {GATEWAY_CONFIG_LABEL}={} in {}; waiting for the operator",
                        settings.gateway, settings.namespace
                    ),
                );
            }
        }
        Some(relay) => match check_gateway(&relay.data.clone().unwrap_or_default()) {
            Ok(files) => {
                loaded.refused.remove("gateway");
                loaded.gateway = Some(files);
                loaded.last_good.gateway = relay.data.clone();
            }
            Err(problem) => refuse(
                loaded,
                metrics,
                "gateway",
                "gateway_refused",
                format!(
                    "MailRelay {}: {problem}; the previous gateway configuration keeps serving",
                    relay.name_any()
                ),
            ),
        },
    }
    let served_before = loaded.served_domains();
    let (shard_objects, present): (Vec<Arc<MailRelay>>, Vec<Arc<MailRelay>>) = relays
        .state()
        .into_iter()
        .partition(|relay| relay.data.as_ref().is_some_and(is_shard));
    let refused_shards = loaded.shards.update(
        shard_objects
            .iter()
            .map(|object| shards::ShardObject {
                name: object.name_any(),
                resource_version: object.resource_version(),
                data: object.data.as_ref().unwrap_or(&EMPTY),
            })
            .collect(),
    );
    for (name, problem) in refused_shards {
        refuse(
            loaded,
            metrics,
            &name,
            "relay_refused",
            format!(
                "MailRelay {name}: {problem}; the domain's last complete set of shards keeps serving, or without one it answers 450"
            ),
        );
    }
    let present: BTreeMap<String, Arc<MailRelay>> = present
        .into_iter()
        .map(|relay| (relay.name_any(), relay))
        .collect();
    loaded.relays.retain(|name, _| present.contains_key(name));
    loaded
        .last_good
        .relays
        .retain(|name, _| present.contains_key(name));
    for (name, relay) in &present {
        let data = relay.data.clone().unwrap_or_default();
        match check_relay(&data) {
            Ok(relay) => {
                loaded.refused.remove(name);
                loaded.relays.insert(name.clone(), relay);
                loaded.last_good.relays.insert(name.clone(), data);
            }
            Err(problem) => {
                let kept = if loaded.relays.contains_key(name) {
                    "its previous version keeps serving"
                } else {
                    "the domain is not relayed until it is fixed"
                };
                refuse(
                    loaded,
                    metrics,
                    name,
                    "relay_refused",
                    format!("MailRelay {name}: {problem}; {kept}"),
                );
            }
        }
    }
    loaded.update_draining(served_before);
    let Some(gateway_files) = loaded.gateway.clone() else {
        return;
    };
    metrics.set_status_token(gateway_files.agent_token.clone());
    note_retirement(settings, &gateway_files, loaded, metrics);
    let queue_directory = gateway_files.queue_directory(&settings.local);
    if !loaded.draining_restored
        && let Some(queue_directory) = &queue_directory
    {
        match settings.postfix.load_draining(queue_directory).await {
            Ok(saved) => loaded.restore_draining(saved),
            Err(error) => {
                // Without them, mail queued for departed domains would bounce: no load.
                refuse(
                    loaded,
                    metrics,
                    "draining",
                    "draining_unreadable",
                    format!(
                        "{error}; the configuration is not loaded until the draining routes can be read"
                    ),
                );
                return;
            }
        }
    }
    let relays: Vec<CheckedRelay> = loaded.relays.values().cloned().collect();
    let draining: Vec<CheckedRelay> = loaded.draining.values().map(|d| d.relay.clone()).collect();
    let shard_sets = loaded.shards.sets(&relays);
    let (files, problems) = assemble(
        &gateway_files,
        &relays,
        shard_sets,
        &draining,
        &settings.local,
    );
    for problem in problems {
        refuse(
            loaded,
            metrics,
            &format!("assemble:{problem}"),
            "relay_clash",
            problem.clone(),
        );
    }
    if loaded.applied.as_ref() == Some(&files) {
        return;
    }
    // Saved before the load: a route must be on the volume before the relay that carried
    // it leaves the running configuration. (One saved too long is pruned like any other.)
    let routes = loaded.draining_routes();
    if let Some(queue_directory) = &queue_directory
        && loaded.saved_draining.as_ref() != Some(&routes)
    {
        match settings
            .postfix
            .save_draining(queue_directory, &routes)
            .await
        {
            Ok(()) => loaded.saved_draining = Some(routes),
            Err(error) => {
                metrics.load_error(error.reason());
                tracing::error!(%error, "saving the draining routes failed; a pod started again without them would bounce mail queued for departed domains");
            }
        }
    }
    match settings.postfix.apply(&files).await {
        Ok(reloaded) => {
            let domains = relays.iter().filter(|r| r.relayed()).count();
            metrics.loaded(domains, reloaded);
            tracing::info!(domains, reloaded, "configuration loaded");
            let held_before = loaded
                .applied
                .as_ref()
                .map(Assembled::held_domains)
                .unwrap_or_default();
            let held_now = files.held_domains();
            loaded
                .releasing
                .extend(held_before.difference(&held_now).cloned());
            loaded.applied = Some(files);
            if let Err(error) = settings.postfix.save_last_good(&loaded.last_good).await {
                metrics.load_error(error.reason());
                tracing::warn!(%error, "saving the last good configuration failed");
            }
        }
        Err(error) => {
            metrics.load_error(error.reason());
            tracing::error!(%error, "loading the configuration into Postfix failed; the previous one keeps serving");
        }
    }
}

/// Starts or ends this replica's retirement as the gateway MailRelay's scale-in marker says.
fn note_retirement(
    settings: &AgentSettings,
    gateway: &GatewayFiles,
    loaded: &mut Loaded,
    metrics: &AgentMetrics,
) {
    let ordinal = settings
        .replica
        .as_deref()
        .and_then(|replica| retire::ordinal(replica, &settings.gateway));
    let removed = ordinal
        .zip(gateway.retiring_from)
        .is_some_and(|(ordinal, from)| ordinal >= from);
    match (removed, loaded.retiring.is_some()) {
        (true, false) => {
            tracing::info!(
                "a scale-in removes this replica: it takes no new mail and delivers its queue first"
            );
            let now = std::time::Instant::now();
            let retiring = retire::Retiring::since(now);
            metrics.set_retirement(Some(retiring.report(0, 0, now)));
            loaded.retiring = Some(retiring);
        }
        (false, true) => {
            tracing::info!("the scale-in no longer removes this replica: it takes mail again");
            loaded.retiring = None;
            metrics.set_retirement(None);
        }
        _ => {}
    }
}

/// A retiring replica retries all its mail now and then, and reports what it still holds
/// and the SMTP sessions still open.
async fn deliver_if_retiring(
    settings: &AgentSettings,
    loaded: &mut Loaded,
    queued: u64,
    metrics: &AgentMetrics,
) {
    let Some(retiring) = loaded.retiring.as_mut() else {
        return;
    };
    let sessions = match sessions::open(settings.local.smtp_port()).await {
        Ok(sessions) => sessions,
        Err(error) => {
            // Without the kernel's tables an empty queue proves nothing: the read does not
            // count.
            tracing::warn!(%error, "reading the open SMTP sessions failed");
            return;
        }
    };
    let now = std::time::Instant::now();
    if retiring.read(queued, sessions, now)
        && let Err(error) = settings.postfix.flush().await
    {
        tracing::warn!(%error, "asking Postfix to deliver the queue failed");
    }
    metrics.set_retirement(Some(retiring.report(queued, sessions, now)));
}

/// Tries now every queued message of the domains whose hold was lifted: those a load
/// released, and those with mail deferred by a hold that the loaded configuration no
/// longer holds (a hold lifted while the agent was down). They go out at once, at the
/// domain's pace, instead of at their next retry, which may be an hour away.
async fn release_unheld(settings: &AgentSettings, loaded: &mut Loaded, queue: &queue::Summary) {
    let Some(applied) = &loaded.applied else {
        return;
    };
    let still_held = applied.held_domains();
    let releasing = std::mem::take(&mut loaded.releasing);
    let mut released: Vec<&str> = releasing
        .iter()
        .chain(&queue.deferred_by_hold)
        .filter(|domain| !still_held.contains(*domain))
        .filter_map(|domain| queue.ids.get(domain))
        .flatten()
        .map(String::as_str)
        .collect();
    released.sort_unstable();
    released.dedup();
    if released.is_empty() {
        return;
    }
    tracing::info!(messages = released.len(), "releasing mail no longer held");
    for id in released {
        if let Err(error) = settings.postfix.deliver_now(id).await {
            // Delivered or moved meanwhile; else its next retry takes it.
            tracing::debug!(%error, "a released message could not be scheduled");
        }
    }
}

/// Logs a refusal once per distinct problem and counts every new one.
fn refuse(loaded: &mut Loaded, metrics: &AgentMetrics, key: &str, reason: &str, message: String) {
    if loaded.refused.get(key) != Some(&message) {
        tracing::error!(reason, "{message}");
        metrics.load_error(reason);
        loaded.refused.insert(key.to_string(), message);
    }
}

/// Reads the queue into the metrics, steadied against `last_read` (the domains' figures of
/// the last read, which this one replaces); None when it could not be read.
async fn read_queue(
    settings: &AgentSettings,
    metrics: &AgentMetrics,
    last_read: &mut BTreeMap<String, queue::DomainQueue>,
) -> Option<queue::Summary> {
    let postfix = &settings.postfix;
    if !postfix.running().await {
        // Not hung: stopped, which readiness reports.
        metrics.set_postfix_answer(Ok(()));
        return None;
    }
    let answer = postfix.queue(settings.postfix_answer_timeout).await;
    metrics.set_postfix_answer(answer.as_ref().map(|_| ()).map_err(ToString::to_string));
    match answer {
        Ok(output) => {
            let summary = queue::summarize(&output);
            if summary.unreadable > 0 {
                tracing::warn!(
                    unreadable = summary.unreadable,
                    "postqueue -j printed lines that are not queue entries"
                );
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            metrics.set_queue(&queue::steadied(last_read, &summary.domains), now);
            last_read.clone_from(&summary.domains);
            // Lines it cannot read might be a draining domain's mail.
            (summary.unreadable == 0).then_some(summary)
        }
        Err(error) => {
            tracing::warn!(%error, "reading the queue failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{domain_spec, input};
    use crate::render::{RelayMode, relay_data};
    use queue::DomainQueue;

    fn relay(mode: RelayMode) -> CheckedRelay {
        let spec = domain_spec(serde_json::json!({}));
        let recipients = std::collections::BTreeSet::from(["alice@example.com".to_string()]).into();
        check_relay(&relay_data(&input(&spec, &recipients, mode)).unwrap()).unwrap()
    }

    fn queued(messages: u64) -> BTreeMap<String, DomainQueue> {
        BTreeMap::from([(
            "example.com".to_string(),
            DomainQueue {
                messages,
                ..DomainQueue::default()
            },
        )])
    }

    fn change(loaded: &mut Loaded, relay: Option<CheckedRelay>) {
        let before = loaded.served_domains();
        loaded.relays.clear();
        if let Some(relay) = relay {
            loaded.relays.insert("relay-example-com".into(), relay);
        }
        loaded.update_draining(before);
    }

    #[test]
    fn a_relay_that_leaves_drains_until_reads_find_none_of_its_mail() {
        let draining = |n: u64| BTreeMap::from([("example.com".to_string(), n)]);
        let mut loaded = Loaded::default();
        change(&mut loaded, Some(relay(RelayMode::Active)));
        assert!(loaded.draining.is_empty());

        // Deleted (or moved away): the route stays, and is saved for a restart.
        change(&mut loaded, None);
        assert!(loaded.draining_routes().contains_key("example.com"));
        assert_eq!(loaded.drain(&queued(3)), draining(3));
        // One empty read proves nothing; mail seen again starts the count over.
        assert_eq!(loaded.drain(&BTreeMap::new()), draining(0));
        assert_eq!(loaded.drain(&queued(1)), draining(1));
        assert_eq!(loaded.drain(&queued(0)), draining(0));
        assert_eq!(loaded.drain(&BTreeMap::new()), BTreeMap::new());
        assert!(loaded.draining_routes().is_empty());

        // Withdrawn after a departure: the same; served again: the relay carries the route.
        change(&mut loaded, Some(relay(RelayMode::Active)));
        change(&mut loaded, Some(relay(RelayMode::Withdrawn)));
        assert_eq!(loaded.drain(&queued(2)), draining(2));
        change(&mut loaded, Some(relay(RelayMode::Active)));
        assert!(loaded.draining.is_empty());

        // Suspended keeps its own route (450 at RCPT, queued mail delivered): no draining.
        change(&mut loaded, Some(relay(RelayMode::Suspended)));
        assert!(loaded.draining.is_empty());
    }

    #[test]
    fn saved_routes_come_back_unless_the_domain_is_served() {
        let mut saved = DrainingRoutes::new();
        saved.insert(
            "example.com".into(),
            relay(RelayMode::Active).source().clone(),
        );
        let mut restarted = Loaded::default();
        restarted.restore_draining(saved.clone());
        assert_eq!(restarted.draining_routes(), saved);

        let mut serving = Loaded::default();
        change(&mut serving, Some(relay(RelayMode::Active)));
        serving.restore_draining(saved.clone());
        assert!(serving.draining.is_empty());

        // A route saved under another domain's name is not taken.
        let mut misfiled = DrainingRoutes::new();
        misfiled.insert("example.org".into(), saved["example.com"].clone());
        let mut restarted = Loaded::default();
        restarted.restore_draining(misfiled);
        assert!(restarted.draining.is_empty());
    }
}
