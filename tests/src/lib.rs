//! The test harness: real components (etcd, kube-apiserver) started on loopback by the
//! project itself, for the integration tests and `make demo`.

pub mod control_plane;
pub mod knot;
pub mod kubectl;
pub mod operator;
pub mod process;
pub mod wait;

pub use control_plane::{ControlPlane, HarnessError, TestNamespace};
