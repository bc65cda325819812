//! Transactions: the operations of `/v1/txn` and their outcomes.

use serde::{Deserialize, Serialize};

use super::{Check, KvEntry, Node, Service};

/// Consul's KV transaction verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvVerb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

/// Verbs for nodes, services and checks in a transaction. `Cas`/`DeleteCas` carry the
/// ModifyIndex the entity must have (0: must not exist, for `Cas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogVerb {
    Set,
    Cas(u64),
    Get,
    Delete,
    DeleteCas(u64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Kv {
        verb: KvVerb,
        key: String,
        value: Vec<u8>,
        flags: u64,
        index: u64,
        session: String,
    },
    Node {
        verb: CatalogVerb,
        node: Node,
    },
    Service {
        verb: CatalogVerb,
        node: String,
        service: Service,
    },
    Check {
        verb: CatalogVerb,
        check: Check,
    },
}

/// One result of a transaction, in operation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    Kv(KvEntry),
    Node(Node),
    Service(String, Service),
    Check(Check),
}

/// What a transaction produced: results when every operation succeeded, else the errors
/// (operation index and reason) and no change at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    pub results: Vec<TxnResult>,
    pub errors: Vec<(usize, String)>,
}
