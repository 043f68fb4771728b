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
pub mod probe;
pub mod recipients;
pub mod render;
pub mod telemetry;
