//! Pure checks for everything a user writes into a spec. The API server of some clusters
//! ignores CEL rules, so nothing reaches Postfix or DNS without passing through here.

mod address;
mod duration;
mod names;
mod network;
mod quantity;

pub use address::{normalize_address, normalize_sender_pattern};
pub use duration::parse_duration;
pub use names::{
    host_port, is_dns1123_label, is_dns1123_subdomain, normalize_dns_name, normalize_domain,
    normalize_host, parse_host_port,
};
pub use network::parse_client_network;
pub use quantity::parse_byte_quantity;

use std::fmt;

/// One thing wrong with a spec, with the path of the field that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec; its message lists all of them so that a user fixes the
/// object in one round trip.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ValidationError {
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects problems while a spec is walked.
#[derive(Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records the error of a check, if any, and passes its value on.
    pub(crate) fn check<T>(
        &mut self,
        path: impl Into<String>,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }

    pub(crate) fn k8s_name(&mut self, path: impl Into<String>, name: &str) {
        if !is_dns1123_subdomain(name) {
            self.push(
                path,
                format!("{name:?} is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253 characters)"),
            );
        }
    }

    pub(crate) fn k8s_key(&mut self, path: impl Into<String>, key: &str) {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.push(
                path,
                format!("{key:?} is not a valid ConfigMap or Secret key (letters, digits, '-', '_' and '.')"),
            );
        }
    }

    pub(crate) fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems: self.0 })
        }
    }
}

/// Names the first character that could break out of a Postfix file or map entry, if any.
/// Whitespace separates a map's key from its value, a comma separates list items in
/// main.cf, `#` starts a comment and a newline starts a new entry or parameter.
pub(crate) fn injection_hazard(input: &str) -> Option<String> {
    input.chars().find_map(|c| {
        let what = match c {
            '\n' => "a newline",
            '\r' => "a carriage return",
            ',' => "a comma",
            '#' => "'#'",
            c if c.is_whitespace() => "whitespace",
            c if c.is_control() => "a control character",
            _ => return None,
        };
        Some(format!(
            "{input:?} contains {what}, which is not allowed here (it could inject Postfix configuration)"
        ))
    })
}
