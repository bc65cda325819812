//! The agent library's error type.
//!
//! Each message is the whole text an operator sees: `muster agent` prints it after `Error: `,
//! and the HTTP API answers with it. Causes are formatted into the message rather than chained
//! as `source()`, because several edges carry errors on as plain strings (a reload over HTTP or
//! SIGHUP, the API's `LocalError`, gossip joins) and must not lose them.

use std::net::SocketAddr;

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file, flag or setting is invalid: the message names the file and key, or the
    /// flag.
    #[error("{0}")]
    Config(String),
    /// A service or check definition is invalid: the message names where it came from and the
    /// field.
    #[error("{0}")]
    Definition(String),
    /// A listener could not be bound (the port is in use, the address is not ours).
    #[error("cannot listen for {what} on {addr}: {error}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// A file or directory of the agent's own could not be read or written; `context` says
    /// which and what was being done.
    #[error("{context}: {error}")]
    File {
        context: String,
        error: std::io::Error,
    },
    /// A socket or runtime operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server component (Raft, the catalog, server RPC) failed.
    #[error(transparent)]
    Server(#[from] muster_server::Error),
    /// A gossip join or force-leave failed.
    #[error("{0}")]
    Gossip(String),
    /// The gossip task is gone: the agent is stopping.
    #[error("agent is shutting down")]
    ShuttingDown,
    /// This server cannot go on (its Raft core, log writer or checkpointer stopped, the disk
    /// full) and has stopped, for its supervisor to restart it.
    #[error("{0}. This server has stopped; start it again once the cause is fixed")]
    Fatal(String),
    /// This server was retired by `muster recover` on another server and has stopped.
    #[error(
        "{0}. This server was retired and has stopped; start it again as before: it sets \
         its old Raft data aside (in superseded-<time>/ in its data dir) and rejoins as a \
         new member"
    )]
    Retired(String),
}

/// The agent library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A file-system error, with what was being done to which path.
    pub(crate) fn file(context: impl Into<String>, error: std::io::Error) -> Error {
        Error::File {
            context: context.into(),
            error,
        }
    }
}
