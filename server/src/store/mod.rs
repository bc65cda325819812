//! The state machine's tables in redb (`state.redb`) and the read handle over them.

mod apply;
mod catalog;
pub(crate) mod tables;

pub(crate) use apply::apply_command;
pub use catalog::Catalog;
