//! [`Node`]: the local Raft node and its stores. It knows who leads (with the leader's
//! lease), puts a write through Raft (to the batcher here, or forwarded to the leader), and
//! makes local state as fresh as a read asks (the leader's read index).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use redb::Database;
use tokio::sync::watch;

use crate::model::{Command, CommandResult, Consistency, Query, QueryResult, ReadMeta};
use crate::raft::rpc::{Request, Response, RpcClient, StatusReply, WireError};
use crate::raft::types::{NodeId, Raft};
use crate::store::watch::{Topic, WatchHub};
use crate::store::{Catalog, LockDelays};
use crate::sync::lock;
use crate::{Error, Result, ServerConfig};

use super::batch::{Outcome, Pending};
use super::client::{call_at, pick, unexpected, unwire, Forward, FORWARD_TIMEOUT};

/// What this server believes about leadership right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeaderView {
    Me,
    Other(String),
    Unknown,
}

/// The local Raft node and its stores: what this server knows of leadership, and the way a
/// write or a read goes through Raft from here.
pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) config: ServerConfig,
    pub(super) raft: Raft,
    pub(super) catalog: Catalog,
    pub(super) applied: watch::Receiver<u64>,
    /// The latest commit index this server knows of (the log store's).
    pub(super) committed: Arc<AtomicU64>,
    pub(super) leader_changes: AtomicU64,
    pub(super) rpc: RpcClient,
    /// When this follower last accepted entries or a heartbeat from a leader.
    pub(super) leader_contact: Mutex<Option<Instant>>,
    /// (term, last log index when this leader first served a read in that term): everything
    /// up to that index must be applied before the leader serves a read, or a leader that just
    /// restarted could answer from a state machine still replaying its log.
    pub(super) leader_floor: Mutex<(u64, u64)>,
    /// Commands waiting to be packed into the next log entry.
    pub(super) batcher: tokio::sync::mpsc::Sender<Pending>,
    /// Raft IDs whose Raft requests are refused (the state machine's retired servers).
    pub(super) retired: Arc<RwLock<BTreeSet<NodeId>>>,
    /// Why a peer refused this server as retired, once one did.
    pub(super) retired_by: watch::Receiver<Option<String>>,
    pub(super) log_db: Arc<Database>,
    /// Commands waiting to be forwarded to the leader, many per RPC.
    pub(super) forwarder: tokio::sync::mpsc::Sender<Forward>,
    pub(super) metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    pub(super) hub: Arc<WatchHub>,
    pub(super) lock_delays: Arc<LockDelays>,
    /// Session TTL deadlines, kept by the leader only (as Consul): a new leader starts every
    /// session's TTL afresh.
    pub(super) session_deadlines: Mutex<HashMap<String, Instant>>,
    /// Coordinate updates waiting for the leader's next batch.
    pub(super) coordinates: super::coordinates::PendingCoordinates,
    /// When each peer last answered this server's replication requests (as leader).
    pub(super) contacts: crate::raft::network::Contacts,
    /// The leader's autopilot state.
    pub(super) autopilot: Mutex<super::autopilot::Tracker>,
}

impl Node {
    pub(super) fn session_renew(&self, id: &str) -> Result<bool> {
        let Some(s) = self.catalog.session(id)? else {
            return Ok(false);
        };
        if s.ttl_ms > 0 {
            let until = Instant::now() + Duration::from_millis(s.ttl_ms * 2);
            lock(&self.session_deadlines).insert(id.to_string(), until);
        }
        Ok(true)
    }

    /// Restarts a session's TTL on the leader: here, or asked over RPC from a follower.
    /// `Ok(false)`: no such session.
    pub(super) async fn renew_session(&self, id: &str) -> Result<bool> {
        match self.leader_view() {
            LeaderView::Me => self.session_renew(id),
            LeaderView::Other(addr) => {
                let req = Request::SessionRenew(id.to_string());
                call_at(
                    &self.rpc,
                    &addr,
                    &req,
                    FORWARD_TIMEOUT,
                    pick!(Response::Renewed),
                )
                .await?
                .map_err(unwire)
            }
            LeaderView::Unknown => Err(Error::NoLeader),
        }
    }

    pub(super) async fn read_blocking(
        &self,
        mode: Consistency,
        q: &Query,
        min_index: u64,
        wait: Duration,
    ) -> Result<(QueryResult, ReadMeta)> {
        let mut meta = self.wait_index(mode, q, min_index, wait).await?;
        let (res, index) = self.catalog.query(q)?;
        meta.index = index;
        Ok((res, meta))
    }

    /// Waits until the index of what `q` reads passes `min_index`, or `wait` has passed;
    /// checks only the index on each wake-up, never the data.
    pub(super) async fn wait_index(
        &self,
        mode: Consistency,
        q: &Query,
        min_index: u64,
        wait: Duration,
    ) -> Result<ReadMeta> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before reading, so a write between the read and the wait
            // is not missed.
            let mut woken: Vec<_> = Topic::of(q)
                .into_iter()
                .map(|t| {
                    let mut n = Box::pin(self.hub.subscribe(t).notified_owned());
                    n.as_mut().enable();
                    n
                })
                .collect();
            let mut meta = self.barrier(mode).await?;
            meta.index = self.catalog.query_index(q)?;
            if min_index == 0 || meta.index > min_index || tokio::time::Instant::now() >= deadline {
                return Ok(meta);
            }
            tokio::select! {
                _ = futures::future::select_all(woken.iter_mut()) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub(super) fn lease(&self) -> Duration {
        self.config.election_timeout_max * 2
    }

    pub(super) fn voters(&self) -> BTreeMap<u64, String> {
        let m = self.metrics.borrow();
        let mem = m.membership_config.membership();
        mem.voter_ids()
            .filter_map(|id| mem.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect()
    }

    pub(super) fn leader_view(&self) -> LeaderView {
        let m = self.metrics.borrow();
        let Some(leader) = m.current_leader else {
            return LeaderView::Unknown;
        };
        let mem = m.membership_config.membership();
        if leader == self.id {
            if m.state != ServerState::Leader {
                return LeaderView::Unknown;
            }
            let single = mem.voter_ids().count() <= 1;
            // The metrics carry this term's quorum ack only: a lease from an earlier term
            // proves nothing.
            let fresh = m
                .quorum_acked_at
                .is_some_and(|t| t.elapsed() < self.lease());
            return if single || fresh {
                LeaderView::Me
            } else {
                LeaderView::Unknown
            };
        }
        // A follower trusts a leader it heard from recently.
        let fresh = lock(&self.leader_contact).is_some_and(|t| t.elapsed() < self.lease());
        match mem.get_node(&leader) {
            Some(n) if fresh => LeaderView::Other(n.addr.clone()),
            _ => LeaderView::Unknown,
        }
    }

    fn last_contact_ms(&self) -> u64 {
        match self.leader_view() {
            LeaderView::Me => 0,
            _ => lock(&self.leader_contact).map_or(u64::MAX, |t| t.elapsed().as_millis() as u64),
        }
    }

    pub(super) fn status(&self) -> StatusReply {
        let leader = match self.leader_view() {
            LeaderView::Me => Some(self.config.advertise_rpc.clone()),
            LeaderView::Other(a) => Some(a),
            LeaderView::Unknown => None,
        };
        StatusReply {
            leader,
            peers: self.voters().into_values().collect(),
        }
    }

    /// Waits for the leader view to change or `step` to pass, whichever first.
    pub(super) async fn settle(&self, step: Duration) {
        let mut rx = self.raft.metrics();
        let _ = tokio::time::timeout(step, rx.changed()).await;
    }

    pub(super) async fn write(&self, cmd: Command, forward: bool) -> Result<CommandResult> {
        let deadline = Instant::now() + self.config.leader_wait;
        loop {
            match self.leader_view() {
                LeaderView::Me => {
                    if self.lock_delays.refuses(&cmd) {
                        let index = *self.applied.borrow();
                        return Ok(CommandResult {
                            index,
                            success: false,
                            txn: None,
                        });
                    }
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if self.batcher.send((cmd.clone(), tx)).await.is_err() {
                        return Err(Error::Stopped("raft stopped".into()));
                    }
                    match tokio::time::timeout(self.config.leader_wait + FORWARD_TIMEOUT, rx).await
                    {
                        Ok(Ok(Outcome::Done(r))) => return Ok(r),
                        // Proposed, then leadership moved: the entry may still commit under
                        // the next leader, so proposing it again could apply it twice.
                        Ok(Ok(Outcome::NotLeader)) => {
                            return Err(Error::Stopped(
                                "leadership changed while this write was in flight; it may or \
                                 may not have been applied"
                                    .into(),
                            ))
                        }
                        Ok(Ok(Outcome::Failed(e))) => return Err(Error::Stopped(e)),
                        Ok(Err(_)) => return Err(Error::Stopped("raft stopped".into())),
                        Err(_) => return Err(Error::NoLeader),
                    }
                }
                LeaderView::Other(addr) if forward => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if self.forwarder.send((addr, cmd.clone(), tx)).await.is_err() {
                        return Err(Error::Stopped("raft stopped".into()));
                    }
                    match rx.await {
                        Ok(Some(Err(WireError::NoLeader))) | Ok(None) => {}
                        Ok(Some(r)) => return r.map_err(unwire),
                        Err(_) => return Err(Error::Stopped("raft stopped".into())),
                    }
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            self.settle(Duration::from_millis(50)).await;
        }
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut rx = self.applied.clone();
        let ok = matches!(
            tokio::time::timeout(FORWARD_TIMEOUT, rx.wait_for(|&i| i >= index)).await,
            Ok(Ok(_))
        );
        if ok {
            Ok(())
        } else {
            Err(Error::NoLeader)
        }
    }

    /// Whether this leader may serve a default-mode read from its own state: a quorum
    /// acknowledged it within the read lease. Followers refuse to vote for another candidate
    /// for `election_timeout_max` after a heartbeat (openraft's vote lease), and the ack is
    /// timed from when its heartbeat was sent, so no other leader can have been elected yet.
    /// The read lease is half of that: the margin covers clock drift and scheduling delay.
    fn holds_read_lease(&self) -> bool {
        let m = self.metrics.borrow();
        m.membership_config.membership().voter_ids().count() <= 1
            || m.quorum_acked_at
                .is_some_and(|t| t.elapsed() < self.config.election_timeout_max / 2)
    }

    /// The last log index when this leader's term began (first asked in the term): a new
    /// leader must apply everything its predecessors committed before it answers a read.
    fn leader_floor(&self) -> u64 {
        let (term, last) = {
            let m = self.metrics.borrow();
            (m.current_term, m.last_log_index.unwrap_or(0))
        };
        let mut floor = lock(&self.leader_floor);
        if floor.0 != term {
            *floor = (term, last);
        }
        floor.1
    }

    /// On the leader: the index a read in `mode` must observe. A default-mode read inside
    /// the read lease needs no round trip; outside it, and for `?consistent`, the leader
    /// confirms with a quorum that it still leads (Raft's read index).
    pub(super) async fn read_index(&self, mode: Consistency) -> Result<u64> {
        if self.leader_view() != LeaderView::Me {
            return Err(Error::NoLeader);
        }
        // Writes are acknowledged at commit, before they are applied: a read must wait for
        // what is committed, or a client could miss the write it was just told of. The floor
        // keeps a new leader from answering before its predecessors' entries are applied.
        let local = || {
            let applied = *self.applied.borrow();
            let committed = self.committed.load(Ordering::Acquire);
            applied.max(committed).max(self.leader_floor())
        };
        if mode == Consistency::Default && self.holds_read_lease() {
            return Ok(local());
        }
        let fut = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.lease(), fut).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index).max(local())),
            _ => Err(Error::NoLeader),
        }
    }

    /// Makes local state as fresh as `mode` asks. Default and consistent reads go through the
    /// leader's read index; while there is no leader they wait for one, up to
    /// `rpc_hold_timeout`, as Consul holds an RPC during an election. Only `?stale` reads are
    /// served from local state without a leader.
    pub(super) async fn barrier(&self, mode: Consistency) -> Result<ReadMeta> {
        self.barrier_within(mode, self.config.rpc_hold_timeout)
            .await
    }

    pub(super) async fn barrier_within(
        &self,
        mode: Consistency,
        hold: Duration,
    ) -> Result<ReadMeta> {
        let meta = |known_leader| ReadMeta {
            index: 0,
            known_leader,
            last_contact_ms: self.last_contact_ms(),
        };
        if mode == Consistency::Stale {
            return Ok(meta(self.leader_view() != LeaderView::Unknown));
        }
        let deadline = Instant::now() + hold;
        let mut leader_change = self.raft.server_metrics();
        loop {
            let index = match self.leader_view() {
                LeaderView::Me => match self.read_index(mode).await {
                    Ok(i) => Some(i),
                    Err(Error::NoLeader) => None,
                    Err(e) => return Err(e),
                },
                LeaderView::Other(addr) => {
                    // A stopped leader must not hold the read past the point where a new
                    // one could answer it.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let timeout = left.min(self.lease() * 2).max(Duration::from_millis(50));
                    match self
                        .rpc
                        .call(&addr, &Request::ReadIndex(mode), timeout)
                        .await
                    {
                        Ok(Response::ReadIndex(Ok(i))) => Some(i),
                        Ok(Response::ReadIndex(Err(WireError::NoLeader))) | Err(_) => None,
                        Ok(Response::ReadIndex(Err(e))) => return Err(unwire(e)),
                        Ok(_) => return Err(unexpected(&addr, &Request::ReadIndex(mode))),
                    }
                }
                LeaderView::Unknown => None,
            };
            if let Some(i) = index {
                self.wait_applied(i).await?;
                return Ok(meta(true));
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            // Try again when leadership changes, or shortly (a leader may become reachable
            // without a change this server sees).
            leader_change.mark_unchanged();
            let _ = tokio::time::timeout(Duration::from_millis(50), leader_change.changed()).await;
        }
    }

    pub(super) async fn read(
        &self,
        mode: Consistency,
        q: &Query,
    ) -> Result<(QueryResult, ReadMeta)> {
        let mut meta = self.barrier(mode).await?;
        let (res, index) = self.catalog.query(q)?;
        meta.index = index;
        Ok((res, meta))
    }

    /// What [`Node::read`] would report for `q` (index, leader), without the data.
    pub(super) async fn read_meta(&self, mode: Consistency, q: &Query) -> Result<ReadMeta> {
        let mut meta = self.barrier(mode).await?;
        meta.index = self.catalog.query_index(q)?;
        Ok(meta)
    }
}
