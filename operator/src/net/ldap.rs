//! Searches of a primary's directory: connect (LDAP, LDAPS or StartTLS), bind, and a paged
//! subtree search whose entries go straight into a [`Extractor`], so no more than the
//! addresses is held, whatever the directory's size.

use crate::recipients::extract::{Extracted, Extractor, SourceError};
use futures::future::BoxFuture;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use std::sync::Arc;
use std::time::Duration;

/// LDAP's result codes (RFC 4511) that get a hint.
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const INVALID_CREDENTIALS: u32 = 49;

/// One search, as the MailDomain's `spec.recipients.ldap` and its Secrets give it.
#[derive(Clone, Debug)]
pub struct DirectoryQuery {
    pub url: String,
    pub start_tls: bool,
    /// PEM certificates of the CAs to trust; `None`: the system's.
    pub ca_pem: Option<String>,
    pub bind_dn: String,
    pub password: String,
    pub base_dn: String,
    pub filter: String,
    pub attributes: Vec<String>,
    pub page_size: u32,
    /// For the connection and for each operation.
    pub timeout: Duration,
    /// The domain (normalized) whose addresses are taken, and how many at most.
    pub domain: String,
    pub limit: usize,
}

/// Searches directories; fakes stand in for it in tests.
pub trait Directory: Send + Sync {
    fn search<'a>(
        &'a self,
        query: &'a DirectoryQuery,
    ) -> BoxFuture<'a, Result<Extracted, SourceError>>;
}

/// Real directories over the network.
pub struct Ldap;

impl Directory for Ldap {
    fn search<'a>(
        &'a self,
        query: &'a DirectoryQuery,
    ) -> BoxFuture<'a, Result<Extracted, SourceError>> {
        Box::pin(search(query))
    }
}

async fn search(query: &DirectoryQuery) -> Result<Extracted, SourceError> {
    let tls = query.start_tls || query.url.starts_with("ldaps://");
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(query.timeout)
        .set_starttls(query.start_tls);
    if tls {
        let config = super::tls::client_config(query.ca_pem.as_deref())?;
        settings = settings.set_config(Arc::new(config));
    }
    let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &query.url)
        .await
        .map_err(|error| connect_error(error, tls))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.drive().await {
            tracing::debug!(%error, "the directory connection ended");
        }
    });
    let result = bound_search(&mut ldap, query).await;
    // The result is in; a failed unbind changes nothing of it.
    let _ = ldap.unbind().await;
    driver.abort();
    result
}

async fn bound_search(
    ldap: &mut ldap3::Ldap,
    query: &DirectoryQuery,
) -> Result<Extracted, SourceError> {
    ldap.with_timeout(query.timeout)
        .simple_bind(&query.bind_dn, &query.password)
        .await
        .map_err(|error| SourceError::Unreachable(error.to_string()))?
        .success()
        .map_err(|error| match &error {
            LdapError::LdapResult { result } if result.rc == INVALID_CREDENTIALS => {
                SourceError::AuthFailed(format!(
                    "invalid credentials for {:?} (LDAP result 49)",
                    query.bind_dn
                ))
            }
            _ => SourceError::AuthFailed(error.to_string()),
        })?;
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(
            i32::try_from(query.page_size).unwrap_or(i32::MAX),
        )),
    ];
    let mut stream = ldap
        .with_timeout(query.timeout)
        .streaming_search_with(
            adapters,
            &query.base_dn,
            Scope::Subtree,
            &query.filter,
            query.attributes.clone(),
        )
        .await
        .map_err(search_error)?;
    let mut extractor = Extractor::new(&query.domain, &query.attributes, query.limit);
    while let Some(entry) = stream.next().await.map_err(search_error)? {
        let entry = SearchEntry::construct(entry);
        if let Err(too_large) = extractor.entry(&entry.attrs) {
            // Stop the directory's work too.
            let _ = stream.finish().await;
            return Err(too_large);
        }
    }
    stream.finish().await.success().map_err(search_error)?;
    Ok(extractor.finish())
}

fn search_error(error: LdapError) -> SourceError {
    match error {
        LdapError::LdapResult { result } if result.rc == SIZE_LIMIT_EXCEEDED => {
            SourceError::SearchFailed(format!(
                "{result}: the directory limits how many entries the bind DN may read, paged \
                 searches included (OpenLDAP: a size.prtotal limit for it)"
            ))
        }
        LdapError::Timeout { .. } | LdapError::Io { .. } => {
            SourceError::Unreachable(error.to_string())
        }
        _ => SourceError::SearchFailed(error.to_string()),
    }
}

/// A connection that fails in its TLS handshake is a TLS failure (a certificate the CAs do
/// not sign, a name that does not match); else the server is not reached.
fn connect_error(error: LdapError, tls: bool) -> SourceError {
    let handshake = match &error {
        LdapError::Io { source } => source.kind() == std::io::ErrorKind::InvalidData,
        LdapError::Rustls { .. } | LdapError::DNSName { .. } => true,
        _ => false,
    };
    if tls && handshake {
        SourceError::TlsFailed(error.to_string())
    } else {
        SourceError::Unreachable(error.to_string())
    }
}
