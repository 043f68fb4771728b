//! Publishing the gateway's MX record for a domain: RFC 2136 with TSIG, or external-dns
//! `DNSEndpoint` objects. Planning is pure; the DNS and API calls are at the edges.

pub mod external;
pub mod plan;

pub use plan::{Mx, Plan, plan};
