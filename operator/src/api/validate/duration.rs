use super::quote;
use std::time::Duration;

/// Parses a duration such as `30s`, `15m`, `72h`, `5d`, `1w` or `1h30m`: the units a
/// Kubernetes user and a Postfix admin both know. No fractions, signs or spaces.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    if input.is_empty() {
        return Err("must not be empty (write a duration like 30s, 15m, 72h or 5d)".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in input.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_seconds: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "{} is not a duration (use the units s, m, h, d, w, as in 1h30m)",
                    quote(input)
                ));
            }
        };
        if digits.is_empty() {
            return Err(format!(
                "{} is not a duration: a unit without a number",
                quote(input)
            ));
        }
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("{} is too large a duration", quote(input)))?;
        total = value
            .checked_mul(unit_seconds)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("{} is too large a duration", quote(input)))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "{} is missing a unit at the end (s, m, h, d or w)",
            quote(input)
        ));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("0s", 0),
            ("30s", 30),
            ("15m", 900),
            ("72h", 259_200),
            ("5d", 432_000),
            ("1w", 604_800),
            ("1h30m", 5_400),
            ("1d12h", 129_600),
        ];
        for (input, seconds) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_secs(seconds)),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_durations() {
        for input in [
            "",
            "5",
            "h",
            "1.5h",
            "-1h",
            "1 h",
            "1y",
            "1h\n",
            "99999999999999999999s",
            "3d5",
        ] {
            assert!(parse_duration(input).is_err(), "{input:?} was accepted");
        }
    }
}
