//! Calls to other servers: a client agent's choice of server, the forwarding of writes to
//! the leader (many per RPC), and the translation of [`Error`] to and from the wire.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::model::{Command, CommandResult};
use crate::raft::rpc::{CallError, Request, Response, RpcClient, WireError};
use crate::{Error, Result};

use super::batch::MAX_BATCH;

/// Timeout of one forwarded request between servers.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwarding RPCs to the leader in flight, at most. More than the leader's batches in
/// flight: a forwarded write should join the leader's queue at once, where it is batched
/// anyway, rather than wait out a whole round trip for a free slot here.
const FORWARDS_IN_FLIGHT: usize = 16;

/// `pick!(Response::Write)`: a closure that takes a reply of that kind apart, and gives `None`
/// for any other (see [`call_at`]).
macro_rules! pick {
    ($variant:path) => {
        |r| match r {
            $variant(x) => Some(x),
            _ => None,
        }
    };
}
pub(super) use pick;

/// The error for a reply of another kind than `req` asks for.
pub(super) fn unexpected(addr: &str, req: &Request) -> Error {
    Error::Protocol {
        addr: addr.to_string(),
        reason: format!(
            "answered a {} request with another kind of reply",
            req.name()
        ),
    }
}

/// The error for a call to `addr` that brought no reply.
fn failed(addr: &str, e: CallError) -> Error {
    match e {
        CallError::Transport { reason, .. } => Error::Rpc {
            addr: addr.to_string(),
            reason,
        },
        CallError::BadReply { addr, reason } => Error::Protocol {
            addr,
            reason: format!("undecodable reply: {reason}"),
        },
        e @ CallError::TooLarge { .. } => Error::InvalidRequest(e.to_string()),
    }
}

/// Calls the server at `addr`; `pick` takes the reply `req` asks for apart (see [`pick!`]).
pub(super) async fn call_at<T>(
    rpc: &RpcClient,
    addr: &str,
    req: &Request,
    timeout: Duration,
    pick: impl FnOnce(Response) -> Option<T>,
) -> Result<T> {
    let resp = rpc
        .call(addr, req, timeout)
        .await
        .map_err(|e| failed(addr, e))?;
    pick(resp).ok_or_else(|| unexpected(addr, req))
}

pub(super) fn wire(e: Error) -> WireError {
    match e {
        Error::NoLeader => WireError::NoLeader,
        Error::InvalidRequest(m) => WireError::Invalid(m),
        Error::Protocol { addr, reason } => WireError::Protocol { addr, reason },
        e => WireError::Other(e.to_string()),
    }
}

pub(super) fn unwire(e: WireError) -> Error {
    match e {
        WireError::NoLeader => Error::NoLeader,
        WireError::Invalid(m) => Error::InvalidRequest(m),
        WireError::Other(m) => Error::Storage(m),
        WireError::Protocol { addr, reason } => Error::Protocol { addr, reason },
    }
}

/// The way from this agent to the servers: on a client agent, every request goes this way.
#[derive(Clone)]
pub(super) struct Client {
    rpc: RpcClient,
    /// Server RPC addresses a client agent forwards to (learned through gossip).
    servers: Arc<RwLock<Vec<String>>>,
    /// How long a server may hold a forwarded request while it waits for a leader.
    hold: Duration,
}

impl Client {
    pub(super) fn new(rpc: RpcClient, hold: Duration) -> Client {
        Client {
            rpc,
            servers: Arc::default(),
            hold,
        }
    }

    /// How long a server may hold a request while it waits for a leader.
    pub(super) fn hold(&self) -> Duration {
        self.hold
    }

    /// Replaces the server RPC addresses a client agent forwards to.
    pub(super) fn set_servers(&self, addrs: Vec<String>) {
        *crate::sync::write(&self.servers) = addrs;
    }

    /// Calls the server at `addr` (see [`call_at`]).
    pub(super) async fn call_at<T>(
        &self,
        addr: &str,
        req: &Request,
        timeout: Duration,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T> {
        call_at(&self.rpc, addr, req, timeout, pick).await
    }

    /// Calls a server from a client agent, trying each of the others in turn when one is
    /// unreachable; `pick` takes the reply `req` asks for apart (see [`pick!`]). A server
    /// holds a read or write for up to its `rpc_hold_timeout` while it waits for a leader, so
    /// the call allows for that on top of `timeout`.
    pub(super) async fn call<T>(
        &self,
        req: Request,
        timeout: Duration,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T> {
        let mut servers = crate::sync::read(&self.servers).clone();
        if servers.is_empty() {
            return Err(Error::NoServers);
        }
        let start = rand::random_range(0..servers.len());
        servers.rotate_left(start);
        let mut last = Error::NoServers;
        for addr in servers {
            match self.rpc.call(&addr, &req, timeout + self.hold).await {
                Ok(r) => return pick(r).ok_or_else(|| unexpected(&addr, &req)),
                Err(e) => last = failed(&addr, e),
            }
        }
        Err(last)
    }
}

/// A write on its way to the leader at `addr`; `None` back means "could not deliver".
pub(super) type Forward = (
    String,
    Command,
    tokio::sync::oneshot::Sender<Option<Result<CommandResult, WireError>>>,
);

/// Ships queued writes to the leader, many per RPC, a few RPCs in flight.
pub(super) async fn forward_loop(rpc: RpcClient, mut rx: tokio::sync::mpsc::Receiver<Forward>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(FORWARDS_IN_FLIGHT));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let addr = first.0.clone();
        let mut batch = vec![first];
        let mut other = Vec::new();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(f) if f.0 == addr => batch.push(f),
                Ok(f) => other.push(f),
                Err(_) => break,
            }
        }
        let rpc = rpc.clone();
        tokio::spawn(async move {
            for group in [batch, other] {
                let Some(addr) = group.first().map(|f| f.0.clone()) else {
                    continue;
                };
                let (cmds, waiters): (Vec<Command>, Vec<_>) =
                    group.into_iter().map(|(_, c, w)| (c, w)).unzip();
                match rpc
                    .call(&addr, &Request::ApplyMany(cmds), FORWARD_TIMEOUT)
                    .await
                {
                    Ok(Response::WriteMany(results)) if results.len() == waiters.len() => {
                        for (w, r) in waiters.into_iter().zip(results) {
                            let _ = w.send(Some(r));
                        }
                    }
                    // The leader may have received and applied these: a retry could apply
                    // them twice (a CAS that succeeded answered false, say). Indeterminate.
                    Err(e) if e.maybe_delivered() => {
                        tracing::debug!(error = %e, %addr, "forwarded writes lost in flight");
                        let why = WireError::Other(format!(
                            "the leader {addr} failed while handling this write ({e}); it may \
                             or may not have been applied"
                        ));
                        for w in waiters {
                            let _ = w.send(Some(Err(why.clone())));
                        }
                    }
                    other => {
                        tracing::debug!(?other, %addr, "forwarding writes failed");
                        for w in waiters {
                            let _ = w.send(None);
                        }
                    }
                }
            }
            drop(permit);
        });
    }
}
