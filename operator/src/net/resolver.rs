//! DNS lookups: MX and TXT answers straight from the servers asked (UDP, no cache in
//! between), for drift and ownership proofs.

use super::Resolver;
use super::rfc2136::{self, mx_answers};
use crate::dns::Mx;
use futures::future::BoxFuture;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::{DnsError, NetError};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RData, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

/// What a resolver said about a domain's MX RRset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxLookup {
    /// The records, sorted.
    Records(Vec<Mx>),
    /// The name exists but has no MX records.
    NoMx,
    NxDomain,
    /// No usable answer (timeout, SERVFAIL, refused): says nothing about the domain.
    Failed(String),
}

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
        let name = rfc2136::name(name).map_err(|e| e.to_string())?;
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

impl DnsClients {
    /// The A and AAAA addresses of `name` from the first of `servers` that answers each
    /// (none for NXDOMAIN or no record). When only one of the two lookups fails, the other's
    /// addresses are what is known (some servers drop AAAA queries): a failure only when
    /// both fail.
    pub async fn addresses_any(
        &self,
        servers: &[SocketAddr],
        name: &str,
    ) -> Result<Vec<IpAddr>, String> {
        let mut addresses = Vec::new();
        let mut failures = Vec::new();
        for record_type in [RecordType::A, RecordType::AAAA] {
            let response = match self.query_any(servers, name, record_type).await {
                Ok(Answer::Records(response)) => response,
                Ok(Answer::NxDomain | Answer::NoData) => continue,
                Err(error) => {
                    failures.push(format!("{record_type}: {error}"));
                    continue;
                }
            };
            addresses.extend(
                response
                    .answers
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    }),
            );
        }
        if failures.len() == 2 {
            return Err(failures.join("; "));
        }
        Ok(addresses)
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
    let mut records = mx_answers(&response);
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

impl Resolver for DnsClients {
    fn mx<'a>(&'a self, server: SocketAddr, domain: &'a str) -> BoxFuture<'a, MxLookup> {
        Box::pin(DnsClients::mx(self, server, domain))
    }

    fn mx_any<'a>(&'a self, servers: &'a [SocketAddr], domain: &'a str) -> BoxFuture<'a, MxLookup> {
        Box::pin(DnsClients::mx_any(self, servers, domain))
    }

    fn txt_any<'a>(
        &'a self,
        servers: &'a [SocketAddr],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(DnsClients::txt_any(self, servers, name))
    }

    fn addresses_any<'a>(
        &'a self,
        servers: &'a [SocketAddr],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(DnsClients::addresses_any(self, servers, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    /// A DNS server that answers A queries with 127.0.0.1 and `aaaa` to AAAA queries.
    async fn server(aaaa: ResponseCode) -> SocketAddr {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((length, client)) = socket.recv_from(&mut buffer).await {
                let request = Message::from_vec(&buffer[..length]).unwrap();
                let query = request.queries[0].clone();
                let mut answer = match query.query_type() {
                    RecordType::A => {
                        let mut answer = Message::response(request.metadata.id, OpCode::Query);
                        answer.add_answer(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::A(A([127, 0, 0, 1].into())),
                        ));
                        answer
                    }
                    _ => Message::error_msg(request.metadata.id, OpCode::Query, aaaa),
                };
                answer.add_query(query);
                let _ = socket.send_to(&answer.to_vec().unwrap(), client).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn a_failing_aaaa_lookup_keeps_the_a_addresses() {
        let clients = DnsClients::new(Duration::from_secs(1));
        let servfail = server(ResponseCode::ServFail).await;
        assert_eq!(
            clients.addresses_any(&[servfail], "mail.example.org").await,
            Ok(vec![IpAddr::from([127, 0, 0, 1])])
        );
        let nodata = server(ResponseCode::NoError).await;
        assert_eq!(
            clients.addresses_any(&[nodata], "mail.example.org").await,
            Ok(vec![IpAddr::from([127, 0, 0, 1])])
        );
    }

    #[tokio::test]
    async fn both_lookups_failing_is_a_failure() {
        // Nothing listens there.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap();
        let clients = DnsClients::new(Duration::from_millis(200));
        let failed = clients.addresses_any(&[address], "mail.example.org").await;
        let error = failed.unwrap_err();
        assert!(
            error.starts_with("A: ") && error.contains("; AAAA: "),
            "{error}"
        );
    }
}
