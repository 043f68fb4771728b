//! On-demand queue control (`mx-operator queue`): the mail a domain or a gateway has
//! queued, on every replica, listed, flushed or deleted through the API server's
//! `pods/exec`, so the user's own Kubernetes permissions decide who may. [`select`] and
//! [`table`] are pure; [`replica`] runs inside a gateway container (`mx-operator
//! agent-queue`), [`remote`] is the API-server side.

pub mod remote;
pub mod replica;
pub mod select;
pub mod table;
