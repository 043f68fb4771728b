//! The directories MailDomains name (`spec.recipients.ldap`), searched when a sync is due.
//! The list in force is the last search that succeeded: a failed one leaves it serving
//! (and says why in status), and `maxAge` counts from its time.

use super::context::{Context, Error};
use crate::api::domain::{LdapSource, RecipientSourceStatus};
use crate::api::{KeyRef, MailDomain};
use crate::net::ldap::DirectoryQuery;
use crate::recipients::ldap::DirectoryError;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most addresses one directory may give a domain: the operator holds them in memory.
pub const MAX_DIRECTORY_ADDRESSES: usize = 1_000_000;

/// Longest a connection or one of its operations may wait for the directory.
const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed search is tried again this soon (or at the refresh interval, if shorter).
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// The sync state of each MailDomain (`namespace`, `name`) that names a directory.
#[derive(Default)]
pub struct DirectorySyncs(Mutex<HashMap<(String, String), Synced>>);

#[derive(Clone)]
struct Synced {
    source: LdapSource,
    in_force: Option<InForce>,
    attempted: Timestamp,
    error: Option<DirectoryError>,
}

/// The list a successful search gave.
#[derive(Clone, Debug, PartialEq)]
pub struct InForce {
    pub addresses: Arc<BTreeSet<String>>,
    pub at: Timestamp,
    /// What it skipped (`skipInvalid`), for status.
    pub skipped: Option<String>,
}

/// What a decision reads of a domain's directory.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectoryState {
    pub url: String,
    pub in_force: Option<InForce>,
    /// Why the last attempt failed.
    pub error: Option<DirectoryError>,
    /// When the next search is due.
    pub next_in: Duration,
}

impl DirectoryState {
    pub fn status(&self) -> RecipientSourceStatus {
        let in_force = self.in_force.as_ref();
        RecipientSourceStatus {
            source: "ldap".into(),
            addresses: in_force.map(|list| list.addresses.len() as i64),
            last_success: in_force.map(|list| Time(list.at)),
            reason: self.error.as_ref().map(|e| e.reason().to_string()),
            message: match &self.error {
                Some(error) => Some(error.to_string()),
                None => in_force.and_then(|list| list.skipped.clone()),
            },
        }
    }
}

impl DirectorySyncs {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Synced>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Searches the domain's directory if a sync is due (none yet, the source changed, or
    /// its refresh interval passed; sooner after a failure), and returns its state. `None`
    /// when the domain names no directory.
    pub async fn sync(
        &self,
        domain: &MailDomain,
        ctx: &Context,
        namespace: &str,
        normalized: &str,
    ) -> Result<Option<DirectoryState>, Error> {
        let key = (namespace.to_string(), domain.name_any());
        let Some(source) = &domain.spec.recipients.ldap else {
            self.forget(namespace, &key.1);
            return Ok(None);
        };
        let now = Timestamp::now();
        let known = self.entries().get(&key).cloned();
        if let Some(known) = known.as_ref().filter(|k| &k.source == source)
            && let Some(next_in) = due_in(known, now)
        {
            return Ok(Some(state(known, next_in)));
        }
        let result = match query(ctx, namespace, normalized, source).await? {
            Ok(query) => ctx
                .network
                .directory
                .search(&query)
                .await
                .and_then(|extracted| extracted.accepted(source.skip_invalid)),
            Err(missing) => Err(missing),
        };
        let mut synced = Synced {
            source: source.clone(),
            in_force: known.and_then(|k| k.in_force),
            attempted: now,
            error: None,
        };
        match result {
            Ok(extracted) => {
                synced.in_force = Some(InForce {
                    skipped: extracted.skipped(),
                    addresses: Arc::new(extracted.addresses),
                    // Whole seconds, as status shows it.
                    at: Timestamp::from_second(now.as_second()).unwrap_or(now),
                });
            }
            Err(error) => {
                tracing::info!(url = %source.url, reason = error.reason(), %error, "a directory sync failed");
                synced.error = Some(error);
            }
        }
        let next_in = due_in(&synced, now).unwrap_or(RETRY_FAILED);
        let state = state(&synced, next_in);
        let mut entries = self.entries();
        entries.insert(key, synced);
        // Lists of domains deleted without a finalizer (a reconcile never sees them go).
        entries.retain(|(namespace, name), _| {
            ctx.domains
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        });
        Ok(Some(state))
    }

    /// Drops a domain's list (it no longer names a directory, or it is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.entries()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// How long until the next search of `synced` is due; `None` when it is due now.
fn due_in(synced: &Synced, now: Timestamp) -> Option<Duration> {
    let every = match synced.error {
        Some(_) => synced.source.refresh().min(RETRY_FAILED),
        None => synced.source.refresh(),
    };
    let since = Duration::try_from(now.duration_since(synced.attempted)).unwrap_or_default();
    every.checked_sub(since).filter(|left| !left.is_zero())
}

fn state(synced: &Synced, next_in: Duration) -> DirectoryState {
    DirectoryState {
        url: synced.source.url.clone(),
        in_force: synced.in_force.clone(),
        error: synced.error.clone(),
        next_in,
    }
}

/// The search `source` asks for, with the password and CA from their Secrets; `Ok(Err)`
/// when a Secret or key is missing.
async fn query(
    ctx: &Context,
    namespace: &str,
    normalized: &str,
    source: &LdapSource,
) -> Result<Result<DirectoryQuery, DirectoryError>, Error> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let password = match secret_text(&secrets, namespace, &source.password_secret_ref).await? {
        Ok(password) => password,
        Err(missing) => return Ok(Err(missing)),
    };
    let ca_pem = match &source.ca_secret_ref {
        Some(reference) => match secret_text(&secrets, namespace, reference).await? {
            Ok(pem) => Some(pem),
            Err(missing) => return Ok(Err(missing)),
        },
        None => None,
    };
    Ok(Ok(DirectoryQuery {
        url: source.url.clone(),
        start_tls: source.start_tls,
        ca_pem,
        bind_dn: source.bind_dn.clone(),
        password: password.trim_end_matches(['\r', '\n']).to_string(),
        base_dn: source.base_dn.clone(),
        filter: source.filter.clone(),
        attributes: source.attributes.clone(),
        page_size: source.page_size,
        timeout: DIRECTORY_TIMEOUT,
        domain: normalized.to_string(),
        limit: MAX_DIRECTORY_ADDRESSES,
    }))
}

async fn secret_text(
    secrets: &Api<Secret>,
    namespace: &str,
    reference: &KeyRef,
) -> Result<Result<String, DirectoryError>, Error> {
    let name = &reference.name;
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Err(DirectoryError::CredentialsMissing(format!(
            "Secret {namespace}/{name} does not exist"
        ))));
    };
    let text = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
    Ok(text.ok_or_else(|| {
        DirectoryError::CredentialsMissing(format!(
            "Secret {namespace}/{name} has no key {:?} (or it is not UTF-8 text)",
            reference.key
        ))
    }))
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
            source,
            in_force: None,
            attempted: Timestamp::from_second(attempted).unwrap(),
            error: failed.then(|| DirectoryError::Unreachable("refused".into())),
        }
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
