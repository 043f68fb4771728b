//! The operator's long-running loops watched over: the first that ends without a shutdown
//! being asked stops the others and is named, so the process exits and Kubernetes starts
//! it again. A controller gone inside a running process would be worse than a restart:
//! nothing reconciles, and every probe says all is well.

use crate::shutdown::Shutdown;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Supervisor {
    shutdown: Shared<Shutdown>,
    died: watch::Sender<Option<&'static str>>,
}

impl Supervisor {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown: shutdown.shared(),
            died: watch::channel(None).0,
        }
    }

    /// Completes on shutdown or once a loop has died: what the controllers stop on.
    pub fn stopping(&self) -> Shared<BoxFuture<'static, ()>> {
        let shutdown = self.shutdown.clone();
        let mut died = self.died.subscribe();
        async move {
            tokio::select! {
                () = shutdown => {}
                _ = died.wait_for(Option::is_some) => {}
            }
        }
        .boxed()
        .shared()
    }

    /// `work`, which names itself as dead if it ends while no shutdown was asked.
    pub fn watch(
        &self,
        name: &'static str,
        work: impl Future<Output = ()>,
    ) -> impl Future<Output = ()> {
        let shutdown = self.shutdown.clone();
        let died = self.died.clone();
        async move {
            work.await;
            if shutdown.peek().is_none() {
                died.send_if_modified(|first| {
                    let new = first.is_none();
                    if new {
                        tracing::error!(loop_ = name, "stopped although no shutdown was asked");
                        *first = Some(name);
                    }
                    new
                });
            }
        }
    }

    /// Runs `controllers` to their end, with `tasks` beside them (aborted after); returns
    /// the loop that died first, if one did.
    pub async fn run(
        &self,
        controllers: impl Future,
        tasks: Vec<(&'static str, JoinHandle<()>)>,
    ) -> Option<&'static str> {
        let aborts: Vec<_> = tasks.iter().map(|(_, task)| task.abort_handle()).collect();
        // A task that ends names itself, and the controllers stop on that: they end the
        // run, whether or not there are tasks at all.
        let background = async {
            futures::future::join_all(
                tasks
                    .into_iter()
                    .map(|(name, task)| self.watch(name, task.map(|_| ()))),
            )
            .await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = controllers => {}
            () = background => {}
        }
        for abort in aborts {
            abort.abort();
        }
        *self.died.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn never() -> Shutdown {
        std::future::pending().boxed()
    }

    /// A controller that runs until `stopping` completes.
    async fn controller(stopping: Shared<BoxFuture<'static, ()>>) {
        stopping.await;
    }

    #[tokio::test]
    async fn a_controller_that_ends_stops_the_others_and_is_named() {
        let supervisor = Supervisor::new(never());
        let domains = supervisor.watch("the MailDomain controller", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
        let gateways = supervisor.watch(
            "the MailGateway controller",
            controller(supervisor.stopping()),
        );
        let died = supervisor
            .run(futures::future::join(domains, gateways), vec![])
            .await;
        assert_eq!(died, Some("the MailDomain controller"));
    }

    #[tokio::test]
    async fn a_background_task_that_ends_is_named_and_stops_the_controllers() {
        let supervisor = Supervisor::new(never());
        let domains = supervisor.watch(
            "the MailDomain controller",
            controller(supervisor.stopping()),
        );
        let drift = tokio::spawn(async { panic!("a bug in the drift loop") });
        let forever = tokio::spawn(std::future::pending::<()>());
        let died = supervisor
            .run(
                domains,
                vec![("the drift loop", drift), ("the pods watch", forever)],
            )
            .await;
        assert_eq!(died, Some("the drift loop"));
    }

    #[tokio::test]
    async fn a_shutdown_is_no_death() {
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let supervisor = Supervisor::new(stopped.map(|_| ()).boxed());
        let domains = supervisor.watch(
            "the MailDomain controller",
            controller(supervisor.stopping()),
        );
        let forever = tokio::spawn(std::future::pending::<()>());
        stop.send(()).unwrap();
        let died = supervisor
            .run(domains, vec![("the drift loop", forever)])
            .await;
        assert_eq!(died, None);
    }
}
