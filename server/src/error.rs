//! The server crate's error: Raft, storage and forwarding failures, translated at the edge
//! into what `api` and `dns` can answer with.

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
    /// A server answered with a reply this one cannot use: of another kind than the request
    /// asks for, or one that does not decode (most likely a server of another Muster version).
    #[error("protocol error talking to server {addr}: {reason}")]
    Protocol { addr: String, reason: String },
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
    /// A data file is damaged and cannot be rebuilt from the others.
    #[error(
        "{path} is damaged: {reason}. Restore it (or the whole data dir) from a backup, or start \
         this server afresh: stop it, move its data dir aside and start it again, and it rejoins \
         its cluster as a new member and gets the data from the other servers"
    )]
    Damaged { path: PathBuf, reason: String },
    /// The data dir's files do not belong together (a Raft log lost beside its state, files
    /// of another server): serving them could lose acknowledged writes silently.
    #[error(
        "data dir {dir}: {problem}. Refusing to start rather than join as a new member or form \
         a new cluster with partial data. Choose one: restore the data dir from a backup; or, \
         with raft.redb restored and the other servers lost for good, run `muster recover \
         -data-dir {dir}` to make this server the only voter; or start this server afresh: move \
         the data dir aside (mv {dir} {dir}.old) and start again, as a new, empty member"
    )]
    DataDirInconsistent { dir: PathBuf, problem: String },
    /// A part the server cannot run without stopped (the Raft core, the log writer, the state
    /// checkpointer): the process must exit, and its supervisor restart it.
    #[error("{0}")]
    Fatal(String),
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
