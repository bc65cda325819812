//! Direct streams between agents: TCP on the serf LAN port, beside gossip's UDP (as Serf's
//! memberlist has), for answers too big or too long-lived for gossip. A query's acks and
//! responses and a remote exec's output come back to the agent that asked this way, never
//! through Raft or KV.
//!
//! The asking agent opens a [`Session`] and names it, with a secret, in a gossip packet
//! (sealed like all gossip when there is a key). A member that takes part connects here and
//! opens with a `Hello` carrying both; a connection naming no open session, or the wrong
//! secret, is closed. Frames are a 4-byte length and a message, sealed with the gossip key
//! when there is one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use muster_api::serf::NodeCheck;

use super::keyring::SharedCrypto;

/// The largest frame read: an output chunk or a response, with room for the seal.
const MAX_FRAME: usize = 256 * 1024;
/// How long a connecting member has to say hello, and a connect to take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes as base64 in a frame's JSON.
mod b64 {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// One message on a direct stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Msg {
    /// Member to asker, first: which session, proved by its secret, and who speaks.
    Hello {
        id: String,
        secret: String,
        node: String,
    },
    /// Asker to member, after the hello, when the session carries one (an exec's job).
    Job {
        #[serde(with = "b64")]
        spec: Vec<u8>,
    },
    /// The member received the request and takes part.
    Ack,
    /// The member will not take part, and why.
    Refused { reason: String },
    /// A query handler's answer.
    Response {
        #[serde(with = "b64")]
        payload: Vec<u8>,
    },
    /// A chunk of a command's output (stdout and stderr, as they came).
    Output {
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// Still running.
    Heartbeat,
    /// Output past the limit was dropped.
    Truncated { limit: usize },
    /// The command ended with this code.
    Exit { code: i32 },
    /// The member's answer could not be given (a response over the limit, a handler
    /// that could not run).
    Error { reason: String },
    /// Push-pull, first and only message each way: the sender's whole member list (foca's
    /// members, postcard), answered with the receiver's.
    Sync {
        #[serde(with = "b64")]
        members: Vec<u8>,
    },
}

/// A member list received by push-pull, for gossip to apply, with where to send this
/// agent's own in return (none when this agent asked).
pub(crate) type SyncReq = (Vec<u8>, Option<tokio::sync::oneshot::Sender<Vec<u8>>>);

/// What a session hears: messages from a member, and the end of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Heard {
    Msg(Msg),
    /// The member's stream ended (it closed it, or the connection broke).
    Closed,
}

/// Where a session hears its members: each message with the member's name.
type Hearing = mpsc::UnboundedSender<(String, Heard)>;

/// A job for the members, and who may be given it.
pub(crate) type Job = (Vec<u8>, NodeCheck);

struct Open {
    secret: String,
    job: Option<Job>,
    tx: Hearing,
}

/// The sessions this agent has open, and where push-pull member lists go. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Sessions(
    Arc<Mutex<HashMap<String, Open>>>,
    Arc<Mutex<Option<mpsc::Sender<SyncReq>>>>,
);

/// An open session: what members say arrives on `rx`, with their names. Dropping it closes
/// the session; members connecting later are turned away.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) rx: mpsc::UnboundedReceiver<(String, Heard)>,
    sessions: Sessions,
}

impl Drop for Session {
    fn drop(&mut self) {
        muster_server::sync::lock(&self.sessions.0).remove(&self.id);
    }
}

impl Sessions {
    /// Where member lists that others push go (gossip applies them and answers).
    pub(crate) fn set_sync(&self, tx: mpsc::Sender<SyncReq>) {
        *muster_server::sync::lock(&self.1) = Some(tx);
    }

    /// Opens a session; `job` is sent to each member after its hello, if its check lets the
    /// member have it (otherwise the member and the session are told why not).
    pub(crate) fn open(&self, job: Option<Job>) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = muster_server::new_uuid();
        let secret = muster_server::new_uuid();
        muster_server::sync::lock(&self.0).insert(
            id.clone(),
            Open {
                secret: secret.clone(),
                job,
                tx,
            },
        );
        Session {
            id,
            secret,
            rx,
            sessions: self.clone(),
        }
    }

    /// The open session `id` if `secret` is its own: where to send, and its job.
    fn admit(&self, id: &str, secret: &str) -> Option<(Hearing, Option<Job>)> {
        let open = muster_server::sync::lock(&self.0);
        let s = open.get(id)?;
        muster_server::acl::constant_time_eq(s.secret.as_bytes(), secret.as_bytes())
            .then(|| (s.tx.clone(), s.job.clone()))
    }
}

/// One end of a direct stream.
pub(crate) struct Conn {
    stream: TcpStream,
    crypto: SharedCrypto,
}

impl Conn {
    /// Connects to the asker at `addr` and says hello.
    pub(crate) async fn connect(
        addr: SocketAddr,
        crypto: SharedCrypto,
        hello: Msg,
    ) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(HELLO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let mut c = Conn { stream, crypto };
        c.send(&hello).await?;
        Ok(c)
    }

    pub(crate) async fn send(&mut self, m: &Msg) -> std::io::Result<()> {
        let body = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        let wire = muster_server::sync::read(&self.crypto).seal(body);
        let len = u32::try_from(wire.len()).map_err(std::io::Error::other)?;
        self.stream.write_all(&len.to_be_bytes()).await?;
        self.stream.write_all(&wire).await
    }

    /// The next message; `None` at the end of the stream or on a frame that does not read.
    pub(crate) async fn recv(&mut self) -> Option<Msg> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            tracing::debug!(len, "direct stream: frame too large, closing");
            return None;
        }
        let mut wire = vec![0u8; len];
        self.stream.read_exact(&mut wire).await.ok()?;
        let opened = muster_server::sync::read(&self.crypto).open(&wire);
        let (body, _) = opened
            .map_err(|why| tracing::debug!(why, "direct stream: frame refused"))
            .ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// Accepts members' streams until `cancel` fires.
pub(crate) fn serve(
    listener: TcpListener,
    sessions: Sessions,
    crypto: SharedCrypto,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let (stream, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "direct stream: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                stream,
                crypto: crypto.clone(),
            };
            tokio::spawn(relay(conn, from, sessions.clone()));
        }
    });
}

/// Reads one member's stream into its session, after checking its hello; or answers a
/// push-pull.
async fn relay(mut conn: Conn, from: SocketAddr, sessions: Sessions) {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, conn.recv()).await;
    let (id, secret, node) = match hello {
        Ok(Some(Msg::Hello { id, secret, node })) => (id, secret, node),
        Ok(Some(Msg::Sync { members })) => return answer_sync(conn, members, &sessions).await,
        _ => {
            tracing::debug!(%from, "direct stream: no hello, closing");
            return;
        }
    };
    let Some((tx, job)) = sessions.admit(&id, &secret) else {
        tracing::debug!(%from, session = %id, "direct stream: no such session, closing");
        return;
    };
    if let Some((spec, may_run)) = job {
        if let Err(reason) = may_run(&node) {
            let refused = Msg::Refused { reason };
            let _ = conn.send(&refused).await;
            let _ = tx.send((node, Heard::Msg(refused)));
            return;
        }
        if conn.send(&Msg::Job { spec }).await.is_err() {
            let _ = tx.send((node, Heard::Closed));
            return;
        }
    }
    while let Some(m) = conn.recv().await {
        if tx.send((node.clone(), Heard::Msg(m))).is_err() {
            return;
        }
    }
    let _ = tx.send((node, Heard::Closed));
}

/// Hands a pushed member list to gossip and sends back this agent's.
async fn answer_sync(mut conn: Conn, members: Vec<u8>, sessions: &Sessions) {
    let Some(tx) = muster_server::sync::lock(&sessions.1).clone() else {
        return;
    };
    let (reply, ours) = tokio::sync::oneshot::channel();
    if tx.send((members, Some(reply))).await.is_err() {
        return;
    }
    if let Ok(Ok(members)) = tokio::time::timeout(HELLO_TIMEOUT, ours).await {
        let _ = conn.send(&Msg::Sync { members }).await;
    }
}

/// Push-pull with the agent at `addr`: sends `ours`, returns its member list.
pub(crate) async fn push_pull(
    addr: SocketAddr,
    crypto: SharedCrypto,
    ours: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut conn = Conn::connect(addr, crypto, Msg::Sync { members: ours }).await?;
    match tokio::time::timeout(HELLO_TIMEOUT, conn.recv()).await {
        Ok(Some(Msg::Sync { members })) => Ok(members),
        _ => Err(std::io::Error::other("no member list in answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (Sessions, SocketAddr, SharedCrypto, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let crypto = SharedCrypto::default();
        let cancel = CancellationToken::new();
        let s = Sessions::default();
        serve(l, s.clone(), crypto.clone(), cancel.clone());
        (s, addr, crypto, cancel)
    }

    #[tokio::test]
    async fn a_member_with_the_secret_is_heard_and_gets_the_job() {
        let (sessions, addr, crypto, _cancel) = pair().await;
        let anyone: NodeCheck = Arc::new(|_: &str| Ok(()));
        let mut s = sessions.open(Some((b"job".to_vec(), anyone)));
        let hello = Msg::Hello {
            id: s.id.clone(),
            secret: s.secret.clone(),
            node: "n2".into(),
        };
        let mut c = Conn::connect(addr, crypto.clone(), hello).await.unwrap();
        assert_eq!(
            c.recv().await,
            Some(Msg::Job {
                spec: b"job".to_vec()
            })
        );
        c.send(&Msg::Ack).await.unwrap();
        c.send(&Msg::Exit { code: 3 }).await.unwrap();
        drop(c);
        assert_eq!(s.rx.recv().await, Some(("n2".into(), Heard::Msg(Msg::Ack))));
        assert_eq!(
            s.rx.recv().await,
            Some(("n2".into(), Heard::Msg(Msg::Exit { code: 3 })))
        );
        assert_eq!(s.rx.recv().await, Some(("n2".into(), Heard::Closed)));
    }

    #[tokio::test]
    async fn a_wrong_secret_or_a_closed_session_is_turned_away() {
        let (sessions, addr, crypto, _cancel) = pair().await;
        let mut s = sessions.open(None);
        let bad = Msg::Hello {
            id: s.id.clone(),
            secret: "guess".into(),
            node: "evil".into(),
        };
        let mut c = Conn::connect(addr, crypto.clone(), bad).await.unwrap();
        c.send(&Msg::Ack).await.ok();
        assert_eq!(c.recv().await, None, "the asker closes the stream");
        let (id, secret) = (s.id.clone(), s.secret.clone());
        assert!(s.rx.try_recv().is_err());
        drop(s);
        let late = Msg::Hello {
            id,
            secret,
            node: "late".into(),
        };
        let mut c = Conn::connect(addr, crypto, late).await.unwrap();
        assert_eq!(c.recv().await, None);
    }
}
