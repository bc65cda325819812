//! Network coordinates, as Serf computes them and Consul's agents report them: the Vivaldi
//! client (`vivaldi.rs`), the round trips it learns from (`probe.rs`: a ping carrying the
//! sender's coordinate and an ack carrying the answerer's, on the gossip socket), and the
//! agent's periodic report of its coordinate to the servers (`sync.rs`).

mod probe;
mod sync;
mod vivaldi;

pub(crate) use probe::{Probes, KIND_ACK, KIND_PING};
pub(crate) use sync::{sync_loop, SyncConfig};
