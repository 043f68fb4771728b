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

/// Whether `ip` lies in `network` (an address or CIDR network as
/// [`parse_client_network`] accepts it; anything else contains nothing). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
pub fn network_contains(network: &str, ip: IpAddr) -> bool {
    let (address, prefix) = network.split_once('/').unwrap_or((network, ""));
    let Ok(base) = address.parse::<IpAddr>() else {
        return false;
    };
    let (base, ip) = (base.to_canonical(), ip.to_canonical());
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ((base, width), (ip, ip_width)) = (bits(base), bits(ip));
    if width != ip_width {
        return false;
    }
    let Ok(prefix) = (if prefix.is_empty() {
        Ok(width)
    } else {
        prefix.parse::<u32>()
    }) else {
        return false;
    };
    if prefix > width {
        return false;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    base & mask == ip & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (network, address, inside) in [
            ("10.0.0.0/8", "10.96.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "2001:db8::1", false),
            ("10.0.0.0/8", "::a00:1", false),
            ("not a network", "10.0.0.1", false),
        ] {
            assert_eq!(
                network_contains(network, ip(address)),
                inside,
                "{address} in {network}"
            );
        }
    }

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
