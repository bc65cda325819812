//! Health-check runners for the agent's own services: script (`args`), TTL, HTTP and TCP
//! probes, each reporting a `CheckUpdate` on a channel, with flap damping
//! (`success_before_passing`, `failures_before_*`) and per-check cancellation. It never touches
//! Raft: the agent's anti-entropy turns updates into catalog writes.
//!
//! Nothing is implemented yet; the local-agent issue fills this crate.
