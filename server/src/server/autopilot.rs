//! Autopilot, as hashicorp/raft-autopilot runs it inside Consul's leader: every server in
//! the Raft configuration gets a health verdict from what the leader sees (gossip's status,
//! when it last answered a replication request, how far its log is), a new server joins as a
//! non-voter and is promoted once healthy for `server_stabilization_time`, and servers gossip
//! marks failed or left (or no longer knows) are removed from the configuration, never
//! leaving fewer voters than `min_quorum` nor removing half of the voters or more at once.
//!
//! Only the leader runs it. Gossip lives in the agent: its reconcile loop hands the servers
//! it knows to [`Node::set_known_servers`]. The state is published for
//! `/v1/operator/autopilot/health`, which other servers forward to the leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::model::{AutopilotConfig, Command};
use crate::raft::rpc::{Request, Response};
use crate::raft::types::NodeId;
use crate::sync::lock;
use crate::{Error, Result};

use super::client::{call_at, pick, unwire, FORWARD_TIMEOUT};
use super::node::{LeaderView, Node};

/// How often the leader recomputes every server's health (Consul: 2 s).
const UPDATE_INTERVAL: Duration = Duration::from_millis(250);
/// How many health updates between two reconciliations (promotions, removals); Consul's
/// is 10 s, Muster's 1 s, as the health inputs are local and cheap.
const RECONCILE_EVERY: u32 = 4;
/// A server in the Raft configuration that gossip does not know at all is removed only once
/// this leader has led this long: right after a restart, gossip may not know everyone yet.
const STALE_GRACE: Duration = Duration::from_secs(30);

/// A server's gossip status, as autopilot reports it (Serf's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SerfStatus {
    Alive,
    Leaving,
    Left,
    Failed,
    /// Not a gossip member at all (reaped, or never seen).
    None,
}

impl SerfStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SerfStatus::Alive => "alive",
            SerfStatus::Leaving => "leaving",
            SerfStatus::Left => "left",
            SerfStatus::Failed => "failed",
            SerfStatus::None => "none",
        }
    }
}

/// A server as gossip knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServer {
    pub raft_id: NodeId,
    /// Its node name.
    pub name: String,
    /// Its node ID (Consul shows this as the server's ID).
    pub node_id: String,
    /// Its Consul version (the `build` tag).
    pub version: String,
    pub status: SerfStatus,
}

/// One server's health, as the leader last judged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    pub raft_id: NodeId,
    pub node_id: String,
    pub name: String,
    pub address: String,
    pub serf_status: SerfStatus,
    pub version: String,
    pub leader: bool,
    pub voter: bool,
    /// Since it last answered the leader (zero for the leader itself).
    pub last_contact_ms: u64,
    pub last_term: u64,
    pub last_index: u64,
    pub healthy: bool,
    /// When its health last changed, in milliseconds since the Unix epoch.
    pub stable_since_ms: u64,
}

/// The whole cluster's health, as the leader last judged it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotHealth {
    pub healthy: bool,
    /// How many voters could fail with a quorum of healthy ones left.
    pub failure_tolerance: u64,
    /// As `failure_tolerance`, counting healthy non-voters as if promoted.
    pub optimistic_failure_tolerance: u64,
    pub leader: NodeId,
    /// The voters, the leader first.
    pub voters: Vec<NodeId>,
    /// Every server in the Raft configuration, leader first, then voters, by ID.
    pub servers: Vec<ServerHealth>,
}

/// The leader's autopilot bookkeeping, reset whenever it stops leading.
#[derive(Default)]
pub(super) struct Tracker {
    /// What gossip says of each server, by Raft ID (from the agent's reconcile loop).
    known: BTreeMap<NodeId, KnownServer>,
    /// Whether `known` was ever set: until then nothing is judged stale.
    known_set: bool,
    /// Each server's health and since when, kept across updates.
    stable: HashMap<NodeId, (bool, Instant, SystemTime)>,
    /// When this leader's autopilot first ran (Consul's `firstStateTime`).
    started: Option<Instant>,
    /// The last state computed, for the health endpoint.
    health: Option<AutopilotHealth>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Replaces what gossip says of the servers (the agent's reconcile loop calls this).
    pub(super) fn set_known_servers(&self, servers: Vec<KnownServer>) {
        let mut t = lock(&self.autopilot);
        t.known = servers.into_iter().map(|s| (s.raft_id, s)).collect();
        t.known_set = true;
    }

    /// The leader's last health state: here, or asked of the leader.
    pub(super) async fn autopilot_health(&self) -> Result<AutopilotHealth> {
        match self.leader_view() {
            LeaderView::Me => {
                let kept = lock(&self.autopilot).health.clone();
                // Leading for less than one update: judge now rather than answer nothing.
                Ok(kept.unwrap_or_else(|| {
                    self.autopilot_update(&self.autopilot_config().0, Instant::now())
                }))
            }
            LeaderView::Other(addr) => call_at(
                &self.rpc,
                &addr,
                &Request::AutopilotHealth,
                FORWARD_TIMEOUT,
                pick!(Response::AutopilotHealth),
            )
            .await?
            .map_err(unwire),
            LeaderView::Unknown => Err(Error::NoLeader),
        }
    }

    /// The replicated configuration, or this server's seed while none is stored.
    fn autopilot_config(&self) -> (AutopilotConfig, bool) {
        match self.catalog.autopilot_config() {
            Ok(Some(c)) => (c, true),
            Ok(None) | Err(_) => (self.config.autopilot.clone(), false),
        }
    }

    /// Computes every server's health from the leader's view and keeps it.
    fn autopilot_update(&self, conf: &AutopilotConfig, now: Instant) -> AutopilotHealth {
        let wall = SystemTime::now();
        let (nodes, voters, leader_term, leader_index, matched) = {
            let m = self.metrics.borrow();
            let mem = m.membership_config.membership();
            let nodes: Vec<(NodeId, String)> =
                mem.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
            let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
            let matched: BTreeMap<NodeId, (u64, u64)> = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter_map(|(id, l)| l.map(|l| (*id, (l.leader_id.term, l.index))))
                        .collect()
                })
                .unwrap_or_default();
            (
                nodes,
                voters,
                m.current_term,
                m.last_log_index.unwrap_or(0),
                matched,
            )
        };
        let contacts = lock(&self.contacts).clone();
        let mut t = lock(&self.autopilot);
        t.started.get_or_insert(now);
        let threshold = Duration::from_millis(conf.last_contact_threshold_ms);
        let mut servers = Vec::with_capacity(nodes.len());
        for (id, address) in nodes {
            let known = t.known.get(&id).cloned();
            let status = known.as_ref().map_or(SerfStatus::None, |k| k.status);
            let me = id == self.id;
            let (last_term, last_index, contact) = if me {
                (leader_term, leader_index, Some(Duration::ZERO))
            } else {
                let (term, index) = matched.get(&id).copied().unwrap_or((0, 0));
                (term, index, contacts.get(&id).map(|c| now - *c))
            };
            let healthy = status == SerfStatus::Alive
                && contact.is_some_and(|c| c <= threshold)
                && last_term == leader_term
                && (leader_index <= conf.max_trailing_logs
                    || last_index >= leader_index - conf.max_trailing_logs);
            let entry = t.stable.entry(id).or_insert((healthy, now, wall));
            if entry.0 != healthy {
                *entry = (healthy, now, wall);
            }
            let stable_since = entry.2;
            // Never heard from: as long as autopilot has known it.
            let last_contact = contact.unwrap_or(now - entry.1);
            servers.push(ServerHealth {
                raft_id: id,
                node_id: known
                    .as_ref()
                    .map(|k| k.node_id.clone())
                    .unwrap_or_default(),
                name: known.as_ref().map(|k| k.name.clone()).unwrap_or_default(),
                address,
                serf_status: status,
                version: known.map(|k| k.version).unwrap_or_default(),
                leader: me,
                voter: voters.contains(&id),
                last_contact_ms: last_contact.as_millis() as u64,
                last_term,
                last_index,
                healthy,
                stable_since_ms: millis(stable_since),
            });
        }
        let present: BTreeSet<NodeId> = servers.iter().map(|s| s.raft_id).collect();
        t.stable.retain(|id, _| present.contains(id));
        servers.sort_by_key(|s| (!s.leader, !s.voter, s.raft_id));
        let quorum = voters.len() / 2 + 1;
        let healthy_voters = servers.iter().filter(|s| s.voter && s.healthy).count();
        let healthy_all = servers.iter().filter(|s| s.healthy).count();
        let health = AutopilotHealth {
            healthy: servers.iter().all(|s| s.healthy),
            failure_tolerance: healthy_voters.saturating_sub(quorum) as u64,
            optimistic_failure_tolerance: healthy_all.saturating_sub(quorum) as u64,
            leader: self.id,
            voters: servers
                .iter()
                .filter(|s| s.voter)
                .map(|s| s.raft_id)
                .collect(),
            servers,
        };
        t.health = Some(health.clone());
        health
    }

    /// Promotes the non-voters that have been healthy for the stabilization time, or, if
    /// none, removes dead servers. One kind of change per pass, as Consul's reconcile.
    async fn autopilot_reconcile(
        &self,
        conf: &AutopilotConfig,
        health: &AutopilotHealth,
        now: Instant,
    ) {
        let (started, known_set) = {
            let t = lock(&self.autopilot);
            (t.started.unwrap_or(now), t.known_set)
        };
        let stabilization = Duration::from_millis(conf.server_stabilization_time_ms);
        // Consul's rule: until autopilot has run for 110% of the stabilization time, it cannot
        // have seen anyone stable that long, so it does not ask (a new cluster forms at once).
        let stabilization = if now - started > stabilization * 11 / 10 {
            stabilization
        } else {
            Duration::ZERO
        };
        let stable_since = |id: NodeId| {
            lock(&self.autopilot)
                .stable
                .get(&id)
                .map_or(now, |(_, since, _)| *since)
        };
        let promote: Vec<&ServerHealth> = health
            .servers
            .iter()
            .filter(|s| !s.voter && s.healthy && now - stable_since(s.raft_id) >= stabilization)
            .collect();
        if !promote.is_empty() {
            let ids: BTreeSet<NodeId> = health
                .voters
                .iter()
                .copied()
                .chain(promote.iter().map(|s| s.raft_id))
                .collect();
            for s in &promote {
                tracing::info!(id = s.raft_id, name = %s.name, address = %s.address, "autopilot promoting server");
            }
            if let Err(e) = self.raft.change_membership(ids, false).await {
                tracing::warn!(error = %e, "autopilot could not promote servers");
            }
            return;
        }
        if !conf.cleanup_dead_servers {
            return;
        }
        let stale_ok = known_set && now - started >= STALE_GRACE;
        // A failed server goes only once this leader has seen it failed for the stabilization
        // time (not waived for a new leader): a partition that heals in seconds, whose
        // healing side may well have just elected a new leader, must not cost a membership
        // change. Consul's 10 s reconcile gives about the same grace.
        let grace = Duration::from_millis(conf.server_stabilization_time_ms);
        let failed_long = |id: NodeId| {
            health
                .servers
                .iter()
                .any(|s| s.raft_id == id && s.serf_status == SerfStatus::None)
                || now - stable_since(id) >= grace
        };
        let dead: Vec<NodeId> = dead_servers(health, conf.min_quorum, stale_ok)
            .into_iter()
            .filter(|&id| failed_long(id))
            .collect();
        for id in dead {
            // The voters as they are now: an earlier removal in this pass changed them.
            let voters: BTreeSet<NodeId> = self
                .metrics
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            let voter = voters.contains(&id);
            tracing::info!(id, voter, "autopilot removing dead server");
            let change = if voter {
                let rest: BTreeSet<NodeId> = voters.into_iter().filter(|v| *v != id).collect();
                self.raft.change_membership(rest, false).await
            } else {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                    .await
            };
            if let Err(e) = change {
                tracing::warn!(id, error = %e, "autopilot could not remove a dead server");
                return;
            }
        }
    }

    /// Seeds the replicated configuration from this server's, once per leadership, if the
    /// cluster has none (Consul's `initializeAutopilotConfig`).
    async fn autopilot_seed(&self) -> bool {
        let cmd = Command::AutopilotSetConfig {
            config: Box::new(self.config.autopilot.clone()),
            cas: Some(0),
        };
        match self.write_or_queue(cmd, true).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot seed the autopilot configuration yet");
                false
            }
        }
    }
}

/// The servers to remove, in Consul's order (stale non-voters, stale voters, failed
/// non-voters, failed voters), under its limits: never fewer potential voters (known
/// servers, voting or not) than `min_quorum`, never half of the voters or more. The leader is
/// never among them. `stale_ok`: servers gossip does not know may be judged.
fn dead_servers(health: &AutopilotHealth, min_quorum: u64, stale_ok: bool) -> Vec<NodeId> {
    let mut potential = health
        .servers
        .iter()
        .filter(|s| s.serf_status != SerfStatus::None)
        .count();
    let mut max_removal = (potential.saturating_sub(1) / 2) as i64;
    let stale = |s: &&ServerHealth| s.serf_status == SerfStatus::None;
    let failed = |s: &&ServerHealth| matches!(s.serf_status, SerfStatus::Failed | SerfStatus::Left);
    let candidates = health.servers.iter().filter(|s| !s.leader);
    let groups: [Vec<&ServerHealth>; 4] = [
        if stale_ok {
            candidates
                .clone()
                .filter(stale)
                .filter(|s| !s.voter)
                .collect()
        } else {
            Vec::new()
        },
        if stale_ok {
            candidates
                .clone()
                .filter(stale)
                .filter(|s| s.voter)
                .collect()
        } else {
            Vec::new()
        },
        candidates
            .clone()
            .filter(failed)
            .filter(|s| !s.voter)
            .collect(),
        candidates.filter(failed).filter(|s| s.voter).collect(),
    ];
    let mut out = Vec::new();
    for group in groups {
        for s in group {
            let is_potential = s.serf_status != SerfStatus::None;
            if is_potential && (potential as u64).saturating_sub(1) < min_quorum {
                tracing::debug!(
                    id = s.raft_id,
                    min_quorum,
                    "autopilot keeps a dead server: it would leave fewer voters than min_quorum"
                );
            } else if s.voter && max_removal < 1 {
                tracing::debug!(
                    id = s.raft_id,
                    "autopilot keeps a dead server: removing a majority of voters is not safe"
                );
            } else {
                if is_potential {
                    potential -= 1;
                    max_removal -= 1;
                }
                out.push(s.raft_id);
            }
        }
    }
    out
}

/// The leader's autopilot loop; idle on followers.
pub(super) async fn autopilot_loop(node: Arc<Node>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(UPDATE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes = 0u32;
    let mut seeded = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if node.leader_view() != LeaderView::Me {
            let mut t = lock(&node.autopilot);
            t.started = None;
            t.stable.clear();
            t.health = None;
            seeded = false;
            continue;
        }
        let (conf, stored) = node.autopilot_config();
        if !stored && !seeded {
            seeded = node.autopilot_seed().await;
        }
        let now = Instant::now();
        let health = node.autopilot_update(&conf, now);
        passes = passes.wrapping_add(1);
        if passes.is_multiple_of(RECONCILE_EVERY) {
            node.autopilot_reconcile(&conf, &health, now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: NodeId, voter: bool, status: SerfStatus) -> ServerHealth {
        ServerHealth {
            raft_id: id,
            node_id: String::new(),
            name: format!("s{id}"),
            address: String::new(),
            serf_status: status,
            version: String::new(),
            leader: id == 1,
            voter,
            last_contact_ms: 0,
            last_term: 1,
            last_index: 1,
            healthy: status == SerfStatus::Alive,
            stable_since_ms: 0,
        }
    }

    fn state(servers: Vec<ServerHealth>) -> AutopilotHealth {
        AutopilotHealth {
            voters: servers
                .iter()
                .filter(|s| s.voter)
                .map(|s| s.raft_id)
                .collect(),
            servers,
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_voter_of_three_goes_unless_min_quorum_forbids() {
        let h = state(vec![
            server(1, true, SerfStatus::Alive),
            server(2, true, SerfStatus::Alive),
            server(3, true, SerfStatus::Failed),
        ]);
        assert_eq!(dead_servers(&h, 0, true), [3]);
        assert_eq!(dead_servers(&h, 2, true), [3]);
        assert!(dead_servers(&h, 3, true).is_empty());
    }

    #[test]
    fn never_half_the_voters_at_once() {
        let h = state(vec![
            server(1, true, SerfStatus::Alive),
            server(2, true, SerfStatus::Failed),
        ]);
        assert!(dead_servers(&h, 0, true).is_empty());
        let h = state(vec![
            server(1, true, SerfStatus::Alive),
            server(2, true, SerfStatus::Alive),
            server(3, true, SerfStatus::Failed),
            server(4, true, SerfStatus::Failed),
            server(5, true, SerfStatus::Failed),
        ]);
        assert_eq!(dead_servers(&h, 0, true), [3, 4]);
    }

    #[test]
    fn stale_servers_wait_for_the_grace_period_and_non_voters_go_first() {
        let h = state(vec![
            server(1, true, SerfStatus::Alive),
            server(2, true, SerfStatus::Alive),
            server(3, true, SerfStatus::Alive),
            server(4, false, SerfStatus::Left),
            server(5, false, SerfStatus::None),
        ]);
        assert_eq!(dead_servers(&h, 0, false), [4]);
        assert_eq!(dead_servers(&h, 0, true), [5, 4]);
    }
}
