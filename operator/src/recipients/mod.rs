//! Recipient lists: the exact addresses a gateway accepts for a domain, merged from the
//! inline list, the referenced ConfigMap and Secret, and the directory.

pub mod extract;

use crate::api::validate::normalize_address;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How many bad lines a message quotes before it only counts the rest.
const QUOTED_PROBLEMS: usize = 5;

/// A referenced list with lines that are not addresses of the domain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name} has {count} invalid line(s): {quoted}")]
pub struct InvalidList {
    pub source_name: String,
    pub count: usize,
    pub quoted: String,
}

/// Parses a list with one address per line; blank lines and `#` comments are skipped.
/// A single bad line refuses the whole list: a half-applied list would silently reject
/// real recipients, and the previous list keeps serving until the list is fixed.
pub fn parse_list(
    source_name: &str,
    text: &str,
    domain: &str,
) -> Result<BTreeSet<String>, InvalidList> {
    let mut addresses = BTreeSet::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match normalize_address(line, domain) {
            Ok(address) => {
                addresses.insert(address);
            }
            Err(message) => problems.push(format!("line {}: {message}", number + 1)),
        }
    }
    if problems.is_empty() {
        return Ok(addresses);
    }
    Err(InvalidList {
        source_name: source_name.to_string(),
        count: problems.len(),
        quoted: quoted(&problems),
    })
}

/// The first few `problems`, and how many more there are.
pub(crate) fn quoted(problems: &[String]) -> String {
    let mut quoted = problems
        .iter()
        .take(QUOTED_PROBLEMS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > QUOTED_PROBLEMS {
        quoted.push_str(&format!("; and {} more", problems.len() - QUOTED_PROBLEMS));
    }
    quoted
}

/// A list of distinct addresses, held as one text with an address per line: a synced
/// source's list stays in memory between syncs, and a set of strings takes about four
/// times the bytes of the addresses (a million addresses: some 100 MiB against 25 MiB).
/// Cloned by reference.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddressList {
    text: Arc<str>,
    len: usize,
}

impl AddressList {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The addresses, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.text.split_terminator('\n')
    }
}

impl AddressList {
    /// Addresses as `normalize_address` gives them: none holds a line break, which would
    /// split it in two here.
    pub fn of_normalized(addresses: BTreeSet<String>) -> Self {
        let bytes = addresses.iter().map(|a| a.len() + 1).sum();
        let mut text = String::with_capacity(bytes);
        for address in &addresses {
            text.push_str(address);
            text.push('\n');
        }
        Self {
            len: addresses.len(),
            text: text.into(),
        }
    }
}

/// A domain's recipients, merged from its lists without copying them: the synced lists
/// (up to a million addresses each) are read where they are held. Read in order, each
/// address once.
#[derive(Clone, Debug, Default)]
pub struct RecipientSet {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Set(BTreeSet<String>),
    List(AddressList),
}

impl Part {
    fn iter(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Self::Set(set) => Box::new(set.iter().map(String::as_str)),
            Self::List(list) => Box::new(list.iter()),
        }
    }
}

impl RecipientSet {
    /// `set` and `lists` merged; each is in order with each address once, as a
    /// `BTreeSet` and an [`AddressList`] are.
    pub fn merged(set: BTreeSet<String>, lists: Vec<AddressList>) -> Self {
        let parts = std::iter::once(Part::Set(set))
            .chain(lists.into_iter().map(Part::List))
            .collect();
        let mut merged = Self { parts, len: 0 };
        merged.len = merged.iter().count();
        merged
    }

    /// How many distinct addresses.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every address once, in order: the smallest next address of the parts, taken from
    /// each part that has it.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut heads: Vec<_> = self.parts.iter().map(|p| p.iter().peekable()).collect();
        std::iter::from_fn(move || {
            let next = heads.iter_mut().filter_map(|h| h.peek().copied()).min()?;
            for head in &mut heads {
                head.next_if_eq(&next);
            }
            Some(next)
        })
    }
}

/// The same addresses, however they are split into parts.
impl PartialEq for RecipientSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl From<BTreeSet<String>> for RecipientSet {
    fn from(set: BTreeSet<String>) -> Self {
        Self::merged(set, vec![])
    }
}

/// A short, stable fingerprint of a recipient set, shown in status so that a person can
/// tell whether two gateways or two points in time have the same list.
pub fn fingerprint(recipients: &RecipientSet) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for address in recipients.iter() {
        hasher.update(address.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_case_and_duplicates() {
        let text = "# staff\nalice@example.com\n\n  Bob@Example.com  \nalice@example.com\n";
        let list = parse_list("ConfigMap users", text, "example.com").unwrap();
        assert_eq!(
            list.into_iter().collect::<Vec<_>>(),
            ["alice@example.com", "bob@example.com"]
        );
    }

    #[test]
    fn one_bad_line_refuses_the_list_and_says_where() {
        let text = "alice@example.com\nbob%evil.org@example.com\ncarol@other.org\n";
        let error = parse_list("ConfigMap users/list", text, "example.com").unwrap_err();
        assert_eq!(error.count, 2);
        assert!(error.quoted.starts_with("line 2: "), "{}", error.quoted);
        assert!(error.quoted.contains("line 3: "), "{}", error.quoted);
        assert!(
            error
                .to_string()
                .starts_with("ConfigMap users/list has 2 invalid line(s)")
        );
    }

    #[test]
    fn long_problem_lists_are_cut() {
        let text = (0..20)
            .map(|i| format!("user{i}@other.org\n"))
            .collect::<String>();
        let error = parse_list("Secret s/k", &text, "example.com").unwrap_err();
        assert_eq!(error.count, 20);
        assert!(error.quoted.ends_with("; and 15 more"), "{}", error.quoted);
    }

    #[test]
    fn an_address_list_gives_back_the_set_it_was_made_of() {
        let set: BTreeSet<String> = ["b@x.org", "a@x.org", "c@x.org"].map(String::from).into();
        let list = AddressList::of_normalized(set.clone());
        assert_eq!((list.len(), list.is_empty()), (3, false));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            ["a@x.org", "b@x.org", "c@x.org"]
        );
        let empty = AddressList::of_normalized(BTreeSet::new());
        assert_eq!((empty.len(), empty.iter().count()), (0, 0));
        assert!(empty.is_empty());
    }

    #[test]
    fn merged_lists_are_read_in_order_each_address_once() {
        let list = |addresses: &[&str]| {
            AddressList::of_normalized(addresses.iter().map(|a| a.to_string()).collect())
        };
        let set = BTreeSet::from(["b@x.org".to_string(), "e@x.org".into()]);
        let merged = RecipientSet::merged(
            set,
            vec![
                list(&["a@x.org", "b@x.org", "d@x.org"]),
                list(&[]),
                list(&["d@x.org", "f@x.org"]),
            ],
        );
        assert_eq!(
            merged.iter().collect::<Vec<_>>(),
            ["a@x.org", "b@x.org", "d@x.org", "e@x.org", "f@x.org"]
        );
        assert_eq!(merged.len(), 5);
        let split_differently = RecipientSet::merged(
            BTreeSet::from(["a@x.org".to_string(), "f@x.org".into()]),
            vec![list(&["b@x.org", "d@x.org", "e@x.org"])],
        );
        assert_eq!(merged, split_differently, "equal by their addresses");
        let none = RecipientSet::merged(BTreeSet::new(), vec![list(&[])]);
        assert_eq!(
            (none.len(), none.is_empty(), none.iter().next()),
            (0, true, None)
        );
    }

    #[test]
    fn fingerprint_depends_on_content_only() {
        let a = RecipientSet::from(BTreeSet::from(["a@x.org".into(), "b@x.org".into()]));
        let b = RecipientSet::merged(
            BTreeSet::from(["b@x.org".into()]),
            vec![AddressList::of_normalized(BTreeSet::from([
                "a@x.org".to_string(),
                "b@x.org".into(),
            ]))],
        );
        let c = RecipientSet::from(BTreeSet::from(["a@x.org".to_string()]));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert!(fingerprint(&a).starts_with("sha256:"));
        assert_eq!(fingerprint(&a).len(), "sha256:".len() + 16);
    }
}
