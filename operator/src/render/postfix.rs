//! The pieces of Postfix syntax the renderer writes and the agent reads back: lookup-table
//! lines, `main.cf` parameters, `master.cf` services, and the names derived from a domain.
//!
//! Every value that reaches a Postfix file goes through [`token`], so a newline, a space,
//! a comma or a `#` from user input can never start a new line, map entry or parameter.

use crate::api::validate::normalize_domain;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Prefix of the per-domain restriction classes (`smtpd_restriction_classes`).
pub const CLASS_PREFIX: &str = "mxd";
/// Prefix of the delivery transports (master.cf services) towards the primaries.
pub const TRANSPORT_PREFIX: &str = "mxt";

/// A value that is safe as one word of a Postfix file: a map key or value, a parameter
/// value, or a master.cf option.
pub fn token(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '#' | '{' | '}'))
    {
        return Err(format!(
            "{value:?} contains {c:?}, which Postfix would read as syntax"
        ));
    }
    // `$` expands parameters; `=` ends an -o option name.
    if value.contains('$') || value.contains('=') {
        return Err(format!("{value:?} contains '$' or '='"));
    }
    Ok(value)
}

/// Whether `address` is a `relay_recipients` key of `domain` as the agent accepts it:
/// `local@domain`, with no routing character (`@ % ! : "`) in the local part.
pub fn is_recipient_of(address: &str, domain: &str) -> bool {
    address
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('@'))
        .is_some_and(|local| !local.contains(['@', '%', '!', ':', '"']))
}

/// One line of a lookup table source (`postmap` input).
pub fn map_line(key: &str, value: &str) -> Result<String, String> {
    token(key)?;
    // Values may hold an SMTP reply text ("450 4.7.1 try later"): spaces are fine there,
    // line breaks and parameter expansion are not.
    if value.is_empty() || value.chars().any(|c| c.is_control()) || value.contains('$') {
        return Err(format!("map value {value:?} is empty or not one line"));
    }
    Ok(format!("{key} {value}\n"))
}

/// A short stable hex digest, used to derive Postfix names from domains and settings.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Name of the restriction class holding a domain's acceptance policy.
pub fn class_name(domain: &str) -> String {
    format!("{CLASS_PREFIX}{}", short_hash(&[domain]))
}

/// Whether `name` has the shape of a name made by [`class_name`] or a transport name.
pub fn is_generated_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 10 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Postfix time value (whole seconds; Postfix has no sub-second delays here).
pub fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// File name of a per-domain table under the gateway's `maps/` folder.
pub fn domain_table(kind: &str, domain: &str) -> String {
    format!("{kind}.{domain}")
}

/// The normalized domain a relay's or shard's `data` names.
pub fn checked_domain(data: &BTreeMap<String, String>) -> Result<String, String> {
    let domain = data
        .get(super::keys::DOMAIN)
        .ok_or("has no \"domain\" key")?
        .clone();
    if normalize_domain(&domain).as_deref() != Ok(domain.as_str()) {
        return Err(format!("{domain:?} is not a normalized domain"));
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_everything_that_is_postfix_syntax() {
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\rb",
            "a\tb",
            "a,b",
            "#a",
            "a$b",
            "a=b",
            "a{b",
            "a}b",
            "a\u{0}b",
            "a\u{85}b",
            "a\u{2028}b",
        ] {
            assert!(token(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(token("alice@example.com"), Ok("alice@example.com"));
        assert_eq!(token("smtp:[192.0.2.1]:25"), Ok("smtp:[192.0.2.1]:25"));
    }

    #[test]
    fn map_lines_are_one_line_each() {
        assert_eq!(
            map_line("example.com", "450 4.7.1 try later").unwrap(),
            "example.com 450 4.7.1 try later\n"
        );
        assert!(map_line("example.com", "OK\nevil.test OK").is_err());
        assert!(map_line("example.com evil.test", "OK").is_err());
        assert!(map_line("example.com", "$relay_domains").is_err());
        assert!(map_line("example.com", "").is_err());
    }

    #[test]
    fn generated_names_are_stable_and_recognisable() {
        let name = class_name("example.com");
        assert_eq!(name, class_name("example.com"));
        assert_ne!(name, class_name("example.org"));
        assert!(is_generated_name(&name, CLASS_PREFIX));
        assert!(!is_generated_name("mxdnothex!!!", CLASS_PREFIX));
        assert!(!is_generated_name("smtpd_banner", CLASS_PREFIX));
        assert_eq!(seconds(Duration::from_millis(2500)), "2s");
        assert_eq!(
            domain_table("sender_access", "example.com"),
            "sender_access.example.com"
        );
    }
}
