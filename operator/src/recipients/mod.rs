//! Recipient lists: the exact addresses a gateway accepts for a domain, merged from the
//! inline list, the referenced ConfigMap and Secret, and the directory.

pub mod extract;

use crate::api::validate::normalize_listed_address;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// How many bad lines a message quotes before it only counts the rest.
const QUOTED_PROBLEMS: usize = 5;

/// Where in a list a value was found: its line, or its entry's ordinal in a search result
/// and the attribute (never the entry's DN, which names a person).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position<'a> {
    Line(usize),
    Entry { ordinal: usize, attribute: &'a str },
}

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(number) => write!(f, "line {number}"),
            Self::Entry { ordinal, attribute } => {
                write!(f, "entry {ordinal} attribute {attribute}")
            }
        }
    }
}

/// The values of a list that are not addresses: how many, and where the first few are and
/// what is wrong with them. Never the values themselves: a list may be a Secret's, and the
/// messages reach status and Events. Bounded: a list of millions of junk lines costs a
/// count and `QUOTED_PROBLEMS` short messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid {
    count: usize,
    first: Vec<String>,
}

impl Invalid {
    pub fn push(&mut self, position: Position<'_>, problem: impl fmt::Display) {
        self.count += 1;
        if self.first.len() < QUOTED_PROBLEMS {
            self.first.push(format!("{position}: {problem}"));
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first few, as `line 2: not an address (no @)`.
    pub fn first(&self) -> &[String] {
        &self.first
    }
}

/// The first few problems, and how many more there are.
impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.first.join("; "))?;
        if self.count > self.first.len() {
            write!(f, "; and {} more", self.count - self.first.len())?;
        }
        Ok(())
    }
}

/// A list in UTF-16, as PowerShell's `Out-File` and `>` write it on Windows PowerShell 5:
/// read as UTF-8 it would be all invalid lines (every other byte a NUL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the list is UTF-16 (a PowerShell export?); save it as UTF-8")]
pub struct Utf16;

/// A list's bytes without the UTF-8 byte-order mark Windows tools put first; a UTF-16 list
/// (its byte-order mark, either byte order) is refused whole.
pub fn without_bom(bytes: &[u8]) -> Result<&[u8], Utf16> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Utf16);
    }
    Ok(bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes))
}

/// A referenced list with lines that are not addresses of the domain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name} has {} invalid line(s): {invalid}", invalid.count())]
pub struct InvalidList {
    pub source_name: String,
    pub invalid: Invalid,
}

/// Parses a list with one address per line; blank lines and `#` comments are skipped, and
/// so is a UTF-8 byte-order mark. A single bad line refuses the whole list: a half-applied
/// list would silently reject real recipients, and the previous list keeps serving until
/// the list is fixed. The refusal names lines and problems, never their content.
pub fn parse_list(
    source_name: &str,
    text: &str,
    domain: &str,
) -> Result<BTreeSet<String>, InvalidList> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut addresses = BTreeSet::new();
    let mut invalid = Invalid::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match normalize_listed_address(line, domain) {
            Ok(address) => {
                addresses.insert(address);
            }
            Err(problem) => invalid.push(Position::Line(number + 1), problem),
        }
    }
    if invalid.is_empty() {
        return Ok(addresses);
    }
    Err(InvalidList {
        source_name: source_name.to_string(),
        invalid,
    })
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
    fingerprint_of(recipients.iter())
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of the addresses, one a line.
pub fn fingerprint_of<'a>(addresses: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for address in addresses {
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
        assert_eq!(error.invalid.count(), 2);
        assert_eq!(
            error.to_string(),
            "ConfigMap users/list has 2 invalid line(s): line 2: not an address (a character \
             not allowed in a local part); line 3: an address of another domain (subdomains \
             are separate MailDomains)"
        );
    }

    #[test]
    fn a_refusal_names_lines_and_problems_never_their_content() {
        let cases = [
            (
                "TOPSECRET-VALUE-1 hunter2",
                "not an address (contains whitespace)",
            ),
            ("TOPSECRET-VALUE-1", "not an address (no @)"),
            (
                "TOPSECRET@hunter2@example.com",
                "not an address (more than one @)",
            ),
            (
                "TOPSECRET!hunter2@example.com",
                "not an address (a character",
            ),
            (
                "TOPSECRET..hunter2@example.com",
                "not an address (leading, trailing",
            ),
            (
                "TOPSECRET@hunter2",
                "not an address (the part after @ is not a domain",
            ),
            ("TOPSECRET@hunter2.example", "an address of another domain"),
            (
                "TOPSECRET\u{430}hunter2@example.com",
                "not an address (a character",
            ),
        ];
        for (line, want) in cases {
            let text = format!("alice@example.com\n{line}\n");
            let error = parse_list("Secret s/k", &text, "example.com").unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("Secret s/k has 1 invalid line(s): line 2: {want}")),
                "{line:?}: {message}"
            );
            for part in ["TOPSECRET", "hunter2", "VALUE"] {
                assert!(!message.contains(part), "{line:?}: {message}");
            }
        }
    }

    #[test]
    fn long_problem_lists_are_cut() {
        let text = (0..20)
            .map(|i| format!("user{i}@other.org\n"))
            .collect::<String>();
        let error = parse_list("Secret s/k", &text, "example.com").unwrap_err();
        assert_eq!(error.invalid.count(), 20);
        assert_eq!(error.invalid.first().len(), QUOTED_PROBLEMS);
        assert!(error.to_string().ends_with("; and 15 more"), "{error}");
    }

    #[test]
    fn a_list_of_junk_holds_a_count_and_a_few_messages() {
        let text = "junk\n".repeat(200_000);
        let error = parse_list("Secret s/k", &text, "example.com").unwrap_err();
        assert_eq!(error.invalid.count(), 200_000);
        assert_eq!(error.invalid.first().len(), QUOTED_PROBLEMS);
        assert!(error.to_string().len() < 300, "{error}");
        assert!(error.to_string().ends_with("; and 199995 more"), "{error}");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_utf16_refused() {
        let text = "\u{feff}alice@example.com\nbob@example.com\n";
        let list = parse_list("ConfigMap users", text, "example.com").unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        // Only at the start: elsewhere it is in an address.
        let inner = "alice@example.com\n\u{feff}bob@example.com\n";
        assert!(parse_list("ConfigMap users", inner, "example.com").is_err());

        let utf8 = b"\xEF\xBB\xBFalice@example.com\n";
        assert_eq!(without_bom(utf8), Ok(&b"alice@example.com\n"[..]));
        assert_eq!(without_bom(b"alice"), Ok(&b"alice"[..]));
        assert_eq!(without_bom(b""), Ok(&b""[..]));
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("a@example.com\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let utf16be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("a@example.com\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(without_bom(&utf16le), Err(Utf16));
        assert_eq!(without_bom(&utf16be), Err(Utf16));
        assert!(Utf16.to_string().contains("UTF-16"));
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
