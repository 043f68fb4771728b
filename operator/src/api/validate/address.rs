use super::{code_point, injection_hazard, normalize_domain, quote};

const MAX_LOCAL_PART_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 254;

/// Normalizes a recipient address of `domain` (already normalized) to lower case.
///
/// Only plain dot-atom local parts are accepted: quoted local parts, `%` (percent hack),
/// `!` (bang paths), `:` and `@` routing are relay tricks and never legitimate recipients.
pub fn normalize_address(input: &str, domain: &str) -> Result<String, String> {
    let (local, address_domain) = split_address(input)?;
    let address_domain = normalize_domain(address_domain)?;
    if address_domain != domain {
        return Err(format!(
            "{} is not an address of {domain} (subdomains are separate MailDomains)",
            quote(input)
        ));
    }
    joined(input, local, &address_domain)
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
    let (local, domain) = split_address(input)?;
    joined(input, local, &normalize_domain(domain)?)
}

/// Any full address (`postmaster@example.net`), normalized: the domain in lower case, the
/// local part kept as written (it belongs to another mail system).
pub fn normalize_mailbox(input: &str) -> Result<String, String> {
    let (local, domain) = split_address(input)?;
    within_length(input, format!("{local}@{}", normalize_domain(domain)?))
}

/// `local@domain` in lower case, refused when longer than an address may be (RFC 5321).
fn joined(input: &str, local: &str, domain: &str) -> Result<String, String> {
    within_length(input, format!("{}@{domain}", local.to_ascii_lowercase()))
}

fn within_length(input: &str, address: String) -> Result<String, String> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "{} is longer than {MAX_ADDRESS_LEN} characters",
            quote(input)
        ));
    }
    Ok(address)
}

fn split_address(input: &str) -> Result<(&str, &str), String> {
    if let Some(hazard) = injection_hazard(input) {
        return Err(hazard);
    }
    let Some((local, domain)) = input.split_once('@') else {
        return Err(format!(
            "{} is not a full address like alice@example.com",
            quote(input)
        ));
    };
    if domain.contains('@') {
        return Err(format!("{} contains more than one '@'", quote(input)));
    }
    check_local_part(input, local)?;
    Ok((local, domain))
}

fn check_local_part(input: &str, local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err(format!("{} has an empty local part", quote(input)));
    }
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(format!(
            "{} has a local part longer than {MAX_LOCAL_PART_LEN} characters",
            quote(input)
        ));
    }
    if let Some(c) = local.chars().find(|c| !is_local_part_char(*c)) {
        return Err(format!(
            "{} contains {c:?} ({}) in its local part; only ASCII letters, digits and . _ + - = ' & * / ? ^ {{ }} ~ are accepted",
            quote(input),
            code_point(c)
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(format!(
            "{} has a leading, trailing or doubled '.' in its local part",
            quote(input)
        ));
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
}
