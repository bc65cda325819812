//! A KV entry as stored.

use serde::{Deserialize, Serialize};

/// One key of the KV store, as Consul models it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    /// The session holding the lock on this key, if any.
    pub session: Option<String>,
    /// Raft index of the write that created the key.
    pub create_index: u64,
    /// Raft index of the last write to the key.
    pub modify_index: u64,
    /// How many times the lock on this key has been acquired.
    pub lock_index: u64,
}
