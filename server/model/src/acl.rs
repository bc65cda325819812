//! ACLs (Consul's `/v1/acl/*`): policies, tokens and roles as the state machine stores them.
//!
//! Each record keeps Consul's definition as one JSON string (`definition`): its fields grow
//! between Consul versions, and a new one then never changes this binary format. Only what
//! the state machine itself checks or indexes (IDs, names, the secret, the expiry) is kept
//! apart.

use serde::{Deserialize, Serialize};

/// A stored ACL policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    /// A UUID chosen by the proposer.
    pub id: String,
    /// Unique among policies.
    pub name: String,
    /// Consul's `ACLPolicy` as JSON (`Description`, `Rules`, `Datacenters`).
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored ACL token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    /// The token's public ID (`AccessorID`), a UUID.
    pub accessor_id: String,
    /// The secret presented with requests (`SecretID`), unique among tokens.
    pub secret_id: String,
    /// Consul's `ACLToken` as JSON, without the two IDs (`Description`, `Policies` and
    /// `Roles` as links by ID, `ServiceIdentities`, `NodeIdentities`, `Local`,
    /// `ExpirationTime`, `CreateTime`).
    pub definition: String,
    /// When the token stops working, in Unix milliseconds; 0 for never.
    pub expires_unix_ms: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored ACL role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRole {
    /// A UUID chosen by the proposer.
    pub id: String,
    /// Unique among roles.
    pub name: String,
    /// Consul's `ACLRole` as JSON (`Description`, `Policies` as links by ID,
    /// `ServiceIdentities`, `NodeIdentities`).
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A token with what it grants: its policies and roles, and the policies of those roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclResolved {
    pub token: AclToken,
    /// The token's own policies and its roles' policies, each once.
    pub policies: Vec<AclPolicy>,
    pub roles: Vec<AclRole>,
}

/// The ACL system's own state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclMeta {
    /// The Raft index of the last bootstrap, 0 if never bootstrapped: Consul's reset index,
    /// which an operator writes to `acl-bootstrap-reset` to bootstrap again.
    pub bootstrap_index: u64,
}
