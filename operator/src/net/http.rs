//! Recipient lists served over HTTP(S): one GET with `If-None-Match`, the body read a frame
//! at a time into an [`Extractor`], so neither the body nor its lines are held whole.

use crate::api::domain::ListFormat;
use crate::recipients::extract::{Extracted, Extractor, SourceError};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::header::{ACCEPT, AUTHORIZATION, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// One fetch, as the MailDomain's `spec.recipients.http` and its Secrets give it.
#[derive(Clone, Debug)]
pub struct ListQuery {
    pub url: String,
    pub ca_pem: Option<String>,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    pub format: ListFormat,
    /// For the whole request, body included.
    pub timeout: Duration,
    pub domain: String,
    /// Most addresses taken, and most bytes read.
    pub limit: usize,
    pub max_bytes: usize,
}

/// What a fetch gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A new list, and its `ETag` if the server gave one.
    List {
        extracted: Extracted,
        etag: Option<String>,
    },
    /// `304 Not Modified`: the list in force is current.
    NotModified,
}

/// Fetches lists; fakes stand in for it in tests.
pub trait ListServer: Send + Sync {
    /// `etag`: the list in force's, sent as `If-None-Match`.
    fn fetch<'a>(
        &'a self,
        query: &'a ListQuery,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>>;
}

/// Real servers over the network.
pub struct Https;

impl ListServer for Https {
    fn fetch<'a>(
        &'a self,
        query: &'a ListQuery,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(async move {
            tokio::time::timeout(query.timeout, fetch(query, etag))
                .await
                .map_err(|_| {
                    SourceError::Unreachable(format!("no whole answer within {:?}", query.timeout))
                })?
        })
    }
}

async fn fetch(query: &ListQuery, etag: Option<&str>) -> Result<Fetched, SourceError> {
    let tls = super::tls::client_config(query.ca_pem.as_deref())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(query.timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = hyper::Request::get(query.url.as_str()).header(
        ACCEPT,
        match query.format {
            ListFormat::Lines => "text/plain",
            ListFormat::JsonLines => "application/jsonl, application/x-ndjson",
        },
    );
    if let Some(authorization) = &query.authorization {
        let mut value = HeaderValue::from_str(authorization).map_err(|_| {
            SourceError::CredentialsMissing("the credentials are not a valid header value".into())
        })?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let request = request
        .body(Empty::new())
        .map_err(|error| SourceError::ServerError(format!("the request: {error}")))?;
    let response = client.request(request).await.map_err(request_error)?;
    let status = response.status();
    match status {
        StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(SourceError::AuthFailed(format!(
                "{} answered {status}",
                query.url
            )));
        }
        status if !status.is_success() => {
            return Err(SourceError::ServerError(format!(
                "{status} for {}",
                query.url
            )));
        }
        _ => {}
    }
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut lines = Lines::new(query);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| SourceError::Unreachable(error.to_string()))?;
        if let Some(data) = frame.data_ref() {
            lines.feed(data)?;
        }
    }
    Ok(Fetched::List {
        extracted: lines.finish()?,
        etag,
    })
}

/// A connection or TLS failure: a TLS one names the certificate or the handshake.
fn request_error(error: hyper_util::client::legacy::Error) -> SourceError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut chain = String::new();
    let mut tls = false;
    while let Some(cause) = source {
        tls |= is_tls(cause);
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    if tls {
        SourceError::TlsFailed(chain)
    } else {
        SourceError::Unreachable(chain)
    }
}

/// Whether `error` is rustls' own, or an I/O error that wraps one (hyper-rustls wraps the
/// handshake's I/O error in another, whose `source` skips it).
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    match error.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::InvalidData => true,
        Some(io) => io.get_ref().is_some_and(|inner| is_tls(inner)),
        None => false,
    }
}

/// The body split into lines as it arrives; each line is one value.
struct Lines {
    extractor: Extractor,
    format: ListFormat,
    pending: Vec<u8>,
    number: usize,
    read: usize,
    max_bytes: usize,
}

impl Lines {
    fn new(query: &ListQuery) -> Self {
        Self {
            extractor: Extractor::new(&query.domain, &[], query.limit),
            format: query.format,
            pending: Vec::new(),
            number: 0,
            read: 0,
            max_bytes: query.max_bytes,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), SourceError> {
        self.read += data.len();
        if self.read > self.max_bytes {
            return Err(SourceError::TooLarge(format!(
                "the list is longer than {} bytes",
                self.max_bytes
            )));
        }
        // Taken out while its lines are read, so that each is borrowed, not copied.
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            self.line(&pending[start..start + end])?;
            start += end + 1;
        }
        pending.drain(..start);
        self.pending = pending;
        Ok(())
    }

    fn finish(mut self) -> Result<Extracted, SourceError> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.line(&rest)?;
        }
        Ok(self.extractor.finish())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), SourceError> {
        self.number += 1;
        let Ok(text) = std::str::from_utf8(line) else {
            self.extractor.invalid_line(self.number, "not UTF-8 text");
            return Ok(());
        };
        let text = text.trim();
        if text.is_empty() || (self.format == ListFormat::Lines && text.starts_with('#')) {
            return Ok(());
        }
        match self.format {
            ListFormat::Lines => self.extractor.line(self.number, text),
            ListFormat::JsonLines => match json_address(text) {
                Some(address) => self.extractor.line(self.number, &address),
                None => {
                    self.extractor
                        .invalid_line(self.number, "not a JSON string or object with an address");
                    Ok(())
                }
            },
        }
    }
}

/// `"alice@example.com"` or `{"address": "alice@example.com", ...}`.
fn json_address(line: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(line).ok()? {
        serde_json::Value::String(address) => Some(address),
        serde_json::Value::Object(fields) => match fields.get("address")? {
            serde_json::Value::String(address) => Some(address.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(format: ListFormat, max_bytes: usize) -> ListQuery {
        ListQuery {
            url: "https://lists.example.com/users".into(),
            ca_pem: None,
            authorization: None,
            format,
            timeout: Duration::from_secs(1),
            domain: "example.com".into(),
            limit: 100,
            max_bytes,
        }
    }

    #[test]
    fn lines_split_across_frames_are_read_whole() {
        let mut lines = Lines::new(&query(ListFormat::Lines, 1_000));
        for frame in [
            "# users\nalice@exa",
            "mple.com\r\n\nbob@example.com\ncarol@other.",
            "example\nnot-an-address\ndave@example.com",
        ] {
            lines.feed(frame.as_bytes()).unwrap();
        }
        let extracted = lines.finish().unwrap();
        let addresses: Vec<&str> = extracted.addresses.iter().map(String::as_str).collect();
        assert_eq!(
            addresses,
            ["alice@example.com", "bob@example.com", "dave@example.com"]
        );
        assert_eq!(extracted.elsewhere, 1);
        assert_eq!(extracted.invalid.first(), ["line 6: not an address (no @)"]);
    }

    #[test]
    fn json_lines_are_strings_or_objects_with_an_address() {
        let mut lines = Lines::new(&query(ListFormat::JsonLines, 1_000));
        let body = "\"alice@example.com\"\n{\"address\": \"bob@example.com\", \"name\": \"Bob\"}\n{\"mail\": \"x@example.com\"}\n42\n";
        lines.feed(body.as_bytes()).unwrap();
        let extracted = lines.finish().unwrap();
        assert_eq!(extracted.addresses.len(), 2);
        assert_eq!(
            extracted.invalid.first(),
            [
                "line 3: not a JSON string or object with an address",
                "line 4: not a JSON string or object with an address"
            ]
        );
    }

    #[test]
    fn a_body_past_the_limit_is_refused_as_it_arrives() {
        let mut lines = Lines::new(&query(ListFormat::Lines, 20));
        lines.feed(b"alice@example.com\n").unwrap();
        let refused = lines.feed(b"bob@example.com\n").unwrap_err();
        assert_eq!(refused.reason(), "TooLarge");
    }
}
