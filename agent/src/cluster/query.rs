//! Serf's queries on the gossip layer: the asking agent sends the query in a gossip packet
//! ([`KIND_QUERY`]) to every member (and each passes a new one on, as with user events); a
//! member whose name and tags match acks it and hands it to its `query:NAME` handlers, whose
//! output (exit 0) is the response. Acks and responses come back on a direct stream
//! ([`super::direct`]), not through gossip or Raft, so a response may be far larger than a
//! packet (up to [`RESPONSE_LIMIT`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use muster_api::serf::{QueryEvent, QueryRequest};
use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::direct::{Conn, Heard, Msg, Sessions};
use super::keyring::SharedCrypto;
use super::recent::Recent;
use crate::handlers::{Event, Responder};

/// Kind byte of a query on the gossip socket.
pub(crate) const KIND_QUERY: u8 = 0x41;
/// The largest encoded query sent: one UDP packet with room for the seal.
const MAX_PACKET: usize = 1200;
/// The largest response a member sends; a bigger one is reported as an error instead.
pub(crate) const RESPONSE_LIMIT: usize = 64 * 1024;
/// Query IDs remembered to drop a repeat.
const SEEN: usize = 1024;

/// A query as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Packet {
    id: String,
    secret: String,
    ltime: u64,
    name: String,
    payload: String,
    nodes: Vec<String>,
    tags: Vec<(String, String)>,
    /// Where members connect to answer (the asker's serf address, TCP).
    reply: SocketAddr,
    ack: bool,
    timeout_ms: u64,
}

/// Compiled node and tag filters.
struct Filters {
    nodes: Vec<Regex>,
    tags: Vec<(String, Regex)>,
}

impl Filters {
    /// A node filter must match the whole name (`-node web1` is not `web10`); a tag filter
    /// anywhere in the tag's value, as Serf's.
    fn compile(nodes: &[String], tags: &[(String, String)]) -> Result<Filters, String> {
        let nodes = nodes
            .iter()
            .map(|n| {
                Regex::new(&format!("^(?:{n})$"))
                    .map_err(|e| format!("Invalid node filter {n:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let tags = tags
            .iter()
            .map(|(k, re)| {
                Regex::new(re)
                    .map(|r| (k.clone(), r))
                    .map_err(|e| format!("Invalid tag filter {k}={re:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Filters { nodes, tags })
    }

    fn matches(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        (self.nodes.is_empty() || self.nodes.iter().any(|re| re.is_match(name)))
            && self
                .tags
                .iter()
                .all(|(k, re)| tags.get(k).is_some_and(|v| re.is_match(v)))
    }
}

/// Serf's default timeout: the gossip interval times the timeout multiplier, times
/// ⌈log10(N+1)⌉ for N members.
pub(crate) fn default_timeout(members: usize) -> Duration {
    let scale = ((members + 1) as f64).log10().ceil().max(1.0);
    Duration::from_millis(200 * 16).mul_f64(scale)
}

struct Inner {
    node: String,
    reply: SocketAddr,
    clock: AtomicU64,
    seen: Mutex<Recent<String>>,
    sessions: Sessions,
    crypto: SharedCrypto,
    /// The tags filters match here: the gossip tags and the node meta.
    tags: RwLock<BTreeMap<String, String>>,
    handlers: Mutex<Option<mpsc::UnboundedSender<Event>>>,
}

/// One agent's queries, asked and answered. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Queries(Arc<Inner>);

/// A query sent: the packet to broadcast, the answers, and who should answer.
pub(crate) struct Asked {
    pub(crate) packet: Vec<u8>,
    pub(crate) session: super::direct::Session,
    pub(crate) expected: Vec<String>,
    pub(crate) timeout: Duration,
}

impl Queries {
    pub(crate) fn new(
        node: &str,
        reply: SocketAddr,
        sessions: Sessions,
        crypto: SharedCrypto,
        tags: BTreeMap<String, String>,
    ) -> Queries {
        Queries(Arc::new(Inner {
            node: node.to_string(),
            reply,
            clock: AtomicU64::new(0),
            seen: Mutex::new(Recent::new(SEEN)),
            sessions,
            crypto,
            tags: RwLock::new(tags),
            handlers: Mutex::default(),
        }))
    }

    /// Where matched queries go for the `query` handlers, and the node meta that tag filters
    /// also match.
    pub(crate) fn set_handlers(
        &self,
        tx: mpsc::UnboundedSender<Event>,
        node_meta: &BTreeMap<String, String>,
    ) {
        *muster_server::sync::lock(&self.0.handlers) = Some(tx);
        let mut tags = muster_server::sync::write(&self.0.tags);
        for (k, v) in node_meta {
            tags.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// Checks and stamps a query; `members` are the live members' names and tags, from which
    /// the ones expected to answer are picked.
    pub(crate) fn ask(
        &self,
        req: QueryRequest,
        members: &[(String, BTreeMap<String, String>)],
    ) -> Result<Asked, String> {
        if req.name.is_empty() {
            return Err("A query name must be specified".into());
        }
        let filters = Filters::compile(&req.nodes, &req.tags)?;
        let timeout = req
            .timeout
            .unwrap_or_else(|| default_timeout(members.len()));
        let session = self.0.sessions.open(None);
        let packet = Packet {
            id: session.id.clone(),
            secret: session.secret.clone(),
            ltime: self.0.clock.fetch_add(1, Ordering::SeqCst),
            name: req.name,
            payload: String::from_utf8_lossy(&req.payload).into_owned(),
            nodes: req.nodes,
            tags: req.tags,
            reply: self.0.reply,
            ack: req.request_ack,
            timeout_ms: timeout.as_millis() as u64,
        };
        let mut pkt = vec![KIND_QUERY];
        serde_json::to_writer(&mut pkt, &packet).map_err(|e| e.to_string())?;
        if pkt.len() > MAX_PACKET {
            return Err(format!(
                "query exceeds the limit of {MAX_PACKET} bytes encoded (name, payload and \
                 filters together)"
            ));
        }
        let own_tags = muster_server::sync::read(&self.0.tags).clone();
        let expected = members
            .iter()
            .filter(|(name, tags)| {
                let tags = if *name == self.0.node {
                    &own_tags
                } else {
                    tags
                };
                filters.matches(name, tags)
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Asked {
            packet: pkt,
            session,
            expected,
            timeout,
        })
    }

    /// A member's packet: whether it was new here (`None`: undecodable). A matching query is
    /// answered on a task of its own.
    pub(crate) fn on_packet(&self, body: &[u8]) -> Option<bool> {
        let p: Packet = serde_json::from_slice(body).ok()?;
        self.0
            .clock
            .fetch_max(p.ltime.saturating_add(1), Ordering::SeqCst);
        if !muster_server::sync::lock(&self.0.seen).insert(p.id.clone()) {
            return Some(false);
        }
        let Ok(filters) = Filters::compile(&p.nodes, &p.tags) else {
            return Some(true);
        };
        let tags = muster_server::sync::read(&self.0.tags).clone();
        if filters.matches(&self.0.node, &tags) {
            tokio::spawn(self.clone().answer(p));
        }
        Some(true)
    }

    /// Acks (when asked to) and runs the handlers; sends the first response within the
    /// query's timeout.
    async fn answer(self, p: Packet) {
        let hello = Msg::Hello {
            id: p.id.clone(),
            secret: p.secret.clone(),
            node: self.0.node.clone(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(p.timeout_ms);
        let mut conn = match Conn::connect(p.reply, self.0.crypto.clone(), hello).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, reply = %p.reply, query = %p.name, "cannot answer query");
                return;
            }
        };
        if p.ack && conn.send(&Msg::Ack).await.is_err() {
            return;
        }
        let Some(tx) = muster_server::sync::lock(&self.0.handlers).clone() else {
            return;
        };
        let (rtx, rrx) = oneshot::channel();
        let ev = Event::Query {
            name: p.name.clone(),
            ltime: p.ltime,
            payload: p.payload.into_bytes(),
            responder: Responder::new(rtx),
        };
        if tx.send(ev).is_err() {
            return;
        }
        // No handler answering drops the responder: the stream just ends.
        let Ok(Ok(out)) = tokio::time::timeout_at(deadline, rrx).await else {
            return;
        };
        let msg = if out.len() > RESPONSE_LIMIT {
            tracing::warn!(query = %p.name, size = out.len(), "query response over the limit, not sent");
            Msg::Error {
                reason: format!(
                    "response of {} bytes exceeds the limit of {RESPONSE_LIMIT} bytes",
                    out.len()
                ),
            }
        } else {
            Msg::Response { payload: out }
        };
        let _ = conn.send(&msg).await;
    }
}

/// Gathers a query's acks and responses onto `out` until its timeout, then the summary.
pub(crate) async fn gather(asked: Asked, out: mpsc::Sender<QueryEvent>) {
    let Asked {
        mut session,
        expected,
        timeout,
        ..
    } = asked;
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut acks, mut responses) = (BTreeSet::new(), BTreeSet::new());
    loop {
        let heard = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = out.closed() => return,
            h = session.rx.recv() => h,
        };
        let Some((from, heard)) = heard else { break };
        let ev = match heard {
            Heard::Msg(Msg::Ack) if acks.insert(from.clone()) => QueryEvent::Ack { from },
            Heard::Msg(Msg::Response { payload }) if responses.insert(from.clone()) => {
                QueryEvent::Response {
                    from,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                }
            }
            Heard::Msg(Msg::Error { reason }) => QueryEvent::Error { from, reason },
            _ => continue,
        };
        if out.send(ev).await.is_err() {
            return;
        }
    }
    let done = QueryEvent::Done {
        expected,
        acks: acks.into_iter().collect(),
        responses: responses.into_iter().collect(),
    };
    let _ = out.send(done).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_filters_match_whole_names_and_tag_filters_anywhere() {
        let tags: BTreeMap<String, String> =
            [("role".to_string(), "web-frontend".to_string())].into();
        let f = Filters::compile(&["web1".into()], &[]).unwrap();
        assert!(f.matches("web1", &tags));
        assert!(!f.matches("web10", &tags));
        let f = Filters::compile(
            &["db.*".into(), "web1".into()],
            &[("role".into(), "web".into())],
        )
        .unwrap();
        assert!(f.matches("web1", &tags));
        assert!(
            !f.matches("db1", &BTreeMap::new()),
            "a missing tag does not match"
        );
        assert!(Filters::compile(&["(".into()], &[]).is_err());
    }

    #[test]
    fn the_default_timeout_grows_with_the_cluster_as_serfs() {
        assert_eq!(default_timeout(1), Duration::from_millis(3200));
        assert_eq!(default_timeout(9), Duration::from_millis(3200));
        assert_eq!(default_timeout(10), Duration::from_millis(6400));
    }
}
