//! Whether a watch has listed everything once. A controller starts reconciling on its own
//! watch's first events, before its other watches have listed: a decision made then reads
//! empty caches (a MailDomain was reported `GatewayNotFound`, with an Event, for a moment
//! after every operator start). Reconciles wait for the watches they read.
//!
//! (kube's `Store::wait_until_ready` wakes only the last of several tasks waiting at once,
//! so it cannot be awaited from each reconcile.)

use kube::runtime::watcher::Event;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Listed(Arc<watch::Sender<bool>>);

impl Default for Listed {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Listed {
    /// Follows one event of the watch: its first `InitDone` ends every wait.
    pub fn observe<K>(&self, event: &Event<K>) {
        if matches!(event, Event::InitDone) {
            self.0.send_replace(true);
        }
    }

    /// Returns once the watch has listed everything once.
    pub async fn wait(&self) {
        // The sender lives in `self`, so the wait ends only by the watch listing.
        let _ = self.0.subscribe().wait_for(|listed| *listed).await;
    }

    /// Returns once every one of `watches` has listed.
    pub async fn all(watches: &[Listed]) {
        for listed in watches {
            listed.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn every_waiter_is_released_by_the_first_list() {
        let listed = Listed::default();
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                tokio::spawn({
                    let listed = listed.clone();
                    async move { listed.wait().await }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        listed.observe::<()>(&Event::Apply(()));
        listed.observe::<()>(&Event::Init);
        assert!(
            listed.wait().now_or_never().is_none(),
            "not before InitDone"
        );
        listed.observe::<()>(&Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("released")
                .unwrap();
        }
        assert!(
            Listed::all(&[listed.clone(), listed])
                .now_or_never()
                .is_some()
        );
    }
}
