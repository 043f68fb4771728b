//! Pure checks for everything a user writes into a spec. The API server of some clusters
//! ignores CEL rules, so nothing reaches Postfix or DNS without passing through here.

mod address;
mod duration;
mod names;
mod network;
mod quantity;

pub use address::{
    AddressProblem, normalize_address, normalize_listed_address, normalize_mailbox,
    normalize_sender_pattern,
};
pub use duration::parse_duration;
pub use names::{
    check_annotations, host_port, is_dns1123_label, is_dns1123_subdomain, normalize_dns_name,
    normalize_domain, normalize_host, parse_host_port, parse_next_hop,
};
pub use network::{network_contains, parse_client_network};
pub use quantity::{parse_byte_quantity, parse_message_size, quantity_nanos};

use std::fmt;

/// Most exact addresses `spec.recipients.inline` may list. A MailDomain is one etcd object
/// (about 1.5 MiB at most) and is read on every reconcile; longer lists belong in a
/// ConfigMap or Secret (`configMapRef`, `secretRef`).
pub const MAX_INLINE_RECIPIENTS: usize = 10_000;
/// Most entries of `spec.policy.senderDeny` and of `spec.policy.clientDeny`.
pub const MAX_DENY_ENTRIES: usize = 10_000;
/// Most DNS block lists of `spec.policy.rbls`: Postfix queries every one for every
/// connection.
pub const MAX_RBLS: usize = 16;
/// Most host names of a MailGateway's `spec.mxHostnames`.
pub const MAX_MX_HOSTNAMES: usize = 16;

/// Refuses a list with more than `max` entries, with one problem for the whole list
/// rather than one per entry.
pub fn check_list_len(len: usize, max: usize) -> Result<(), String> {
    if len <= max {
        Ok(())
    } else {
        Err(format!("has {len} entries; at most {max} are allowed"))
    }
}

/// `c` as a message names it: `U+00AD`, so that an invisible or look-alike character is
/// seen for what it is.
pub(crate) fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// How many characters of a value a message quotes.
const QUOTED_CHARS: usize = 64;
/// How many problems the message of a `ValidationError` lists.
const LISTED_PROBLEMS: usize = 20;

/// `input` quoted for a message, cut after `QUOTED_CHARS` characters. Messages end up in
/// a status condition and an Event: a value of a megabyte quoted in full, possibly once
/// per entry of a list, would make the status too large to write, and the user would get
/// no condition at all.
pub(crate) fn quote(input: &str) -> String {
    let count = input.chars().count();
    if count <= QUOTED_CHARS {
        return format!("{input:?}");
    }
    let head: String = input.chars().take(QUOTED_CHARS).collect();
    format!("{head:?}… ({count} characters)")
}

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
    // Bounded for the same reason as `quote`: thousands of bad entries must still fit a
    // status condition.
    let mut listed = problems
        .iter()
        .take(LISTED_PROBLEMS)
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > LISTED_PROBLEMS {
        listed.push_str(&format!(
            "; and {} more problems",
            problems.len() - LISTED_PROBLEMS
        ));
    }
    listed
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
                format!("{} is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253 characters)", quote(name)),
            );
        }
    }

    /// A ConfigMap or Secret key as the API server accepts it: `.` and `..` are path
    /// components, not keys.
    pub(crate) fn k8s_key(&mut self, path: impl Into<String>, key: &str) {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && key != "."
            && !key.starts_with("..");
        if !valid {
            self.push(
                path,
                format!("{} is not a valid ConfigMap or Secret key (letters, digits, '-', '_' and '.'; not '.' or starting with '..')", quote(key)),
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
    hazard(input).map(|what| {
        format!(
            "{} contains {what}, which is not allowed here (it could inject Postfix configuration)",
            quote(input)
        )
    })
}

/// What `injection_hazard` names, without the input: "a newline", "whitespace", ...
pub(crate) fn hazard(input: &str) -> Option<&'static str> {
    input.chars().find_map(|c| match c {
        '\n' => Some("a newline"),
        '\r' => Some("a carriage return"),
        ',' => Some("a comma"),
        '#' => Some("'#'"),
        c if c.is_whitespace() => Some("whitespace"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_quoted_in_part() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1_000_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 100, "{quoted}");
        assert!(quoted.ends_with("… (1000000 characters)"), "{quoted}");
    }

    #[test]
    fn a_message_lists_the_first_problems_and_counts_the_rest() {
        let mut problems = Problems::default();
        for i in 0..10_000 {
            problems.push(format!("spec.recipients.inline[{i}]"), "is bad");
        }
        let Err(error) = problems.finish() else {
            panic!("no error");
        };
        assert_eq!(error.problems.len(), 10_000);
        let message = error.to_string();
        assert!(
            message.starts_with("spec.recipients.inline[0]: is bad; "),
            "{message}"
        );
        assert!(message.ends_with("; and 9980 more problems"), "{message}");
        assert!(message.len() < 1_000, "{message}");
    }

    #[test]
    fn list_lengths() {
        assert_eq!(check_list_len(MAX_RBLS, MAX_RBLS), Ok(()));
        assert_eq!(
            check_list_len(MAX_INLINE_RECIPIENTS + 1, MAX_INLINE_RECIPIENTS),
            Err("has 10001 entries; at most 10000 are allowed".into())
        );
    }

    #[test]
    fn configmap_keys() {
        let paths = |key: &str| {
            let mut problems = Problems::default();
            problems.k8s_key("key", key);
            problems.0.len()
        };
        for good in ["list", "addresses.txt", "a_b-c", ".hidden"] {
            assert_eq!(paths(good), 0, "{good}");
        }
        for bad in ["", ".", "..", "..data", "a b", "a/b", "a\nb", "k=v", "a,b"] {
            assert_eq!(paths(bad), 1, "{bad:?}");
        }
    }
}
