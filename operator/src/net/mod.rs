//! The network layer: DNS lookups, RFC 2136 updates, the SMTP probe, the agents'
//! `/status`, directory searches and recipient lists over HTTP(S). The controllers
//! and the drift checks hold them behind these traits, so tests can give fakes; the
//! implementations here speak to real servers.

pub mod agent;
pub mod http;
pub mod ldap;
pub mod resolver;
pub mod rfc2136;
pub mod smtp;
pub mod tls;

/// `url` as status and logs may show it: scheme, host, port and path.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let shown = &rest[..end];
    let (authority, path) = shown.split_at(shown.find('/').unwrap_or(end));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let cut = end < rest.len() || host.len() < authority.len();
    format!("{scheme}://{host}{path}{}", if cut { "…" } else { "" })
}

pub use resolver::{DnsClients, MxLookup};
pub use smtp::{ProbeReplies, Recipients, Reply};

use crate::dns::{Mx, Plan};
use futures::future::BoxFuture;
use rfc2136::{DnsError, Server};
use std::net::SocketAddr;
use std::time::Duration;

/// DNS lookups, answered by the servers asked (no cache in between).
pub trait Resolver: Send + Sync {
    /// The MX RRset of `domain` as `server` answers it.
    fn mx<'a>(&'a self, server: SocketAddr, domain: &'a str) -> BoxFuture<'a, MxLookup>;
    /// The first usable MX answer among `servers`, in order.
    fn mx_any<'a>(&'a self, servers: &'a [SocketAddr], domain: &'a str) -> BoxFuture<'a, MxLookup>;
    /// The TXT strings at `name` from the first of `servers` that answers.
    fn txt_any<'a>(
        &'a self,
        servers: &'a [SocketAddr],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// The A and AAAA addresses of `name` from the first of `servers` that answers.
    fn addresses_any<'a>(
        &'a self,
        servers: &'a [SocketAddr],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<std::net::IpAddr>, String>>;
}

/// The SMTP probe's two questions; errors are messages for a condition.
pub trait Prober: Send + Sync {
    /// The greeting of the server at `target` (`host:port`).
    fn banner<'a>(
        &'a self,
        target: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<Reply, String>>;
    /// The answers to RCPT for the recipients in `ask`; nothing is ever sent.
    fn recipients<'a>(
        &'a self,
        target: &'a str,
        ask: &'a Recipients,
        limit: Duration,
    ) -> BoxFuture<'a, Result<ProbeReplies, String>>;
}

/// Opens RFC 2136 sessions with a zone's server.
pub trait Updater: Send + Sync {
    fn connect<'a>(
        &'a self,
        server: &'a Server,
    ) -> BoxFuture<'a, Result<Box<dyn UpdateSession>, DnsError>>;
}

/// One session with a zone's server: read the RRset, find the zone, send TSIG-signed
/// updates.
pub trait UpdateSession: Send {
    fn mx_records<'a>(&'a mut self, owner: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>>;
    fn find_zone<'a>(&'a mut self, owner: &'a str) -> BoxFuture<'a, Result<String, DnsError>>;
    /// A signed update that changes nothing: whether the key may update `zone`.
    fn check_update<'a>(&'a mut self, zone: &'a str) -> BoxFuture<'a, Result<(), DnsError>>;
    /// Applies a plan: the addition first, then the removals.
    fn apply<'a>(
        &'a mut self,
        zone: &'a str,
        owner: &'a str,
        ttl: u32,
        plan: &'a Plan,
    ) -> BoxFuture<'a, Result<(), DnsError>>;
}

/// The gateway agents' `/status`, read with the gateway's agent token; errors are messages
/// for a condition.
pub trait AgentStatus: Send + Sync {
    fn status<'a>(
        &'a self,
        address: SocketAddr,
        token: &'a str,
    ) -> BoxFuture<'a, Result<crate::agent::StatusReport, String>>;
}

/// The network as the operator's processes use it: real servers.
#[derive(Clone)]
pub struct Network {
    pub resolver: std::sync::Arc<dyn Resolver>,
    pub prober: std::sync::Arc<dyn Prober>,
    pub updater: std::sync::Arc<dyn Updater>,
    pub agents: std::sync::Arc<dyn AgentStatus>,
    pub directory: std::sync::Arc<dyn ldap::Directory>,
    pub lists: std::sync::Arc<dyn http::ListServer>,
}

impl Network {
    /// Real DNS (queries limited to `dns_timeout`, as are the agents' `/status` reads), SMTP
    /// and RFC 2136.
    pub fn real(dns_timeout: Duration) -> Self {
        Self {
            resolver: std::sync::Arc::new(DnsClients::new(dns_timeout)),
            prober: std::sync::Arc::new(smtp::Smtp),
            updater: std::sync::Arc::new(rfc2136::Tcp),
            agents: std::sync::Arc::new(agent::Http::new(dns_timeout)),
            directory: std::sync::Arc::new(ldap::Ldap),
            lists: std::sync::Arc::new(http::Https),
        }
    }
}
