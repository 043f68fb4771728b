//! Recipient lists served over HTTP(S): one GET with `If-None-Match`, the body read a frame
//! at a time into an [`Extractor`], so neither the body nor its lines are held whole.

use crate::api::domain::ListFormat;
use crate::recipients::extract::{Extracted, Extractor, SourceError};
use crate::recipients::without_bom;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::header::{ACCEPT, AUTHORIZATION, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::borrow::Cow;
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
        // Only an answer to If-None-Match: without it, "not modified" says nothing.
        StatusCode::NOT_MODIFIED if etag.is_some() => return Ok(Fetched::NotModified),
        StatusCode::NOT_MODIFIED => {
            return Err(SourceError::ServerError(
                "304 Not Modified to a request without If-None-Match".into(),
            ));
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(SourceError::AuthFailed(format!(
                "{} answered {status}",
                super::redacted(&query.url)
            )));
        }
        status if !status.is_success() => {
            return Err(SourceError::ServerError(format!(
                "{status} for {}",
                super::redacted(&query.url)
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

/// The longest line read: an address is at most 254 bytes, and a JSON line carries a few
/// more fields. A longer line is one invalid line, its bytes dropped as they arrive, so a
/// body without a newline is not held whole.
const MAX_LINE: usize = 4096;

/// How many bytes tell a byte-order mark (UTF-8's is three).
const BOM_BYTES: usize = 3;

/// Why a line is not read as an address, besides the address's own problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum LineProblem {
    #[error("longer than {} bytes", MAX_LINE)]
    TooLong,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("not a JSON string or object with an address")]
    NotJsonAddress,
}

/// The body split into lines as it arrives; each line is one value.
struct Lines {
    extractor: Extractor,
    format: ListFormat,
    /// The body's first bytes while there are too few to tell a byte-order mark; `None`
    /// once they have been looked at.
    head: Option<Vec<u8>>,
    /// The start of a line whose end has not arrived: no '\n' in it, and at most
    /// `MAX_LINE` bytes.
    pending: Vec<u8>,
    /// The line being read is longer than `MAX_LINE` (and already counted): its bytes are
    /// dropped up to its end.
    overlong: bool,
    number: usize,
    read: usize,
    max_bytes: usize,
}

impl Lines {
    fn new(query: &ListQuery) -> Self {
        Self {
            extractor: Extractor::new(&query.domain, &[], query.limit),
            format: query.format,
            head: Some(Vec::with_capacity(BOM_BYTES)),
            pending: Vec::new(),
            overlong: false,
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
        let Some(mut head) = self.head.take() else {
            return self.scan(data);
        };
        let taken = (BOM_BYTES - head.len()).min(data.len());
        head.extend_from_slice(&data[..taken]);
        if head.len() < BOM_BYTES {
            self.head = Some(head);
            return Ok(());
        }
        self.scan(without_bom(&head)?)?;
        self.scan(&data[taken..])
    }

    /// Reads the lines that `data` ends. Only `data` is searched for '\n' (what is pending
    /// has none), so a long line costs one pass, however many frames bring it.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), SourceError> {
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            let (piece, rest) = (&data[..end], &data[end + 1..]);
            if self.overlong {
                self.overlong = false;
            } else if self.pending.len() + piece.len() > MAX_LINE {
                self.too_long(piece);
            } else if self.pending.is_empty() {
                self.line(piece)?;
            } else {
                // Taken out while the line is read, so that it is borrowed, not copied.
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(piece);
                self.line(&line)?;
                line.clear();
                self.pending = line;
            }
            data = rest;
        }
        if self.overlong {
            return Ok(());
        }
        if self.pending.len() + data.len() > MAX_LINE {
            self.too_long(data);
            self.overlong = true;
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// Counts the line that starts with what is pending and goes on with `more` as longer
    /// than `MAX_LINE`, unless it is a comment; drops what is pending.
    fn too_long(&mut self, more: &[u8]) {
        self.number += 1;
        let comment = self.format == ListFormat::Lines
            && self
                .pending
                .iter()
                .chain(more)
                .find(|b| !b.is_ascii_whitespace())
                == Some(&b'#');
        if !comment {
            self.extractor
                .invalid_line(self.number, LineProblem::TooLong);
        }
        // Its capacity too: a junk line is not worth keeping a buffer for.
        self.pending = Vec::new();
    }

    fn finish(mut self) -> Result<Extracted, SourceError> {
        if let Some(head) = self.head.take() {
            // A body shorter than a byte-order mark.
            self.scan(without_bom(&head)?)?;
        }
        let rest = std::mem::take(&mut self.pending);
        if !self.overlong && !rest.is_empty() {
            self.line(&rest)?;
        }
        Ok(self.extractor.finish())
    }

    /// How many bytes are held for a line not yet ended.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.pending.capacity()
    }

    /// One whole line, of at most `MAX_LINE` bytes.
    fn line(&mut self, line: &[u8]) -> Result<(), SourceError> {
        self.number += 1;
        let Ok(text) = std::str::from_utf8(line) else {
            self.extractor
                .invalid_line(self.number, LineProblem::NotUtf8);
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
                        .invalid_line(self.number, LineProblem::NotJsonAddress);
                    Ok(())
                }
            },
        }
    }
}

/// `"alice@example.com"` or `{"address": "alice@example.com", ...}`: the string or the one
/// field is read, borrowed from the line unless it has escapes; other fields are skipped
/// unread.
fn json_address(line: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Plain<'a>(#[serde(borrow)] Cow<'a, str>);
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        address: Cow<'a, str>,
    }
    match line.as_bytes().first()? {
        b'"' => serde_json::from_str::<Plain>(line).ok().map(|p| p.0),
        b'{' => serde_json::from_str::<Object>(line).ok().map(|o| o.address),
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

    fn read(format: ListFormat, frames: &[&[u8]]) -> Result<Extracted, SourceError> {
        let mut lines = Lines::new(&query(format, 100_000_000));
        for frame in frames {
            lines.feed(frame)?;
        }
        lines.finish()
    }

    #[test]
    fn json_lines_read_the_address_only() {
        let body = concat!(
            "{\"name\": {\"nested\": [1, 2, {\"address\": \"x\"}]}, \"address\": \"Alice@example.com\"}\n",
            "\"b\\u006fb@example.com\"\n",
            "{\"address\": 42}\n",
            "{\"address\": \"carol@example.com\", \"address\": \"carol@example.com\"}\n",
            "[\"dave@example.com\"]\n",
            "\"erin@example.com\" trailing\n",
            "  {\"address\": \"frank@example.com\"}  \r\n",
        );
        let extracted = read(ListFormat::JsonLines, &[body.as_bytes()]).unwrap();
        let addresses: Vec<&str> = extracted.addresses.iter().map(String::as_str).collect();
        assert_eq!(
            addresses,
            ["alice@example.com", "bob@example.com", "frank@example.com"]
        );
        let lines: Vec<&str> = extracted
            .invalid
            .first()
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(lines, ["line 3", "line 4", "line 5", "line 6"]);
    }

    #[test]
    fn problems_name_lines_never_their_content() {
        let body = b"alice@example.com\nTOPSECRET-VALUE-1 hunter2\n{\"TOPSECRET\": 1}\nTOPSECRET\xFFhunter2\n";
        for format in [ListFormat::Lines, ListFormat::JsonLines] {
            let extracted = read(format, &[body.as_slice()]).unwrap();
            let refused = extracted.accepted(false).unwrap_err().to_string();
            assert!(!refused.contains("TOPSECRET"), "{refused}");
            assert!(!refused.contains("hunter2"), "{refused}");
            assert!(refused.contains("line 4: not UTF-8 text"), "{refused}");
        }
    }

    #[test]
    fn a_body_without_a_newline_is_not_held() {
        let mut lines = Lines::new(&query(ListFormat::Lines, 100_000_000));
        lines.feed(b"alice@example.com\n").unwrap();
        let frame = [b'x'; 16 * 1024];
        // 4 MiB in frames of 16 KiB, no newline: one line, dropped as it comes.
        for _ in 0..256 {
            lines.feed(&frame).unwrap();
            assert!(lines.buffered() <= 2 * MAX_LINE, "{}", lines.buffered());
        }
        lines.feed(b"\nbob@example.com\n").unwrap();
        assert!(lines.buffered() <= 2 * MAX_LINE, "{}", lines.buffered());
        let extracted = lines.finish().unwrap();
        assert_eq!(extracted.addresses.len(), 2);
        assert_eq!(
            extracted.invalid.first(),
            ["line 2: longer than 4096 bytes"]
        );
        assert_eq!(extracted.invalid.count(), 1);
    }

    #[test]
    fn the_line_length_limit_at_its_edges() {
        let padded = |len: usize| {
            let address = "alice@example.com";
            format!("{address}{}", " ".repeat(len - address.len()))
        };
        let at_limit = padded(MAX_LINE);
        let over = padded(MAX_LINE + 1);
        let long_comment = format!("# {}", "x".repeat(2 * MAX_LINE));
        let long_json = format!(
            "{{\"address\": \"bob@example.com\", \"x\": \"{}\"}}",
            "x".repeat(MAX_LINE)
        );
        let cases: Vec<(ListFormat, String, usize, Vec<&str>)> = vec![
            (ListFormat::Lines, at_limit.clone(), 1, vec![]),
            (
                ListFormat::Lines,
                over.clone(),
                0,
                vec!["line 1: longer than 4096 bytes"],
            ),
            (
                ListFormat::Lines,
                format!("{long_comment}\nbob@example.com"),
                1,
                vec![],
            ),
            (
                ListFormat::JsonLines,
                long_json,
                0,
                vec!["line 1: longer than 4096 bytes"],
            ),
            (
                ListFormat::Lines,
                format!("{over}\n{at_limit}\n{over}"),
                1,
                vec![
                    "line 1: longer than 4096 bytes",
                    "line 3: longer than 4096 bytes",
                ],
            ),
        ];
        for (format, body, addresses, invalid) in cases {
            // Whole, and in frames of every size from 1 byte: the same lines.
            for size in [body.len(), 1, 7, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1] {
                let frames: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
                let extracted = read(format, &frames).unwrap();
                assert_eq!(extracted.addresses.len(), addresses, "{size}");
                assert_eq!(extracted.invalid.first(), invalid, "frames of {size}");
            }
        }
    }

    #[test]
    fn a_utf8_byte_order_mark_is_skipped_and_utf16_refused() {
        let utf8 = b"\xEF\xBB\xBFalice@example.com\nbob@example.com\n";
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(
                "alice@example.com\r\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(
                "alice@example.com\r\n"
                    .encode_utf16()
                    .flat_map(u16::to_be_bytes),
            )
            .collect();
        for format in [ListFormat::Lines, ListFormat::JsonLines] {
            let json = b"\xEF\xBB\xBF\"alice@example.com\"\n\"bob@example.com\"\n";
            let body: &[u8] = match format {
                ListFormat::Lines => utf8,
                ListFormat::JsonLines => json,
            };
            // The mark split over frames too.
            for size in [1, 2, 3, 4, body.len()] {
                let frames: Vec<&[u8]> = body.chunks(size).collect();
                let extracted = read(format, &frames).unwrap();
                assert_eq!(
                    extracted.addresses.len(),
                    2,
                    "{format:?} in frames of {size}"
                );
                assert!(extracted.invalid.is_empty(), "{:?}", extracted.invalid);
            }
            for utf16 in [&utf16le, &utf16be] {
                for size in [1, 2, utf16.len()] {
                    let frames: Vec<&[u8]> = utf16.chunks(size).collect();
                    let refused = read(format, &frames).unwrap_err();
                    assert_eq!(refused.reason(), "NotUTF8");
                    assert!(refused.to_string().contains("UTF-16"), "{refused}");
                }
            }
        }
        // Shorter than a mark: read as it is.
        assert_eq!(
            read(ListFormat::Lines, &[b"a".as_slice()])
                .unwrap()
                .invalid
                .count(),
            1
        );
        assert_eq!(
            read(ListFormat::Lines, &[b"".as_slice()]).unwrap().entries,
            0
        );
        assert_eq!(
            read(ListFormat::Lines, &[b"\xFF\xFE".as_slice()])
                .unwrap_err()
                .reason(),
            "NotUTF8"
        );
        // A mark is only one at the start.
        let later = read(
            ListFormat::Lines,
            &[b"a@example.com\n\xEF\xBB\xBFb@example.com\n".as_slice()],
        );
        assert_eq!(later.unwrap().invalid.count(), 1);
    }
}
