//! Muster's replicated state: the catalog (nodes, services, checks) and the KV store, kept
//! in Raft (openraft) over redb files, with the server RPC port that carries Raft traffic and
//! forwarded requests between agents.
//!
//! [`Server`] is the only way in: `write` applies a [`model::Command`] through Raft
//! (forwarding to the leader), `read`/`barrier` give Consul's default, stale and consistent
//! reads. openraft and redb types stay inside this crate.

pub mod acl;
mod codec;
mod config;
mod duration;
mod error;
mod id;
mod metrics;
pub mod prepared;
// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it at
// every internal call would only add allocations on the write path.
#[allow(clippy::result_large_err)]
mod raft;
mod recover;
mod server;
pub mod snapshot;
mod store;
pub mod sync;

pub use config::{RpcTls, ServerConfig};
pub use duration::{go_duration, MAX_GO_DURATION};
pub use error::{Error, Result};
pub use id::{is_uuid, new_uuid};
pub use metrics::ServerMetrics;
/// The replicated data model, its own serde-only crate so `checks` needs neither openraft nor redb.
pub use muster_model as model;
pub use recover::{recover_sole_server, Recovered};
pub use server::{
    AutopilotHealth, KnownServer, RaftConfiguration, RaftPeer, RaftStats, SerfStatus, Server,
    ServerHealth,
};
pub use store::{Catalog, Usage};

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests;
