//! Watch events reduced to what a reader of specs needs: an object whose generation
//! changed, and an object that was deleted. kube's generation predicate drops deletions (a
//! deleted object keeps its last generation), so a deleted MailGateway would leave its
//! domains saying they are relayed until their next resync.

use futures::{Stream, TryStreamExt, future};
use kube::Resource;
use kube::runtime::watcher;
use std::collections::HashMap;

/// Name, namespace and uid: a deleted object recreated under its name is a new one.
type Key = (Option<String>, Option<String>, Option<String>);

/// The objects of `events` whose generation differs from the last one seen, and every
/// deleted one.
pub fn spec_changes_and_deletions<K, S>(events: S) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut generations = HashMap::new();
    events.try_filter_map(move |event| future::ready(Ok(changed(&mut generations, event))))
}

fn changed<K: Resource>(
    generations: &mut HashMap<Key, Option<i64>>,
    event: watcher::Event<K>,
) -> Option<K> {
    let key = |object: &K| {
        let meta = object.meta();
        (meta.namespace.clone(), meta.name.clone(), meta.uid.clone())
    };
    match event {
        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
            let generation = object.meta().generation;
            (generations.insert(key(&object), generation) != Some(generation)).then_some(object)
        }
        watcher::Event::Delete(object) => {
            generations.remove(&key(&object));
            Some(object)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(uid: &str, generation: i64) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("edge".into()),
                namespace: Some("mail".into()),
                uid: Some(uid.into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn generation_changes_and_deletions_pass_status_writes_do_not() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let events = [
            (Init, false),
            (InitApply(object("a", 1)), true),
            (InitDone, false),
            // A status write: same generation.
            (Apply(object("a", 1)), false),
            (Apply(object("a", 2)), true),
            (Delete(object("a", 2)), true),
            // Recreated under the same name: a new object, generation 1 again.
            (Apply(object("b", 1)), true),
            // A relist of what is known passes nothing.
            (Init, false),
            (InitApply(object("b", 1)), false),
            (InitDone, false),
        ];
        let expected: Vec<bool> = events.iter().map(|(_, passes)| *passes).collect();
        let mut generations = HashMap::new();
        let passed: Vec<bool> = events
            .into_iter()
            .map(|(event, _)| changed(&mut generations, event).is_some())
            .collect();
        assert_eq!(passed, expected);

        let stream = spec_changes_and_deletions(futures::stream::iter([
            Ok(Apply(object("c", 1))),
            Ok(Apply(object("c", 1))),
            Ok(Delete(object("c", 1))),
        ]));
        assert_eq!(stream.count().await, 2);
    }
}
