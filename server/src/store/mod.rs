//! The state machine's tables (in memory, checkpointed to `state.redb`) and the read handle
//! over them.

mod apply;
mod catalog;
mod coordinate;
mod error;
mod lock_delay;
pub(crate) mod mem;
pub(crate) mod tables;
pub(crate) mod watch;

pub(crate) use apply::{apply_command, rebuild_session_keys, retired_servers, Changes};
pub use catalog::Catalog;
pub(crate) use error::StoreError;
pub(crate) use lock_delay::LockDelays;
