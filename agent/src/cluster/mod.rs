//! The agent's cluster layer: LAN gossip membership, finding the cluster at start, the
//! leader's reconciliation of membership into Raft and the catalog, and the member tags they
//! share. Gossip-level features (events, queries, exec) belong here too.

pub(crate) mod control;
pub(crate) mod coordinate;
pub(crate) mod direct;
pub(crate) mod exec;
pub mod gossip;
pub mod gossip_metrics;
pub(crate) mod join;
pub mod keyring;
pub(crate) mod keyring_ops;
pub mod member;
pub(crate) mod query;
pub(crate) mod recent;
pub(crate) mod reconcile;
pub(crate) mod tags;
pub(crate) mod user_events;
