//! A synced source's entries (a directory's) or lines (a list served over HTTP) → the
//! domain's addresses, and what can go wrong on the way. Pure: the searches and requests
//! are `net::ldap`'s and `net::http`'s.

use super::{Invalid, Position, Utf16};
use crate::api::validate::{AddressProblem, normalize_domain, normalize_listed_address};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Why a sync of a source failed; [`SourceError::reason`] is the status reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    CredentialsMissing(String),
    #[error("cannot reach the source: {0}")]
    Unreachable(String),
    #[error("TLS with the source failed: {0}")]
    TlsFailed(String),
    #[error("the source refused the credentials: {0}")]
    AuthFailed(String),
    #[error("the search failed: {0}")]
    SearchFailed(String),
    #[error("the server answered {0}")]
    ServerError(String),
    #[error("{count} value(s) are not addresses: {quoted}")]
    InvalidEntries { count: usize, quoted: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("the sync took too long: {0}")]
    TimedOut(String),
    #[error("{0}")]
    InsecureCredentials(String),
    #[error("{0}")]
    SecretNotAllowed(String),
    #[error("the operator does not connect there: {0}")]
    NotAllowed(String),
    /// A list in another encoding than UTF-8, refused whole.
    #[error(transparent)]
    NotUtf8(#[from] Utf16),
}

impl SourceError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CredentialsMissing(_) => "CredentialsMissing",
            Self::Unreachable(_) => "Unreachable",
            Self::TlsFailed(_) => "TLSFailed",
            Self::AuthFailed(_) => "AuthFailed",
            Self::SearchFailed(_) => "SearchFailed",
            Self::ServerError(_) => "ServerError",
            Self::InvalidEntries { .. } => "InvalidEntries",
            Self::TooLarge(_) => "TooLarge",
            Self::TimedOut(_) => "TimedOut",
            Self::InsecureCredentials(_) => "InsecureCredentials",
            Self::SecretNotAllowed(_) => "SecretNotAllowed",
            Self::NotAllowed(_) => "SourceNotAllowed",
            Self::NotUtf8(_) => "NotUTF8",
        }
    }
}

/// What one search gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub addresses: BTreeSet<String>,
    /// Entries the search returned (lines of a list that are not blank or comments).
    pub entries: usize,
    /// Addresses of other domains, and values of other types (`X500:`), skipped.
    pub elsewhere: usize,
    /// Values that are not addresses: how many, and the first few by position (never the
    /// value itself: it may be half an address, or a secret pasted into the wrong place).
    pub invalid: Invalid,
}

impl Extracted {
    /// The list, or why it is refused: invalid values refuse it unless `skip_invalid`.
    pub fn accepted(self, skip_invalid: bool) -> Result<Self, SourceError> {
        if self.invalid.is_empty() || skip_invalid {
            return Ok(self);
        }
        Err(SourceError::InvalidEntries {
            count: self.invalid.count(),
            quoted: self.invalid.to_string(),
        })
    }

    /// What a successful sync skipped, for status; `None` when it skipped nothing.
    pub fn skipped(&self) -> Option<String> {
        (!self.invalid.is_empty()).then(|| {
            format!(
                "skipped {} value(s) that are not addresses: {}",
                self.invalid.count(),
                self.invalid
            )
        })
    }
}

/// Collects the addresses of `domain` from entries as a search returns them, so that no
/// more than the addresses themselves is held.
pub struct Extractor {
    domain: String,
    /// Lower-cased: LDAP attribute names are case-insensitive.
    attributes: Vec<String>,
    limit: usize,
    extracted: Extracted,
}

impl Extractor {
    /// `domain` normalized; at most `limit` addresses are taken.
    pub fn new(domain: &str, attributes: &[String], limit: usize) -> Self {
        Self {
            domain: domain.to_string(),
            attributes: attributes.iter().map(|a| a.to_ascii_lowercase()).collect(),
            limit,
            extracted: Extracted::default(),
        }
    }

    /// Takes the address on line `number` of a list.
    pub fn line(&mut self, number: usize, value: &str) -> Result<(), SourceError> {
        self.extracted.entries += 1;
        self.take(Position::Line(number), value)
    }

    /// Counts line `number` of a list as invalid without reading it as an address (too
    /// long, not text).
    pub fn invalid_line(&mut self, number: usize, problem: impl fmt::Display) {
        self.extracted.entries += 1;
        self.extracted.invalid.push(Position::Line(number), problem);
    }

    /// Takes the addresses of the next entry of the search; a problem names the entry by
    /// its ordinal in the result, never by its DN.
    pub fn entry(&mut self, attributes: &HashMap<String, Vec<String>>) -> Result<(), SourceError> {
        self.extracted.entries += 1;
        let ordinal = self.extracted.entries;
        for (name, values) in attributes {
            if !self.attributes.contains(&name.to_ascii_lowercase()) {
                continue;
            }
            for value in values {
                let position = Position::Entry {
                    ordinal,
                    attribute: name,
                };
                self.take(position, value)?;
            }
        }
        Ok(())
    }

    fn take(&mut self, position: Position<'_>, value: &str) -> Result<(), SourceError> {
        match self.address(value) {
            Value::Address(address) => {
                self.extracted.addresses.insert(address);
                if self.extracted.addresses.len() > self.limit {
                    return Err(SourceError::TooLarge(format!(
                        "the source holds more than {} addresses of the domain",
                        self.limit
                    )));
                }
            }
            Value::Elsewhere => self.extracted.elsewhere += 1,
            Value::Invalid(problem) => self.extracted.invalid.push(position, problem),
        }
        Ok(())
    }

    pub fn finish(self) -> Extracted {
        self.extracted
    }

    fn address(&self, value: &str) -> Value {
        let value = value.trim();
        // `smtp:alias@example.com` (proxyAddresses): a type before the first colon, where
        // an address has none before its `@`.
        let value = match value.split_once(':') {
            Some((kind, rest)) if !kind.contains('@') => {
                if !kind.eq_ignore_ascii_case("smtp") {
                    return Value::Elsewhere;
                }
                rest
            }
            _ => value,
        };
        let Some((_, domain)) = value.rsplit_once('@') else {
            return Value::Invalid(AddressProblem::NoAt);
        };
        // The domain first: another domain's address is skipped whatever its local part.
        match normalize_domain(domain) {
            Ok(domain) if domain == self.domain => {
                match normalize_listed_address(value, &self.domain) {
                    Ok(address) => Value::Address(address),
                    Err(problem) => Value::Invalid(problem),
                }
            }
            Ok(_) => Value::Elsewhere,
            Err(_) => Value::Invalid(AddressProblem::NotADomain),
        }
    }
}

enum Value {
    Address(String),
    Elsewhere,
    Invalid(AddressProblem),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(name, values)| {
                let values = values.iter().map(|v| v.to_string()).collect();
                (name.to_string(), values)
            })
            .collect()
    }

    fn attributes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn addresses_of_the_domain_from_the_named_attributes_only() {
        let mut extractor =
            Extractor::new("example.com", &attributes(&["mail", "proxyAddresses"]), 100);
        let alice = entry(&[
            ("mail", &["Alice@Example.COM"]),
            (
                "proxyaddresses",
                &[
                    "SMTP:alice.smith@example.com",
                    "smtp:al@example.com",
                    "X500:/o=Example/ou=Users/cn=alice",
                    "smtp:alice@other.example",
                ],
            ),
            ("telephoneNumber", &["+1 555 0100"]),
            ("description", &["bob@example.com"]),
        ]);
        extractor.entry(&alice).unwrap();
        let bob = entry(&[("mail", &["bob@example.com", "bob@example.com"])]);
        extractor.entry(&bob).unwrap();
        let extracted = extractor.finish();
        assert_eq!(
            extracted.addresses,
            BTreeSet::from(
                [
                    "al@example.com",
                    "alice.smith@example.com",
                    "alice@example.com",
                    "bob@example.com"
                ]
                .map(String::from)
            )
        );
        assert_eq!((extracted.entries, extracted.elsewhere), (2, 2));
        assert!(extracted.invalid.is_empty());
        assert_eq!(extracted.clone().accepted(false), Ok(extracted));
    }

    #[test]
    fn an_invalid_value_refuses_the_list_unless_skipping_is_asked_for() {
        let mut extractor = Extractor::new("example.com", &attributes(&["mail"]), 100);
        let values = entry(&[(
            "mail",
            &["carol", "carol!bob@example.com", "dave@example.com"],
        )]);
        extractor
            .entry(&entry(&[("mail", &["erin@example.com"])]))
            .unwrap();
        extractor.entry(&values).unwrap();
        let extracted = extractor.finish();
        assert_eq!(extracted.invalid.count(), 2);
        assert_eq!(
            extracted.invalid.first(),
            [
                "entry 2 attribute mail: not an address (no @)",
                "entry 2 attribute mail: not an address (a character not allowed in a local part)"
            ]
        );
        let refused = extracted.clone().accepted(false).unwrap_err();
        assert_eq!(refused.reason(), "InvalidEntries");
        assert!(
            refused
                .to_string()
                .starts_with("2 value(s) are not addresses: entry")
        );
        assert!(!refused.to_string().contains("carol!bob"), "{refused}");
        let skipped = extracted.accepted(true).unwrap();
        assert_eq!(skipped.addresses.len(), 2);
        assert!(skipped.skipped().unwrap().starts_with("skipped 2 value(s)"));
    }

    #[test]
    fn a_directory_larger_than_the_limit_is_refused_as_it_is_read() {
        let mut extractor = Extractor::new("example.com", &attributes(&["mail"]), 2);
        for name in ["a", "b"] {
            let values = entry(&[("mail", &[&format!("{name}@example.com")])]);
            extractor.entry(&values).unwrap();
        }
        let third = entry(&[("mail", &["c@example.com"])]);
        assert_eq!(extractor.entry(&third).unwrap_err().reason(), "TooLarge");
        let mut extractor = Extractor::new("example.com", &attributes(&[]), 100);
        extractor.line(1, "smtp:a@example.com").unwrap();
        extractor.line(2, "b@other.example").unwrap();
        extractor.line(3, "not an address").unwrap();
        let extracted = extractor.finish();
        assert_eq!(extracted.addresses.len(), 1);
        assert_eq!((extracted.entries, extracted.elsewhere), (3, 1));
        assert_eq!(extracted.invalid.first(), ["line 3: not an address (no @)"]);
    }

    #[test]
    fn problems_name_positions_and_classes_never_values_or_dns() {
        let mut extractor = Extractor::new("example.com", &attributes(&["mail"]), 100);
        let secret = entry(&[(
            "mail",
            &[
                "TOPSECRET-VALUE-1 hunter2@example.com",
                "TOPSECRET@hunter2",
                "TOPSECRET.@example.com",
            ],
        )]);
        extractor.entry(&secret).unwrap();
        extractor.line(9, "TOPSECRET%hunter2@example.com").unwrap();
        let extracted = extractor.finish();
        let refused = extracted.clone().accepted(false).unwrap_err().to_string();
        let skipped = extracted.skipped().unwrap();
        for message in [&refused, &skipped] {
            for part in ["TOPSECRET", "hunter2", "uid="] {
                assert!(!message.contains(part), "{message}");
            }
            assert!(
                message.contains("entry 1 attribute mail: not an address"),
                "{message}"
            );
            assert!(message.contains("line 9: not an address"), "{message}");
        }
    }

    #[test]
    fn millions_of_invalid_values_cost_a_count_and_five_messages() {
        let mut extractor = Extractor::new("example.com", &attributes(&[]), 100);
        for number in 1..=1_000_000 {
            extractor.line(number, "junk").unwrap();
        }
        extractor.invalid_line(1_000_001, "longer than 4096 bytes");
        let extracted = extractor.finish();
        assert_eq!(extracted.invalid.count(), 1_000_001);
        assert_eq!(
            extracted.invalid.first().len(),
            super::super::QUOTED_PROBLEMS
        );
        let refused = extracted.accepted(false).unwrap_err();
        assert!(
            refused.to_string().ends_with("; and 999996 more"),
            "{refused}"
        );
        assert!(refused.to_string().len() < 300, "{refused}");
    }

    #[test]
    fn every_error_has_a_reason() {
        assert_eq!(SourceError::from(Utf16).reason(), "NotUTF8");
        assert_eq!(
            SourceError::from(Utf16).to_string(),
            "the list is UTF-16 (a PowerShell export?); save it as UTF-8"
        );
    }
}
