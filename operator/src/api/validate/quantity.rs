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

/// A Kubernetes resource quantity (`500m`, `0.5`, `1Gi`, `1e3`) in billionths of its unit,
/// so that two spellings of one amount compare equal (the API server stores `0.5` CPU as
/// `500m`). `Err` for what is not a quantity, or finer than a billionth.
pub fn quantity_nanos(input: &str) -> Result<i128, String> {
    let invalid = || format!("{} is not a Kubernetes quantity", quote(input));
    let (negative, unsigned) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input.strip_prefix('+').unwrap_or(input)),
    };
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(invalid());
    }
    let mantissa: i128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| invalid())?;
    let (factor, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        exponent => (
            1,
            exponent
                .strip_prefix(['e', 'E'])
                .and_then(|e| e.parse().ok())
                .ok_or_else(invalid)?,
        ),
    };
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| invalid())?;
    let power = exponent + 9 - fraction_digits;
    let scaled = mantissa.checked_mul(factor).ok_or_else(invalid)?;
    let nanos = if power >= 0 {
        10i128
            .checked_pow(power.unsigned_abs())
            .and_then(|scale| scaled.checked_mul(scale))
            .ok_or_else(invalid)?
    } else {
        let scale = 10i128
            .checked_pow(power.unsigned_abs())
            .ok_or_else(invalid)?;
        if scaled % scale != 0 {
            return Err(format!("{} is finer than a billionth", quote(input)));
        }
        scaled / scale
    };
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_quantity_are_equal() {
        let same = [
            ("0.5", "500m"),
            ("1", "1000m"),
            ("1Gi", "1024Mi"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("128Mi", "134217728"),
            (".5", "500m"),
            ("1.5Gi", "1536Mi"),
            ("+2", "2"),
            ("100n", "0.0000001"),
        ];
        for (a, b) in same {
            assert_eq!(quantity_nanos(a), quantity_nanos(b), "{a} = {b}");
            assert!(quantity_nanos(a).is_ok(), "{a}");
        }
        assert_ne!(quantity_nanos("1Gi"), quantity_nanos("1G"));
        assert_eq!(quantity_nanos("-1m"), Ok(-1_000_000));
        for bad in ["", "abc", "1.2.3", "1Xi", "Mi", "1 Gi", "0.1n", "1e999"] {
            assert!(quantity_nanos(bad).is_err(), "{bad:?} was accepted");
        }
    }

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
