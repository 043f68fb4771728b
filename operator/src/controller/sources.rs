//! The recipient sources the operator syncs itself (`spec.recipients.ldap` and `http`),
//! asked by a pool of workers apart from the reconciles when a sync is due. The list in
//! force is the last sync that succeeded: a failed one leaves it serving (and says why in
//! status), and `maxAge` counts from its time; an operator that starts while a source is
//! down counts from the success its predecessor recorded in status. A list that shrank
//! past `recipients.maxShrink` is held until someone accepts it.

use crate::api::domain::{
    HeldSync, HttpSource, LdapSource, MaxShrink, RecipientSourceStatus, Recipients, refresh_every,
};
use crate::api::{KeyRef, MailDomain};
use crate::net::http::{Fetched, ListQuery};
use crate::net::ldap::DirectoryQuery;
pub use crate::net::redacted;
use crate::recipients::AddressList;
use crate::recipients::extract::SourceError;
use base64::Engine;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most addresses one source may give a domain: the operator holds them in memory.
pub const MAX_SOURCE_ADDRESSES: usize = 1_000_000;

/// Most bytes of a list served over HTTP: a million addresses and their line breaks.
const MAX_LIST_BYTES: usize = 512 << 20;

/// Longest a connection or one of its operations may wait for a source.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a whole list may take to arrive over HTTP.
const LIST_TIMEOUT: Duration = Duration::from_secs(300);

/// A failed sync is tried again this soon (or at the refresh interval, if shorter).
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// The label a Secret must carry before a recipient source (token, password, CA, list) may
/// read it: without it, permission to create MailDomains would be permission to send any
/// Secret of the namespace to a URL of one's choice.
pub const SOURCE_SECRET_LABEL: &str = "mx-operator.io/recipient-source";

/// How syncing runs beside the reconciles.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// Syncs running at once, in all.
    pub workers: usize,
    /// Syncs of one namespace running at once: one tenant's slow directory cannot occupy
    /// every worker.
    pub per_namespace: usize,
    /// Longest a whole sync may take (every LDAP page, the whole HTTP body).
    pub deadline: Duration,
    /// Sources are not asked more often than this, whatever their `refreshInterval` says:
    /// a busy directory is the primary's, and the platform's own workers are shared.
    pub min_refresh: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            workers: 8,
            per_namespace: 2,
            deadline: Duration::from_secs(300),
            min_refresh: Duration::from_secs(60),
        }
    }
}

/// What a sync reaches: the API server (Secrets), the network, the MailDomains (to drop
/// the lists of those gone), and the Secrets' versions and labels (a changed credential
/// makes a sync due; an unlabelled Secret is not read).
#[derive(Clone)]
pub struct Reach {
    pub client: Client,
    pub network: crate::net::Network,
    pub domains: Store<MailDomain>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

/// One source a MailDomain names.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Ldap(LdapSource),
    Http(HttpSource),
}

impl Source {
    /// Every kind, as [`Source::kind`] names them.
    const KINDS: [&'static str; 2] = ["ldap", "http"];

    /// The sources `recipients` names, in status order.
    pub fn named(recipients: &Recipients) -> Vec<Source> {
        let ldap = recipients.ldap.clone().map(Source::Ldap);
        let http = recipients.http.clone().map(Source::Http);
        ldap.into_iter().chain(http).collect()
    }

    /// `ldap` or `http`: its key in `status.recipientSources`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ldap(_) => "ldap",
            Self::Http(_) => "http",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Ldap(ldap) => &ldap.url,
            Self::Http(http) => &http.url,
        }
    }

    fn refresh(&self, floor: Duration) -> Duration {
        refresh_every(match self {
            Self::Ldap(ldap) => &ldap.refresh_interval,
            Self::Http(http) => &http.refresh_interval,
        })
        .max(floor)
    }

    fn skip_invalid(&self) -> bool {
        match self {
            Self::Ldap(ldap) => ldap.skip_invalid,
            Self::Http(http) => http.skip_invalid,
        }
    }

    fn secret_names(&self) -> Vec<&str> {
        match self {
            Self::Ldap(ldap) => ldap.secret_names().collect(),
            Self::Http(http) => http.secret_names().collect(),
        }
    }

    /// The versions of the Secrets it is asked with, as the cache holds them (`None`: not
    /// there).
    fn credentials(
        &self,
        namespace: &str,
        secrets: &Store<PartialObjectMeta<Secret>>,
    ) -> Credentials {
        self.secret_names()
            .into_iter()
            .map(|name| {
                let cached = secrets.get(&ObjectRef::new(name).within(namespace));
                cached.and_then(|secret| secret.resource_version())
            })
            .collect()
    }

    /// Why credentials would travel in the clear, unless the source says `insecure`.
    pub fn insecure_credentials(&self) -> Option<SourceError> {
        let why = match self {
            Self::Ldap(ldap)
                if !ldap.insecure && !ldap.start_tls && ldap.url.starts_with("ldap://") =>
            {
                "the bind password would be sent over ldap:// without startTLS"
            }
            Self::Http(http)
                if !http.insecure
                    && http.url.starts_with("http://")
                    && (http.bearer_token_secret_ref.is_some()
                        || http.basic_auth_secret_ref.is_some()) =>
            {
                "the credentials would be sent over http://"
            }
            _ => return None,
        };
        Some(SourceError::InsecureCredentials(format!(
            "{why}, readable on the way; use TLS, or set insecure: true on the source"
        )))
    }

    /// "the directory ldap://..." or "the list at https://...", without what a URL may
    /// carry that is not for status or logs (user info, query, fragment).
    fn described(&self) -> String {
        match self {
            Self::Ldap(ldap) => format!("the directory {}", redacted(&ldap.url)),
            Self::Http(http) => format!("the list at {}", redacted(&http.url)),
        }
    }
}

/// Domain `namespace`, `name` and source kind.
type Key = (String, String, &'static str);

/// The sync state of each MailDomain source, and the workers that sync them apart from
/// the reconciles: a reconcile reads the last result and never waits for a source.
pub struct SourceSyncs {
    entries: Mutex<HashMap<Key, Synced>>,
    settings: SyncSettings,
    workers: Arc<Semaphore>,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Told the domain whose sync finished, to reconcile it.
    finished: Option<UnboundedSender<ObjectRef<MailDomain>>>,
}

impl Default for SourceSyncs {
    fn default() -> Self {
        Self::new(SyncSettings::default(), None)
    }
}

/// The resource versions of a source's Secrets, in [`Source::secret_names`] order.
type Credentials = Vec<Option<String>>;

#[derive(Clone)]
struct Synced {
    source: Source,
    /// The domain (normalized) whose addresses it takes: another domain is another list.
    normalized: String,
    /// Bumped whenever the entry is replaced, so that a worker still asking for what it
    /// replaced records nothing.
    generation: u64,
    /// Its Secrets' versions when it was last asked: another version makes a sync due,
    /// unless what it reads of them is the same (`secrets_digest`).
    credentials: Credentials,
    /// A digest of what it was last asked with from Secrets (bind password, or the
    /// `Authorization` header; and the CA); `None` when a Secret could not be read.
    secrets_digest: Option<[u8; 32]>,
    in_force: Option<InForce>,
    /// The list in force's `ETag` (HTTP).
    etag: Option<String>,
    /// A list that synced but shrank past the limit.
    held: Option<Held>,
    /// When the last sync started; `None` before the first.
    attempted: Option<Timestamp>,
    error: Option<SourceError>,
    /// A worker is syncing it now.
    running: bool,
    /// Added to the refresh interval, so that sources created together are not all asked
    /// at once.
    jitter: Duration,
}

/// The list a successful sync gave.
#[derive(Clone, Debug, PartialEq)]
pub struct InForce {
    pub addresses: AddressList,
    pub at: Timestamp,
    /// What it skipped (`skipInvalid`), for status.
    pub skipped: Option<String>,
}

/// A list held back: it would have removed more than `recipients.maxShrink` allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub list: InForce,
    /// What the acceptance annotation names.
    pub id: String,
    /// Addresses of the list it would have replaced.
    pub from: usize,
    etag: Option<String>,
}

/// The annotation that applies held lists: the ids status shows, comma-separated.
pub const ACCEPT_SHRINK_ANNOTATION: &str = "mx-operator.io/accept-recipient-shrink";

/// The last success an earlier operator recorded in status, while none has come since
/// this one started: the gateway still holds that list.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlierSuccess {
    pub at: Timestamp,
    pub addresses: Option<i64>,
}

/// What a decision reads of one source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceState {
    pub kind: &'static str,
    /// "the directory ldap://..." or "the list at https://...".
    pub described: String,
    pub in_force: Option<InForce>,
    /// Only while `in_force` is `None`.
    pub earlier: Option<EarlierSuccess>,
    /// Why the last attempt failed.
    pub error: Option<SourceError>,
    /// A list held back because it shrank too far.
    pub held: Option<Held>,
    /// A worker is asking the source now.
    pub syncing: bool,
    /// When the next sync is due (or, while one runs, when to look again at the latest).
    pub next_in: Duration,
}

impl SourceState {
    /// The first sync since this operator started runs while the gateway holds the list
    /// an earlier operator recorded.
    pub fn first_sync_running(&self) -> bool {
        self.syncing
            && self.in_force.is_none()
            && self.earlier.is_some()
            && self.error.is_none()
            && self.held.is_none()
    }

    pub fn status(&self) -> RecipientSourceStatus {
        let in_force = self.in_force.as_ref();
        let earlier = self.earlier.as_ref();
        RecipientSourceStatus {
            source: self.kind.into(),
            addresses: in_force
                .map(|list| list.addresses.len() as i64)
                .or(earlier.and_then(|e| e.addresses)),
            last_success: in_force
                .map(|list| Time(list.at))
                .or(earlier.map(|e| Time(e.at))),
            reason: self.error.as_ref().map(|e| e.reason().to_string()),
            message: match &self.error {
                Some(error) => Some(error.to_string()),
                None => in_force.and_then(|list| list.skipped.clone()),
            },
            held: self.held.as_ref().map(|held| HeldSync {
                id: held.id.clone(),
                addresses: held.list.addresses.len() as i64,
                at: Time(held.list.at),
            }),
        }
    }
}

/// What a sync is started with, besides the source.
struct Job {
    key: Key,
    source: Source,
    generation: u64,
    normalized: String,
    /// The known Secrets' versions, and whether the interval has passed.
    credentials: Credentials,
    due: bool,
    shrink: MaxShrink,
    /// The size of the list the gateway holds when this operator has none in force yet.
    earlier_addresses: Option<usize>,
}

impl SourceSyncs {
    pub fn new(
        settings: SyncSettings,
        finished: Option<UnboundedSender<ObjectRef<MailDomain>>>,
    ) -> Self {
        Self {
            entries: Mutex::default(),
            workers: Arc::new(Semaphore::new(settings.workers.max(1))),
            namespaces: Mutex::default(),
            settings,
            finished,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Synced>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of each source of the domain. A source whose sync is due (none yet, the
    /// source or what it reads from its Secrets changed, or its refresh interval passed;
    /// sooner after a failure) is handed to a worker, unless `refused` says why it may not
    /// be asked; the domain is reconciled again when the worker is done.
    pub fn states(
        self: &Arc<Self>,
        domain: &MailDomain,
        reach: &Reach,
        normalized: &str,
        refused: impl Fn(&Source) -> Option<SourceError>,
    ) -> Vec<SourceState> {
        let namespace = domain.namespace().unwrap_or_default();
        let name = domain.name_any();
        let recipients = &domain.spec.recipients;
        let sources = Source::named(recipients);
        let accepted: Vec<&str> = domain
            .annotations()
            .get(ACCEPT_SHRINK_ANNOTATION)
            .map(|ids| ids.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let recorded = domain.status.as_ref().map(|s| &s.recipient_sources);
        let earlier = |kind: &str| {
            recorded
                .into_iter()
                .flatten()
                .filter(|r| r.source == kind)
                .find_map(|r| {
                    r.last_success.as_ref().map(|at| EarlierSuccess {
                        at: at.0,
                        addresses: r.addresses,
                    })
                })
        };
        let now = Timestamp::now();
        let mut states = Vec::with_capacity(sources.len());
        let mut jobs = vec![];
        {
            let mut entries = self.entries();
            for kind in Source::KINDS {
                if !sources.iter().any(|s| s.kind() == kind) {
                    entries.remove(&(namespace.clone(), name.clone(), kind));
                }
            }
            for source in sources {
                let key = (namespace.clone(), name.clone(), source.kind());
                let earlier = earlier(source.kind());
                let grew = !entries.contains_key(&key);
                let synced = entries
                    .entry(key.clone())
                    .and_modify(|synced| {
                        if synced.source != source || synced.normalized != normalized {
                            let generation = synced.generation + 1;
                            *synced = Synced::new(&key, source.clone(), normalized);
                            synced.generation = generation;
                        }
                    })
                    .or_insert_with(|| Synced::new(&key, source.clone(), normalized));
                let baseline = synced
                    .in_force
                    .as_ref()
                    .map(|list| list.addresses.len())
                    .or(earlier
                        .as_ref()
                        .and_then(|e| e.addresses)
                        .map(|n| n as usize));
                synced.apply_accepted(&accepted, &recipients.max_shrink, baseline);
                let credentials = source.credentials(&namespace, &reach.secrets);
                let next_in = synced.due_in(now, self.settings.min_refresh);
                if let Some(refusal) = refused(&source) {
                    // Not asked at all; a list it gave before it was refused stays in force.
                    synced.error = Some(refusal);
                    synced.attempted = Some(now);
                } else if !synced.running
                    && (next_in.is_none() || synced.credentials != credentials)
                {
                    synced.running = true;
                    jobs.push(Job {
                        key: key.clone(),
                        source: source.clone(),
                        generation: synced.generation,
                        normalized: normalized.to_string(),
                        credentials,
                        due: next_in.is_none(),
                        shrink: recipients.max_shrink.clone(),
                        earlier_addresses: baseline,
                    });
                }
                let next_in = match synced.running {
                    // Looked at again when the worker is done; this is a fallback.
                    true => self.settings.deadline,
                    false => synced
                        .due_in(now, self.settings.min_refresh)
                        .unwrap_or(RETRY_FAILED),
                };
                let mut state = synced.state(next_in);
                if state.in_force.is_none() {
                    state.earlier = earlier;
                }
                states.push(state);
                // Lists of domains deleted without a finalizer (a reconcile never sees
                // them go): dropped whenever the map grows, so it holds no more than the
                // live sources and those gone since the last new one.
                if grew {
                    entries.retain(|(namespace, name, _), _| {
                        reach
                            .domains
                            .get(&ObjectRef::new(name).within(namespace))
                            .is_some()
                    });
                }
            }
        }
        for job in jobs {
            let syncs = self.clone();
            let reach = reach.clone();
            tokio::spawn(async move { syncs.run(job, reach).await });
        }
        states
    }

    /// One sync on a worker: a place in the namespace's share, then in the pool; the
    /// whole sync bounded by the deadline.
    async fn run(self: Arc<Self>, job: Job, reach: Reach) {
        let share = {
            let mut namespaces = self
                .namespaces
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let per_namespace = self.settings.per_namespace.max(1);
            namespaces
                .entry(job.key.0.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(per_namespace)))
                .clone()
        };
        let outcome = async {
            let _share = share.acquire_owned().await.ok()?;
            let _worker = self.workers.clone().acquire_owned().await.ok()?;
            // Replaced while it waited for a worker: not asked at all.
            let known = self.entries().get(&job.key).cloned()?;
            if known.generation != job.generation {
                return None;
            }
            let sync = self.sync(&job, &known, &reach);
            Some(
                tokio::time::timeout(self.settings.deadline, sync)
                    .await
                    .unwrap_or_else(|_| {
                        Outcome::Failed(SourceError::TimedOut(format!(
                            "no complete answer within {} s",
                            self.settings.deadline.as_secs()
                        )))
                    }),
            )
        }
        .await;
        {
            let mut entries = self.entries();
            // Gone, or its source changed while it was asked: the answer is not its.
            let Some(synced) = entries
                .get_mut(&job.key)
                .filter(|synced| synced.generation == job.generation)
            else {
                return;
            };
            synced.running = false;
            if let Some(outcome) = outcome {
                synced.record(outcome, &job);
            }
        }
        let (namespace, name, _) = &job.key;
        if let Some(finished) = &self.finished {
            // A closed channel: the controller is stopping.
            let _ = finished.unbounded_send(ObjectRef::new(name).within(namespace));
        }
    }

    /// Reads the Secrets, and asks the source unless only their metadata changed.
    async fn sync(&self, job: &Job, known: &Synced, reach: &Reach) -> Outcome {
        let now = Timestamp::now();
        let (namespace, name, _) = &job.key;
        let query = match query(reach, namespace, &job.normalized, &job.source).await {
            Ok(query) => query,
            Err(error) => {
                return Outcome::Failed(error);
            }
        };
        let secrets_digest = query.secrets_digest();
        let same_secrets = known.secrets_digest == Some(secrets_digest);
        if same_secrets && !job.due {
            return Outcome::Unchanged;
        }
        // A list fetched with other credentials (another token's view) may differ: its
        // ETag is not asked with theirs.
        let etag = known
            .etag
            .clone()
            .filter(|_| same_secrets && known.in_force.is_some());
        let fetched = query.send(&reach.network, etag.as_deref()).await;
        // Whole seconds, as status shows it.
        let at = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let result =
            fetched.and_then(|fetched| match fetched {
                Fetched::List { extracted, etag } => extracted
                    .accepted(job.source.skip_invalid())
                    .map(|extracted| {
                        Some((
                            InForce {
                                skipped: extracted.skipped(),
                                addresses: AddressList::of_normalized(extracted.addresses),
                                at,
                            },
                            etag,
                        ))
                    }),
                Fetched::NotModified => Ok(None),
            });
        if let Err(error) = &result {
            tracing::info!(
                namespace = %namespace, maildomain = %name, source = job.source.kind(),
                url = redacted(job.source.url()), reason = error.reason(), %error,
                "a recipient source sync failed"
            );
        }
        Outcome::Asked {
            secrets_digest,
            at,
            result,
        }
    }

    /// Drops a domain's lists (it is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries()
            .retain(|(ns, n, _), _| (ns.as_str(), n.as_str()) != (namespace, name));
    }
}

/// How a worker's sync ended.
enum Outcome {
    /// Only the Secrets' metadata changed (a label, a controller's touch): not asked.
    Unchanged,
    /// The source could not be asked (a Secret missing or not opted in, the deadline).
    Failed(SourceError),
    /// The source was asked: a new list, `None` for not modified, or why it failed.
    Asked {
        secrets_digest: [u8; 32],
        at: Timestamp,
        result: Result<Option<(InForce, Option<String>)>, SourceError>,
    },
}

impl Synced {
    fn new(key: &Key, source: Source, normalized: &str) -> Self {
        Self {
            source,
            normalized: normalized.to_string(),
            generation: 0,
            credentials: vec![],
            secrets_digest: None,
            in_force: None,
            etag: None,
            held: None,
            attempted: None,
            error: None,
            running: false,
            jitter: jitter(key),
        }
    }

    /// How long until the next sync is due; `None` when it is due now.
    fn due_in(&self, now: Timestamp, floor: Duration) -> Option<Duration> {
        let attempted = self.attempted?;
        let every = self.source.refresh(floor) + self.jitter;
        let every = match self.error {
            Some(_) => every.min(RETRY_FAILED),
            None => every,
        };
        let since = Duration::try_from(now.duration_since(attempted)).unwrap_or_default();
        every.checked_sub(since).filter(|left| !left.is_zero())
    }

    fn state(&self, next_in: Duration) -> SourceState {
        SourceState {
            kind: self.source.kind(),
            described: self.source.described(),
            in_force: self.in_force.clone(),
            earlier: None,
            error: self.error.clone(),
            held: self.held.clone(),
            syncing: self.running,
            next_in,
        }
    }

    /// Applies a held list the annotation names, or one the limit no longer holds.
    fn apply_accepted(&mut self, accepted: &[&str], limit: &MaxShrink, baseline: Option<usize>) {
        let Some(held) = &self.held else {
            return;
        };
        let still_held = baseline.is_some_and(|from| limit.holds(from, held.list.addresses.len()));
        if (accepted.contains(&held.id.as_str()) || !still_held)
            && let Some(held) = self.held.take()
        {
            self.in_force = Some(held.list);
            self.etag = held.etag;
        }
    }

    /// Takes what a worker's sync gave.
    fn record(&mut self, outcome: Outcome, job: &Job) {
        // The versions it was asked with, whatever came of it: another reconcile with
        // them is no reason to ask again before the interval.
        self.credentials = job.credentials.clone();
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Failed(error) => {
                self.attempted = Some(Timestamp::now());
                self.secrets_digest = None;
                self.error = Some(error);
            }
            Outcome::Asked {
                secrets_digest,
                at,
                result,
            } => {
                self.secrets_digest = Some(secrets_digest);
                // The interval counts from the end of a sync: a slow one is not asked
                // again the moment it ends.
                self.attempted = Some(Timestamp::now().max(at));
                self.error = None;
                match result {
                    Ok(Some((list, etag))) => {
                        let from = self
                            .in_force
                            .as_ref()
                            .map(|list| list.addresses.len())
                            .or(job.earlier_addresses);
                        // A first list that is empty is held too: a wrong base DN, filter or
                        // ACL would otherwise refuse every user with 550.
                        let from = match from {
                            None if list.addresses.is_empty() => Some(0),
                            from => {
                                from.filter(|from| job.shrink.holds(*from, list.addresses.len()))
                            }
                        };
                        match from {
                            Some(from) => {
                                self.held = Some(Held {
                                    id: held_id(&list.addresses),
                                    list,
                                    from,
                                    etag,
                                });
                            }
                            None => {
                                self.in_force = Some(list);
                                self.etag = etag;
                                self.held = None;
                            }
                        }
                    }
                    // The list in force is the server's list now.
                    Ok(None) => {
                        if let Some(in_force) = self.in_force.as_mut() {
                            in_force.at = at;
                        }
                        self.held = None;
                    }
                    Err(error) => self.error = Some(error),
                }
            }
        }
    }
}

/// Names a held list: the same list synced again keeps its id (the first 12 hex digits of
/// its fingerprint).
fn held_id(addresses: &AddressList) -> String {
    let fingerprint = crate::recipients::fingerprint_of(addresses.iter());
    let hex = fingerprint.trim_start_matches("sha256:");
    hex.chars().take(12).collect()
}

/// Up to a tenth of a minute, the same for a source every time: spreads sources that
/// were created together.
fn jitter(key: &Key) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    Duration::from_millis(hasher.finish() % 6_000)
}

/// What a source is asked, its credentials and CA read from their Secrets.
enum Query {
    Directory(DirectoryQuery),
    List(ListQuery),
}

impl Query {
    /// What it carries from Secrets, digested: the same after a change of a Secret's
    /// metadata only.
    fn secrets_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let (first, second) = match self {
            Self::Directory(query) => (Some(&query.password), query.ca_pem.as_ref()),
            Self::List(query) => (query.authorization.as_ref(), query.ca_pem.as_ref()),
        };
        let mut hasher = Sha256::new();
        for part in [first, second] {
            // Absent and empty differ; a length prefix keeps the parts apart.
            match part {
                Some(text) => {
                    hasher.update((text.len() as u64 + 1).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
                None => hasher.update(0u64.to_be_bytes()),
            }
        }
        hasher.finalize().into()
    }

    /// Asks; `etag` is the list in force's (HTTP).
    async fn send(
        self,
        network: &crate::net::Network,
        etag: Option<&str>,
    ) -> Result<Fetched, SourceError> {
        match self {
            Self::Directory(query) => {
                network
                    .directory
                    .search(&query)
                    .await
                    .map(|extracted| Fetched::List {
                        extracted,
                        etag: None,
                    })
            }
            Self::List(query) => network.lists.fetch(&query, etag).await,
        }
    }
}

/// What `source` is asked, with its credentials and CA from their Secrets.
async fn query(
    reach: &Reach,
    namespace: &str,
    normalized: &str,
    source: &Source,
) -> Result<Query, SourceError> {
    let mut secrets = Secrets::new(reach, namespace);
    Ok(match source {
        Source::Ldap(ldap) => {
            Query::Directory(directory_query(&mut secrets, normalized, ldap).await?)
        }
        Source::Http(http) => Query::List(list_query(&mut secrets, normalized, http).await?),
    })
}

/// The search `source` asks for.
async fn directory_query(
    secrets: &mut Secrets<'_>,
    normalized: &str,
    source: &LdapSource,
) -> Result<DirectoryQuery, SourceError> {
    let password = secrets.text(&source.password_secret_ref).await?;
    let ca_pem = secrets.optional(source.ca_secret_ref.as_ref()).await?;
    Ok(DirectoryQuery {
        url: source.url.clone(),
        start_tls: source.start_tls,
        ca_pem,
        bind_dn: source.bind_dn.clone(),
        password: one_line(&password),
        base_dn: source.base_dn.clone(),
        filter: source.filter.clone(),
        attributes: source.attributes.clone(),
        page_size: source.page_size,
        timeout: SOURCE_TIMEOUT,
        domain: normalized.to_string(),
        limit: MAX_SOURCE_ADDRESSES,
    })
}

/// The request `source` asks for.
async fn list_query(
    secrets: &mut Secrets<'_>,
    normalized: &str,
    source: &HttpSource,
) -> Result<ListQuery, SourceError> {
    let ca_pem = secrets.optional(source.ca_secret_ref.as_ref()).await?;
    let token = secrets
        .optional(source.bearer_token_secret_ref.as_ref())
        .await?;
    let mut authorization = token.map(|token| format!("Bearer {}", one_line(&token)));
    if let Some(basic) = &source.basic_auth_secret_ref {
        let key = |key: &str| KeyRef {
            name: basic.name.clone(),
            key: key.into(),
        };
        let user = one_line(&secrets.text(&key("username")).await?);
        let password = one_line(&secrets.text(&key("password")).await?);
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        authorization = Some(format!("Basic {pair}"));
    }
    Ok(ListQuery {
        url: source.url.clone(),
        ca_pem,
        authorization,
        format: source.format,
        timeout: LIST_TIMEOUT,
        domain: normalized.to_string(),
        limit: MAX_SOURCE_ADDRESSES,
        max_bytes: MAX_LIST_BYTES,
    })
}

/// A credential as a Secret holds it, without the line break an editor leaves at its end.
fn one_line(text: &str) -> String {
    text.trim_end_matches(['\r', '\n']).to_string()
}

/// The Secrets one source's query reads, each read once (a password and a CA, or a
/// user name and a password, are often keys of the same Secret).
struct Secrets<'a> {
    api: Api<Secret>,
    cached: &'a Store<PartialObjectMeta<Secret>>,
    namespace: &'a str,
    read: HashMap<String, SourceSecret>,
}

impl<'a> Secrets<'a> {
    fn new(reach: &'a Reach, namespace: &'a str) -> Self {
        Self {
            api: Api::namespaced(reach.client.clone(), namespace),
            cached: &reach.secrets,
            namespace,
            read: HashMap::new(),
        }
    }

    async fn optional(
        &mut self,
        reference: Option<&KeyRef>,
    ) -> Result<Option<String>, SourceError> {
        match reference {
            Some(reference) => Ok(Some(self.text(reference).await?)),
            None => Ok(None),
        }
    }

    async fn text(&mut self, reference: &KeyRef) -> Result<String, SourceError> {
        let (namespace, name) = (self.namespace, &reference.name);
        if !self.read.contains_key(name) {
            let read = read_source_secret(&self.api, self.cached, namespace, name)
                .await
                .map_err(|error| {
                    SourceError::CredentialsMissing(format!(
                        "Secret {namespace}/{name} could not be read: {error}"
                    ))
                })?;
            self.read.insert(name.clone(), read);
        }
        let secret = match self.read.get(name) {
            Some(SourceSecret::Readable(secret)) => secret,
            Some(SourceSecret::NotOptedIn(_)) => {
                return Err(SourceError::SecretNotAllowed(not_opted_in(namespace, name)));
            }
            Some(SourceSecret::Missing) | None => {
                return Err(SourceError::CredentialsMissing(format!(
                    "Secret {namespace}/{name} does not exist"
                )));
            }
        };
        let text = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
        text.ok_or_else(|| {
            SourceError::CredentialsMissing(format!(
                "Secret {namespace}/{name} has no key {:?} (or it is not UTF-8 text)",
                reference.key
            ))
        })
    }
}

/// A Secret as recipient sources (and `recipients.secretRef` lists) may see it.
pub enum SourceSecret {
    Missing,
    /// Not labelled [`SOURCE_SECRET_LABEL`]: its data is not kept, and not read at all
    /// where the cache already knew.
    NotOptedIn(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta),
    Readable(Secret),
}

/// Reads Secret `namespace`/`name` for a recipient source or list: the cached labels are
/// asked first, so a Secret that does not opt in is not read.
pub async fn read_source_secret(
    api: &Api<Secret>,
    cached: &Store<PartialObjectMeta<Secret>>,
    namespace: &str,
    name: &str,
) -> Result<SourceSecret, kube::Error> {
    if let Some(cached) = cached.get(&ObjectRef::new(name).within(namespace))
        && !secret_opted_in(&cached.metadata)
    {
        return Ok(SourceSecret::NotOptedIn(cached.metadata.clone()));
    }
    Ok(match api.get_opt(name).await? {
        None => SourceSecret::Missing,
        Some(secret) if !secret_opted_in(&secret.metadata) => {
            SourceSecret::NotOptedIn(secret.metadata)
        }
        Some(secret) => SourceSecret::Readable(secret),
    })
}

/// Why a Secret is not read: it does not carry the label.
pub fn not_opted_in(namespace: &str, name: &str) -> String {
    format!(
        "Secret {namespace}/{name} is not labelled {SOURCE_SECRET_LABEL}=true, so recipient sources may not read it"
    )
}

/// Whether a Secret says recipient sources may read it.
fn secret_opted_in(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SOURCE_SECRET_LABEL))
        .is_some_and(|value| value == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(refresh: &str, attempted: i64, failed: bool) -> Synced {
        let source: LdapSource = serde_json::from_value(serde_json::json!({
            "url": "ldap://ldap.example.com", "bindDN": "cn=x", "baseDN": "dc=example",
            "passwordSecretRef": {"name": "ldap", "key": "password"},
            "refreshInterval": refresh,
        }))
        .unwrap();
        Synced {
            attempted: Some(Timestamp::from_second(attempted).unwrap()),
            error: failed.then(|| SourceError::Unreachable("refused".into())),
            jitter: Duration::ZERO,
            ..Synced::new(&key(), Source::Ldap(source), "example.com")
        }
    }

    fn key() -> Key {
        ("mail".into(), "example-com".into(), "ldap")
    }

    fn list(count: usize) -> InForce {
        let addresses = (0..count).map(|i| format!("u{i}@example.com")).collect();
        InForce {
            addresses: AddressList::of_normalized(addresses),
            at: Timestamp::from_second(2_000).unwrap(),
            skipped: None,
        }
    }

    #[test]
    fn before_a_first_success_status_shows_the_one_an_earlier_operator_recorded() {
        let at = Timestamp::from_second(1_000).unwrap();
        let state = SourceState {
            kind: "ldap",
            described: "the directory ldap://ldap.example.com".into(),
            in_force: None,
            earlier: Some(EarlierSuccess {
                at,
                addresses: Some(3_000),
            }),
            error: Some(SourceError::Unreachable("refused".into())),
            held: None,
            syncing: false,
            next_in: RETRY_FAILED,
        };
        let status = state.status();
        assert_eq!(status.last_success, Some(Time(at)));
        assert_eq!(status.addresses, Some(3_000));
        assert_eq!(status.reason.as_deref(), Some("Unreachable"));
        let synced = SourceState {
            in_force: Some(InForce {
                addresses: AddressList::of_normalized(["a@example.com".to_string()].into()),
                at: Timestamp::from_second(2_000).unwrap(),
                skipped: None,
            }),
            earlier: None,
            error: None,
            ..state
        };
        assert_eq!(synced.status().addresses, Some(1));
    }

    #[test]
    fn the_secrets_digest_changes_with_what_is_read_from_secrets_only() {
        let list = |authorization: Option<&str>, ca: Option<&str>, url: &str| {
            Query::List(ListQuery {
                url: url.into(),
                ca_pem: ca.map(String::from),
                authorization: authorization.map(String::from),
                format: Default::default(),
                timeout: SOURCE_TIMEOUT,
                domain: "example.com".into(),
                limit: 1,
                max_bytes: 1,
            })
            .secrets_digest()
        };
        let url = "https://lists.example.com/users";
        let token = list(Some("Bearer a"), None, url);
        assert_eq!(
            token,
            list(Some("Bearer a"), None, "https://other.example/")
        );
        assert_ne!(token, list(Some("Bearer b"), None, url));
        assert_ne!(token, list(None, Some("Bearer a"), url), "parts kept apart");
        assert_ne!(list(None, None, url), list(Some(""), None, url));
    }

    #[test]
    fn a_sync_is_due_at_its_interval_and_sooner_after_a_failure() {
        let at = |second: i64| Timestamp::from_second(second).unwrap();
        let table = [
            ("15m", 1_000, false, 1_000, Some(900)),
            ("15m", 1_000, false, 1_899, Some(1)),
            ("15m", 1_000, false, 1_900, None),
            ("15m", 1_000, true, 1_030, Some(30)),
            ("15m", 1_000, true, 1_060, None),
            ("20s", 1_000, true, 1_010, Some(10)),
        ];
        for (refresh, attempted, failed, now, due) in table {
            assert_eq!(
                synced(refresh, attempted, failed).due_in(at(now), Duration::from_secs(10)),
                due.map(Duration::from_secs),
                "{refresh} {attempted} {failed} {now}"
            );
        }
        let never = Synced::new(&key(), synced("15m", 0, false).source, "example.com");
        assert_eq!(
            never.due_in(at(1), Duration::ZERO),
            None,
            "never synced: due"
        );
    }

    #[test]
    fn the_operators_floor_raises_a_short_refresh_interval() {
        let at = |second: i64| Timestamp::from_second(second).unwrap();
        let synced = synced("20s", 1_000, false);
        let floor = Duration::from_secs(60);
        assert_eq!(
            synced.due_in(at(1_030), floor),
            Some(Duration::from_secs(30))
        );
        assert_eq!(synced.due_in(at(1_060), floor), None);
    }

    #[test]
    fn jitter_is_the_same_for_a_source_and_under_six_seconds() {
        let other = ("mail".to_string(), "other".to_string(), "http");
        assert_eq!(jitter(&key()), jitter(&key()));
        assert!(jitter(&key()) < Duration::from_secs(6));
        assert!(jitter(&other) < Duration::from_secs(6));
    }

    fn job(earlier: Option<usize>) -> Job {
        Job {
            key: key(),
            source: synced("15m", 0, false).source,
            generation: 0,
            normalized: "example.com".into(),
            credentials: vec![],
            due: true,
            shrink: MaxShrink::default(),
            earlier_addresses: earlier,
        }
    }

    fn asked(list: Option<InForce>) -> Outcome {
        Outcome::Asked {
            secrets_digest: [0; 32],
            at: Timestamp::from_second(3_000).unwrap(),
            result: Ok(list.map(|list| (list, None))),
        }
    }

    #[test]
    fn a_list_that_shrinks_too_far_is_held_and_the_one_in_force_keeps_serving() {
        // (in force, earlier in status, synced, held)
        let table = [
            (Some(1_000), None, 10, true),
            (Some(1_000), None, 0, true),
            (Some(5), None, 0, true),
            (Some(1_000), None, 901, false),
            (Some(1_000), None, 899, true),
            (Some(150), None, 60, false),
            (Some(150), None, 50, true),
            (None, Some(1_000), 10, true),
            (None, None, 10, false),
            (None, None, 0, true),
            (Some(10), None, 2_000, false),
        ];
        for (in_force, earlier, synced_count, held) in table {
            let mut entry = synced("15m", 0, false);
            entry.in_force = in_force.map(list);
            entry.record(asked(Some(list(synced_count))), &job(earlier));
            let what = format!("{in_force:?} {earlier:?} → {synced_count}");
            assert_eq!(entry.held.is_some(), held, "{what}");
            let serving = entry.in_force.as_ref().map(|l| l.addresses.len());
            match held {
                true => {
                    assert_eq!(serving, in_force, "{what}");
                    let from = in_force.or(earlier).unwrap_or(0);
                    assert_eq!(entry.held.as_ref().unwrap().from, from, "{what}");
                }
                false => assert_eq!(serving, Some(synced_count), "{what}"),
            }
        }
    }

    #[test]
    fn a_held_list_is_applied_when_named_or_when_the_limit_is_raised_or_the_list_recovers() {
        let held = || {
            let mut entry = synced("15m", 0, false);
            entry.in_force = Some(list(1_000));
            entry.record(asked(Some(list(10))), &job(None));
            entry
        };
        let limit = MaxShrink::default();
        let id = held().held.unwrap().id;
        assert_eq!(id, held().held.unwrap().id, "the same list keeps its id");

        let mut named = held();
        named.apply_accepted(&["other", &id], &limit, Some(1_000));
        assert_eq!(named.in_force.unwrap().addresses.len(), 10);
        assert!(named.held.is_none());

        let mut not_named = held();
        not_named.apply_accepted(&["other"], &limit, Some(1_000));
        assert_eq!(not_named.in_force.unwrap().addresses.len(), 1_000);

        let mut raised = held();
        let everything = MaxShrink {
            percent: 100,
            addresses: 0,
        };
        raised.apply_accepted(&[], &everything, Some(1_000));
        assert_eq!(raised.in_force.unwrap().addresses.len(), 10);

        let mut recovered = held();
        recovered.record(asked(None), &job(None));
        assert!(
            recovered.held.is_none(),
            "not modified: the list in force is current"
        );
        assert_eq!(recovered.in_force.unwrap().addresses.len(), 1_000);
    }

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        let table = [
            (
                "https://lists.example.com/users.txt",
                "https://lists.example.com/users.txt",
            ),
            (
                "https://lists.example.com/u?token=abc",
                "https://lists.example.com/u…",
            ),
            (
                "https://me:pw@lists.example.com:8443/u",
                "https://lists.example.com:8443/u…",
            ),
            ("ldaps://ldap.example.com", "ldaps://ldap.example.com"),
            ("https://h.example/#x", "https://h.example/…"),
        ];
        for (url, shown) in table {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }

    #[test]
    fn credentials_in_the_clear_are_refused_unless_the_source_says_insecure() {
        let ldap =
            |url: &str, start_tls: bool, insecure: bool| {
                Source::Ldap(serde_json::from_value(serde_json::json!({
                "url": url, "bindDN": "cn=x", "baseDN": "dc=example", "startTLS": start_tls,
                "passwordSecretRef": {"name": "ldap", "key": "password"}, "insecure": insecure,
            })).unwrap())
            };
        let http = |url: &str, token: bool, insecure: bool| {
            let mut source = serde_json::json!({"url": url, "insecure": insecure});
            if token {
                source["bearerTokenSecretRef"] = serde_json::json!({"name": "t", "key": "token"});
            }
            Source::Http(serde_json::from_value(source).unwrap())
        };
        let table = [
            (ldap("ldap://ldap.example.com", false, false), true),
            (ldap("ldap://ldap.example.com", true, false), false),
            (ldap("ldap://ldap.example.com", false, true), false),
            (ldap("ldaps://ldap.example.com", false, false), false),
            (http("http://lists.example.com/u", true, false), true),
            (http("http://lists.example.com/u", false, false), false),
            (http("http://lists.example.com/u", true, true), false),
            (http("https://lists.example.com/u", true, false), false),
        ];
        for (source, refused) in table {
            let found = source.insecure_credentials();
            assert_eq!(found.is_some(), refused, "{source:?}");
            if let Some(error) = found {
                assert_eq!(error.reason(), "InsecureCredentials");
            }
        }
    }
}
