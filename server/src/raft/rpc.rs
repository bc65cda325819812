//! The server RPC port (8300): Raft peer traffic plus forwarded client requests, as
//! length-prefixed frames ([`crate::codec`]) over TCP, or TLS over TCP when the agent
//! configures it ([`crate::RpcTls`]). Connections are pooled and reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::types::{NodeId, TypeConfig};
use crate::codec::{decode, encode};
use crate::model::{Command, CommandResult, Consistency, Query, QueryResult, ReadMeta};

/// Largest frame accepted; snapshots travel in chunks well below it.
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// Idle connections kept per peer.
const POOL_SIZE: usize = 64;

/// A connection between servers: plain TCP, or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub(crate) type Conn = Box<dyn Stream>;

/// How this side dials over TLS: the config, and the name the peer is dialled by.
#[derive(Clone)]
struct Dial {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write from a client agent: the receiving server forwards it to the leader.
    Write(Command),
    /// Writes forwarded by a server: only the leader applies them, no further forwarding.
    ApplyMany(Vec<Command>),
    /// Ask the leader for the index a read in this mode must wait for.
    ReadIndex(Consistency),
    /// A read from a client agent, executed by the receiving server.
    Read(Consistency, Query),
    /// A blocking read from a client agent: min index and wait in ms.
    ReadBlocking(Consistency, Query, u64, u64),
    /// The index a read would report, without its data.
    QueryIndex(Consistency, Query),
    /// Restart a session's TTL (leader only).
    SessionRenew(String),
    /// Add a server as a non-voter, which autopilot promotes (named before autopilot
    /// existed; the name is only the wire format's).
    AddVoter {
        id: NodeId,
        addr: String,
    },
    RemoveServer {
        id: NodeId,
    },
    Status,
    /// Like `ReadBlocking`, answered with the index only (`Response::Meta`).
    WaitIndex(Consistency, Query, u64, u64),
    /// A client agent's `GET /v1/snapshot`: the whole archive (`Response::Snapshot`), so at
    /// most one frame.
    Snapshot(Consistency),
    /// The Raft configuration as this server sees it (`Response::RaftConfiguration`); `true`:
    /// stale, without first catching up with the leader.
    RaftConfiguration(bool),
    /// An operator's removal of a peer (leader only, `Response::Done`).
    RemovePeer {
        id: NodeId,
    },
    /// Move leadership to the given voter, or to the most caught-up one (leader only).
    TransferLeader {
        to: Option<NodeId>,
    },
    /// Stand for election now: the leader asks this of the server it hands leadership to.
    Elect,
    /// The leader's autopilot health state (`Response::AutopilotHealth`).
    AutopilotHealth,
}

/// An [`Error`](crate::Error) as it travels between servers and to client agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    NoLeader,
    Invalid(String),
    Other(String),
    /// [`Error::Protocol`](crate::Error::Protocol). Last, so that the other variants keep
    /// their encoding.
    Protocol {
        addr: String,
        reason: String,
    },
}

impl Request {
    /// The request's name, for errors and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "append-entries",
            Request::Vote(_) => "vote",
            Request::InstallSnapshot(_) => "install-snapshot",
            Request::Write(_) => "write",
            Request::ApplyMany(_) => "apply-many",
            Request::ReadIndex(_) => "read-index",
            Request::Read(..) => "read",
            Request::ReadBlocking(..) => "blocking read",
            Request::QueryIndex(..) => "query-index",
            Request::SessionRenew(_) => "session renew",
            Request::AddVoter { .. } => "add-voter",
            Request::RemoveServer { .. } => "remove-server",
            Request::Status => "status",
            Request::WaitIndex(..) => "wait-index",
            Request::Snapshot(_) => "snapshot",
            Request::RaftConfiguration(_) => "raft-configuration",
            Request::RemovePeer { .. } => "remove-peer",
            Request::TransferLeader { .. } => "transfer-leader",
            Request::Elect => "elect",
            Request::AutopilotHealth => "autopilot-health",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StatusReply {
    pub(crate) leader: Option<String>,
    pub(crate) peers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Write(Result<CommandResult, WireError>),
    WriteMany(Vec<Result<CommandResult, WireError>>),
    ReadIndex(Result<u64, WireError>),
    Read(Result<(QueryResult, ReadMeta), WireError>),
    Done(Result<(), WireError>),
    Renewed(Result<bool, WireError>),
    Meta(Result<ReadMeta, WireError>),
    Status(StatusReply),
    /// A Raft request from a server that `muster recover` retired, refused: why, for its log.
    Retired(String),
    /// A snapshot archive and the read's metadata.
    Snapshot(Result<(Vec<u8>, ReadMeta), WireError>),
    RaftConfiguration(Result<crate::server::RaftConfiguration, WireError>),
    AutopilotHealth(Result<crate::server::AutopilotHealth, WireError>),
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The peer could not be reached, or the connection failed or timed out. `sent`: a frame
    /// was written, so the request may have reached the peer.
    #[error("{reason}")]
    Transport { reason: String, sent: bool },
    /// The peer answered with a frame that does not decode as a reply (most likely a server
    /// of another Muster version): the request reached it.
    #[error("{addr}: bad reply: {reason}")]
    BadReply { addr: String, reason: String },
    /// The request encodes past [`MAX_FRAME`] (or the caller's lower limit): not sent.
    #[error("a {len}-byte request is past the frame limit")]
    TooLarge { len: usize },
}

impl CallError {
    /// Whether the request may have reached the peer: then a write may have been applied,
    /// and retrying it could apply it twice.
    pub(crate) fn maybe_delivered(&self) -> bool {
        match self {
            CallError::Transport { sent, .. } => *sent,
            CallError::BadReply { .. } => true,
            CallError::TooLarge { .. } => false,
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    body: &[u8],
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    s.write_all(&buf).await
}

async fn read_frame<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds limit"
        )));
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A pooled RPC client to the other servers.
#[derive(Clone, Default)]
pub(crate) struct RpcClient {
    pools: Arc<Mutex<HashMap<String, Vec<Conn>>>>,
    /// The agent's `-bind` address: outgoing connections leave from it, so peers (and their
    /// firewalls) see the address the operator configured, not whatever the route picks.
    bind: Option<std::net::IpAddr>,
    /// Set when connections to servers are TLS (`verify_outgoing`).
    tls: Option<Dial>,
}

impl RpcClient {
    /// A client whose connections leave from `bind` and, with `tls`'s connector, are TLS.
    pub(crate) fn new(bind: Option<std::net::IpAddr>, tls: Option<&crate::RpcTls>) -> Self {
        let tls = tls.and_then(|t| {
            Some(Dial {
                connector: tokio_rustls::TlsConnector::from(t.connector.clone()?),
                name: t.server_name.clone(),
            })
        });
        RpcClient {
            pools: Arc::default(),
            bind: bind.filter(|ip| !ip.is_unspecified()),
            tls,
        }
    }

    /// A connection to `addr`: TCP, then the TLS handshake when configured.
    async fn connect(&self, addr: &str) -> std::io::Result<Conn> {
        let tcp = self.connect_tcp(addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(d) => Ok(Box::new(d.connector.connect(d.name.clone(), tcp).await?)),
        }
    }

    async fn connect_tcp(&self, addr: &str) -> std::io::Result<TcpStream> {
        let Some(ip) = self.bind else {
            return TcpStream::connect(addr).await;
        };
        let mut last = None;
        for peer in tokio::net::lookup_host(addr).await? {
            if peer.is_ipv4() != ip.is_ipv4() {
                continue;
            }
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            match socket.connect(peer).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::other(format!(
                "no address of {addr} reachable from bind address {ip}"
            ))
        }))
    }

    fn take(&self, addr: &str) -> Option<Conn> {
        self.pools.lock().ok()?.get_mut(addr)?.pop()
    }

    fn put(&self, addr: &str, s: Conn) {
        if let Ok(mut p) = self.pools.lock() {
            let v = p.entry(addr.to_string()).or_default();
            if v.len() < POOL_SIZE {
                v.push(s);
            }
        }
    }

    /// Sends one request and waits for its response, within `timeout`.
    pub(crate) async fn call(
        &self,
        addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        self.call_within(addr, req, timeout, MAX_FRAME).await
    }

    /// [`RpcClient::call`] for a request that must encode to at most `limit` bytes (at most
    /// [`MAX_FRAME`]); a larger one is not sent ([`CallError::TooLarge`]).
    pub(crate) async fn call_within(
        &self,
        addr: &str,
        req: &Request,
        timeout: Duration,
        limit: usize,
    ) -> Result<Response, CallError> {
        let body = encode(req).map_err(|e| CallError::Transport {
            reason: e.to_string(),
            sent: false,
        })?;
        if body.len() > limit.min(MAX_FRAME) {
            return Err(CallError::TooLarge { len: body.len() });
        }
        let sent = std::sync::atomic::AtomicBool::new(false);
        let fut = async {
            // A pooled connection may have been closed by the peer; retry once on a fresh one.
            if let Some(mut s) = self.take(addr) {
                if let Ok(r) = Self::exchange(&mut s, &body, &sent).await {
                    self.put(addr, s);
                    return Ok(r);
                }
            }
            let mut s = self.connect(addr).await?;
            let r = Self::exchange(&mut s, &body, &sent).await?;
            self.put(addr, s);
            Ok::<_, std::io::Error>(r)
        };
        let res = tokio::time::timeout(timeout, fut).await;
        let reason = match res {
            Ok(Ok(bytes)) => {
                return decode(&bytes).map_err(|e| CallError::BadReply {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })
            }
            Ok(Err(e)) => format!("{addr}: {e}"),
            Err(_) => format!("{addr}: timed out after {timeout:?}"),
        };
        Err(CallError::Transport {
            reason,
            sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    async fn exchange(
        s: &mut Conn,
        body: &[u8],
        sent: &std::sync::atomic::AtomicBool,
    ) -> std::io::Result<Vec<u8>> {
        write_frame(s, body).await?;
        sent.store(true, std::sync::atomic::Ordering::Relaxed);
        read_frame(s).await
    }
}

/// Serves one inbound connection until it closes: a frame in, a frame out.
pub(crate) async fn serve_conn<S, F, Fut>(mut s: S, peer: std::net::SocketAddr, handle: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    loop {
        let buf = match read_frame(&mut s).await {
            Ok(b) => b,
            Err(_) => return,
        };
        let req: Request = match decode(&buf) {
            Ok(r) => r,
            Err(e) => {
                // Most likely a server of another version during a rolling upgrade: say so.
                tracing::warn!(
                    error = %e,
                    %peer,
                    version = env!("CARGO_PKG_VERSION"),
                    "cannot decode a server RPC request (is the peer another Muster version?); \
                     closing the connection"
                );
                return;
            }
        };
        let resp = handle(req).await;
        let out = match encode(&resp) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode server RPC reply");
                return;
            }
        };
        if write_frame(&mut s, &out).await.is_err() {
            return;
        }
    }
}
