use super::quote;

/// Parses a byte size written as a Kubernetes quantity: `10240`, `50M`, `25Mi`, `1Gi`.
pub fn parse_byte_quantity(input: &str) -> Result<u64, String> {
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, suffix) = input.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{} is not a size (write it like 25Mi, 50M or 1048576)",
            quote(input)
        ));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{} has an unknown size suffix (use k, M, G, T, Ki, Mi, Gi or Ti)",
                quote(input)
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{} is too large", quote(input)))
}

/// Smallest `maxMessageSize`: below it not even a short reply with headers fits.
const MIN_MESSAGE_SIZE: u64 = 1 << 10;
/// Largest `maxMessageSize`. A gateway takes the largest limit of all its domains, so one
/// domain's limit applies to every tenant's queue; no mail system on the Internet sends
/// larger messages.
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Parses a domain's largest accepted message, `1Ki` to `1Gi`.
pub fn parse_message_size(input: &str) -> Result<u64, String> {
    let bytes = parse_byte_quantity(input)?;
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&bytes) {
        return Err(format!(
            "{} must be between 1Ki and 1Gi (the gateway applies the largest limit of all its domains to every domain)",
            quote(input)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_byte_quantity("1048576"), Ok(1_048_576));
        assert_eq!(parse_byte_quantity("25Mi"), Ok(26_214_400));
        assert_eq!(parse_byte_quantity("50M"), Ok(50_000_000));
        assert_eq!(parse_byte_quantity("10Gi"), Ok(10_737_418_240));
        for bad in ["", "Mi", "25 Mi", "25mb", "1.5Gi", "-1", "99999999999999Ti"] {
            assert!(parse_byte_quantity(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn message_sizes_are_bounded() {
        assert_eq!(parse_message_size("25Mi"), Ok(26_214_400));
        assert_eq!(parse_message_size("1Ki"), Ok(1_024));
        assert_eq!(parse_message_size("1Gi"), Ok(1 << 30));
        for bad in ["1023", "0", "2Gi", "18446744073709551615", "16Ti", "huge"] {
            assert!(parse_message_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
