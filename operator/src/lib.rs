//! mx-operator: a Kubernetes operator for managed inbound mail gateways (MX relays).
//!
//! The binary (`main.rs`) only parses the command line; every behaviour lives here, one
//! module per concern.

pub mod agent;
pub mod api;
pub mod cli;
pub mod controller;
pub mod dns;
pub mod drift;
pub mod manifests;
pub mod net;
pub mod queue;
pub mod recipients;
pub mod render;
pub mod shutdown;
pub mod telemetry;

/// Property tests run 2,000 cases each in `make test`; `make soak` sets `PROPTEST_CASES`
/// far higher.
#[cfg(test)]
pub(crate) fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2000)
}
