//! Muster's replicated data model: what the Raft log carries and the state machine stores.
//!
//! Serde only, no I/O. These types are the on-disk and on-wire format between servers, so
//! they avoid serde attributes that a non-self-describing codec (postcard) cannot handle.
//! The Consul-shaped JSON seen by HTTP clients lives in `muster-api`, not here.

mod acl;
mod acl_auth;
mod autopilot;
mod bytes;
mod catalog;
mod command;
mod coordinate;
mod kv;
pub mod legacy;
mod prepared;
mod query;
mod session;
mod snapshot;
mod txn;

pub use acl::{AclMeta, AclPolicy, AclResolved, AclRole, AclToken};
pub use acl_auth::{AclAuthMethod, AclBindingRule};
pub use autopilot::AutopilotConfig;
pub use catalog::{tags_by_service, Check, HealthStatus, Node, Registration, Service};
pub use command::{Command, CommandResult};
pub use coordinate::{Coordinate, NodeCoordinate};
pub use kv::KvEntry;
pub use prepared::{PreparedExecute, PreparedQuery, PreparedRun};
pub use query::{Consistency, Query, QueryResult, ReadMeta, ServiceHealth};
pub use session::{LockOp, Session, SessionBehavior};
pub use snapshot::{RestoreRows, RestoreState};
pub use txn::{CatalogVerb, KvVerb, TxnOp, TxnOutcome, TxnResult};
