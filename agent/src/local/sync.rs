//! Anti-entropy: keeping the catalog in line with the agent's own services and checks, at
//! once after a change, on a change made behind the agent's back, and every minute.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_server::model::{
    CatalogVerb, Check, Command, Consistency, Node, Query, QueryResult, Service, TxnOp,
};
use muster_server::Server;
use tokio_util::sync::CancellationToken;

use super::Local;
use crate::cluster::tags::SERF_CHECK;
use muster_server::sync::lock;

/// Operations per catalog write of a sync.
const TXN_CHUNK: usize = 128;

/// Full anti-entropy sync at least this often.
const SYNC_EVERY: Duration = Duration::from_secs(60);

impl Local {
    /// Keeps the catalog in line with local state: at once after a change, and every minute.
    pub async fn sync_loop(self: Arc<Self>, server: Server, cancel: CancellationToken) {
        tokio::spawn(self.clone().watch_own_node(server.clone(), cancel.clone()));
        let mut retry = false;
        loop {
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                SYNC_EVERY
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(wait) => self.full_sync.store(true, Relaxed),
            }
            retry = match self.sync_once(&server).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::debug!(error = %e, "anti-entropy sync failed; retrying");
                    true
                }
            };
        }
    }

    /// Repairs the catalog as soon as something changes this node's entries behind the
    /// agent's back (Consul waits for the next periodic sync): a blocking query on this node.
    async fn watch_own_node(self: Arc<Self>, server: Server, cancel: CancellationToken) {
        let mut index = 0;
        loop {
            let q = Query::NodeChecks {
                name: self.node.clone(),
            };
            // Index 0 (this node is not in the catalog yet, say before a leader exists) would
            // answer at once, every time: wait for it to appear instead of spinning.
            let min = index.max(1);
            let read = server.wait_index(Consistency::Stale, q, min, Duration::from_secs(300));
            let res = tokio::select! {
                _ = cancel.cancelled() => return,
                r = read => r,
            };
            match res {
                Ok(meta) => {
                    // The first change seen counts too: the leader's first registration of
                    // this node (which keeps no node meta it has not seen) may be it.
                    if meta.index != index && !self.is_own(meta.index).await {
                        self.mark_full();
                    }
                    index = meta.index;
                }
                Err(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// A catalog write of the agent's own, remembered so that the node watch does not take
    /// it for a change behind the agent's back.
    async fn write_own(
        &self,
        server: &Server,
        cmd: Command,
    ) -> muster_server::Result<muster_server::model::CommandResult> {
        lock(&self.own).in_flight += 1;
        let res = server.write(cmd).await;
        {
            let mut own = lock(&self.own);
            own.in_flight -= 1;
            if let Ok(r) = &res {
                own.recent.push_back(r.index);
                if own.recent.len() > 64 {
                    own.recent.pop_front();
                }
            }
        }
        self.own_done.notify_waiters();
        res
    }

    /// Whether the change at `index` was the agent's own. A watch can see a write before the
    /// writer learns its index: wait for writes in flight (briefly) before deciding.
    async fn is_own(&self, index: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let done = self.own_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let own = lock(&self.own);
                if own.recent.contains(&index) {
                    return true;
                }
                if own.in_flight == 0 || Instant::now() >= deadline {
                    return false;
                }
            }
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn sync_once(&self, server: &Server) -> muster_server::Result<()> {
        if !self.full_sync.swap(false, Relaxed) {
            match self.sync_changes(server).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.full_sync.store(true, Relaxed);
                    return Err(e);
                }
            }
        }
        let res = self.full_sync_once(server).await;
        if res.is_err() {
            self.full_sync.store(true, Relaxed);
        }
        res
    }

    /// Pushes only what changed locally since the last sync, as it is now (or deletes it),
    /// with no catalog read: a registration costs the same with 10 services or 10,000.
    /// `false`: a full sync must follow (the catalog is not what we thought, or the backlog
    /// is large, say registrations made while no server answered).
    async fn sync_changes(&self, server: &Server) -> muster_server::Result<bool> {
        let mut ops: Vec<TxnOp> = {
            let mut st = lock(&self.state);
            let services = std::mem::take(&mut st.dirty_services);
            let checks = std::mem::take(&mut st.dirty);
            let services = services.into_iter().map(|id| match st.services.get(&id) {
                Some(ls) => TxnOp::Service {
                    verb: CatalogVerb::Set,
                    node: self.node.clone(),
                    service: ls.service.clone(),
                },
                None => TxnOp::Service {
                    verb: CatalogVerb::Delete,
                    node: self.node.clone(),
                    service: Service {
                        id,
                        ..Default::default()
                    },
                },
            });
            let checks = checks.into_iter().map(|id| match st.checks.get(&id) {
                Some(c) => TxnOp::Check {
                    verb: CatalogVerb::Set,
                    check: c.check.clone(),
                },
                None => TxnOp::Check {
                    verb: CatalogVerb::Delete,
                    check: Check {
                        node: self.node.clone(),
                        id,
                        ..Default::default()
                    },
                },
            });
            services.chain(checks).collect()
        };
        if ops.is_empty() {
            return Ok(true);
        }
        if ops.len() > TXN_CHUNK {
            return Ok(false);
        }
        sort_for_txn(&mut ops);
        let r = self.write_own(server, Command::Txn(ops)).await?;
        Ok(r.txn.as_ref().is_none_or(|t| t.errors.is_empty()))
    }

    async fn full_sync_once(&self, server: &Server) -> muster_server::Result<()> {
        {
            let mut st = lock(&self.state);
            st.dirty.clear();
            st.dirty_services.clear();
        }
        let (node, services) = match server
            .read(
                Consistency::Default,
                Query::Node {
                    name: self.node.clone(),
                },
            )
            .await?
            .0
        {
            QueryResult::Node(Some((n, s))) => (Some(n), s),
            _ => (None, Vec::new()),
        };
        let remote_checks = match server
            .read(
                Consistency::Default,
                Query::NodeChecks {
                    name: self.node.clone(),
                },
            )
            .await?
            .0
        {
            QueryResult::Checks(c) => c,
            _ => Vec::new(),
        };
        let mut ops = Vec::new();
        let (tagged_addresses, meta) = {
            let c = lock(&self.config);
            (c.node_tagged_addresses(), c.node_meta_registered())
        };
        if node.as_ref().is_none_or(|n| {
            n.address != self.address || n.tagged_addresses != tagged_addresses || n.meta != meta
        }) {
            let n = Node {
                name: self.node.clone(),
                id: self.node_id.clone(),
                address: self.address.clone(),
                datacenter: self.datacenter.clone(),
                tagged_addresses,
                meta,
                ..Default::default()
            };
            ops.push(TxnOp::Node {
                verb: CatalogVerb::Set,
                node: n,
            });
        }
        let mut output_synced = Vec::new();
        {
            let st = lock(&self.state);
            let remote: HashMap<&str, &Service> =
                services.iter().map(|s| (s.id.as_str(), s)).collect();
            let same = |a: &Service, b: &Service| {
                a.id == b.id
                    && a.name == b.name
                    && a.tags == b.tags
                    && a.address == b.address
                    && a.port == b.port
                    && a.meta == b.meta
                    && a.weight_passing == b.weight_passing
                    && a.weight_warning == b.weight_warning
                    && a.enable_tag_override == b.enable_tag_override
            };
            for ls in st.services.values() {
                if !remote
                    .get(ls.service.id.as_str())
                    .is_some_and(|r| same(r, &ls.service))
                {
                    ops.push(TxnOp::Service {
                        verb: CatalogVerb::Set,
                        node: self.node.clone(),
                        service: ls.service.clone(),
                    });
                }
            }
            for r in &services {
                // The leader manages the `consul` service on servers.
                let leader_managed = self.is_server && r.id == "consul";
                if !leader_managed && !st.services.contains_key(&r.id) {
                    ops.push(TxnOp::Service {
                        verb: CatalogVerb::Delete,
                        node: self.node.clone(),
                        service: r.clone(),
                    });
                }
            }
            let remote_by_id: HashMap<&str, &Check> =
                remote_checks.iter().map(|c| (c.id.as_str(), c)).collect();
            for lc in st.checks.values() {
                let want = &lc.check;
                let push = match remote_by_id.get(want.id.as_str()) {
                    None => true,
                    Some(r) => {
                        let same_but_output = r.status == want.status
                            && r.notes == want.notes
                            && r.name == want.name
                            && r.service_id == want.service_id
                            && r.kind == want.kind
                            && r.interval == want.interval
                            && r.timeout == want.timeout;
                        let output_due = st
                            .synced_output
                            .get(&want.id)
                            .is_none_or(|t| t.elapsed() >= self.check_update_interval);
                        !same_but_output || (r.output != want.output && output_due)
                    }
                };
                if push {
                    output_synced.push(want.id.clone());
                    ops.push(TxnOp::Check {
                        verb: CatalogVerb::Set,
                        check: want.clone(),
                    });
                }
            }
            for r in &remote_checks {
                if !st.checks.contains_key(&r.id) && r.id != SERF_CHECK {
                    ops.push(TxnOp::Check {
                        verb: CatalogVerb::Delete,
                        check: r.clone(),
                    });
                }
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        sort_for_txn(&mut ops);
        let started = Instant::now();
        let n = ops.len();
        for chunk in ops.chunks(TXN_CHUNK) {
            let r = self.write_own(server, Command::Txn(chunk.to_vec())).await?;
            tracing::debug!(ops = n, index = r.index, took = ?started.elapsed(), "anti-entropy pushed changes");
            if let Some(t) = r.txn.filter(|t| !t.errors.is_empty()) {
                return Err(muster_server::Error::InvalidRequest(format!(
                    "sync refused: {:?}",
                    t.errors
                )));
            }
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        for id in output_synced {
            st.synced_output.insert(id, now);
        }
        Ok(())
    }
}

/// The node first, services before their checks, and deletes of checks before their
/// services go.
fn sort_for_txn(ops: &mut [TxnOp]) {
    ops.sort_by_key(|o| match o {
        TxnOp::Node { .. } => 0,
        TxnOp::Service {
            verb: CatalogVerb::Set,
            ..
        } => 1,
        TxnOp::Check { .. } => 2,
        _ => 3,
    });
}
