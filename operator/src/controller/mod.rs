//! The controllers: MailGateway and MailDomain reconciled into Kubernetes objects, with
//! status that tells the truth.

mod agent_tokens;
mod agents;
mod changes;
mod claims;
mod context;
mod digests;
mod dnsprovider;
mod draining;
mod error;
mod leader;
mod listed;
pub mod maildomain;
pub mod mailgateway;
pub mod metrics;
mod ownership;
mod placement;
mod queues;
mod run;
mod sources;
mod status;
mod supervise;
mod write;

pub use context::{Context, Error, FIELD_MANAGER, FINALIZER, Settings};
pub use leader::{LeaderError, LeaseSettings, run_with_leader_election};
pub use metrics::{Metrics, OperatorEndpoints};
pub use queues::messages_range;
pub use run::run;
pub use sources::{SOURCE_SECRET_LABEL, SyncSettings};
