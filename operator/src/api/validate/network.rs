use super::quote;
use std::net::IpAddr;

/// A client deny entry: an IP address or a CIDR network, returned in canonical form.
pub fn parse_client_network(input: &str) -> Result<String, String> {
    let (address, prefix) = match input.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (input, None),
    };
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("{} is not an IP address or CIDR network", quote(input)))?;
    let max_prefix = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok(ip.to_string()),
        Some(prefix) => {
            let bits: u8 = prefix
                .parse()
                .ok()
                .filter(|bits| *bits <= max_prefix)
                .ok_or_else(|| {
                    format!(
                        "{} has a prefix length outside 0..={max_prefix}",
                        quote(input)
                    )
                })?;
            Ok(format!("{ip}/{bits}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert_eq!(
            parse_client_network("192.0.2.7").as_deref(),
            Ok("192.0.2.7")
        );
        assert_eq!(
            parse_client_network("198.51.100.0/24").as_deref(),
            Ok("198.51.100.0/24")
        );
        assert_eq!(
            parse_client_network("2001:db8::/32").as_deref(),
            Ok("2001:db8::/32")
        );
        for bad in [
            "",
            "192.0.2.0/33",
            "2001:db8::/129",
            "example.com",
            "192.0.2.0/24 OK",
            "10.0.0.0/x",
        ] {
            assert!(parse_client_network(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
