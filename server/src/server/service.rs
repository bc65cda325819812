//! The server RPC service: accepts connections on the server RPC port and answers Raft
//! traffic from peers and requests forwarded by other agents, refusing Raft traffic from
//! servers `muster recover` retired. A connection is TLS or plain as its first byte says;
//! plain ones are refused when `verify_incoming` requires TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::raft::rpc::{serve_conn, Request, Response, WireError};
use crate::raft::types::Vote;
use crate::sync::lock;

use super::client::wire;
use super::node::{LeaderView, Node};

/// Serves the server RPC port: each connection on its own task, until `cancel` fires.
pub(super) async fn accept_loop(node: Arc<Node>, listener: TcpListener, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((s, peer)) => {
                let node = node.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serve(node, s, peer) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "server RPC accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The first byte of a TLS handshake record; a plain frame's length never starts with it
/// (frames are far below 0x16 << 24 bytes).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection, plain or TLS as its first byte says and the TLS settings allow.
async fn serve(node: Arc<Node>, s: TcpStream, peer: SocketAddr) {
    let _ = s.set_nodelay(true);
    let handle = |req| {
        let node = node.clone();
        async move { handle(&node, req).await }
    };
    let Some(tls) = node.config.tls.as_ref() else {
        return serve_conn(s, peer, handle).await;
    };
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, s.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
        _ => return,
    };
    match (is_tls, tls.acceptor.clone()) {
        (true, Some(config)) => {
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(s);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => serve_conn(stream, peer, handle).await,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "server RPC TLS handshake failed")
                }
                Err(_) => tracing::warn!(%peer, "server RPC TLS handshake timed out"),
            }
        }
        (true, None) => {
            tracing::warn!(%peer, "refusing a TLS server RPC connection: no certificate configured")
        }
        (false, _) if tls.require_incoming => tracing::warn!(
            %peer,
            "refusing a plain server RPC connection: verify_incoming requires TLS"
        ),
        (false, _) => serve_conn(s, peer, handle).await,
    }
}

/// A refusal for a Raft request from a retired server, or `None` to serve it.
fn refuse_retired(node: &Node, vote: &Vote) -> Option<Response> {
    let from = vote.leader_id().voted_for()?;
    if !node.is_retired(from) {
        return None;
    }
    tracing::warn!(
        id = from,
        "refused a Raft request from a server retired by `muster recover`"
    );
    Some(Response::Retired(format!(
        "server {} ({}) refuses Raft requests from Raft ID {from}: `muster recover` replaced \
         the membership that ID belongs to, so this server's log predates the recovery",
        node.config.node_name, node.config.advertise_rpc
    )))
}

/// Answers one server RPC request.
async fn handle(node: &Node, req: Request) -> Response {
    let vote = match &req {
        Request::AppendEntries(r) => Some(&r.vote),
        Request::Vote(r) => Some(&r.vote),
        Request::InstallSnapshot(r) => Some(&r.vote),
        _ => None,
    };
    if let Some(refusal) = vote.and_then(|v| refuse_retired(node, v)) {
        return refusal;
    }
    match req {
        Request::AppendEntries(r) => {
            let res = node.raft.append_entries(r).await;
            if matches!(&res, Ok(openraft::raft::AppendEntriesResponse::Success)) {
                *lock(&node.leader_contact) = Some(Instant::now());
            }
            Response::AppendEntries(res)
        }
        Request::Vote(r) => Response::Vote(node.raft.vote(r).await),
        Request::InstallSnapshot(r) => {
            let res = node.raft.install_snapshot(r).await;
            if res.is_ok() {
                *lock(&node.leader_contact) = Some(Instant::now());
            }
            Response::InstallSnapshot(res)
        }
        Request::Write(cmd) => Response::Write(node.write_or_queue(cmd, true).await.map_err(wire)),
        Request::ApplyMany(cmds) => {
            let writes = cmds.into_iter().map(|c| node.write_or_queue(c, false));
            let results = futures::future::join_all(writes).await;
            Response::WriteMany(results.into_iter().map(|r| r.map_err(wire)).collect())
        }
        Request::ReadIndex(mode) => Response::ReadIndex(node.read_index(mode).await.map_err(wire)),
        Request::Read(mode, q) => Response::Read(node.read(mode, &q).await.map_err(wire)),
        Request::Snapshot(mode) => Response::Snapshot(
            match node.barrier(mode).await {
                Ok(meta) => crate::snapshot::archive_bytes(meta, node.catalog.tables()).await,
                Err(e) => Err(e),
            }
            .map_err(wire),
        ),
        Request::QueryIndex(mode, q) => {
            Response::Meta(node.read_meta(mode, &q).await.map_err(wire))
        }
        Request::WaitIndex(mode, q, min, wait_ms) => {
            let wait = Duration::from_millis(wait_ms);
            Response::Meta(node.wait_index(mode, &q, min, wait).await.map_err(wire))
        }
        Request::ReadBlocking(mode, q, min, wait_ms) => {
            let wait = Duration::from_millis(wait_ms);
            Response::Read(node.read_blocking(mode, &q, min, wait).await.map_err(wire))
        }
        Request::SessionRenew(id) => Response::Renewed(match node.leader_view() {
            LeaderView::Me => node.session_renew(&id).map_err(wire),
            _ => Err(WireError::NoLeader),
        }),
        r @ (Request::AddVoter { .. } | Request::RemoveServer { .. }) => {
            Response::Done(node.admin_local(&r).await.map_err(wire))
        }
        Request::Status => Response::Status(node.status()),
        Request::AutopilotHealth => {
            Response::AutopilotHealth(node.autopilot_health().await.map_err(wire))
        }
        Request::RaftConfiguration(stale) => {
            Response::RaftConfiguration(node.raft_configuration(stale).await.map_err(wire))
        }
        // From a client agent or another server: on to the leader.
        r @ (Request::RemovePeer { .. } | Request::TransferLeader { .. }) => {
            Response::Done(node.admin(r).await.map_err(wire))
        }
        Request::Elect => Response::Done(node.elect().await.map_err(wire)),
    }
}
