//! Muster's openraft type config: the log payload ([`Batch`]), its results, the type aliases
//! the Raft side uses, and openraft's storage error built from ours.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::model::{Command, CommandResult};
use crate::store::StoreError;

/// One log entry's payload: the commands the leader collected while the previous entries were
/// in flight. Group commit: many client writes share one append, one fsync and one apply
/// transaction. They also share the entry's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Batch {
    pub(crate) cmds: Vec<Command>,
    /// Set on the leader that proposes the entry, never serialized (the log and the wire carry
    /// `cmds` alone, byte for byte as a bare `Vec<Command>`): the log store tells it the
    /// entry's index the moment a quorum holds the entry, before it is applied.
    #[serde(skip)]
    pub(crate) on_commit: Option<CommitHook>,
}

impl Batch {
    pub(crate) fn new(cmds: Vec<Command>) -> Batch {
        Batch {
            cmds,
            on_commit: None,
        }
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.cmds == other.cmds
    }
}

impl Eq for Batch {}

/// Fires once with an entry's log index when the entry commits.
#[derive(Clone)]
pub(crate) struct CommitHook(Arc<Mutex<Option<oneshot::Sender<u64>>>>);

impl CommitHook {
    pub(crate) fn new() -> (CommitHook, oneshot::Receiver<u64>) {
        let (tx, rx) = oneshot::channel();
        (CommitHook(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    pub(crate) fn fire(&self, index: u64) {
        let tx = crate::sync::lock(&self.0).take();
        if let Some(tx) = tx {
            let _ = tx.send(index);
        }
    }
}

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

/// One result per command of a [`Batch`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchResult(pub(crate) Vec<CommandResult>);

openraft::declare_raft_types!(
    /// Muster's Raft types: the log carries [`Batch`]es of commands; peers are addressed by
    /// their server RPC address (`BasicNode::addr`).
    pub(crate) TypeConfig:
        D = Batch,
        R = BatchResult,
);

pub(crate) type NodeId = u64;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;

/// Wraps any error as an openraft storage error (openraft treats these as fatal).
pub(crate) fn sto_err(e: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::<NodeId>::write(&std::io::Error::other(e.to_string())).into()
}

impl From<CodecError> for StorageError {
    fn from(e: CodecError) -> Self {
        sto_err(e)
    }
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        sto_err(e)
    }
}
