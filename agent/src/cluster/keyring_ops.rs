//! Keyring operations across the cluster (`/v1/operator/keyring`, `muster keyring`).
//!
//! Consul fans them out as Serf queries; Muster has none yet, so the agent asked sends the
//! operation itself, on the gossip socket and sealed like every packet, to each member foca
//! lists alive, and each member answers the sender directly with its keyring after applying
//! it. Unanswered members are asked again every half second until the deadline; operations
//! are idempotent and a member answers a repeated request from its cache without applying it
//! twice. Members that never answer are counted as Serf counts them ("2/3 nodes responded").

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster_api::keyring::{KeyringAnswer, KeyringOp, KeyringOutcome};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::keyring::{Keyring, SharedCrypto};

/// Kind byte of a keyring request on the gossip socket.
pub(crate) const KIND_KEYRING_REQ: u8 = 0x30;
/// Kind byte of a member's answer to it.
pub(crate) const KIND_KEYRING_ANS: u8 = 0x31;

/// How long the agent asked waits for every member's answer.
const DEADLINE: Duration = Duration::from_secs(5);
/// Unanswered members are asked again this often.
const RETRY: Duration = Duration::from_millis(500);
/// Requests remembered per member, to answer a retransmission without applying it again.
const SEEN: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    List,
    Install(String),
    Use(String),
    Remove(String),
}

impl From<KeyringOp> for Op {
    fn from(op: KeyringOp) -> Op {
        match op {
            KeyringOp::List => Op::List,
            KeyringOp::Install(k) => Op::Install(k),
            KeyringOp::Use(k) => Op::Use(k),
            KeyringOp::Remove(k) => Op::Remove(k),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    id: u64,
    node: String,
    error: Option<String>,
    keys: Vec<String>,
}

/// Applies an operation to this agent's keyring and writes the keyring file.
fn apply(crypto: &SharedCrypto, op: &Op) -> Result<Vec<String>, String> {
    let mut c = muster_server::sync::write(crypto);
    let path = c.path.clone();
    let ring: &mut Keyring = c
        .keyring
        .as_mut()
        .ok_or_else(|| "encryption not enabled".to_string())?;
    match op {
        Op::List => return Ok(ring.encoded()),
        Op::Install(k) => ring.install(k),
        Op::Use(k) => ring.use_key(k),
        Op::Remove(k) => ring.remove(k),
    }?;
    if let Some(path) = path {
        ring.save(&path)?;
    }
    Ok(ring.encoded())
}

fn packet(kind: u8, body: &impl Serialize) -> Vec<u8> {
    let mut pkt = vec![kind];
    // Strings and numbers always encode.
    if let Err(e) = serde_json::to_writer(&mut pkt, body) {
        tracing::debug!(error = %e, "keyring packet not encoded");
    }
    pkt
}

/// One operation this agent sent, waiting for the members' answers.
struct Pending {
    request: Vec<u8>,
    /// Members not heard from yet.
    waiting: HashMap<String, SocketAddr>,
    out: KeyringOutcome,
    started: Instant,
    last_sent: Instant,
    reply: oneshot::Sender<KeyringOutcome>,
}

/// The keyring operations of one agent: those it sent and those it answered.
pub(crate) struct KeyringOps {
    node: String,
    crypto: SharedCrypto,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Recent answers by (sender, request id).
    seen: VecDeque<((SocketAddr, u64), Vec<u8>)>,
}

/// Packets to send: each with its destination.
pub(crate) type Outgoing = Vec<(Vec<u8>, SocketAddr)>;

impl KeyringOps {
    pub(crate) fn new(node: &str, crypto: SharedCrypto) -> Self {
        KeyringOps {
            node: node.to_string(),
            crypto,
            next_id: rand::random(),
            pending: HashMap::new(),
            seen: VecDeque::new(),
        }
    }

    /// Applies `op` here and asks `members` (the others alive) to apply it; `reply` gets
    /// the answers. `None` when gossip is not encrypted.
    pub(crate) fn start(
        &mut self,
        op: KeyringOp,
        members: Vec<(String, SocketAddr)>,
        reply: oneshot::Sender<Option<KeyringOutcome>>,
    ) -> Outgoing {
        if muster_server::sync::read(&self.crypto).keyring.is_none() {
            let _ = reply.send(None);
            return Vec::new();
        }
        let op = Op::from(op);
        let local = match apply(&self.crypto, &op) {
            Ok(keys) => KeyringAnswer {
                node: self.node.clone(),
                error: None,
                keys,
            },
            Err(e) => KeyringAnswer {
                node: self.node.clone(),
                error: Some(e),
                keys: Vec::new(),
            },
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let request = packet(KIND_KEYRING_REQ, &Request { id, op });
        let out: Outgoing = members.iter().map(|(_, a)| (request.clone(), *a)).collect();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = reply.send(rx.await.ok());
        });
        let now = Instant::now();
        let pending = Pending {
            request,
            out: KeyringOutcome {
                answers: vec![local],
                num_nodes: members.len() + 1,
            },
            waiting: members.into_iter().collect(),
            started: now,
            last_sent: now,
            reply: tx,
        };
        self.pending.insert(id, pending);
        self.finish_done();
        out
    }

    /// A member's request: applied once, answered every time it comes.
    pub(crate) fn on_request(&mut self, body: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let req: Request = serde_json::from_slice(body).ok()?;
        if let Some((_, ans)) = self.seen.iter().find(|(k, _)| *k == (from, req.id)) {
            return Some(ans.clone());
        }
        let (error, keys) = match apply(&self.crypto, &req.op) {
            Ok(keys) => (None, keys),
            Err(e) => (Some(e), Vec::new()),
        };
        if error.is_none() && !matches!(req.op, Op::List) {
            tracing::info!(%from, "gossip keyring changed by a cluster operation");
        }
        let ans = packet(
            KIND_KEYRING_ANS,
            &Answer {
                id: req.id,
                node: self.node.clone(),
                error,
                keys,
            },
        );
        self.seen.push_back(((from, req.id), ans.clone()));
        if self.seen.len() > SEEN {
            self.seen.pop_front();
        }
        Some(ans)
    }

    /// A member's answer to one of our operations.
    pub(crate) fn on_answer(&mut self, body: &[u8]) {
        let Ok(ans) = serde_json::from_slice::<Answer>(body) else {
            return;
        };
        let Some(p) = self.pending.get_mut(&ans.id) else {
            return;
        };
        if p.waiting.remove(&ans.node).is_some() {
            p.out.answers.push(KeyringAnswer {
                node: ans.node,
                error: ans.error,
                keys: ans.keys,
            });
        }
        self.finish_done();
    }

    /// Asks unanswered members again; gives up on them past the deadline.
    pub(crate) fn tick(&mut self) -> Outgoing {
        let mut out = Vec::new();
        for p in self.pending.values_mut() {
            if p.last_sent.elapsed() >= RETRY {
                p.last_sent = Instant::now();
                out.extend(p.waiting.values().map(|a| (p.request.clone(), *a)));
            }
        }
        self.finish_done();
        out
    }

    fn finish_done(&mut self) {
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.waiting.is_empty() || p.started.elapsed() > DEADLINE)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p.reply.send(p.out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use super::*;
    use crate::cluster::keyring::Crypto;

    fn member(key: &str) -> SharedCrypto {
        Arc::new(RwLock::new(Crypto {
            keyring: Keyring::from_encoded(&[key.to_string()]).ok(),
            ..Crypto::default()
        }))
    }

    #[tokio::test]
    async fn an_operation_is_applied_everywhere_once_and_answers_gathered() {
        let (k1, k2) = (
            "AQEBAQEBAQEBAQEBAQEBAQ==".to_string(),
            "AgICAgICAgICAgICAgICAg==".to_string(),
        );
        let (a, b) = (member(&k1), member(&k1));
        let mut ops_a = KeyringOps::new("a", a.clone());
        let mut ops_b = KeyringOps::new("b", b.clone());
        let b_addr: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let a_addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (tx, rx) = oneshot::channel();
        let out = ops_a.start(
            KeyringOp::Install(k2.clone()),
            vec![("b".into(), b_addr)],
            tx,
        );
        assert_eq!(out.len(), 1);
        let (req, to) = &out[0];
        assert_eq!((req[0], *to), (KIND_KEYRING_REQ, b_addr));
        let ans = ops_b.on_request(&req[1..], a_addr).unwrap();
        // A retransmission is answered from the cache.
        assert_eq!(ops_b.on_request(&req[1..], a_addr).unwrap(), ans);
        ops_a.on_answer(&ans[1..]);
        let got = rx.await.unwrap().unwrap();
        assert_eq!(got.num_nodes, 2);
        assert_eq!(got.answers.len(), 2);
        assert!(got
            .answers
            .iter()
            .all(|x| x.keys == vec![k1.clone(), k2.clone()]));
        let ring = |c: &SharedCrypto| c.read().unwrap().keyring.as_ref().unwrap().encoded();
        assert_eq!(ring(&b), vec![k1.clone(), k2.clone()]);
        // Removing the primary key is refused on every member, and said so.
        let (tx, rx) = oneshot::channel();
        let out = ops_a.start(
            KeyringOp::Remove(k1.clone()),
            vec![("b".into(), b_addr)],
            tx,
        );
        let ans = ops_b.on_request(&out[0].0[1..], a_addr).unwrap();
        ops_a.on_answer(&ans[1..]);
        let got = rx.await.unwrap().unwrap();
        assert!(got
            .answers
            .iter()
            .all(|x| x.error.as_deref() == Some("Removing the primary key is not allowed")));
        assert_eq!(ring(&a), vec![k1, k2]);
    }

    #[tokio::test]
    async fn without_a_key_there_is_nothing_to_operate_on() {
        let none: SharedCrypto = Arc::default();
        let mut ops = KeyringOps::new("a", none);
        let (tx, rx) = oneshot::channel();
        assert!(ops.start(KeyringOp::List, Vec::new(), tx).is_empty());
        assert!(rx.await.unwrap().is_none());
    }
}
