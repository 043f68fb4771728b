//! What the agents of a gateway's replicas report at `/status`, asked over HTTP: read by
//! the gateway's reconcile (draining, scale-in) and by the queue poll (`status.queue`).

use super::context::Context;
use super::draining::GatewayKey;
use super::queues;
use crate::agent::StatusReport;
use crate::manifests::gateway::GatewayNames;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// One replica's `/status`, or why it could not be read.
#[derive(Clone, Debug)]
pub struct AgentReport {
    pub replica: String,
    pub address: std::net::SocketAddr,
    pub status: Result<StatusReport, String>,
}

/// Asks every replica listed in the Endpoints of the gateway's headless Service, ready or
/// not (one that is not ready may still hold mail), for its agent's `/status`.
pub async fn agent_reports(gateway: &GatewayKey, ctx: &Context) -> Vec<AgentReport> {
    let (namespace, name) = gateway;
    let names = GatewayNames::of(name);
    let agents = ctx
        .gateway_endpoints
        .get(&ObjectRef::new(&names.headless).within(namespace))
        .map(|endpoints| crate::drift::replicas::agents(&endpoints))
        .unwrap_or_default();
    futures::future::join_all(agents.into_iter().map(|agent| async move {
        AgentReport {
            status: ctx.network.agents.status(agent.address).await,
            replica: agent.name,
            address: agent.address,
        }
    }))
    .await
}

/// Gateways whose agents are asked at the same time in a queue poll.
const GATEWAYS_AT_ONCE: usize = 8;

/// Every `interval`, asks the agents of every gateway what their queues hold, records it
/// in `ctx.queues`, and sends round the MailDomains whose shown queue changed (their
/// `status.queue` reads it there). Costs no API request: the gateways and their Endpoints
/// come from caches, the answers from the agents.
pub async fn poll_queues(ctx: Arc<Context>, interval: Duration) {
    ctx.gateway_caches_listed().await;
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polled: BTreeSet<GatewayKey> = BTreeSet::new();
    loop {
        timer.tick().await;
        let gateways: BTreeSet<GatewayKey> = ctx
            .gateways
            .state()
            .iter()
            .filter_map(|gateway| Some((gateway.namespace()?, gateway.name_any())))
            .collect();
        for gone in polled.difference(&gateways) {
            ctx.reconcile_claimants(ctx.queues.forget(gone));
        }
        let reads: Vec<(GatewayKey, Vec<AgentReport>)> =
            futures::stream::iter(gateways.iter().cloned())
                .map(|gateway| {
                    let ctx = ctx.clone();
                    async move {
                        let reports = agent_reports(&gateway, &ctx).await;
                        (gateway, reports)
                    }
                })
                .buffer_unordered(GATEWAYS_AT_ONCE)
                .collect()
                .await;
        let now = Timestamp::now().as_second();
        for (gateway, reports) in reads {
            if let Some(sums) = queues::summed(reports.iter().map(|r| &r.status)) {
                ctx.reconcile_claimants(ctx.queues.record(gateway, &sums, now));
            }
        }
        polled = gateways;
    }
}
