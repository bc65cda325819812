//! [`Command`]: one write, as the Raft log carries it, and its result.

use serde::{Deserialize, Serialize};

use super::legacy::{RegistrationV1, TxnOpV1};
use super::{
    AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, AutopilotConfig, LockOp,
    NodeCoordinate, PreparedQuery, Registration, RestoreState, Session, TxnOp, TxnOutcome,
};

/// A state change, as carried in the Raft log. Every variant is deterministic: applying the
/// same command at the same index on every server gives the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set a key. `cas: Some(0)` creates only if absent; `Some(n)` writes only if the key's
    /// ModifyIndex is `n`. With a lock op, the write also takes or gives up the key's lock.
    KvSet {
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
        lock: Option<LockOp>,
    },
    /// Delete a key; with `cas`, only if its ModifyIndex matches.
    KvDelete {
        key: String,
        cas: Option<u64>,
    },
    /// Delete every key starting with `prefix`.
    KvDeleteTree {
        prefix: String,
    },
    /// A [`Command::Register`] from a log written before checks had a type: see `legacy`.
    LegacyRegister(Box<RegistrationV1>),
    /// Remove a node (and everything on it), or one service (and its checks), or one check.
    Deregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
    /// Create a session (its ID chosen by the proposer, so every server agrees).
    SessionCreate(Box<Session>),
    /// Destroy a session, releasing or deleting its locks per its behavior.
    SessionDestroy {
        id: String,
    },
    /// A [`Command::Txn`] from a log written before checks had a type: see `legacy`.
    LegacyTxn(Vec<TxnOpV1>),
    /// Drop KV tombstones left at or before this index (the leader's tombstone GC).
    KvReapTombstones {
        upto: u64,
    },
    /// Refuse Raft requests from these server IDs from now on: written by `muster recover`,
    /// which replaced the membership they belong to.
    RetireServers {
        ids: Vec<u64>,
    },
    /// Register a node, and optionally a service and checks on it.
    Register(Box<Registration>),
    /// Apply every operation or none.
    Txn(Vec<TxnOp>),
    /// Create or replace a prepared query (its ID chosen by the proposer). Fails, changing
    /// nothing, if its name or template prefix is taken or its session does not exist.
    PreparedQuerySet(Box<PreparedQuery>),
    /// Delete a prepared query.
    PreparedQueryDelete {
        id: String,
    },
    /// Store these nodes' network coordinates; a node not in the catalog is skipped.
    CoordinateBatchUpdate(Vec<NodeCoordinate>),
    /// Create the first management token. Fails, changing nothing, if ACLs were bootstrapped
    /// already, unless `reset_index` is the index of that bootstrap (Consul's reset).
    AclBootstrap {
        token: Box<AclToken>,
        reset_index: u64,
    },
    /// Create or replace a policy; fails if another policy has its name.
    AclPolicySet(Box<AclPolicy>),
    AclPolicyDelete {
        id: String,
    },
    /// Create or replace a token; fails if another token has its secret.
    AclTokenSet(Box<AclToken>),
    AclTokenDelete {
        accessor_id: String,
    },
    /// Create or replace a role; fails if another role has its name.
    AclRoleSet(Box<AclRole>),
    AclRoleDelete {
        id: String,
    },
    /// Create or replace an auth method (keyed by its name).
    AclAuthMethodSet(Box<AclAuthMethod>),
    /// Delete an auth method, with its binding rules and every token a login through it made
    /// (as Consul's `ACLAuthMethodDeleteByName`).
    AclAuthMethodDelete {
        name: String,
    },
    /// Create or replace a binding rule; fails if its auth method does not exist.
    AclBindingRuleSet(Box<AclBindingRule>),
    AclBindingRuleDelete {
        id: String,
    },
    /// Replace the whole state with a snapshot's (`PUT /v1/snapshot`), as a write at this
    /// entry's index: every row's ModifyIndex and every table index become that index.
    SnapshotRestore(Box<RestoreState>),
    /// Replace the autopilot configuration. `cas: Some(0)` writes only if none is stored (the
    /// leader seeding it from its config file); `Some(n)` only if the stored ModifyIndex is n.
    AutopilotSetConfig {
        config: Box<AutopilotConfig>,
        cas: Option<u64>,
    },
    /// One chunk of a restore too large for one entry, staged under the restore's ID until
    /// its commit: for a [`Command::SnapshotRestoreArchive`], `data` is the next slice of the
    /// archive file; for a [`Command::SnapshotRestoreCommit`] (as older versions wrote it), a
    /// postcard [`RestoreState`] holding some of the rows, in order. Chunk 0 discards whatever other restore was staged; a
    /// later chunk fails unless the chunk before it is staged in the same Raft term (the
    /// restore was discarded, or the leader changed).
    SnapshotRestoreChunk {
        id: String,
        seq: u64,
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// Replace the whole state with the `chunks` staged chunks of restore `id`, in one apply,
    /// as [`Command::SnapshotRestore`] does; the staged chunks go. Fails, changing nothing but
    /// dropping what was staged for `id`, unless every chunk is staged, in this term.
    SnapshotRestoreCommit {
        id: String,
        chunks: u64,
    },
    /// Drop the chunks staged for restore `id` (with `None`, those of every restore begun
    /// in an earlier term): a failed restore, or those a new leader finds left over.
    SnapshotRestoreDiscard {
        id: Option<String>,
    },
    /// Replace the whole state with that of the archive (Muster's, as `GET /v1/snapshot`
    /// writes it, or Consul's) whose bytes are the `chunks` staged chunks of restore `id`,
    /// in order, as [`Command::SnapshotRestoreCommit`] does with rows: the log carries the
    /// archive as it is, compressed, and every server reads it in this apply. Fails,
    /// changing nothing but dropping what was staged for `id`, unless every chunk is staged,
    /// in this term, with the SHA-256 `sha256` (hex; the sum of the file the leader checked
    /// whole before proposing it), and the archive reads.
    SnapshotRestoreArchive {
        id: String,
        chunks: u64,
        sha256: String,
    },
}

impl Command {
    /// The command in the current format: a legacy variant becomes its current form.
    pub fn upgrade(self) -> Command {
        match self {
            Command::LegacyRegister(r) => Command::Register(Box::new((*r).into())),
            Command::LegacyTxn(ops) => Command::Txn(ops.into_iter().map(TxnOp::from).collect()),
            c => c,
        }
    }

    /// Whether applying this command succeeds whatever the state it meets: a KV write or
    /// delete with no CAS index and no lock. Such a write is acknowledged once it commits,
    /// without waiting for the apply (the state machine's `apply` must agree; it is checked).
    pub fn succeeds_unconditionally(&self) -> bool {
        matches!(
            self,
            Command::KvSet {
                cas: None,
                lock: None,
                ..
            } | Command::KvDelete { cas: None, .. }
                | Command::KvDeleteTree { .. }
        )
    }
}

/// What applying a [`Command`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The Raft index the command was applied at.
    pub index: u64,
    /// False when a condition (CAS, lock, missing session) did not hold; nothing changed.
    pub success: bool,
    /// The outcome of a [`Command::Txn`].
    pub txn: Option<TxnOutcome>,
}
