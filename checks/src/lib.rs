//! Health-check runners for the agent's own services: script (`args`), TTL, HTTP and TCP
//! probes, each reporting a [`CheckUpdate`] on a channel, with flap damping
//! (`success_before_passing`, `failures_before_warning`, `failures_before_critical`) and a
//! cancellation token per check, so deregistering a service stops its checks at once. It never
//! touches Raft: the agent turns updates into catalog writes.

mod probe;
mod runner;

pub use muster_model::HealthStatus;
pub use probe::{Probe, MAX_OUTPUT};
pub use runner::{CheckSpec, CheckUpdate, Runner};
