//! Changes to the Raft membership: forming a cluster, adding servers (as non-voters, which
//! autopilot promotes) and removing voters (on the leader, forwarded to it from a follower),
//! and the servers `muster recover` retired.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::raft::rpc::{Request, Response, WireError};
use crate::raft::types::NodeId;
use crate::{Error, Result};

use super::client::{unexpected, unwire, FORWARD_TIMEOUT};
use super::node::{LeaderView, Node};

impl Node {
    /// Forms a new cluster from the given servers (ID → RPC address). A no-op when this node
    /// already belongs to a cluster.
    pub(super) async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<()> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Stopped(e.to_string()))?
        {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(_)) => Ok(()),
            Err(e) => Err(Error::Stopped(e.to_string())),
        }
    }

    pub(super) async fn admin(&self, req: Request) -> Result<()> {
        let deadline = Instant::now() + self.config.leader_wait;
        loop {
            match self.leader_view() {
                LeaderView::Me => return self.admin_local(&req).await,
                LeaderView::Other(addr) => {
                    match self.rpc.call(&addr, &req, FORWARD_TIMEOUT * 6).await {
                        Ok(Response::Done(Err(WireError::NoLeader))) => {}
                        Ok(Response::Done(r)) => return r.map_err(unwire),
                        Ok(_) => return Err(unexpected(&addr, &req)),
                        Err(e) => tracing::debug!(error = %e, "forwarding admin request failed"),
                    }
                }
                LeaderView::Unknown => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            self.settle(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn admin_local(&self, req: &Request) -> Result<()> {
        let voters = self.voters();
        let fail = |e: RaftError<u64, ClientWriteError<u64, BasicNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NoLeader,
            e => Error::Stopped(e.to_string()),
        };
        match req {
            Request::AddVoter { id, addr } => {
                if voters.get(id) == Some(addr) {
                    return Ok(());
                }
                if self.is_retired(*id) {
                    return Err(Error::InvalidRequest(format!(
                        "Raft ID {id} ({addr}) was retired by `muster recover`: that server \
                         stops when it contacts this cluster and rejoins under a new ID once \
                         restarted; if it keeps running, it leads a cluster of its own (was \
                         `muster recover` run on it too?)"
                    )));
                }
                let node = BasicNode { addr: addr.clone() };
                let known = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(id)
                    .cloned();
                if known.as_ref().is_some_and(|n| n.addr != *addr) {
                    // The server came back on another address: update it in place.
                    tracing::info!(id, %addr, "server address changed; updating raft membership");
                    let set = ChangeMembers::SetNodes(BTreeMap::from([(*id, node.clone())]));
                    self.raft.change_membership(set, true).await.map_err(fail)?;
                    return Ok(());
                }
                if known.is_some() {
                    return Ok(());
                }
                // A non-voter until autopilot finds it caught up and stable: a server the
                // leader cannot reach (another CA, a firewall) never becomes a voter that the
                // quorum then needs.
                tracing::info!(id, %addr, "adding server as a non-voter");
                self.raft
                    .add_learner(*id, node, false)
                    .await
                    .map_err(fail)?;
                Ok(())
            }
            Request::RemoveServer { id } => {
                if !voters.contains_key(id) {
                    return Ok(());
                }
                tracing::info!(id, "removing server from voters");
                let ids: BTreeSet<u64> = voters.keys().copied().filter(|v| v != id).collect();
                self.raft
                    .change_membership(ids, false)
                    .await
                    .map_err(fail)?;
                Ok(())
            }
            Request::RemovePeer { id } => self.remove_peer_local(*id).await,
            Request::TransferLeader { to } => self.transfer_leader_local(*to).await.map(|_| ()),
            _ => Err(Error::InvalidRequest("not an admin request".into())),
        }
    }

    pub(super) fn is_retired(&self, id: NodeId) -> bool {
        crate::sync::read(&self.retired).contains(&id)
    }
}
