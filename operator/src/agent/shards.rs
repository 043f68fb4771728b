//! The recipient shards of domains whose relay names them (see `render::shards`): each is
//! checked once per version, and a domain's shards are used only as a complete set. Until
//! the set its relay names is complete (a new shard count arriving shard by shard, or one
//! refused), the last complete set keeps serving; a domain with none answers 450.

use crate::render::CheckedRelay;
use crate::render::shards::{CheckedShard, check_shard};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A shard object as the watch holds it.
pub struct ShardObject<'a> {
    pub name: String,
    pub resource_version: Option<String>,
    pub data: &'a BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Shards {
    /// By object name: the version checked, and the shard if it passed.
    checked: BTreeMap<String, (Option<String>, Option<Arc<CheckedShard>>)>,
    /// By domain: the set last used.
    complete: BTreeMap<String, Vec<Arc<CheckedShard>>>,
}

impl Shards {
    /// Follows the shard objects present: checks new versions, forgets deleted objects.
    /// Returns the refusals of this call's checks, by object name.
    pub fn update(&mut self, objects: Vec<ShardObject>) -> Vec<(String, String)> {
        let mut refused = Vec::new();
        let mut checked = BTreeMap::new();
        for object in objects {
            let known = self.checked.remove(&object.name).filter(|(version, _)| {
                object.resource_version.is_some() && *version == object.resource_version
            });
            let entry = match known {
                Some(entry) => entry,
                None => {
                    let shard = match check_shard(object.data) {
                        Ok(shard) => Some(Arc::new(shard)),
                        Err(problem) => {
                            refused.push((object.name.clone(), problem));
                            None
                        }
                    };
                    (object.resource_version, shard)
                }
            };
            checked.insert(object.name, entry);
        }
        self.checked = checked;
        refused
    }

    /// The set of shards each sharded relay among `relays` uses: the one it names when it
    /// is complete, else the last complete one; none for a domain that never had one.
    pub fn sets(&mut self, relays: &[CheckedRelay]) -> &BTreeMap<String, Vec<Arc<CheckedShard>>> {
        let wanted: BTreeMap<&str, usize> = relays
            .iter()
            .filter(|relay| relay.relayed())
            .filter_map(|relay| Some((relay.domain.as_str(), relay.recipient_shards()?)))
            .collect();
        self.complete
            .retain(|domain, _| wanted.contains_key(domain.as_str()));
        for (domain, count) in wanted {
            let mut set: Vec<Arc<CheckedShard>> = self
                .checked
                .values()
                .filter_map(|(_, shard)| shard.clone())
                .filter(|shard| shard.domain == domain && shard.count == count)
                .collect();
            set.sort_by_key(|shard| shard.index);
            set.dedup_by_key(|shard| shard.index);
            if set.len() == count {
                self.complete.insert(domain.to_string(), set);
            }
        }
        &self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::keys;
    use crate::render::shards::split;

    /// A sharded relay of example.com and its shards' data.
    fn sharded(addresses: usize) -> (CheckedRelay, Vec<BTreeMap<String, String>>) {
        let spec = crate::render::test_support::domain_spec(serde_json::json!({}));
        let recipients = (0..addresses)
            .map(|i| format!("user{i:07}@example.com"))
            .collect::<std::collections::BTreeSet<_>>()
            .into();
        let data = crate::render::relay_data(&crate::render::test_support::input(
            &spec,
            &recipients,
            crate::render::RelayMode::Active,
        ))
        .unwrap();
        let split = split(data);
        (
            crate::render::check_relay(&split.relay).unwrap(),
            split.shards,
        )
    }

    fn objects<'a>(shards: &'a [BTreeMap<String, String>], version: &str) -> Vec<ShardObject<'a>> {
        shards
            .iter()
            .enumerate()
            .map(|(index, data)| ShardObject {
                name: format!("recipients-{index}-of-{}.example.com", shards.len()),
                resource_version: Some(version.into()),
                data,
            })
            .collect()
    }

    fn used(shards: &mut Shards, relay: &CheckedRelay) -> Option<Vec<(usize, usize)>> {
        let sets = shards.sets(std::slice::from_ref(relay));
        sets.get("example.com")
            .map(|set| set.iter().map(|shard| (shard.index, shard.count)).collect())
    }

    #[test]
    fn a_set_is_used_only_once_complete_and_kept_while_the_next_arrives() {
        let (relay, four) = sharded(150_000);
        assert_eq!(relay.recipient_shards(), Some(4));
        let mut shards = Shards::default();
        // Three of four: nothing to use yet.
        assert!(
            shards
                .update(objects(&four, "1").into_iter().take(3).collect())
                .is_empty()
        );
        assert_eq!(used(&mut shards, &relay), None);
        // All four.
        shards.update(objects(&four, "1"));
        let all_four = Some(vec![(0, 4), (1, 4), (2, 4), (3, 4)]);
        assert_eq!(used(&mut shards, &relay), all_four);

        // The list doubles: the relay names eight, of which two have arrived and the old
        // four are gone; the four stay in use until all eight are there.
        let (bigger, eight) = sharded(300_000);
        assert_eq!(bigger.recipient_shards(), Some(8));
        shards.update(objects(&eight, "2").into_iter().take(2).collect());
        assert_eq!(used(&mut shards, &bigger), all_four);
        shards.update(objects(&eight, "2"));
        assert_eq!(used(&mut shards, &bigger).map(|s| s.len()), Some(8));

        // A refused shard: the set is incomplete, the last complete one serves.
        let mut bad = eight.clone();
        bad[5].insert(keys::RELAY_RECIPIENTS.into(), "evil@other.test OK\n".into());
        let refused = shards.update(objects(&bad, "3"));
        assert_eq!(refused.len(), 1);
        assert!(refused[0].0.starts_with("recipients-5-of-8."));
        assert_eq!(used(&mut shards, &bigger).map(|s| s.len()), Some(8));

        // A domain no longer sharded, or no longer relayed, forgets its set.
        let (small, none) = sharded(10);
        assert!(none.is_empty());
        assert_eq!(used(&mut shards, &small), None);
    }

    #[test]
    fn an_unchanged_version_is_not_checked_again() {
        let (_, four) = sharded(150_000);
        let mut shards = Shards::default();
        shards.update(objects(&four, "1"));
        // Same version, other content: the check is not repeated (the watch delivers a new
        // version with every change).
        let mut edited = four.clone();
        edited[0].insert(keys::RELAY_RECIPIENTS.into(), "evil@other.test OK\n".into());
        assert!(shards.update(objects(&edited, "1")).is_empty());
        assert_eq!(shards.update(objects(&edited, "2")).len(), 1);
    }
}
