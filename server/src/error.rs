use std::path::PathBuf;

/// Errors of the replicated state store, already translated from Raft and redb terms into
/// what a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No leader is known, or the leader cannot reach a quorum: the cluster cannot decide.
    #[error("No cluster leader")]
    NoLeader,
    /// The request is invalid; the message says why. Nothing was applied.
    #[error("{0}")]
    InvalidRequest(String),
    /// A server could not be reached over the server RPC port.
    #[error("rpc to {addr} failed: {reason}")]
    Rpc { addr: String, reason: String },
    /// No server is known to this (client) agent yet.
    #[error("No known Consul servers")]
    NoServers,
    /// The data directory belongs to another node or datacenter.
    #[error(
        "data dir {dir} belongs to node {found_node:?} in datacenter {found_dc:?}, not to node \
         {node:?} in {dc:?}: start with -node {found_node} -datacenter {found_dc}, or use another \
         -data-dir"
    )]
    DataDirMismatch {
        dir: PathBuf,
        found_node: String,
        found_dc: String,
        node: String,
        dc: String,
    },
    /// Another process holds the data directory's database files.
    #[error("data dir {0} is in use by another muster process")]
    DataDirInUse(PathBuf),
    /// A database file could not be opened or is corrupt.
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A storage operation failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The Raft node stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
