//! The round trips that move this node's coordinate. foca's SWIM probes report neither their
//! round trip nor carry data, so Muster sends its own: once a second (Serf's probe interval)
//! a ping to one random live member, answered at once by an ack that carries the answerer's
//! coordinate, as memberlist's ack carries Serf's. Both travel on the gossip socket behind a
//! kind byte of their own, which foca never sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_server::model::Coordinate;
use serde::{Deserialize, Serialize};

use super::vivaldi::{Vivaldi, VivaldiConfig};

/// Kind byte of a coordinate ping on the gossip socket.
pub(crate) const KIND_PING: u8 = 0x20;
/// Kind byte of the ack answering it.
pub(crate) const KIND_ACK: u8 = 0x21;

/// An unanswered ping is forgotten after this (Serf refuses longer round trips anyway).
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A ping or an ack: the sequence number the ack echoes, the sender's name and coordinate.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    seq: u64,
    node: String,
    coord: Coordinate,
}

struct State {
    vivaldi: Vivaldi,
    next_seq: u64,
    /// Pings sent and not yet answered: to whom, and when.
    pending: HashMap<u64, (String, Instant)>,
}

/// This node's coordinate and its probes. Cheap to clone; shared by the gossip task, which
/// sends and answers probes, and whoever reads the coordinate.
#[derive(Clone)]
pub(crate) struct Probes {
    local: Arc<str>,
    state: Arc<Mutex<State>>,
}

impl Probes {
    pub(crate) fn new(local: &str) -> Self {
        Probes {
            local: local.into(),
            state: Arc::new(Mutex::new(State {
                vivaldi: Vivaldi::new(VivaldiConfig::default()),
                next_seq: 0,
                pending: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        muster_server::sync::lock(&self.state)
    }

    /// This node's current coordinate.
    pub(crate) fn coordinate(&self) -> Coordinate {
        self.lock().vivaldi.coordinate()
    }

    /// How often the coordinate became invalid and was reset (Serf's `coordinate_resets`).
    pub(crate) fn resets(&self) -> u64 {
        self.lock().vivaldi.resets()
    }

    /// Forgets what was kept about a member that went away.
    pub(crate) fn forget(&self, node: &str) {
        self.lock().vivaldi.forget(node);
    }

    fn packet(kind: u8, p: &Probe) -> Vec<u8> {
        let mut pkt = vec![kind];
        // A struct of strings and finite numbers always encodes.
        if let Err(e) = serde_json::to_writer(&mut pkt, p) {
            tracing::debug!(error = %e, "coordinate probe not encoded");
        }
        pkt
    }

    /// A ping for `node`, to send now.
    pub(crate) fn ping(&self, node: &str) -> Vec<u8> {
        let mut s = self.lock();
        s.pending.retain(|_, (_, at)| at.elapsed() < PING_TIMEOUT);
        let seq = s.next_seq;
        s.next_seq = s.next_seq.wrapping_add(1);
        s.pending.insert(seq, (node.to_string(), Instant::now()));
        let p = Probe {
            seq,
            node: self.local.to_string(),
            coord: s.vivaldi.coordinate(),
        };
        drop(s);
        Self::packet(KIND_PING, &p)
    }

    /// The ack answering a ping's body (the packet after its kind byte).
    pub(crate) fn on_ping(&self, body: &[u8]) -> Option<Vec<u8>> {
        let ping: Probe = serde_json::from_slice(body).ok()?;
        let ack = Probe {
            seq: ping.seq,
            node: self.local.to_string(),
            coord: self.coordinate(),
        };
        Some(Self::packet(KIND_ACK, &ack))
    }

    /// An ack's body: the round trip since its ping moves this node's coordinate.
    pub(crate) fn on_ack(&self, body: &[u8]) {
        let Ok(ack) = serde_json::from_slice::<Probe>(body) else {
            return;
        };
        let mut s = self.lock();
        let Some((node, sent)) = s.pending.remove(&ack.seq) else {
            return;
        };
        if node != ack.node {
            return;
        }
        let rtt = sent.elapsed();
        if let Err(e) = s.vivaldi.update(&node, &ack.coord, rtt) {
            tracing::debug!(%node, error = %e, "coordinate update refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_answered_moves_the_coordinate_and_only_once() {
        let a = Probes::new("a");
        let b = Probes::new("b");
        let ping = a.ping("b");
        assert_eq!(ping[0], KIND_PING);
        let ack = b.on_ping(&ping[1..]).expect("answered");
        assert_eq!(ack[0], KIND_ACK);
        std::thread::sleep(Duration::from_millis(5));
        let before = a.coordinate();
        a.on_ack(&ack[1..]);
        let after = a.coordinate();
        assert_ne!(
            before, after,
            "a round trip of 5 ms moves a node off the origin"
        );
        // A replayed ack matches no pending ping.
        a.on_ack(&ack[1..]);
        assert_eq!(a.coordinate(), after);
    }

    #[test]
    fn an_ack_from_another_node_than_pinged_is_ignored() {
        let a = Probes::new("a");
        let c = Probes::new("c");
        let ping = a.ping("b");
        let ack = c.on_ping(&ping[1..]).expect("answered");
        let before = a.coordinate();
        a.on_ack(&ack[1..]);
        assert_eq!(a.coordinate(), before);
        assert!(a.on_ping(b"not json").is_none());
    }
}
