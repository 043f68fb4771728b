//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP to the zone's primary.

use crate::dns::{Mx, Plan};
use futures::future::BoxFuture;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::DnsMultiplexer;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_net::{DnsError as HickoryDnsError, NetError};
use hickory_proto::op::ResponseCode;
use hickory_proto::op::{DnsRequest, DnsResponse, update_message};
use hickory_proto::rr::rdata::MX;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, TSigner};
use std::net::SocketAddr;
use std::time::Duration;

/// Why a DNS operation failed, in terms a person can act on. The variant names are the
/// `DnsSynced` condition reasons.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("the server refused the TSIG signature (wrong key name, secret or algorithm): {0}")]
    AuthFailed(String),
    #[error("the server refused the update: {0}")]
    Refused(String),
    #[error("the server is not authoritative for the zone: {0}")]
    NotAuthoritative(String),
    #[error("no zone found for the name: {0}")]
    ZoneNotFound(String),
    #[error("no answer in time: {0}")]
    Timeout(String),
    #[error("cannot reach the DNS server: {0}")]
    ServerUnreachable(String),
    #[error("the TSIG key is unusable: {0}")]
    InvalidKey(String),
    #[error("no such records: {0}")]
    NoRecords(String),
    #[error("DNS error: {0}")]
    Protocol(String),
}

impl DnsError {
    /// The `DnsSynced` reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AuthFailed(_) => "AuthFailed",
            Self::Refused(_) => "Refused",
            Self::NotAuthoritative(_) => "NotAuthoritative",
            Self::ZoneNotFound(_) => "ZoneNotFound",
            Self::Timeout(_) => "Timeout",
            Self::ServerUnreachable(_) => "ServerUnreachable",
            Self::InvalidKey(_) => "InvalidKey",
            Self::NoRecords(_) => "NoRecords",
            Self::Protocol(_) => "ProtocolError",
        }
    }
}

/// What identifies an RFC 2136 server and its key.
#[derive(Clone)]
pub struct Server {
    pub address: SocketAddr,
    pub key_name: String,
    pub algorithm: crate::api::dnsprovider::TsigAlgorithm,
    pub secret: Vec<u8>,
    pub timeout: Duration,
}

fn response_error(context: &str, code: ResponseCode) -> DnsError {
    let message = format!("{context}: {code}");
    match code {
        ResponseCode::Refused => DnsError::Refused(message),
        ResponseCode::NotAuth => DnsError::NotAuthoritative(message),
        ResponseCode::NotZone => DnsError::ZoneNotFound(message),
        ResponseCode::NXDomain => DnsError::NoRecords(message),
        ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME => {
            DnsError::AuthFailed(message)
        }
        _ => DnsError::Protocol(message),
    }
}

/// hickory reports a wrong key as an unsigned or unverifiable response, an odd protocol
/// error; name it for what it is.
fn net_error(context: &str, error: NetError) -> DnsError {
    let message = format!("{context}: {error}");
    match error {
        NetError::Timeout => DnsError::Timeout(message),
        NetError::Io(ref io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) =>
        {
            DnsError::ServerUnreachable(message)
        }
        NetError::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
            DnsError::Timeout(message)
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => response_error(context, code),
        NetError::Dns(HickoryDnsError::NoRecordsFound(_)) => DnsError::NoRecords(message),
        _ if message.to_ascii_lowercase().contains("tsig") => DnsError::AuthFailed(message),
        _ if message.to_ascii_lowercase().contains("connection refused") => {
            DnsError::ServerUnreachable(message)
        }
        _ => DnsError::Protocol(message),
    }
}

/// The fully qualified DNS name of `input` (with or without its trailing dot).
pub fn name(input: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{}.", input.trim_end_matches('.')))
        .map_err(|e| DnsError::Protocol(format!("{input:?} is not a DNS name: {e}")))
}

/// A TSIG-signing client connected to the server.
pub struct Session {
    client: Client<TokioRuntimeProvider>,
}

impl Session {
    pub async fn connect(server: &Server) -> Result<Self, DnsError> {
        let algorithm = match server.algorithm {
            crate::api::dnsprovider::TsigAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            crate::api::dnsprovider::TsigAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            crate::api::dnsprovider::TsigAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let signer = TSigner::new(
            server.secret.clone(),
            algorithm,
            name(&server.key_name)?,
            300,
        )
        .map_err(|e| DnsError::InvalidKey(e.to_string()))?;
        let provider = TokioRuntimeProvider::new();
        let (connect, handle) =
            TcpClientStream::new(server.address, None, Some(server.timeout), provider);
        let stream = tokio::time::timeout(server.timeout, connect)
            .await
            .map_err(|_| DnsError::Timeout(format!("connecting to {}", server.address)))?
            .map_err(|e| net_error(&format!("connecting to {}", server.address), e))?;
        let multiplexer = DnsMultiplexer::new(stream, handle)
            .with_timeout(server.timeout)
            .with_signer(signer);
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(Self { client })
    }

    async fn first(
        &mut self,
        context: &str,
        response: impl Future<Output = Result<DnsResponse, NetError>>,
    ) -> Result<DnsResponse, DnsError> {
        let answer = response.await.map_err(|e| net_error(context, e))?;
        match answer.response_code {
            ResponseCode::NoError => Ok(answer),
            code => Err(response_error(context, code)),
        }
    }

    /// The MX records at `owner`, as the server has them.
    pub async fn mx_records(&mut self, owner: &str) -> Result<Vec<Mx>, DnsError> {
        let context = format!("querying MX of {owner}");
        let query = self
            .client
            .query(name(owner)?, DNSClass::IN, RecordType::MX);
        let response = match self.first(&context, query).await {
            Ok(response) => response,
            Err(DnsError::NoRecords(_)) => return Ok(vec![]),
            Err(error) => return Err(error),
        };
        Ok(mx_answers(&response))
    }

    /// The zone `owner` belongs to: the closest enclosing name with an SOA at this server.
    pub async fn find_zone(&mut self, owner: &str) -> Result<String, DnsError> {
        let mut candidate = owner.trim_end_matches('.').to_string();
        loop {
            let context = format!("looking for the SOA of {candidate}");
            let query = self
                .client
                .query(name(&candidate)?, DNSClass::IN, RecordType::SOA);
            match self.first(&context, query).await {
                Ok(response)
                    if response
                        .answers
                        .iter()
                        .any(|r| r.record_type() == RecordType::SOA) =>
                {
                    return Ok(candidate);
                }
                Ok(_)
                | Err(DnsError::NoRecords(_))
                | Err(DnsError::Refused(_))
                | Err(DnsError::NotAuthoritative(_)) => {}
                Err(error) => return Err(error),
            }
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent.to_string(),
                _ => {
                    return Err(DnsError::ZoneNotFound(format!(
                        "no zone at this server contains {owner}"
                    )));
                }
            }
        }
    }

    /// A signed update with one prerequisite and nothing to change: "no TXT RRset at
    /// `_mx-operator-check.<zone>`". The server must verify the key and the key's right
    /// to update the zone before it looks at the prerequisite; a query would not do, as
    /// servers answer queries whatever key signs them. `Ok` also when the prerequisite
    /// fails (someone created the name): the answer came, signed.
    pub async fn check_update(&mut self, zone: &str) -> Result<(), DnsError> {
        let owner = name(&format!("{CHECK_LABEL}.{zone}"))?;
        let mut message = update_message::create(
            RecordSet::new(owner, RecordType::TXT, 0),
            name(zone)?,
            false,
        );
        message.authorities.clear();
        let context = format!("checking the right to update zone {zone}");
        let update = self.client.send(DnsRequest::from(message)).first_answer();
        match self.first(&context, update).await {
            Ok(_) => Ok(()),
            Err(DnsError::Protocol(message))
                if message.ends_with(&ResponseCode::YXRRSet.to_string()) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Applies a plan: the addition first, then the removals, each its own signed update.
    pub async fn apply(
        &mut self,
        zone: &str,
        owner: &str,
        ttl: u32,
        plan: &Plan,
    ) -> Result<(), DnsError> {
        let zone_name = name(zone)?;
        if let Some(add) = &plan.add {
            let context = format!("adding MX {add} at {owner}");
            let update = self
                .client
                .append(record_set(owner, ttl, add)?, zone_name.clone(), false);
            self.first(&context, update).await?;
        }
        for old in &plan.remove {
            let context = format!("removing MX {old} at {owner}");
            let update = self
                .client
                .delete_by_rdata(record_set(owner, ttl, old)?, zone_name.clone());
            self.first(&context, update).await?;
        }
        Ok(())
    }
}

/// The MX records among a response's answers (any CNAME or signature records aside).
pub fn mx_answers(response: &DnsResponse) -> Vec<Mx> {
    response
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::MX(mx) => Some(Mx::new(mx.preference, &mx.exchange.to_ascii())),
            _ => None,
        })
        .collect()
}

fn record_set(owner: &str, ttl: u32, mx: &Mx) -> Result<RecordSet, DnsError> {
    let owner = name(owner)?;
    let record = Record::from_rdata(
        owner,
        ttl,
        RData::MX(MX::new(mx.preference, name(&mx.exchange)?)),
    );
    Ok(RecordSet::from(record))
}

/// The name whose absence [`Session::check_update`] asks the server to confirm.
const CHECK_LABEL: &str = "_mx-operator-check";

/// RFC 2136 over TCP, to the real server.
pub struct Tcp;

impl super::Updater for Tcp {
    fn connect<'a>(
        &'a self,
        server: &'a Server,
    ) -> BoxFuture<'a, Result<Box<dyn super::UpdateSession>, DnsError>> {
        Box::pin(async move {
            let session = Session::connect(server).await?;
            Ok(Box::new(session) as Box<dyn super::UpdateSession>)
        })
    }
}

impl super::UpdateSession for Session {
    fn mx_records<'a>(&'a mut self, owner: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>> {
        Box::pin(Session::mx_records(self, owner))
    }

    fn find_zone<'a>(&'a mut self, owner: &'a str) -> BoxFuture<'a, Result<String, DnsError>> {
        Box::pin(Session::find_zone(self, owner))
    }

    fn check_update<'a>(&'a mut self, zone: &'a str) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(Session::check_update(self, zone))
    }

    fn apply<'a>(
        &'a mut self,
        zone: &'a str,
        owner: &'a str,
        ttl: u32,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(Session::apply(self, zone, owner, ttl, plan))
    }
}
