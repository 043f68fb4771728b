use super::injection_hazard;
use std::net::IpAddr;

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Normalizes a mail domain to the form Postfix and DNS see: internationalised names to
/// punycode, lower case, no trailing dot. A mail domain needs at least two labels.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    let name = normalize_dns_name(input)?;
    if !name.contains('.') {
        return Err(format!(
            "{input:?} is not a fully qualified domain name (it needs at least two labels, like example.com)"
        ));
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{input:?} has an all-numeric top-level label; an IP address is not a domain"
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
        return Err(format!("{input:?} is not a domain name"));
    }
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| format!("{input:?} is not a valid (internationalised) domain name"))?;
    if ascii.len() > MAX_NAME_LEN {
        return Err(format!(
            "{input:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for label in ascii.split('.') {
        check_label(input, label)?;
    }
    Ok(ascii)
}

fn check_label(input: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!("{input:?} has an empty label"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{input:?} has a label longer than {MAX_LABEL_LEN} characters"
        ));
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "{input:?} may only contain letters, digits and '-' in each label"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{input:?} has a label that starts or ends with '-'"
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
        .ok_or_else(|| format!("{input:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{input:?}: {port:?} is not a port (1-65535)"))?;
    Ok(host_port(&normalize_host(host)?, port))
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
    fn kubernetes_names() {
        assert!(is_dns1123_subdomain("gateway-1.mail"));
        assert!(!is_dns1123_subdomain("Gateway"));
        assert!(!is_dns1123_subdomain("gw_1"));
        assert!(!is_dns1123_subdomain(""));
        assert!(is_dns1123_label("mail-system"));
        assert!(!is_dns1123_label("mail.system"));
        assert!(!is_dns1123_label("-mail"));
    }
}
