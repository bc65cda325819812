//! The `muster` agent: configuration, wiring of the server, HTTP and DNS components, gossip
//! membership, cluster formation and shutdown, plus the command-line client commands. The only
//! crate that knows all the others.

mod acl;
pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod defs;
mod error;
pub mod flags;
#[doc(hidden)]
pub mod fuzz;
pub mod handlers;
mod listeners;
pub mod local;
pub mod log_broadcast;
pub mod readiness;
pub mod signal;
mod snapshot_agent;
pub mod template;
pub mod tls;
pub mod watch;

pub use agent::run;
pub use cluster::gossip;
pub use config::Config;
pub use error::{Error, Result};

/// The version `muster version` and `/v1/agent/self` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
