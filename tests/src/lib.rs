//! The test harness: real components (etcd, kube-apiserver) started on loopback by the
//! project itself, for the integration tests and `make demo`.

pub mod bench;
pub mod control_plane;
pub mod fixtures;
pub mod gateway;
pub mod helm;
pub mod knot;
pub mod kubectl;
pub mod ldap;
pub mod lifecycle;
pub mod nginx;
pub mod node;
pub mod operator;
pub mod pod_security;
pub mod process;
pub mod smtp;
pub mod tls;
pub mod wait;

pub use control_plane::{ControlPlane, HarnessError, TestNamespace};

/// The root of this repository (the workspace), for tests that read its files.
pub fn repository() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
