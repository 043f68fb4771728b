//! Recipient lists too long for one MailRelay. Past [`SHARD_BYTES`] of `relay_recipients`
//! lines, a domain's relay names a shard count instead of carrying the lines, and each
//! shard is a MailRelay of its own (`recipients-<i>-of-<n>.<domain>`) holding the
//! addresses whose hash falls into it. An address keeps its shard while the count stays,
//! so a change of a few addresses rewrites a few shards, and the agent compiles each shard
//! into a table of its own: the work at the gateway follows the change, not the list.

use super::keys;
use super::postfix::is_recipient_of;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The most `relay_recipients` bytes one MailRelay carries: under etcd's 1.5 MiB per
/// object with room for the object's metadata.
pub const SHARD_BYTES: usize = 1024 * 1024;

/// The most shards a domain is split into (4 GiB of lines; a source gives at most
/// 1,000,000 addresses).
pub const MAX_SHARDS: usize = 4096;

/// The shard of `address` among `count`.
pub fn shard_of(address: &str, count: usize) -> usize {
    let hash = Sha256::digest(address.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_le_bytes(first) % count as u64) as usize
}

/// A domain's relay data, and the data of its shards (none when its lines fit).
#[derive(Debug, PartialEq)]
pub struct Sharded {
    pub relay: BTreeMap<String, String>,
    /// By index; `shards.len()` is the count the relay names.
    pub shards: Vec<BTreeMap<String, String>>,
}

/// Splits the `relay_recipients` lines of `relay` (rendered by `relay_data`) into shards
/// when they are longer than [`SHARD_BYTES`]: the fewest that each fit. (Each shard is a
/// table that every SMTP server process opens, so fewer is better; a new count moves most
/// addresses, which happens only when the list grows or shrinks past a multiple.)
pub fn split(mut relay: BTreeMap<String, String>) -> Sharded {
    let too_long = relay
        .get(keys::RELAY_RECIPIENTS)
        .is_some_and(|lines| lines.len() > SHARD_BYTES);
    let (Some(domain), true) = (relay.get(keys::DOMAIN).cloned(), too_long) else {
        return Sharded {
            relay,
            shards: vec![],
        };
    };
    let lines = relay.remove(keys::RELAY_RECIPIENTS).unwrap_or_default();
    let mut count = lines.len().div_ceil(SHARD_BYTES).max(2);
    let parts = loop {
        let mut parts = vec![String::new(); count];
        for line in lines.lines() {
            let address = line.split(' ').next().unwrap_or_default();
            let part = &mut parts[shard_of(address, count)];
            part.push_str(line);
            part.push('\n');
        }
        if count >= MAX_SHARDS || parts.iter().all(|part| part.len() <= SHARD_BYTES) {
            break parts;
        }
        count += 1;
    };
    relay.insert(keys::RECIPIENT_SHARDS.into(), count.to_string());
    let shards = parts
        .into_iter()
        .enumerate()
        .map(|(index, lines)| {
            BTreeMap::from([
                (keys::DOMAIN.to_string(), domain.clone()),
                (keys::SHARD.to_string(), format!("{index}/{count}")),
                (keys::RELAY_RECIPIENTS.to_string(), lines),
            ])
        })
        .collect();
    Sharded { relay, shards }
}

/// A shard that passed the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedShard {
    pub domain: String,
    pub index: usize,
    pub count: usize,
    /// `relay_recipients` lines.
    pub lines: std::sync::Arc<str>,
}

/// Whether `data` is a shard (it names one) rather than a domain's relay.
pub fn is_shard(data: &BTreeMap<String, String>) -> bool {
    data.contains_key(keys::SHARD)
}

/// A shard count as a relay names it: from 2 to [`MAX_SHARDS`].
pub fn parse_count(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|count| (2..=MAX_SHARDS).contains(count))
        .ok_or_else(|| format!("{text:?} is not a shard count (2 to {MAX_SHARDS})"))
}

/// Checks one shard's `data`: its domain, its place, and that every line is `address OK`
/// of an address of that domain.
pub fn check_shard(data: &BTreeMap<String, String>) -> Result<CheckedShard, String> {
    const KEYS: [&str; 3] = [keys::DOMAIN, keys::SHARD, keys::RELAY_RECIPIENTS];
    if let Some(unknown) = data.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key {unknown:?}"));
    }
    let domain = super::postfix::checked_domain(data)?;
    let place = data
        .get(keys::SHARD)
        .map(String::as_str)
        .unwrap_or_default();
    let (index, count) = place
        .split_once('/')
        .and_then(|(index, count)| Some((index.parse::<usize>().ok()?, parse_count(count).ok()?)))
        .filter(|(index, count)| index < count)
        .ok_or_else(|| format!("shard {place:?} is not `index/count`"))?;
    let lines = data
        .get(keys::RELAY_RECIPIENTS)
        .cloned()
        .unwrap_or_default();
    for (number, line) in lines.lines().enumerate() {
        // A catch-all is never a shard's (it is no list), and an address is in its own
        // shard only: shards of one count from two versions of a list then never leave an
        // address out.
        let listed = line.strip_suffix(" OK").is_some_and(|address| {
            !address.starts_with('@')
                && is_recipient_of(address, &domain)
                && shard_of(address, count) == index
        });
        if !listed {
            // The line is named by its number only: it may be a mistyped address.
            return Err(format!(
                "relay_recipients line {} is not `address OK` of {domain}",
                number + 1
            ));
        }
    }
    Ok(CheckedShard {
        domain,
        index,
        count,
        lines: lines.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(addresses: usize) -> BTreeMap<String, String> {
        let lines: String = (0..addresses)
            .map(|i| format!("user{i:07}@example.com OK\n"))
            .collect();
        BTreeMap::from([
            (keys::DOMAIN.into(), "example.com".into()),
            (keys::RELAY_DOMAINS.into(), "example.com OK\n".into()),
            (keys::RELAY_RECIPIENTS.into(), lines),
        ])
    }

    #[test]
    fn a_list_that_fits_stays_in_the_relay() {
        let small = relay(100);
        assert_eq!(
            split(small.clone()),
            Sharded {
                relay: small,
                shards: vec![]
            }
        );
    }

    #[test]
    fn a_long_list_is_split_into_checked_shards_that_hold_every_address_once() {
        // 100,000 lines of 27 bytes: 2.7 MB, three shards of about 900 KB.
        let whole = relay(100_000);
        let sharded = split(whole.clone());
        assert_eq!(sharded.relay.get(keys::RECIPIENT_SHARDS).unwrap(), "3");
        assert!(!sharded.relay.contains_key(keys::RELAY_RECIPIENTS));
        assert_eq!(sharded.shards.len(), 3);
        let mut all: Vec<String> = vec![];
        for (index, data) in sharded.shards.iter().enumerate() {
            let shard = check_shard(data).unwrap();
            assert_eq!((shard.index, shard.count), (index, 3));
            assert!(shard.lines.len() <= SHARD_BYTES);
            all.extend(shard.lines.lines().map(String::from));
        }
        all.sort();
        let mut expected: Vec<String> = whole[keys::RELAY_RECIPIENTS]
            .lines()
            .map(String::from)
            .collect();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn one_more_address_changes_one_shard() {
        let before = split(relay(100_000));
        let mut grown = relay(100_000);
        grown
            .get_mut(keys::RELAY_RECIPIENTS)
            .unwrap()
            .push_str("new.hire@example.com OK\n");
        let after = split(grown);
        let changed = before
            .shards
            .iter()
            .zip(&after.shards)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1);
    }

    #[test]
    fn shards_that_reach_beyond_their_place_are_refused() {
        let good = split(relay(100_000)).shards.remove(0);
        assert!(check_shard(&good).is_ok());
        let edit = |key: &str, value: &str| {
            let mut data = good.clone();
            data.insert(key.into(), value.into());
            check_shard(&data).unwrap_err()
        };
        for (key, value) in [
            (keys::RELAY_RECIPIENTS, "evil@other.test OK\n"),
            (keys::RELAY_RECIPIENTS, "@example.com OK\n"),
            (keys::RELAY_RECIPIENTS, "alice@example.com REJECT\n"),
            (keys::SHARD, "3/3"),
            (keys::SHARD, "0/1"),
            (keys::SHARD, "0/8192"),
            (keys::SHARD, "1/3"),
            (keys::DOMAIN, "Example.COM"),
            (keys::RELAY_DOMAINS, "other.test OK\n"),
        ] {
            let refusal = edit(key, value);
            assert!(!refusal.contains("evil@"), "never quoted: {refusal}");
        }
    }
}
