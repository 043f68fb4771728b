//! What the agents of a gateway's replicas report at `/status`, asked over HTTP: read by
//! the gateway's reconcile (draining, scale-in) and by the queue poll (`status.queue`).

use super::context::{Context, Error};
use super::draining::GatewayKey;
use super::queues;
use crate::agent::StatusReport;
use crate::api::MailRelay;
use crate::drift::replicas;
use crate::manifests::gateway::GatewayNames;
use crate::render::check_agent_token;
use crate::render::keys::AGENT_TOKEN;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use ring::rand::{SecureRandom, SystemRandom};
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

/// Asks the agent of every pod of the gateway that has an address, ready or not (one that
/// is not ready may still hold mail), for its `/status`.
pub async fn agent_reports(gateway: &GatewayKey, ctx: &Context) -> Vec<AgentReport> {
    let (namespace, name) = gateway;
    let agents = replicas::agents(&replicas::gateway_pods(&ctx.gateway_pods, namespace, name));
    if agents.is_empty() {
        return Vec::new();
    }
    let token = agent_token(gateway, ctx)
        .await
        .map_err(|error| format!("the gateway's agent token could not be read: {error}"));
    let token = &token;
    futures::future::join_all(agents.into_iter().map(|agent| async move {
        let status = match token {
            Ok(token) => ctx.network.agents.status(agent.address, token).await,
            Err(why) => Err(why.clone()),
        };
        AgentReport {
            status,
            replica: agent.name,
            address: agent.address,
        }
    }))
    .await
}

/// The gateway's agent token: the one its MailRelay holds, or a new one (256 bits from
/// the system's random source) for a gateway whose MailRelay has none yet.
pub async fn agent_token(gateway: &GatewayKey, ctx: &Context) -> Result<String, Error> {
    if let Some(token) = ctx.agent_tokens.get(gateway) {
        return Ok(token);
    }
    let (namespace, name) = gateway;
    let relay = Api::<MailRelay>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&GatewayNames::of(name).config)
        .await?;
    let held = relay
        .and_then(|relay| relay.data?.remove(AGENT_TOKEN))
        .filter(|token| check_agent_token(token).is_ok());
    let token = match held {
        Some(token) => token,
        None => draw_token()?,
    };
    Ok(ctx.agent_tokens.keep(gateway, token))
}

fn draw_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Gateways whose agents are asked at the same time in a queue poll.
const GATEWAYS_AT_ONCE: usize = 8;

/// Every `interval`, asks the agents of every gateway what their queues hold, records it
/// in `ctx.queues`, and sends round the MailDomains whose shown queue changed (their
/// `status.queue` reads it there). Costs no API request: the gateways and their pods
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
            ctx.agent_tokens.forget(gone);
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
