//! Drift: the operator keeps looking at reality — public and authoritative DNS, the live
//! gateway, the primary — and compares it with the spec. Decisions are pure (`decide`), the
//! network checks sit in `check` (a gateway's ready replicas come from `replicas`), the periodic loop and its cache in `cycle`, and `audit`
//! runs the same checks over a list of domains without a cluster.

pub mod audit;
pub mod check;
pub mod cycle;
pub mod decide;
pub mod metrics;
pub mod replicas;

pub use check::{CheckSettings, Expectation, Observation, ProbePlan, ProbeTarget};
pub use cycle::{CycleReport, Drift, DriftSettings};
