//! The state machine's tables (in memory, checkpointed to `state.redb`) and the read handle
//! over them.

mod acl;
mod acl_auth;
mod apply;
mod autopilot;
mod catalog;
mod coordinate;
mod error;
mod legacy;
mod lock_delay;
pub(crate) mod mem;
mod prepared;
pub(crate) mod tables;
pub(crate) mod watch;

pub(crate) use apply::{apply_command, check_row, rebuild_session_keys, retired_servers, Changes};
pub use catalog::{Catalog, Usage};
pub(crate) use error::StoreError;
pub(crate) use legacy::upgrade_rows;
pub(crate) use lock_delay::LockDelays;
