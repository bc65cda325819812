//! openraft's network over the server RPC client.

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::sync::watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::rpc::{CallError, Request, Response, RpcClient, MAX_FRAME};
use super::types::{NodeId, TypeConfig};

/// The most an AppendEntries frame carries when it holds more than one entry: a follower
/// decodes and flushes it within the AppendEntries timeout, and far below [`MAX_FRAME`].
const APPEND_BUDGET: usize = 8 << 20;

pub(crate) struct Network {
    pub(crate) rpc: RpcClient,
    /// Set when a peer refuses this server as retired (see `Response::Retired`).
    pub(crate) retired: watch::Sender<Option<String>>,
    /// When each peer last answered an append (entries or heartbeat) or a snapshot without
    /// error: autopilot's LastContact, seen from the leader.
    pub(crate) contacts: Contacts,
}

/// Peer → the last instant it answered a replication request.
pub(crate) type Contacts = Arc<Mutex<HashMap<NodeId, Instant>>>;

pub(crate) struct PeerConn {
    rpc: RpcClient,
    target: NodeId,
    addr: String,
    retired: watch::Sender<Option<String>>,
    contacts: Contacts,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConn {
        PeerConn {
            rpc: self.rpc.clone(),
            target,
            addr: node.addr.clone(),
            retired: self.retired.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerConn {
    async fn send<E: std::error::Error>(
        &self,
        req: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<NodeId, BasicNode, E>> {
        let (entries, limit) = match &req {
            Request::AppendEntries(r) if r.entries.len() > 1 => {
                (r.entries.len() as u64, APPEND_BUDGET)
            }
            _ => (0, MAX_FRAME),
        };
        let resp = match self
            .rpc
            .call_within(&self.addr, &req, option.hard_ttl(), limit)
            .await
        {
            Ok(r) => r,
            // Entries past the budget (a restore's chunks, for a follower far behind): openraft
            // retries at once with fewer, as many as should fill the budget.
            Err(CallError::TooLarge { len }) if entries > 1 => {
                let fit = entries * APPEND_BUDGET as u64 / len as u64;
                return Err(PayloadTooLarge::new_entries_hint(fit.max(1)).into());
            }
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
        };
        if let Response::Retired(why) = resp {
            self.retired
                .send_if_modified(|r| r.replace(why.clone()).is_none());
            let e = std::io::Error::other(why);
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        Ok(resp)
    }

    fn contacted(&self) {
        crate::sync::lock(&self.contacts).insert(self.target, Instant::now());
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::other(format!("unexpected reply from {}", self.addr));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => {
                if r.is_ok() {
                    self.contacted();
                }
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => {
                if r.is_ok() {
                    self.contacted();
                }
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}
