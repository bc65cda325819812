//! Sessions and the lock operations a KV write may carry.

use serde::{Deserialize, Serialize};

/// What happens to a session's locks when it is invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionBehavior {
    /// Locks are released; keys stay.
    #[default]
    Release,
    /// Keys locked by the session are deleted.
    Delete,
}

/// A session: the unit of lock ownership, tied to health checks and an optional TTL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    /// After invalidation, the session's locks cannot be re-acquired for this long.
    pub lock_delay_ms: u64,
    pub behavior: SessionBehavior,
    /// 0: no TTL.
    pub ttl_ms: u64,
    /// Node-level checks the session depends on (default `serfHealth`).
    pub node_checks: Vec<String>,
    /// Service checks the session depends on.
    pub service_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A lock operation carried by a KV write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Take the key's lock for the session (fails if another session holds it).
    Acquire(String),
    /// Give up the key's lock if the session holds it.
    Release(String),
}
