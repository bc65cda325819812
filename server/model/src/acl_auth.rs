//! ACL auth methods and binding rules (Consul's `/v1/acl/auth-method*` and
//! `/v1/acl/binding-rule*`), as the state machine stores them.
//!
//! As in `acl.rs`, each record keeps Consul's definition as one JSON string, so a field Consul
//! adds later never changes this binary format; only what the state machine itself keys or
//! cascades on (the method's name, the rule's ID and method) is kept apart.

use serde::{Deserialize, Serialize};

/// A stored auth method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclAuthMethod {
    /// Unique among auth methods: the key binding rules and tokens refer to it by.
    pub name: String,
    /// Consul's `ACLAuthMethod` as JSON, without the name (`Type`, `DisplayName`,
    /// `Description`, `MaxTokenTTL`, `TokenLocality`, `Config`).
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored binding rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingRule {
    /// A UUID chosen by the proposer.
    pub id: String,
    /// The name of the auth method the rule belongs to; deleting that method deletes it.
    pub auth_method: String,
    /// Consul's `ACLBindingRule` as JSON, without the ID and method (`Description`,
    /// `Selector`, `BindType`, `BindName`).
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}
