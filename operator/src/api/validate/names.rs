use super::{code_point, injection_hazard, quote};
use icu_normalizer::ComposingNormalizerBorrowed;
use icu_normalizer::uts46::Uts46MapperBorrowed;
use std::collections::BTreeMap;
use std::net::IpAddr;
use unicode_script::{Script, UnicodeScript};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Normalizes a mail domain to the form Postfix and DNS see: internationalised names to
/// punycode, lower case, no trailing dot. A mail domain needs at least two labels.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    let name = normalize_dns_name(input)?;
    if !name.contains('.') {
        return Err(format!(
            "{} is not a fully qualified domain name (it needs at least two labels, like example.com)",
            quote(input)
        ));
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{} has an all-numeric top-level label; an IP address is not a domain",
            quote(input)
        ));
    }
    Ok(name)
}

/// Normalizes any DNS name (one label is enough, as for a TSIG key name).
pub fn normalize_dns_name(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(hazard) = injection_hazard(input) {
        return Err(hazard);
    }
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() || trimmed.ends_with('.') {
        return Err(format!("{} is not a domain name", quote(input)));
    }
    // Every character stays at least one character in punycode, so a longer input can only
    // be too long; refused before the IDNA work on it.
    if trimmed.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "{} is longer than {MAX_NAME_LEN} characters",
            quote(input)
        ));
    }
    if let Some(change) = idna_change(trimmed) {
        return Err(format!("{}: {change}", quote(input)));
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| {
        format!(
            "{} is not a valid (internationalised) domain name",
            quote(input)
        )
    })?;
    if ascii.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} is longer than {MAX_NAME_LEN} characters",
            quote(input)
        ));
    }
    for label in ascii.split('.') {
        check_label(input, label)?;
    }
    if ascii.split('.').any(|label| label.starts_with(ACE_PREFIX)) {
        check_unicode_form(input, trimmed, &ascii)?;
    }
    Ok(ascii)
}

/// The prefix of an A-label, the punycode form of an internationalised label.
const ACE_PREFIX: &str = "xn--";

/// Names the first character of `name` that IDNA processing would silently map to another
/// one or drop, beyond lower-casing: fullwidth letters, the ideographic full stop, soft
/// hyphens, compatibility characters like the Kelvin sign. A name that is not written the
/// way it is used is how a look-alike slips past a reviewer. The invisible joiners ZWJ
/// and ZWNJ, which IDNA keeps in some contexts, are refused for the same reason.
fn idna_change(name: &str) -> Option<String> {
    let mapper = Uts46MapperBorrowed::new();
    let nfc = ComposingNormalizerBorrowed::new_nfc();
    let canonical = || {
        idna::domain_to_ascii(name)
            .map(|ascii| idna::domain_to_unicode(&ascii).0)
            .map(|unicode| format!("; write the name as {unicode:?}"))
            .unwrap_or_default()
    };
    name.chars().filter(|c| !c.is_ascii()).find_map(|c| {
        let point = code_point(c);
        if matches!(c, '\u{200C}' | '\u{200D}') {
            return Some(format!(
                "{point} is an invisible joiner; a name with it looks like one without it and is refused"
            ));
        }
        let mut buffer = [0; 4];
        let alone: &str = c.encode_utf8(&mut buffer);
        let mapped: String = mapper.map_normalize(std::iter::once(c)).collect();
        let lower: String = c.to_lowercase().collect();
        if mapped == lower && nfc.is_normalized(alone) {
            return None;
        }
        Some(if mapped.contains(char::REPLACEMENT_CHARACTER) {
            format!("{point} is not allowed in a domain name")
        } else if mapped.is_empty() {
            format!("{point} would be dropped by IDNA mapping{}", canonical())
        } else {
            format!(
                "{point} would be changed to {mapped:?} by IDNA mapping{}",
                canonical()
            )
        })
    })
}

/// Checks the Unicode form of a name with A-labels (`ascii`): what the user wrote must be
/// that form already (apart from case and Unicode normalization), and no label may mix
/// scripts. Punycode written directly is decoded and checked the same way, so
/// `xn--pypal-4ve` (Cyrillic а in "paypal") is refused like the look-alike itself.
fn check_unicode_form(input: &str, trimmed: &str, ascii: &str) -> Result<(), String> {
    let (unicode, decoded) = idna::domain_to_unicode(ascii);
    if decoded.is_err() {
        return Err(format!(
            "{} is not a valid (internationalised) domain name",
            quote(input)
        ));
    }
    let lowered = trimmed.to_lowercase();
    let given = ComposingNormalizerBorrowed::new_nfc().normalize(&lowered);
    for (written, canonical) in given.split('.').zip(unicode.split('.')) {
        if !written.is_ascii() && written != canonical {
            return Err(format!(
                "{}: label {written:?} would be changed to {canonical:?} by IDNA mapping; write the name as {unicode:?}",
                quote(input)
            ));
        }
    }
    for (label, a_label) in unicode.split('.').zip(ascii.split('.')) {
        if let Some(scripts) = mixed_scripts(label) {
            return Err(format!(
                "{}: label {label:?} ({a_label}) mixes scripts ({}); a look-alike of another name is refused",
                quote(input),
                scripts.join(", ")
            ));
        }
    }
    Ok(())
}

/// Script combinations that belong together in one label, after UTS #39's "highly
/// restrictive" level: Japanese, Chinese with Bopomofo, and Korean. Latin may join each
/// of them (as in Japanese brand names); any other mix is refused.
const SCRIPT_FAMILIES: [&[Script]; 3] = [
    &[Script::Han, Script::Hiragana, Script::Katakana],
    &[Script::Han, Script::Bopomofo],
    &[Script::Han, Script::Hangul],
];

/// The scripts of `label`, in order of appearance, when they are more than one script
/// family allows. Characters shared by all scripts (digits, '-') and combining marks do
/// not count.
fn mixed_scripts(label: &str) -> Option<Vec<&'static str>> {
    let mut scripts: Vec<Script> = vec![];
    for script in label.chars().map(|c| c.script()) {
        if !matches!(script, Script::Common | Script::Inherited) && !scripts.contains(&script) {
            scripts.push(script);
        }
    }
    let single = scripts.len() <= 1
        || SCRIPT_FAMILIES.iter().any(|family| {
            scripts
                .iter()
                .all(|script| *script == Script::Latin || family.contains(script))
        });
    (!single).then(|| scripts.iter().map(|script| script.full_name()).collect())
}

fn check_label(input: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("{} has an empty label", quote(input)));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{} has a label longer than {MAX_LABEL_LEN} characters",
            quote(input)
        ));
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "{} may only contain letters, digits and '-' in each label",
            quote(input)
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{} has a label that starts or ends with '-'",
            quote(input)
        ));
    }
    Ok(())
}

/// A host to connect to: a fully qualified name or an IP address literal.
pub fn normalize_host(input: &str) -> Result<String, String> {
    let unbracketed = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(input);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    normalize_domain(input)
}

/// `host:port` (an IPv6 host in brackets), normalized; the port must not be 0.
pub fn parse_host_port(input: &str) -> Result<String, String> {
    let (host, port) = input
        .rsplit_once(':')
        .ok_or_else(|| format!("{} is not host:port", quote(input)))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{}: {} is not a port (1-65535)", quote(input), quote(port)))?;
    Ok(host_port(&normalize_host(host)?, port))
}

/// A relay host as Postfix names a next hop: `host`, `host:port`, `[host]` or
/// `[host]:port`. Brackets mean "connect to this host, do not look up its MX"; an address
/// is always a direct connection and is rendered in brackets (`[ipv6:...]` for IPv6).
pub fn parse_next_hop(input: &str) -> Result<String, String> {
    let (host, bracketed, port) = match input.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{} has '[' without ']'", quote(input)))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{}: only :port may follow ']'", quote(input)))?,
                ),
            };
            (host, true, port)
        }
        None => match input.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(format!(
                    "{}: write an IPv6 address in brackets, [2001:db8::25]:25",
                    quote(input)
                ));
            }
            Some((host, port)) => (host, false, Some(port)),
            None => (input, false, None),
        },
    };
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("[{ip}]"),
        Ok(IpAddr::V6(ip)) => format!("[ipv6:{ip}]"),
        Err(_) => {
            let name = normalize_domain(host)?;
            if bracketed { format!("[{name}]") } else { name }
        }
    };
    match port {
        None => Ok(host),
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|port| format!("{host}:{port}"))
            .ok_or_else(|| format!("{}: {} is not a port (1-65535)", quote(input), quote(port))),
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// RFC 1123 label as Kubernetes uses it for namespaces.
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// RFC 1123 subdomain as Kubernetes uses it for most object names.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && !name.is_empty() && name.split('.').all(is_dns1123_label)
}

/// Most bytes the keys and values of one object's annotations may take (the API server's
/// limit).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Annotations as the API server accepts them on the objects the operator writes: keys
/// are qualified names (`example.com/name` or `name`), and all of them together stay under
/// 256 KiB. Checked here so that a bad key is a condition on the spec, not a write that
/// fails on every reconcile.
pub fn check_annotations(annotations: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(key) = annotations.keys().find(|key| !is_qualified_name(key)) {
        return Err(format!(
            "{} is not a valid annotation key (an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)",
            quote(key)
        ));
    }
    let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATIONS_BYTES {
        return Err(format!(
            "take {bytes} bytes; at most {MAX_ANNOTATIONS_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// A Kubernetes qualified name: `[prefix/]name`.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns1123_subdomain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_and_port_are_normalized() {
        use super::parse_host_port;
        assert_eq!(
            parse_host_port("MX1.Relay.test.:25"),
            Ok("mx1.relay.test:25".into())
        );
        assert_eq!(
            parse_host_port("127.0.0.1:2525"),
            Ok("127.0.0.1:2525".into())
        );
        assert_eq!(parse_host_port("[::1]:25"), Ok("[::1]:25".into()));
        for bad in [
            "relay.test",
            "relay.test:0",
            "relay.test:smtp",
            "a b:25",
            ":25",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn relay_hosts_are_postfix_next_hops() {
        for (input, next_hop) in [
            ("smtp.example.net", "smtp.example.net"),
            ("SMTP.Example.NET.:587", "smtp.example.net:587"),
            ("[smtp.example.net]", "[smtp.example.net]"),
            ("[smtp.example.net]:25", "[smtp.example.net]:25"),
            ("192.0.2.25", "[192.0.2.25]"),
            ("[192.0.2.25]:2525", "[192.0.2.25]:2525"),
            ("[2001:db8::25]:25", "[ipv6:2001:db8::25]:25"),
        ] {
            assert_eq!(parse_next_hop(input), Ok(next_hop.into()), "{input}");
        }
        for bad in [
            "2001:db8::25",
            "[smtp.example.net",
            "[smtp.example.net]25",
            "smtp.example.net:0",
            "smtp.example.net:smtp",
            "smtp example.net",
            "",
        ] {
            assert!(parse_next_hop(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_are_normalized() {
        let cases = [
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("mail.example.co.uk", "mail.example.co.uk"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.example", "a-b.example"),
            ("123.example", "123.example"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_domain(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_domains_are_refused() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}example", "abcdefghi.".repeat(26));
        let cases = [
            "",
            ".",
            "example",
            "example..com",
            ".example.com",
            "example.com..",
            "-example.com",
            "example-.com",
            "exa_mple.com",
            "example.com\nsmtpd_banner = x",
            "example.com,evil.com",
            "example.com #comment",
            "exa mple.com",
            "example.com\t",
            "example.com\u{0}",
            "user@example.com",
            "192.168.0.1",
            "[192.168.0.1]",
            "example.com:25",
            "ex%ample.com",
            "ex!ample.com",
            long_label.as_str(),
            long_name.as_str(),
        ];
        for input in cases {
            assert!(normalize_domain(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn injection_errors_name_the_character() {
        let Err(message) = normalize_domain("example.com\nrelayhost=x") else {
            panic!("accepted a newline");
        };
        assert!(message.contains("newline"), "{message}");
        let Err(message) = normalize_domain("a.com,b.com") else {
            panic!("accepted a comma");
        };
        assert!(message.contains("comma"), "{message}");
    }

    #[test]
    fn internationalised_names_in_their_own_script_are_accepted() {
        let known = [
            ("bücher.de", "xn--bcher-kva.de"),
            ("Bücher.DE.", "xn--bcher-kva.de"),
            // Decomposed ü: the same text as the composed form, so nothing changes.
            ("bu\u{308}cher.de", "xn--bcher-kva.de"),
            ("straße.de", "xn--strae-oqa.de"),
            ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ];
        for (input, want) in known {
            assert_eq!(normalize_domain(input).as_deref(), Ok(want), "{input}");
        }
        for input in [
            "bücher.de",
            "пример.рф",
            "例え.jp",
            "한국어.kr",
            "παράδειγμα.gr",
            "sony-ソニー.jp",
            "中文-abc.cn",
            "münchen-2.de",
        ] {
            let Ok(ascii) = normalize_domain(input) else {
                panic!("{input:?} was refused: {:?}", normalize_domain(input));
            };
            assert!(ascii.starts_with("xn--"), "{input}: {ascii}");
            // The punycode form, written directly, is accepted as the same name.
            assert_eq!(normalize_domain(&ascii), Ok(ascii.clone()), "{input}");
        }
    }

    fn refusal(input: &str) -> String {
        match normalize_domain(input) {
            Ok(name) => panic!("{input:?} was accepted as {name}"),
            Err(message) => message,
        }
    }

    #[test]
    fn characters_that_idna_would_change_are_named() {
        let message = refusal("\u{FF45}xample.com");
        assert!(
            message.contains(
                "U+FF45 would be changed to \"e\" by IDNA mapping; write the name as \"example.com\""
            ),
            "{message}"
        );
        let message = refusal("ex\u{AD}ample.com");
        assert!(
            message.contains(
                "U+00AD would be dropped by IDNA mapping; write the name as \"example.com\""
            ),
            "{message}"
        );
        let message = refusal("example\u{3002}com");
        assert!(
            message.contains("U+3002 would be changed to \".\""),
            "{message}"
        );
        for (input, point) in [
            ("ex\u{200D}ample.com", "U+200D"),
            ("ex\u{200C}ample.com", "U+200C"),
            ("ex\u{200B}ample.com", "U+200B"),
            ("ex\u{2060}ample.com", "U+2060"),
            ("\u{FEFF}example.com", "U+FEFF"),
            ("\u{212A}ey.example", "U+212A"),
            ("\u{1D41E}xample.com", "U+1D41E"),
            ("\u{24D4}xample.com", "U+24D4"),
            ("example\u{FF0E}com", "U+FF0E"),
            ("example.\u{FF43}om", "U+FF43"),
            ("\u{2170}.example", "U+2170"),
        ] {
            let message = refusal(input);
            assert!(message.contains(point), "{input:?}: {message}");
        }
    }

    #[test]
    fn labels_that_mix_scripts_are_refused() {
        let message = refusal("p\u{430}ypal.com");
        assert!(
            message.contains(
                "label \"p\u{430}ypal\" (xn--pypal-4ve) mixes scripts (Latin, Cyrillic); a look-alike of another name is refused"
            ),
            "{message}"
        );
        for input in [
            "g\u{3BF}\u{3BF}gle.com",
            "\u{440}\u{430}ypal.com",
            "\u{43F}\u{440}\u{438}\u{3BC}\u{435}\u{440}.com",
            "xn--pypal-4ve.com",
            "mail.xn--pypal-4ve.com",
            "\u{4F8B}\u{043F}.jp",
            "\u{D55C}\u{30AB}.kr",
        ] {
            let message = refusal(input);
            assert!(message.contains("mixes scripts"), "{input:?}: {message}");
        }
    }

    #[test]
    fn punycode_of_a_refused_name_is_refused_too() {
        for look_alike in ["p\u{430}ypal.com", "g\u{3BF}ogle.com"] {
            let Ok(ascii) = idna::domain_to_ascii(look_alike) else {
                panic!("{look_alike:?} has no punycode form");
            };
            let message = refusal(&ascii);
            assert!(message.contains("mixes scripts"), "{ascii}: {message}");
        }
    }

    #[test]
    fn single_label_dns_names_are_fine_for_key_names() {
        assert_eq!(
            normalize_dns_name("mx-operator").as_deref(),
            Ok("mx-operator")
        );
        assert_eq!(
            normalize_dns_name("Key.Example.").as_deref(),
            Ok("key.example")
        );
        assert!(normalize_dns_name("key name").is_err());
    }

    #[test]
    fn hosts_accept_ip_literals() {
        assert_eq!(normalize_host("192.0.2.10").as_deref(), Ok("192.0.2.10"));
        assert_eq!(
            normalize_host("[2001:db8::1]").as_deref(),
            Ok("2001:db8::1")
        );
        assert_eq!(
            normalize_host("Mail.Example.NET.").as_deref(),
            Ok("mail.example.net")
        );
        assert!(normalize_host("192.0.2.10:25").is_err());
        assert!(normalize_host("mail.example.net\n").is_err());
    }

    #[test]
    fn annotations() {
        let of = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        for good in [
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "metallb.universe.tf/address-pool",
            "simple",
            "a_b.c-d",
        ] {
            assert_eq!(check_annotations(&of(&[(good, "x\ny")])), Ok(()), "{good}");
        }
        for bad in [
            "",
            "bad key",
            "bad\nkey",
            "/name",
            "Example.com/name",
            "example.com/",
            "a/b/c",
            "-name",
            "name.",
        ] {
            assert!(check_annotations(&of(&[(bad, "v")])).is_err(), "{bad:?}");
        }
        let huge = "v".repeat(MAX_ANNOTATIONS_BYTES);
        assert!(check_annotations(&of(&[("key", &huge)])).is_err());
    }

    #[test]
    fn kubernetes_names() {
        assert!(is_dns1123_subdomain("gateway-1.mail"));
        assert!(!is_dns1123_subdomain("Gateway"));
        assert!(!is_dns1123_subdomain("gw_1"));
        assert!(!is_dns1123_subdomain(""));
        assert!(is_dns1123_label("mail-system"));
        assert!(!is_dns1123_label("mail.system"));
        assert!(!is_dns1123_label("-mail"));
    }

    mod properties {
        use super::super::normalize_domain;
        use proptest::prelude::*;

        /// Letters and the characters look-alikes are made of, mixed with anything printable.
        fn names() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z0-9.\\-]{0,30}",
                "[a-z.\u{430}-\u{44f}\u{fc}\u{df}\u{ff41}-\u{ff5a}\u{ad}\u{200d}\u{3002}\u{4e00}-\u{4e10}\u{3041}-\u{3050}]{0,24}",
                "\\PC{0,40}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases()))]

            /// Whatever is accepted is plain LDH ASCII within DNS limits, and stays as it is
            /// when normalized again: nothing else reaches a Postfix file or a DNS update.
            #[test]
            fn accepted_names_are_canonical_ascii(input in names()) {
                if let Ok(name) = normalize_domain(&input) {
                    prop_assert!(name.len() <= 253, "{}", name);
                    for label in name.split('.') {
                        prop_assert!(!label.is_empty() && label.len() <= 63, "{}", name);
                        prop_assert!(
                            label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                            "{}", name
                        );
                    }
                    prop_assert_eq!(normalize_domain(&name), Ok(name.clone()));
                }
            }
        }
    }
}
