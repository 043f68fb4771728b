//! The network side of drift: MX lookups at resolvers and authoritative servers, and the
//! SMTP probes, turned into an [`Observation`] of one domain.

pub use super::decide::Replica;
use super::decide::{self, Expect, MxLookup, MxState, ProbeReplies, acceptance, primary_reachable};
use crate::api::conditions::Verdict;
use crate::api::validate::host_port;
use crate::dns::Mx;
use crate::probe;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::{DnsError, NetError};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RData, RecordType};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// What a server answered to a query.
enum Answer {
    Records(hickory_proto::op::DnsResponse),
    NxDomain,
    NoData,
}

/// UDP DNS clients, one per server, reused across queries (each multiplexes).
pub struct DnsClients {
    timeout: Duration,
    clients: Mutex<HashMap<SocketAddr, Client<TokioRuntimeProvider>>>,
}

impl DnsClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, server: SocketAddr) -> Client<TokioRuntimeProvider> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(server)
            .or_insert_with(|| {
                let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new())
                    .with_timeout(Some(self.timeout))
                    .build();
                let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
                tokio::spawn(background);
                client
            })
            .clone()
    }

    /// The answer of `server` to a `record_type` query for `name` (no cache in between).
    async fn query(
        &self,
        server: SocketAddr,
        name: &str,
        record_type: RecordType,
    ) -> Result<Answer, String> {
        let name = crate::dns::rfc2136::name(name).map_err(|e| e.to_string())?;
        let mut client = self.client(server);
        let query = client.query(name, DNSClass::IN, record_type);
        let response = match tokio::time::timeout(self.timeout * 2, query).await {
            Err(_) => return Err(format!("{server}: no answer in time")),
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(none)))) => {
                return match none.response_code {
                    ResponseCode::NXDomain => Ok(Answer::NxDomain),
                    ResponseCode::NoError => Ok(Answer::NoData),
                    code => Err(format!("{server}: {code}")),
                };
            }
            Ok(Err(error)) => return Err(format!("{server}: {error}")),
            Ok(Ok(response)) => response,
        };
        match response.response_code {
            ResponseCode::NoError => Ok(Answer::Records(response)),
            ResponseCode::NXDomain => Ok(Answer::NxDomain),
            code => Err(format!("{server}: {code}")),
        }
    }

    /// The answer of the first of `servers` that answers, in order; a failure only when
    /// all fail.
    async fn query_any(
        &self,
        servers: &[SocketAddr],
        name: &str,
        record_type: RecordType,
    ) -> Result<Answer, String> {
        let mut failures = vec![];
        for server in servers {
            match self.query(*server, name, record_type).await {
                Err(error) => failures.push(error),
                answer => return answer,
            }
        }
        Err(if failures.is_empty() {
            "no resolver configured".into()
        } else {
            failures.join("; ")
        })
    }

    /// The MX RRset of `domain` as `server` answers it (no cache in between).
    pub async fn mx(&self, server: SocketAddr, domain: &str) -> MxLookup {
        mx_lookup(self.query(server, domain, RecordType::MX).await)
    }

    /// The first usable MX answer among `servers`, in order; a failure only when all fail.
    pub async fn mx_any(&self, servers: &[SocketAddr], domain: &str) -> MxLookup {
        mx_lookup(self.query_any(servers, domain, RecordType::MX).await)
    }

    /// The TXT strings at `name` from the first of `servers` that answers (each record's
    /// character-strings joined; none for NXDOMAIN or no TXT record).
    pub async fn txt_any(&self, servers: &[SocketAddr], name: &str) -> Result<Vec<String>, String> {
        let response = match self.query_any(servers, name, RecordType::TXT).await? {
            Answer::NxDomain | Answer::NoData => return Ok(vec![]),
            Answer::Records(response) => response,
        };
        Ok(response
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

/// An MX answer as the drift checks judge it.
fn mx_lookup(answer: Result<Answer, String>) -> MxLookup {
    let response = match answer {
        Err(error) => return MxLookup::Failed(error),
        Ok(Answer::NxDomain) => return MxLookup::NxDomain,
        Ok(Answer::NoData) => return MxLookup::NoMx,
        Ok(Answer::Records(response)) => response,
    };
    let mut records = crate::dns::rfc2136::mx_answers(&response);
    records.sort();
    records.dedup();
    if records.is_empty() {
        MxLookup::NoMx
    } else {
        MxLookup::Records(records)
    }
}

/// The resolvers of /etc/resolv.conf (port 53).
pub fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Where the gateway is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    /// One SMTP address, `host:port` (`spec.probeAddress`, or `mx-operator audit --probe`).
    Address(String),
    /// Every ready replica of the gateway, as the Endpoints of its headless Service list
    /// them: a replica that answers wrongly is not hidden behind one that answers right, and
    /// no cluster DNS is needed.
    Replicas { namespace: String, service: String },
}

/// The ready replicas behind a gateway's headless Service (an Endpoints cache in the
/// operator, `NoReplicas` where no cluster is asked).
pub trait ReplicaSource: Send + Sync {
    fn ready(&self, namespace: &str, service: &str) -> Vec<Replica>;
}

/// No cluster to ask (`mx-operator audit` probes one address).
pub struct NoReplicas;

impl ReplicaSource for NoReplicas {
    fn ready(&self, _namespace: &str, _service: &str) -> Vec<Replica> {
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
    dns: &DnsClients,
    settings: &CheckSettings,
    replicas: &dyn ReplicaSource,
    expectation: &Expectation,
) -> Observation {
    let authoritative = match &expectation.authoritative {
        Some((server, ours)) => match dns.mx(*server, &expectation.domain).await {
            MxLookup::Records(records) => Some(records.contains(ours)),
            MxLookup::NoMx | MxLookup::NxDomain => Some(false),
            MxLookup::Failed(_) => None,
        },
        None => None,
    };
    let lookup = dns.mx_any(&settings.resolvers, &expectation.domain).await;
    let mut public = decide::classify(
        &lookup,
        &expectation.ours,
        Some(expectation.primary_host.as_str()),
    );
    if authoritative == Some(false) && public.is_departure() {
        // Our own record is missing at the source and is being repaired: that explains
        // the public view, which is no evidence that the domain moved.
        public = MxState::Unknown("our MX record is being restored at the zone's server".into());
    }
    let (acceptance, primary) = if settings.smtp {
        let acceptance = match &expectation.probe {
            Some(plan) => Some(probe_gateway(settings, replicas, plan).await),
            None => None,
        };
        (acceptance, Some(probe_primary(settings, expectation).await))
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
    settings: &CheckSettings,
    replicas: &dyn ReplicaSource,
    plan: &ProbePlan,
) -> Verdict {
    let (namespace, service) = match &plan.target {
        ProbeTarget::Address(address) => return probe_confirmed(settings, plan, address).await,
        ProbeTarget::Replicas { namespace, service } => (namespace, service),
    };
    let mut ready = replicas.ready(namespace, service);
    ready.sort();
    let verdicts = futures::future::join_all(ready.iter().map(|replica| async move {
        probe_confirmed(settings, plan, &replica.address.to_string()).await
    }))
    .await;
    decide::acceptance_of_replicas(namespace, service, &ready, verdicts)
}

/// One probe, repeated once after `confirm_after` when it fails, so a replica that is
/// loading a new configuration is not reported.
async fn probe_confirmed(settings: &CheckSettings, plan: &ProbePlan, target: &str) -> Verdict {
    let mut verdict = probe_gateway_once(settings, plan, target).await;
    if !verdict.status {
        tokio::time::sleep(settings.confirm_after).await;
        verdict = probe_gateway_once(settings, plan, target).await;
    }
    verdict
}

async fn probe_gateway_once(settings: &CheckSettings, plan: &ProbePlan, target: &str) -> Verdict {
    let ask = probe::Recipients {
        helo: plan.helo.clone(),
        known: plan.known.clone(),
        random: format!("mx-probe-{:016x}@{}", fastrand::u64(..), plan.domain),
        foreign: format!("mx-probe@{:016x}.invalid", fastrand::u64(..)),
    };
    let replies: Result<ProbeReplies, String> =
        probe::recipients(target, &ask, settings.smtp_timeout)
            .await
            .map_err(|e| e.to_string());
    acceptance(&replies, plan.expect, plan.catch_all)
}

async fn probe_primary(settings: &CheckSettings, expectation: &Expectation) -> Verdict {
    let target = host_port(&expectation.primary_host, expectation.primary_port);
    let banner = probe::banner(&target, settings.smtp_timeout)
        .await
        .map_err(|e| e.to_string());
    primary_reachable(&target, &banner)
}
