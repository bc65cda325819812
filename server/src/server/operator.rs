//! Raft peer management for operators (Consul's `operator raft`): the configuration as this
//! server sees it, removing a peer, and handing leadership to another voter.
//!
//! openraft 0.9 has no leadership transfer, and its followers refuse to vote while their
//! leader lease (`election_timeout_max` since they last heard from a leader) holds. So the
//! leader moves leadership by going quiet: it waits for the target to hold its whole log,
//! stops its heartbeats, lets the followers' leases run out, and asks the target to stand
//! for election at once, well before any other follower's own election timer fires. The
//! target wins because its log is as complete as any (Raft's vote rule still decides: this
//! never risks safety, only whether the target rather than another voter ends up leading).
//! The leader's heartbeats are turned back on whatever the outcome.

use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::model::Consistency;
use crate::raft::rpc::{Request, Response};
use crate::raft::types::NodeId;
use crate::{Error, Result};

use super::client::{unexpected, unwire};
use super::node::{LeaderView, Node};

/// How long the leader waits for the target to replicate its whole log before a transfer.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Elections the leader asks the target to stand for before giving up.
const ATTEMPTS: u32 = 3;

/// One server in the Raft configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    /// Its Raft ID.
    pub id: u64,
    /// Its server RPC address.
    pub address: String,
    /// Whether this server knows it as the current leader.
    pub leader: bool,
    /// A voter, or a learner (catching up, not counted toward the quorum).
    pub voter: bool,
}

/// The Raft configuration: every voter and learner, and the log index it was written at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfiguration {
    pub servers: Vec<RaftPeer>,
    pub index: u64,
}

/// This server's Raft figures, for metrics and `muster info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStats {
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// `Leader`, `Follower`, `Candidate` or `Learner`, as Consul names Raft states.
    pub state: &'static str,
    /// How many times this server has seen the leader change since it started.
    pub leader_changes: u64,
}

impl Node {
    pub(super) fn raft_stats(&self) -> RaftStats {
        let m = self.metrics.borrow();
        RaftStats {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: self.committed.load(std::sync::atomic::Ordering::Acquire),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            state: match m.state {
                ServerState::Leader => "Leader",
                ServerState::Candidate => "Candidate",
                ServerState::Learner => "Learner",
                ServerState::Follower | ServerState::Shutdown => "Follower",
            },
            leader_changes: self
                .leader_changes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The configuration in this server's log; unless `stale`, after catching up with the
    /// leader (so that it holds every configuration change committed before the call).
    pub(super) async fn raft_configuration(&self, stale: bool) -> Result<RaftConfiguration> {
        if !stale {
            self.barrier_within(Consistency::Default, self.config.leader_wait)
                .await?;
        }
        let leader = match self.leader_view() {
            LeaderView::Me => Some(self.id),
            LeaderView::Other(_) | LeaderView::Unknown => self
                .metrics
                .borrow()
                .current_leader
                .filter(|_| stale || self.knows_leader()),
        };
        let m = self.metrics.borrow();
        let stored = m.membership_config.clone();
        let mem = stored.membership();
        let voters: Vec<u64> = mem.voter_ids().collect();
        let servers = mem
            .nodes()
            .map(|(id, n)| RaftPeer {
                id: *id,
                address: n.addr.clone(),
                leader: leader == Some(*id),
                voter: voters.contains(id),
            })
            .collect();
        Ok(RaftConfiguration {
            servers,
            index: stored.log_id().map_or(0, |l| l.index),
        })
    }

    fn knows_leader(&self) -> bool {
        matches!(self.leader_view(), LeaderView::Other(_))
    }

    /// Removes a voter or learner (on the leader). Refuses to remove the last voter; the
    /// leader itself hands leadership to another voter first and has the new leader remove it.
    pub(super) async fn remove_peer_local(&self, id: NodeId) -> Result<()> {
        let (known, voters) = {
            let m = self.metrics.borrow();
            let mem = m.membership_config.membership();
            let voters: Vec<u64> = mem.voter_ids().collect();
            (mem.get_node(&id).is_some(), voters)
        };
        if !known {
            return Err(Error::InvalidRequest(format!(
                "no server with Raft ID {id} in the Raft configuration"
            )));
        }
        let is_voter = voters.contains(&id);
        if is_voter && voters.len() <= 1 {
            return Err(Error::InvalidRequest(format!(
                "refusing to remove server {id}: it is the last voter, and the cluster would \
                 have no quorum left"
            )));
        }
        if id == self.id {
            let to = self.transfer_leader_local(None).await?;
            tracing::info!(
                to,
                "leadership transferred; asking the new leader to remove this server"
            );
            return Box::pin(self.admin(Request::RemovePeer { id })).await;
        }
        tracing::info!(id, "operator removing server from the raft configuration");
        let fail = |e: openraft::error::RaftError<u64, _>| match e {
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            ) => Error::NoLeader,
            e => Error::Stopped(e.to_string()),
        };
        if is_voter {
            // Not retained: the server leaves the configuration, not just the voters.
            let rest: std::collections::BTreeSet<u64> =
                voters.iter().copied().filter(|v| *v != id).collect();
            self.raft
                .change_membership(rest, false)
                .await
                .map_err(fail)?;
        } else {
            let learner = [id].into_iter().collect();
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveNodes(learner), false)
                .await
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Hands leadership to voter `to`, or to the most caught-up other voter; returns the new
    /// leader's ID. See the module doc for how.
    pub(super) async fn transfer_leader_local(&self, to: Option<NodeId>) -> Result<NodeId> {
        let (target, addr) = self.transfer_target(to)?;
        let last = self.metrics.borrow().last_log_index.unwrap_or(0);
        let caught_up = self
            .raft
            .wait(Some(CATCH_UP))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&target))
                        .is_some_and(|l| l.is_some_and(|l| l.index >= last))
                },
                "transfer target caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(Error::InvalidRequest(format!(
                "cannot transfer leadership to server {target} ({addr}): it has not caught up \
                 with the log within {CATCH_UP:?}"
            )));
        }
        tracing::info!(target, %addr, "transferring leadership");
        self.raft.runtime_config().heartbeat(false);
        let moved = self.hand_over(target, &addr).await;
        self.raft.runtime_config().heartbeat(true);
        moved.map(|()| target)
    }

    /// The voter to hand leadership to, and its address.
    fn transfer_target(&self, to: Option<NodeId>) -> Result<(NodeId, String)> {
        let m = self.metrics.borrow();
        if m.state != ServerState::Leader {
            return Err(Error::NoLeader);
        }
        let mem = m.membership_config.membership();
        let target = match to {
            Some(id) if id == self.id => {
                return Err(Error::InvalidRequest(format!(
                    "server {id} is already the leader"
                )))
            }
            Some(id) if mem.voter_ids().any(|v| v == id) => id,
            Some(id) => {
                return Err(Error::InvalidRequest(format!(
                    "server {id} is not a voter in the Raft configuration"
                )))
            }
            None => {
                let matched = |id: &u64| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map_or(0, |l| l.index)
                };
                mem.voter_ids()
                    .filter(|v| *v != self.id)
                    .max_by_key(matched)
                    .ok_or_else(|| {
                        Error::InvalidRequest(
                            "no other voter to transfer leadership to".to_string(),
                        )
                    })?
            }
        };
        let addr = mem
            .get_node(&target)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Ok((target, addr))
    }

    /// With heartbeats off: waits out the followers' leader lease and asks `target` to stand
    /// for election, until it leads or the attempts run out.
    async fn hand_over(&self, target: NodeId, addr: &str) -> Result<()> {
        let lease = self.config.election_timeout_max;
        for attempt in 1..=ATTEMPTS {
            tokio::time::sleep(lease + self.config.heartbeat).await;
            match self.rpc.call(addr, &Request::Elect, lease * 4).await {
                Ok(Response::Done(Ok(()))) => {}
                Ok(Response::Done(Err(e))) => return Err(unwire(e)),
                Ok(_) => return Err(unexpected(addr, &Request::Elect)),
                Err(e) => {
                    return Err(Error::Rpc {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    })
                }
            }
            let led = self
                .raft
                .wait(Some(lease * 4))
                .metrics(
                    |m| m.current_leader == Some(target) && m.state != ServerState::Leader,
                    "transfer target leads",
                )
                .await;
            if led.is_ok() {
                tracing::info!(target, attempt, "leadership transferred");
                return Ok(());
            }
            let m = self.metrics.borrow();
            if m.state != ServerState::Leader && m.current_leader.is_some() {
                return Err(Error::InvalidRequest(format!(
                    "leadership moved to server {:?} instead of {target}",
                    m.current_leader
                )));
            }
        }
        Err(Error::InvalidRequest(format!(
            "server {target} did not win an election after {ATTEMPTS} attempts"
        )))
    }
}

/// Counts changes of the leader this server knows, for [`RaftStats::leader_changes`].
pub(super) async fn count_leader_changes(node: std::sync::Arc<Node>) {
    // The server metrics change with the vote, role or leader only; the full metrics also
    // with every heartbeat's replication progress (more than ten times a second).
    let mut rx = node.raft.server_metrics();
    let mut leader = rx.borrow().current_leader;
    while rx.changed().await.is_ok() {
        let now = rx.borrow().current_leader;
        if now != leader && now.is_some() {
            node.leader_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        leader = now;
    }
}

impl Node {
    /// Stands for election at once (asked by a leader handing leadership over).
    pub(super) async fn elect(&self) -> Result<()> {
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Error::Stopped(e.to_string()))
    }
}
