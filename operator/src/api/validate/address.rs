use super::{code_point, hazard, normalize_domain, quote};

const MAX_LOCAL_PART_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 254;

/// What is wrong with an address, said without the address. Recipient lists report a line
/// number and this: their content (a Secret's, a directory's) must not reach status,
/// Events or logs, and half an address is still one to harvest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    #[error("not an address (contains {0})")]
    Hazard(&'static str),
    #[error("not an address (no @)")]
    NoAt,
    #[error("not an address (more than one @)")]
    ManyAts,
    #[error("not an address (empty local part)")]
    EmptyLocalPart,
    #[error(
        "not an address (local part longer than {} characters)",
        MAX_LOCAL_PART_LEN
    )]
    LongLocalPart,
    #[error("not an address (a character not allowed in a local part)")]
    LocalPartCharacter,
    #[error("not an address (leading, trailing or doubled '.' in the local part)")]
    LocalPartDots,
    #[error("not an address (the part after @ is not a domain name)")]
    NotADomain,
    #[error("an address of another domain (subdomains are separate MailDomains)")]
    OtherDomain,
    #[error("not an address (longer than {} characters)", MAX_ADDRESS_LEN)]
    TooLong,
}

/// Why an address is refused, with what a spec's message says of it (the input quoted).
enum Refusal {
    Hazard(&'static str),
    NoAt,
    ManyAts,
    EmptyLocalPart,
    LongLocalPart,
    LocalPartCharacter(char),
    LocalPartDots,
    /// `normalize_domain`'s message.
    NotADomain(String),
    OtherDomain(String),
    TooLong,
}

impl Refusal {
    fn problem(&self) -> AddressProblem {
        match self {
            Self::Hazard(what) => AddressProblem::Hazard(what),
            Self::NoAt => AddressProblem::NoAt,
            Self::ManyAts => AddressProblem::ManyAts,
            Self::EmptyLocalPart => AddressProblem::EmptyLocalPart,
            Self::LongLocalPart => AddressProblem::LongLocalPart,
            Self::LocalPartCharacter(_) => AddressProblem::LocalPartCharacter,
            Self::LocalPartDots => AddressProblem::LocalPartDots,
            Self::NotADomain(_) => AddressProblem::NotADomain,
            Self::OtherDomain(_) => AddressProblem::OtherDomain,
            Self::TooLong => AddressProblem::TooLong,
        }
    }

    /// The message for a spec field: the user's own value, quoted.
    fn message(self, input: &str) -> String {
        let quoted = quote(input);
        match self {
            Self::Hazard(what) => format!(
                "{quoted} contains {what}, which is not allowed here (it could inject Postfix configuration)"
            ),
            Self::NoAt => format!("{quoted} is not a full address like alice@example.com"),
            Self::ManyAts => format!("{quoted} contains more than one '@'"),
            Self::EmptyLocalPart => format!("{quoted} has an empty local part"),
            Self::LongLocalPart => {
                format!("{quoted} has a local part longer than {MAX_LOCAL_PART_LEN} characters")
            }
            Self::LocalPartCharacter(c) => format!(
                "{quoted} contains {c:?} ({}) in its local part; only ASCII letters, digits and . _ + - = ' & * / ? ^ {{ }} ~ are accepted",
                code_point(c)
            ),
            Self::LocalPartDots => {
                format!("{quoted} has a leading, trailing or doubled '.' in its local part")
            }
            Self::NotADomain(message) => message,
            Self::OtherDomain(domain) => format!(
                "{quoted} is not an address of {domain} (subdomains are separate MailDomains)"
            ),
            Self::TooLong => format!("{quoted} is longer than {MAX_ADDRESS_LEN} characters"),
        }
    }
}

/// Normalizes a recipient address of `domain` (already normalized) to lower case.
///
/// Only plain dot-atom local parts are accepted: quoted local parts, `%` (percent hack),
/// `!` (bang paths), `:` and `@` routing are relay tricks and never legitimate recipients.
/// The message quotes `input`: for spec fields, the user's own values.
pub fn normalize_address(input: &str, domain: &str) -> Result<String, String> {
    recipient(input, domain).map_err(|refusal| refusal.message(input))
}

/// [`normalize_address`] for a line or value of a recipient list: what is wrong, never
/// the value.
pub fn normalize_listed_address(input: &str, domain: &str) -> Result<String, AddressProblem> {
    recipient(input, domain).map_err(|refusal| refusal.problem())
}

fn recipient(input: &str, domain: &str) -> Result<String, Refusal> {
    let (local, address_domain) = split_address(input)?;
    let address_domain = normalize_domain(address_domain).map_err(Refusal::NotADomain)?;
    if address_domain != domain {
        return Err(Refusal::OtherDomain(domain.to_string()));
    }
    joined(local, &address_domain)
}

/// A sender deny entry: a full address (`spam@example.org`) or a whole domain
/// (`example.org` or `@example.org`). Returns the Postfix access-map key.
pub fn normalize_sender_pattern(input: &str) -> Result<String, String> {
    if let Some(domain) = input.strip_prefix('@') {
        return normalize_domain(domain);
    }
    if !input.contains('@') {
        return normalize_domain(input);
    }
    let (local, domain) = split_address(input).map_err(|refusal| refusal.message(input))?;
    joined(local, &normalize_domain(domain)?).map_err(|refusal| refusal.message(input))
}

/// Any full address (`postmaster@example.net`), normalized: the domain in lower case, the
/// local part kept as written (it belongs to another mail system).
pub fn normalize_mailbox(input: &str) -> Result<String, String> {
    let (local, domain) = split_address(input).map_err(|refusal| refusal.message(input))?;
    within_length(format!("{local}@{}", normalize_domain(domain)?))
        .map_err(|refusal| refusal.message(input))
}

/// `local@domain` in lower case, refused when longer than an address may be (RFC 5321).
fn joined(local: &str, domain: &str) -> Result<String, Refusal> {
    within_length(format!("{}@{domain}", local.to_ascii_lowercase()))
}

fn within_length(address: String) -> Result<String, Refusal> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(Refusal::TooLong);
    }
    Ok(address)
}

fn split_address(input: &str) -> Result<(&str, &str), Refusal> {
    if let Some(what) = hazard(input) {
        return Err(Refusal::Hazard(what));
    }
    let Some((local, domain)) = input.split_once('@') else {
        return Err(Refusal::NoAt);
    };
    if domain.contains('@') {
        return Err(Refusal::ManyAts);
    }
    check_local_part(local)?;
    Ok((local, domain))
}

fn check_local_part(local: &str) -> Result<(), Refusal> {
    if local.is_empty() {
        return Err(Refusal::EmptyLocalPart);
    }
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(Refusal::LongLocalPart);
    }
    if let Some(c) = local.chars().find(|c| !is_local_part_char(*c)) {
        return Err(Refusal::LocalPartCharacter(c));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(Refusal::LocalPartDots);
    }
    Ok(())
}

fn is_local_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '.' | '_' | '+' | '-' | '=' | '\'' | '&' | '*' | '/' | '?' | '^' | '{' | '}' | '~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses() {
        let cases = [
            ("alice@example.com", "alice@example.com"),
            ("Alice@Example.COM", "alice@example.com"),
            ("first.last@example.com", "first.last@example.com"),
            ("user+tag@example.com", "user+tag@example.com"),
            ("o'brien@example.com", "o'brien@example.com"),
            ("a_b-c=d@example.com.", "a_b-c=d@example.com"),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_address(input, "example.com").as_deref(),
                Ok(want),
                "{input}"
            );
            assert_eq!(
                normalize_listed_address(input, "example.com").as_deref(),
                Ok(want),
                "{input}"
            );
        }
        assert_eq!(
            normalize_address("anna@bücher.example", "xn--bcher-kva.example").as_deref(),
            Ok("anna@xn--bcher-kva.example")
        );
    }

    #[test]
    fn relay_tricks_and_injections_are_refused() {
        let too_long = format!("{}@example.com", "a".repeat(65));
        let cases = [
            "alice",
            "@example.com",
            "alice@",
            "alice@other.com",
            "alice@sub.example.com",
            "alice%other.com@example.com",
            "other.com!alice@example.com",
            "@relay.example:alice@example.com",
            "\"alice\"@example.com",
            "\"a b\"@example.com",
            "alice@example.com@other.com",
            "alice@[192.0.2.1]",
            "alice@example.com\nbob@example.com",
            "alice@example.com OK",
            "alice,bob@example.com",
            "#alice@example.com",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "al(ice)@example.com",
            "<alice@example.com>",
            "alice;@example.com",
            "al$ice@example.com",
            too_long.as_str(),
        ];
        for input in cases {
            assert!(
                normalize_address(input, "example.com").is_err(),
                "{input:?} was accepted"
            );
        }
    }

    #[test]
    fn sender_patterns() {
        assert_eq!(
            normalize_sender_pattern("spam@Example.org").as_deref(),
            Ok("spam@example.org")
        );
        assert_eq!(
            normalize_sender_pattern("@Example.org").as_deref(),
            Ok("example.org")
        );
        assert_eq!(
            normalize_sender_pattern("example.org").as_deref(),
            Ok("example.org")
        );
        assert!(normalize_sender_pattern("spam@example.org REJECT").is_err());
        assert!(normalize_sender_pattern("a%b@example.org").is_err());
        assert!(normalize_sender_pattern("").is_err());
        let domain = ["b".repeat(60), "c".repeat(60), "d".repeat(60)].join(".");
        let too_long = format!("{}@{domain}.example", "a".repeat(64));
        assert!(normalize_sender_pattern(&too_long).is_err(), "{too_long}");
    }

    #[test]
    fn look_alike_local_parts_are_refused_by_code_point() {
        // Cyrillic а: the local part is ASCII-only, so no look-alike reaches a map.
        let Err(message) = normalize_address("\u{430}lice@example.com", "example.com") else {
            panic!("accepted a Cyrillic local part");
        };
        assert!(message.contains("U+0430"), "{message}");
    }

    #[test]
    fn a_listed_address_is_refused_by_its_problem_never_by_its_value() {
        use AddressProblem::*;
        // Long enough that a full local part makes the address too long.
        let domain = format!(
            "{}.{}.{}.example",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        let long_local = format!("{}hunter2@{domain}", "a".repeat(60));
        let too_long = format!("{}hunter2@{domain}", "a".repeat(57));
        let cases = [
            ("TOPSECRET-VALUE-1 hunter2", Hazard("whitespace")),
            ("hunter2,x@DOMAIN", Hazard("a comma")),
            ("hunter2", NoAt),
            ("hunter2@x@DOMAIN", ManyAts),
            ("@DOMAIN", EmptyLocalPart),
            (long_local.as_str(), LongLocalPart),
            ("hunter%2@DOMAIN", LocalPartCharacter),
            ("\u{430}hunter2@DOMAIN", LocalPartCharacter),
            (".hunter2@DOMAIN", LocalPartDots),
            ("hunter2@", NotADomain),
            ("hunter2@1.2.3.4", NotADomain),
            ("hunter2@other.example", OtherDomain),
            ("hunter2@sub.DOMAIN", OtherDomain),
            (too_long.as_str(), TooLong),
        ];
        for (input, want) in cases {
            let input = input.replace("DOMAIN", &domain);
            let problem = normalize_listed_address(&input, &domain);
            assert_eq!(problem, Err(want), "{input:?}");
            let message = want.to_string();
            assert!(!message.contains("hunter"), "{input:?}: {message}");
            assert!(!message.contains(&domain), "{input:?}: {message}");
            // A spec's own value is still quoted, so that its author sees which one.
            let spec = normalize_address(&input, &domain).unwrap_err();
            assert!(
                spec.contains(&quote(&input)) || want == NotADomain,
                "{input:?}: {spec}"
            );
        }
    }
}
