//! The network side of drift: MX lookups at resolvers and authoritative servers, and the
//! SMTP probes, turned into an [`Observation`] of one domain.

pub use super::decide::Replica;
use super::decide::{self, Expect, MxState, acceptance, primary_reachable};
use crate::api::conditions::Verdict;
use crate::api::validate::host_port;
use crate::dns::Mx;
use crate::net::{MxLookup, Network, ProbeReplies, Recipients};
use std::net::SocketAddr;
use std::time::Duration;

/// Where the gateway is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    /// One SMTP address, `host:port` (`spec.probeAddress`, or `mx-operator audit --probe`).
    Address(String),
    /// Every ready replica of the gateway, as its pods say: a replica that answers wrongly
    /// is not hidden behind one that answers right, and no cluster DNS is needed.
    Replicas { namespace: String, gateway: String },
}

/// A gateway's ready replicas (a cache of the gateways' pods in the operator, `NoReplicas`
/// where no cluster is asked).
pub trait ReplicaSource: Send + Sync {
    fn ready(&self, namespace: &str, gateway: &str) -> Vec<Replica>;
}

/// No cluster to ask (`mx-operator audit` probes one address).
pub struct NoReplicas;

impl ReplicaSource for NoReplicas {
    fn ready(&self, _namespace: &str, _gateway: &str) -> Vec<Replica> {
        Vec::new()
    }
}

/// How to probe the gateway for one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePlan {
    pub target: ProbeTarget,
    /// EHLO name: the gateway's own MX host name.
    pub helo: String,
    pub domain: String,
    pub known: Option<String>,
    pub expect: Expect,
    pub catch_all: bool,
}

/// Everything drift looks at for one domain, as the last reconcile knew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The domain, normalized.
    pub domain: String,
    /// The gateway's MX host names, normalized.
    pub ours: Vec<String>,
    /// The primary's host, normalized; mail is relayed there.
    pub primary_host: String,
    pub primary_port: u16,
    /// For domains published by RFC 2136: the zone's server and the record we keep there.
    pub authoritative: Option<(SocketAddr, Mx)>,
    pub probe: Option<ProbePlan>,
}

/// What one check saw. Equal observations mean nothing changed: no reconcile, no write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub public: MxState,
    /// Whether our record is at the authoritative server (`None`: not managed by RFC 2136,
    /// or the server did not answer).
    pub authoritative_ok: Option<bool>,
    pub acceptance: Option<Verdict>,
    pub primary: Option<Verdict>,
}

/// How checks run.
#[derive(Clone, Debug)]
pub struct CheckSettings {
    pub resolvers: Vec<SocketAddr>,
    /// SMTP probes of the gateway and the primary; off, drift only looks at DNS.
    pub smtp: bool,
    /// SMTP time limit for one probe.
    pub smtp_timeout: Duration,
    /// A failed probe is repeated once after this long before it counts, so a gateway
    /// that is loading a new config is not reported.
    pub confirm_after: Duration,
}

/// Runs every check for one domain.
pub async fn observe(
    network: &Network,
    settings: &CheckSettings,
    replicas: &dyn ReplicaSource,
    expectation: &Expectation,
) -> Observation {
    let authoritative = match &expectation.authoritative {
        Some((server, ours)) => match network.resolver.mx(*server, &expectation.domain).await {
            MxLookup::Records(records) => Some(records.contains(ours)),
            MxLookup::NoMx | MxLookup::NxDomain => Some(false),
            MxLookup::Failed(_) => None,
        },
        None => None,
    };
    let lookup = network
        .resolver
        .mx_any(&settings.resolvers, &expectation.domain)
        .await;
    let mut public = decide::classify(
        &lookup,
        &expectation.ours,
        Some(expectation.primary_host.as_str()),
    );
    if authoritative == Some(false) && public.is_departure() {
        // Our own record is missing at the source and is being repaired: that explains
        // the public view, which is no evidence that the domain moved.
        public = MxState::Repairing;
    }
    let (acceptance, primary) = if settings.smtp {
        let acceptance = match &expectation.probe {
            Some(plan) => Some(probe_gateway(network, settings, replicas, plan).await),
            None => None,
        };
        (
            acceptance,
            Some(probe_primary(network, settings, expectation).await),
        )
    } else {
        (None, None)
    };
    Observation {
        public,
        authoritative_ok: authoritative,
        acceptance,
        primary,
    }
}

/// The gateway's answers: at its one address, or at every ready replica, where the first
/// replica that answers wrongly is named.
pub(crate) async fn probe_gateway(
    network: &Network,
    settings: &CheckSettings,
    replicas: &dyn ReplicaSource,
    plan: &ProbePlan,
) -> Verdict {
    let (namespace, gateway) = match &plan.target {
        ProbeTarget::Address(address) => {
            return probe_confirmed(network, settings, plan, address).await;
        }
        ProbeTarget::Replicas { namespace, gateway } => (namespace, gateway),
    };
    let mut ready = replicas.ready(namespace, gateway);
    ready.sort();
    let verdicts = futures::future::join_all(ready.iter().map(|replica| async move {
        probe_confirmed(network, settings, plan, &replica.address.to_string()).await
    }))
    .await;
    decide::acceptance_of_replicas(namespace, gateway, &ready, verdicts)
}

/// One probe, repeated once after `confirm_after` when it fails, so a replica that is
/// loading a new configuration is not reported.
async fn probe_confirmed(
    network: &Network,
    settings: &CheckSettings,
    plan: &ProbePlan,
    target: &str,
) -> Verdict {
    let mut verdict = probe_gateway_once(network, settings, plan, target).await;
    if !verdict.status {
        tokio::time::sleep(settings.confirm_after).await;
        verdict = probe_gateway_once(network, settings, plan, target).await;
    }
    verdict
}

async fn probe_gateway_once(
    network: &Network,
    settings: &CheckSettings,
    plan: &ProbePlan,
    target: &str,
) -> Verdict {
    let ask = Recipients {
        helo: plan.helo.clone(),
        known: plan.known.clone(),
        random: format!("mx-probe-{:016x}@{}", fastrand::u64(..), plan.domain),
        foreign: format!("mx-probe@{:016x}.invalid", fastrand::u64(..)),
    };
    let replies: Result<ProbeReplies, String> = network
        .prober
        .recipients(target, &ask, settings.smtp_timeout)
        .await;
    acceptance(&replies, plan.expect, plan.catch_all)
}

async fn probe_primary(
    network: &Network,
    settings: &CheckSettings,
    expectation: &Expectation,
) -> Verdict {
    let target = host_port(&expectation.primary_host, expectation.primary_port);
    let banner = network.prober.banner(&target, settings.smtp_timeout).await;
    primary_reachable(&target, &banner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::rfc2136::Tcp;
    use crate::net::{Prober, Reply, Resolver};
    use futures::future::BoxFuture;
    use std::sync::{Arc, Mutex};

    /// A resolver whose public view has the domain gone and whose authoritative server
    /// lacks our record; it remembers which servers it was asked.
    #[derive(Default)]
    struct Gone {
        asked: Mutex<Vec<SocketAddr>>,
    }

    impl Resolver for Gone {
        fn mx<'a>(&'a self, server: SocketAddr, _: &'a str) -> BoxFuture<'a, MxLookup> {
            self.asked.lock().unwrap().push(server);
            Box::pin(async { MxLookup::NoMx })
        }
        fn mx_any<'a>(&'a self, _: &'a [SocketAddr], _: &'a str) -> BoxFuture<'a, MxLookup> {
            Box::pin(async { MxLookup::NxDomain })
        }
        fn txt_any<'a>(
            &'a self,
            _: &'a [SocketAddr],
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<String>, String>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn addresses_any<'a>(
            &'a self,
            _: &'a [SocketAddr],
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<std::net::IpAddr>, String>> {
            Box::pin(async { Ok(vec![]) })
        }
    }

    /// A gateway that accepts its domain's recipients and refuses others; a primary that
    /// greets.
    struct Answers;

    impl Prober for Answers {
        fn banner<'a>(&'a self, _: &'a str, _: Duration) -> BoxFuture<'a, Result<Reply, String>> {
            Box::pin(async {
                Ok(Reply {
                    code: 220,
                    text: "mail.example.com ESMTP".into(),
                })
            })
        }
        fn recipients<'a>(
            &'a self,
            _: &'a str,
            ask: &'a Recipients,
            _: Duration,
        ) -> BoxFuture<'a, Result<ProbeReplies, String>> {
            let reply = |code, text: &str| Reply {
                code,
                text: text.into(),
            };
            Box::pin(async move {
                Ok(ProbeReplies {
                    known: ask.known.clone().map(|k| (k, reply(250, "2.1.5 Ok"))),
                    random: reply(550, "5.1.1 unknown user"),
                    foreign: reply(554, "5.7.1 relay access denied"),
                })
            })
        }
    }

    #[tokio::test]
    async fn checks_ask_the_network_they_are_given() {
        let resolver = Arc::new(Gone::default());
        let network = Network {
            resolver: resolver.clone(),
            prober: Arc::new(Answers),
            updater: Arc::new(Tcp),
            agents: Arc::new(crate::net::agent::Http::new(Duration::from_secs(1))),
            directory: Arc::new(crate::net::ldap::Ldap),
            lists: Arc::new(crate::net::http::Https),
        };
        let server: SocketAddr = ([192, 0, 2, 53], 53).into();
        let expectation = Expectation {
            domain: "example.com".into(),
            ours: vec!["mx1.relay.example.net".into()],
            primary_host: "mail.example.com".into(),
            primary_port: 25,
            authoritative: Some((server, Mx::new(20, "mx1.relay.example.net"))),
            probe: Some(ProbePlan {
                target: ProbeTarget::Address("192.0.2.25:25".into()),
                helo: "mx1.relay.example.net".into(),
                domain: "example.com".into(),
                known: Some("alice@example.com".into()),
                expect: Expect::Accept,
                catch_all: false,
            }),
        };
        let settings = CheckSettings {
            resolvers: vec![],
            smtp: true,
            smtp_timeout: Duration::from_secs(1),
            confirm_after: Duration::ZERO,
        };
        let seen = observe(&network, &settings, &NoReplicas, &expectation).await;
        assert_eq!(*resolver.asked.lock().unwrap(), [server]);
        assert_eq!(seen.authoritative_ok, Some(false));
        assert!(
            seen.public == MxState::Repairing,
            "our record is being restored, so a missing domain is no departure: {:?}",
            seen.public
        );
        assert_eq!(seen.acceptance.map(|v| v.reason), Some("Verified"));
        assert_eq!(seen.primary.map(|v| v.status), Some(true));
    }
}
