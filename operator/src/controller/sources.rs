//! The recipient sources the operator syncs itself (`spec.recipients.ldap` and `http`),
//! asked when a sync is due. The list in force is the last sync that succeeded: a failed
//! one leaves it serving (and says why in status), and `maxAge` counts from its time; an
//! operator that starts while a source is down counts from the success its predecessor
//! recorded in status.

use super::error::Error;
use crate::api::domain::{
    HttpSource, LdapSource, RecipientSourceStatus, Recipients, refresh_every,
};
use crate::api::{KeyRef, MailDomain};
use crate::net::http::{Fetched, ListQuery};
use crate::net::ldap::DirectoryQuery;
use crate::recipients::AddressList;
use crate::recipients::extract::SourceError;
use base64::Engine;
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
use std::sync::Mutex;
use std::time::Duration;

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

/// What a sync reaches: the API server (Secrets), the network, the MailDomains (to drop
/// the lists of those gone), and the Secrets' versions (a changed credential makes a sync
/// due).
pub struct Reach<'a> {
    pub client: &'a Client,
    pub network: &'a crate::net::Network,
    pub domains: &'a Store<MailDomain>,
    pub secrets: &'a Store<PartialObjectMeta<Secret>>,
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

    fn url(&self) -> &str {
        match self {
            Self::Ldap(ldap) => &ldap.url,
            Self::Http(http) => &http.url,
        }
    }

    fn refresh(&self) -> Duration {
        refresh_every(match self {
            Self::Ldap(ldap) => &ldap.refresh_interval,
            Self::Http(http) => &http.refresh_interval,
        })
    }

    fn skip_invalid(&self) -> bool {
        match self {
            Self::Ldap(ldap) => ldap.skip_invalid,
            Self::Http(http) => http.skip_invalid,
        }
    }

    /// The versions of the Secrets it is asked with, as the cache holds them (`None`: not
    /// there).
    fn credentials(
        &self,
        namespace: &str,
        secrets: &Store<PartialObjectMeta<Secret>>,
    ) -> Credentials {
        let names: Vec<&str> = match self {
            Self::Ldap(ldap) => ldap.secret_names().collect(),
            Self::Http(http) => http.secret_names().collect(),
        };
        names
            .into_iter()
            .map(|name| {
                let cached = secrets.get(&ObjectRef::new(name).within(namespace));
                cached.and_then(|secret| secret.resource_version())
            })
            .collect()
    }

    /// "LDAP ldaps://..." or "HTTP https://...".
    fn described(&self) -> String {
        match self {
            Self::Ldap(ldap) => format!("the directory {}", ldap.url),
            Self::Http(http) => format!("the list at {}", http.url),
        }
    }
}

/// The sync state of each MailDomain (`namespace`, `name`) source (`kind`).
#[derive(Default)]
pub struct SourceSyncs(Mutex<HashMap<(String, String, &'static str), Synced>>);

/// The resource versions of a source's Secrets, in [`Source::credentials`] order.
type Credentials = Vec<Option<String>>;

#[derive(Clone)]
struct Synced {
    source: Source,
    /// Its Secrets' versions when it was last asked: another version makes a sync due,
    /// unless what it reads of them is the same (`secrets_digest`).
    credentials: Credentials,
    /// A digest of what it was last asked with from Secrets (bind password, or the
    /// `Authorization` header; and the CA); `None` when a Secret could not be read.
    secrets_digest: Option<[u8; 32]>,
    in_force: Option<InForce>,
    /// The list in force's `ETag` (HTTP).
    etag: Option<String>,
    attempted: Timestamp,
    error: Option<SourceError>,
}

/// The list a successful sync gave.
#[derive(Clone, Debug, PartialEq)]
pub struct InForce {
    pub addresses: AddressList,
    pub at: Timestamp,
    /// What it skipped (`skipInvalid`), for status.
    pub skipped: Option<String>,
}

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
    /// When the next sync is due.
    pub next_in: Duration,
}

impl SourceState {
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
        }
    }
}

impl SourceSyncs {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String, &'static str), Synced>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Syncs each source of the domain whose sync is due (none yet, the source or what it
    /// reads from its Secrets changed, or its refresh interval passed; sooner after a
    /// failure), and returns their states.
    pub async fn sync(
        &self,
        domain: &MailDomain,
        reach: &Reach<'_>,
        namespace: &str,
        normalized: &str,
    ) -> Result<Vec<SourceState>, Error> {
        let name = domain.name_any();
        let sources = Source::named(&domain.spec.recipients);
        {
            let mut entries = self.entries();
            for kind in Source::KINDS {
                if !sources.iter().any(|s| s.kind() == kind) {
                    entries.remove(&(namespace.to_string(), name.clone(), kind));
                }
            }
        }
        let mut states = Vec::with_capacity(sources.len());
        let recorded = domain.status.as_ref().map(|s| &s.recipient_sources);
        for source in sources {
            let key = (namespace.to_string(), name.clone(), source.kind());
            let mut state = self.sync_one(reach, key, source, normalized).await?;
            if state.in_force.is_none() {
                let recorded = recorded.into_iter().flatten();
                state.earlier = recorded.filter(|r| r.source == state.kind).find_map(|r| {
                    r.last_success.as_ref().map(|at| EarlierSuccess {
                        at: at.0,
                        addresses: r.addresses,
                    })
                });
            }
            states.push(state);
        }
        Ok(states)
    }

    async fn sync_one(
        &self,
        reach: &Reach<'_>,
        key: (String, String, &'static str),
        source: Source,
        normalized: &str,
    ) -> Result<SourceState, Error> {
        let now = Timestamp::now();
        let known = self
            .entries()
            .get(&key)
            .cloned()
            .filter(|known| known.source == source);
        let credentials = source.credentials(&key.0, reach.secrets);
        if let Some(known) = &known
            && known.credentials == credentials
            && let Some(next_in) = due_in(known, now)
        {
            return Ok(state(known, next_in));
        }
        let query = match query(reach, &key.0, normalized, &source).await {
            Ok(query) => Ok(query),
            Err(Unready::Missing(missing)) => Err(missing),
            Err(Unready::Api(error)) => return Err(error),
        };
        let secrets_digest = query.as_ref().ok().map(Query::secrets_digest);
        let same_secrets = known
            .as_ref()
            .filter(|known| secrets_digest.is_some() && known.secrets_digest == secrets_digest);
        // Only the Secrets' metadata changed (a label, a controller's touch): no sync.
        if let Some(known) = same_secrets
            && let Some(next_in) = due_in(known, now)
        {
            let known = Synced {
                credentials,
                ..known.clone()
            };
            let state = state(&known, next_in);
            self.entries().insert(key, known);
            return Ok(state);
        }
        // A list fetched with other credentials (another token's view) may differ: its ETag
        // is not asked with theirs.
        let etag = same_secrets
            .filter(|k| k.in_force.is_some())
            .and_then(|k| k.etag.clone());
        let fetched = match query {
            Ok(query) => query.send(reach.network, etag.as_deref()).await,
            Err(missing) => Err(missing),
        };
        let mut synced = Synced {
            source: source.clone(),
            credentials,
            secrets_digest,
            // It came from this source: it stays in force through a credentials change.
            in_force: known.as_ref().and_then(|k| k.in_force.clone()),
            etag,
            attempted: now,
            error: None,
        };
        // Whole seconds, as status shows it.
        let at = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let accepted = fetched.and_then(|fetched| match fetched {
            Fetched::List { extracted, etag } => extracted
                .accepted(source.skip_invalid())
                .map(|extracted| Some((extracted, etag))),
            Fetched::NotModified => Ok(None),
        });
        match accepted {
            Ok(Some((extracted, etag))) => {
                synced.in_force = Some(InForce {
                    skipped: extracted.skipped(),
                    addresses: AddressList::of_normalized(extracted.addresses),
                    at,
                });
                synced.etag = etag;
            }
            Ok(None) => {
                if let Some(in_force) = synced.in_force.as_mut() {
                    in_force.at = at;
                }
            }
            Err(error) => {
                tracing::info!(url = source.url(), reason = error.reason(), %error, "a recipient source sync failed");
                synced.error = Some(error);
            }
        }
        let next_in = due_in(&synced, now).unwrap_or(RETRY_FAILED);
        let state = state(&synced, next_in);
        let mut entries = self.entries();
        // Lists of domains deleted without a finalizer (a reconcile never sees them go):
        // dropped whenever the map grows, so it holds no more than the live sources and
        // those gone since the last new one, and a refresh costs no pass over it.
        if entries.insert(key, synced).is_none() {
            entries.retain(|(namespace, name, _), _| {
                reach
                    .domains
                    .get(&ObjectRef::new(name).within(namespace))
                    .is_some()
            });
        }
        Ok(state)
    }

    /// Drops a domain's lists (it is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries()
            .retain(|(ns, n, _), _| (ns.as_str(), n.as_str()) != (namespace, name));
    }
}

/// How long until the next sync of `synced` is due; `None` when it is due now.
fn due_in(synced: &Synced, now: Timestamp) -> Option<Duration> {
    let every = match synced.error {
        Some(_) => synced.source.refresh().min(RETRY_FAILED),
        None => synced.source.refresh(),
    };
    let since = Duration::try_from(now.duration_since(synced.attempted)).unwrap_or_default();
    every.checked_sub(since).filter(|left| !left.is_zero())
}

fn state(synced: &Synced, next_in: Duration) -> SourceState {
    SourceState {
        kind: synced.source.kind(),
        described: synced.source.described(),
        in_force: synced.in_force.clone(),
        earlier: None,
        error: synced.error.clone(),
        next_in,
    }
}

/// Why a source could not be asked: the API server failed (the reconcile is retried), or a
/// Secret or key it names is missing (a status reason).
enum Unready {
    Api(Error),
    Missing(SourceError),
}

impl From<kube::Error> for Unready {
    fn from(error: kube::Error) -> Self {
        Self::Api(error.into())
    }
}

impl From<SourceError> for Unready {
    fn from(missing: SourceError) -> Self {
        Self::Missing(missing)
    }
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
    reach: &Reach<'_>,
    namespace: &str,
    normalized: &str,
    source: &Source,
) -> Result<Query, Unready> {
    let mut secrets = Secrets::new(reach.client, namespace);
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
) -> Result<DirectoryQuery, Unready> {
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
) -> Result<ListQuery, Unready> {
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
    namespace: &'a str,
    read: HashMap<String, Option<Secret>>,
}

impl<'a> Secrets<'a> {
    fn new(client: &Client, namespace: &'a str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace,
            read: HashMap::new(),
        }
    }

    async fn optional(&mut self, reference: Option<&KeyRef>) -> Result<Option<String>, Unready> {
        match reference {
            Some(reference) => Ok(Some(self.text(reference).await?)),
            None => Ok(None),
        }
    }

    async fn text(&mut self, reference: &KeyRef) -> Result<String, Unready> {
        let (namespace, name) = (self.namespace, &reference.name);
        if !self.read.contains_key(name) {
            let secret = self.api.get_opt(name).await?;
            self.read.insert(name.clone(), secret);
        }
        let Some(secret) = self.read.get(name).and_then(Option::as_ref) else {
            return Err(SourceError::CredentialsMissing(format!(
                "Secret {namespace}/{name} does not exist"
            ))
            .into());
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
            .into()
        })
    }
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
            source: Source::Ldap(source),
            credentials: vec![],
            secrets_digest: None,
            in_force: None,
            etag: None,
            attempted: Timestamp::from_second(attempted).unwrap(),
            error: failed.then(|| SourceError::Unreachable("refused".into())),
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
                due_in(&synced(refresh, attempted, failed), at(now)),
                due.map(Duration::from_secs),
                "{refresh} {attempted} {failed} {now}"
            );
        }
    }
}
