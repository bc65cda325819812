//! Raft: type config, redb log store and state machine, network and the server RPC port.

pub(crate) mod files;
pub(crate) mod log_store;
pub(crate) mod network;
pub(crate) mod rpc;
pub(crate) mod state_machine;
pub(crate) mod types;
