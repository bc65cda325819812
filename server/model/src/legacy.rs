//! The formats that data dirs written before checks carried their `Type`, `Interval`,
//! `Timeout`, `ExposedPort` and `Definition` hold: a Raft log entry or a snapshot row from
//! such a data dir decodes into these types, and is upgraded to the current ones before it is
//! applied or read. Never change these types; they describe bytes already on disk.

use serde::{Deserialize, Serialize};

use super::{CatalogVerb, Check, HealthStatus, KvVerb, Node, Registration, Service, TxnOp};

/// A check as stored before it had a type and definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckV1 {
    pub node: String,
    pub id: String,
    pub name: String,
    pub status: HealthStatus,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl From<CheckV1> for Check {
    fn from(c: CheckV1) -> Check {
        Check {
            node: c.node,
            id: c.id,
            name: c.name,
            status: c.status,
            notes: c.notes,
            output: c.output,
            service_id: c.service_id,
            service_name: c.service_name,
            create_index: c.create_index,
            modify_index: c.modify_index,
            ..Default::default()
        }
    }
}

/// A registration whose checks are [`CheckV1`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationV1 {
    pub node: Node,
    pub skip_node_update: bool,
    pub service: Option<Service>,
    pub checks: Vec<CheckV1>,
}

impl From<RegistrationV1> for Registration {
    fn from(r: RegistrationV1) -> Registration {
        Registration {
            node: r.node,
            skip_node_update: r.skip_node_update,
            service: r.service,
            checks: r.checks.into_iter().map(Check::from).collect(),
        }
    }
}

/// A transaction operation whose check is a [`CheckV1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpV1 {
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
        check: CheckV1,
    },
}

impl From<TxnOpV1> for TxnOp {
    fn from(op: TxnOpV1) -> TxnOp {
        match op {
            TxnOpV1::Kv {
                verb,
                key,
                value,
                flags,
                index,
                session,
            } => TxnOp::Kv {
                verb,
                key,
                value,
                flags,
                index,
                session,
            },
            TxnOpV1::Node { verb, node } => TxnOp::Node { verb, node },
            TxnOpV1::Service {
                verb,
                node,
                service,
            } => TxnOp::Service {
                verb,
                node,
                service,
            },
            TxnOpV1::Check { verb, check } => TxnOp::Check {
                verb,
                check: check.into(),
            },
        }
    }
}
