//! `Server`: the one handle the agent, HTTP and DNS use to write and read replicated state.
//! On a server agent it drives the local Raft node ([`node::Node`]); on a client agent it
//! forwards every request to a known server over the server RPC port ([`client::Client`]).
//!
//! The rooms: `node` (leadership, writes, read index), `membership` (cluster formation and
//! voters), `batch` (group commit), `client` (calls to other servers, forwarding, errors on
//! the wire), `service` (the server RPC port), `reapers` (the leader's housekeeping),
//! `data_dir` (the data dir's files and identity) and `tasks` (supervision).

mod autopilot;
mod batch;
mod client;
mod coordinates;
pub(crate) mod data_dir;
mod membership;
mod node;
mod operator;
mod reapers;
mod service;
mod tasks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{Command, CommandResult, Consistency, Query, QueryResult, ReadMeta};
use crate::raft::files;
use crate::raft::network::Network;
use crate::raft::rpc::{Request, Response, RpcClient};
use crate::raft::types::Raft;
use crate::store::Catalog;
use crate::{Error, Result, ServerConfig};

use client::{forward_loop, pick, unwire, Client, FORWARD_TIMEOUT};
use node::{LeaderView, Node};
use tasks::{watch_core, Essential};

use crate::metrics::{ServerMetrics, WriteKind};
pub use autopilot::{AutopilotHealth, KnownServer, SerfStatus, ServerHealth};
pub use operator::{RaftConfiguration, RaftPeer, RaftStats};

/// Read and write access to the replicated state. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    node: Option<Arc<Node>>,
    client: Client,
    /// Why the local server stopped serving, once it has (see [`Server::fatal`]).
    fatal: Option<watch::Receiver<Option<String>>>,
    /// Timings and counters, registered by the agent (see [`Server::metrics`]).
    metrics: Arc<ServerMetrics>,
}

impl Server {
    /// Opens (or creates) the data dir, starts the Raft node and serves the server RPC port
    /// on `listener` until `cancel` fires. The cluster is not formed yet: see
    /// [`Server::bootstrap`] and [`Server::add_server`].
    pub async fn start(
        config: ServerConfig,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Open {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })?;
        let (id, log_db, log_store, sm) = data_dir::open_data_dir(&config)?;
        let committed = log_store.committed_index();
        let log_broken = log_store.broken();
        let checkpoint_broken = sm.broken();
        let catalog = sm.catalog();
        let applied = sm.applied_rx();
        let hub = sm.hub.clone();
        let lock_delays = sm.lock_delays.clone();
        let retired = sm.retired.clone();
        let metrics = sm.metrics.clone();

        let raft_config = openraft::Config {
            cluster_name: config.datacenter.clone(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.trailing_logs,
            max_payload_entries: 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidRequest(format!("raft config: {e}")))?;
        let rpc = RpcClient::new(config.bind_ip, config.tls.as_ref());
        let hold = config.rpc_hold_timeout;
        let (retired_tx, retired_by) = watch::channel(None);
        let contacts = crate::raft::network::Contacts::default();
        let network = Network {
            rpc: rpc.clone(),
            retired: retired_tx,
            contacts: contacts.clone(),
        };
        let dir = config.data_dir.clone();
        let raft = Raft::new(id, Arc::new(raft_config), network, log_store, sm)
            .await
            .map_err(|e| {
                Error::Fatal(format!(
                    "cannot start Raft on data dir {}: {}",
                    dir.display(),
                    files::describe_io(&e.to_string())
                ))
            })?;
        tracing::info!(node = %config.node_name, id, "raft node started");

        let (fatal_tx, fatal) = watch::channel(None);
        let fatal_tx = Arc::new(fatal_tx);
        tokio::spawn(watch_core(
            raft.metrics(),
            log_broken,
            checkpoint_broken,
            fatal_tx.clone(),
            cancel.clone(),
        ));
        let essential = Essential {
            fatal: fatal_tx,
            cancel: cancel.clone(),
        };
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(batch::QUEUE);
        essential.spawn(
            "write batcher",
            batch::batch_loop(raft.clone(), batch_rx, metrics.clone()),
        );
        let (fwd_tx, fwd_rx) = tokio::sync::mpsc::channel(batch::QUEUE);
        essential.spawn("write forwarder", forward_loop(rpc.clone(), fwd_rx));
        let node = Arc::new(Node {
            coordinates: Default::default(),
            contacts,
            autopilot: Default::default(),
            hub,
            lock_delays,
            session_deadlines: Mutex::default(),
            metrics: raft.metrics(),
            forwarder: fwd_tx,
            batcher: batch_tx,
            id,
            config,
            raft,
            catalog,
            applied,
            committed,
            leader_changes: Default::default(),
            rpc: rpc.clone(),
            leader_contact: Mutex::new(None),
            leader_floor: Mutex::new((0, 0)),
            retired,
            retired_by,
            log_db,
        });
        tokio::spawn(operator::count_leader_changes(node.clone()));
        essential.spawn(
            "session reaper",
            reapers::session_reaper(node.clone(), cancel.clone()),
        );
        essential.spawn(
            "tombstone reaper",
            reapers::tombstone_reaper(node.clone(), cancel.clone()),
        );
        essential.spawn(
            "restore janitor",
            reapers::restore_janitor(node.clone(), cancel.clone()),
        );
        essential.spawn(
            "coordinate batcher",
            coordinates::coordinate_batcher(node.clone(), cancel.clone()),
        );
        essential.spawn(
            "autopilot",
            autopilot::autopilot_loop(node.clone(), cancel.clone()),
        );
        essential.spawn(
            "server RPC listener",
            service::accept_loop(node.clone(), listener, cancel.clone()),
        );
        {
            let raft = node.raft.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                let _ = raft.shutdown().await;
            });
        }
        Ok(Server {
            node: Some(node),
            client: Client::new(rpc, hold),
            fatal: Some(fatal),
            metrics,
        })
    }

    /// A handle for a client agent: no local state, every request goes to a server.
    pub fn client() -> Server {
        Self::client_bound(None, Duration::from_secs(7), None)
    }

    /// [`Server::client`] whose connections leave from `bind` (the agent's `-bind` address),
    /// allowing servers `hold` (their `rpc_hold_timeout`) to wait for a leader, and dialling
    /// them over TLS when `tls` has a connector.
    pub fn client_bound(
        bind: Option<std::net::IpAddr>,
        hold: Duration,
        tls: Option<&crate::RpcTls>,
    ) -> Server {
        Server {
            node: None,
            client: Client::new(RpcClient::new(bind, tls), hold),
            fatal: None,
            metrics: Arc::default(),
        }
    }

    /// Resolves, with why, once a part this server cannot run without has stopped (the Raft
    /// core, the log writer, the state checkpointer, or one of its tasks). The server then
    /// serves nothing more: the agent must exit non-zero, so that its supervisor restarts it
    /// (a restart recovers from a full disk once space is freed). Never resolves on a client
    /// agent, nor after a normal shutdown.
    pub async fn fatal(&self) -> String {
        let Some(mut rx) = self.fatal.clone() else {
            return std::future::pending().await;
        };
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => return std::future::pending().await,
        };
        why
    }

    /// Replaces the server RPC addresses a client agent forwards to.
    pub fn set_servers(&self, addrs: Vec<String>) {
        self.client.set_servers(addrs);
    }

    pub fn is_server(&self) -> bool {
        self.node.is_some()
    }

    /// The local state machine, on a server. Reads through it see local state only: call
    /// [`Server::barrier`] first for the consistency a request asked for.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.node.as_ref().map(|n| &n.catalog)
    }

    /// Where large request bodies (a snapshot being restored) wait on disk: the data dir on
    /// a server, the system's temporary directory on a client agent.
    pub fn scratch_dir(&self) -> std::path::PathBuf {
        match &self.node {
            Some(n) => n.config.data_dir.clone(),
            None => std::env::temp_dir(),
        }
    }

    /// The advertised server RPC address, on a server.
    pub fn rpc_addr(&self) -> Option<String> {
        self.node.as_ref().map(|n| n.config.advertise_rpc.clone())
    }

    /// Asks another server for its view of the leader and voters (used before bootstrapping,
    /// to join an existing cluster instead of forming a second one).
    pub async fn remote_status(&self, addr: &str) -> Result<(Option<String>, Vec<String>)> {
        let timeout = Duration::from_secs(2);
        let s = self
            .client
            .call_at(addr, &Request::Status, timeout, pick!(Response::Status))
            .await?;
        Ok((s.leader, s.peers))
    }

    /// The last index applied to local state (on a server): nothing read from it can have
    /// changed while this stays the same.
    pub fn applied_index(&self) -> Option<u64> {
        self.node.as_ref().map(|n| *n.applied.borrow())
    }

    /// This server's Raft node ID.
    pub fn node_id(&self) -> Option<u64> {
        self.node.as_ref().map(|n| n.id)
    }

    /// Applies a command through Raft, forwarding to the leader as needed. Waits up to
    /// `leader_wait` for a leader during an election, then fails with [`Error::NoLeader`].
    pub async fn write(&self, cmd: Command) -> Result<CommandResult> {
        let started = std::time::Instant::now();
        // Only the command's kind is kept past the write: no clone of its payload.
        let kind = WriteKind::of(&cmd);
        let res = match &self.node {
            Some(n) => n.write_or_queue(cmd, true).await,
            None => self
                .client
                .call(Request::Write(cmd), FORWARD_TIMEOUT, pick!(Response::Write))
                .await?
                .map_err(unwire),
        };
        if res.is_ok() {
            self.metrics
                .observe_write(kind, started.elapsed().as_secs_f64());
        }
        res
    }

    /// This server's timings and counters, for the agent's metrics registry.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// A client agent's snapshot: the archive, built by a server (see `crate::snapshot`).
    pub(crate) async fn forwarded_snapshot(
        &self,
        mode: Consistency,
    ) -> Result<(Vec<u8>, ReadMeta)> {
        self.client
            .call(
                Request::Snapshot(mode),
                FORWARD_TIMEOUT,
                pick!(Response::Snapshot),
            )
            .await?
            .map_err(unwire)
    }

    /// Makes local state as fresh as `mode` asks, and tells how fresh it is. `index` in the
    /// returned meta is zero: the caller fills it from the data it reads.
    pub async fn barrier(&self, mode: Consistency) -> Result<ReadMeta> {
        self.barrier_within(mode, self.client.hold()).await
    }

    /// [`Server::barrier`], waiting at most `hold` for a leader instead of the configured
    /// `rpc_hold_timeout`: for DNS, whose clients give up after a few seconds.
    pub async fn barrier_within(&self, mode: Consistency, hold: Duration) -> Result<ReadMeta> {
        match &self.node {
            Some(n) => n.barrier_within(mode, hold).await,
            None => Err(Error::InvalidRequest(
                "no local state on a client agent".into(),
            )),
        }
    }

    /// Runs a read at the given consistency, locally on a server or on a server for a client.
    pub async fn read(&self, mode: Consistency, q: Query) -> Result<(QueryResult, ReadMeta)> {
        match &self.node {
            Some(n) => n.read(mode, &q).await,
            None => self
                .client
                .call(
                    Request::Read(mode, q),
                    FORWARD_TIMEOUT,
                    pick!(Response::Read),
                )
                .await?
                .map_err(unwire),
        }
    }

    /// What [`Server::read`] would report for `q` (index, leader), without the data: lets a
    /// caller holding an encoded answer for that index skip the read.
    pub async fn read_meta(&self, mode: Consistency, q: Query) -> Result<ReadMeta> {
        match &self.node {
            Some(n) => n.read_meta(mode, &q).await,
            None => self
                .client
                .call(
                    Request::QueryIndex(mode, q),
                    FORWARD_TIMEOUT,
                    pick!(Response::Meta),
                )
                .await?
                .map_err(unwire),
        }
    }

    /// A blocking read (Consul's `?index=N&wait=D`): answers once the data's index is past
    /// `min_index`, or when `wait` has passed. Only changes to what the query reads wake it.
    pub async fn read_blocking(
        &self,
        mode: Consistency,
        q: Query,
        min_index: u64,
        wait: Duration,
    ) -> Result<(QueryResult, ReadMeta)> {
        match &self.node {
            Some(n) => n.read_blocking(mode, &q, min_index, wait).await,
            None => {
                let req = Request::ReadBlocking(mode, q, min_index, wait.as_millis() as u64);
                self.client
                    .call(req, wait + FORWARD_TIMEOUT, pick!(Response::Read))
                    .await?
                    .map_err(unwire)
            }
        }
    }

    /// Waits as [`Server::read_blocking`] does, but returns only the index (and leader
    /// state): for watchers that need to know that something changed, not what.
    pub async fn wait_index(
        &self,
        mode: Consistency,
        q: Query,
        min_index: u64,
        wait: Duration,
    ) -> Result<ReadMeta> {
        match &self.node {
            Some(n) => n.wait_index(mode, &q, min_index, wait).await,
            None => {
                let req = Request::WaitIndex(mode, q, min_index, wait.as_millis() as u64);
                self.client
                    .call(req, wait + FORWARD_TIMEOUT, pick!(Response::Meta))
                    .await?
                    .map_err(unwire)
            }
        }
    }

    /// Restarts a session's TTL on the leader. `Ok(false)`: no such session.
    pub async fn session_renew(&self, id: &str) -> Result<bool> {
        match &self.node {
            Some(n) => n.renew_session(id).await,
            None => {
                let req = Request::SessionRenew(id.to_string());
                self.client
                    .call(req, FORWARD_TIMEOUT, pick!(Response::Renewed))
                    .await?
                    .map_err(unwire)
            }
        }
    }

    /// Forms a new cluster from the given servers (ID → RPC address). A no-op when this node
    /// already belongs to a cluster, so every server may call it with the same set.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<()> {
        let n = self.node.as_ref().ok_or(Error::NoServers)?;
        n.bootstrap(members).await
    }

    /// Whether this server has joined or formed a cluster.
    pub async fn is_initialized(&self) -> bool {
        match &self.node {
            Some(n) => n.raft.is_initialized().await.unwrap_or(false),
            None => false,
        }
    }

    /// Adds a server to the Raft configuration as a non-voter (on the leader; forwarded
    /// otherwise); autopilot promotes it once it is caught up and stable, so the quorum never
    /// depends on an empty or unreachable node. Updates a known server's changed address.
    pub async fn add_server(&self, id: u64, addr: String) -> Result<()> {
        let n = self.node.as_ref().ok_or(Error::NoServers)?;
        n.admin(Request::AddVoter { id, addr }).await
    }

    /// Removes a server from the voters (graceful leave or force-leave).
    pub async fn remove_server(&self, id: u64) -> Result<()> {
        let n = self.node.as_ref().ok_or(Error::NoServers)?;
        n.admin(Request::RemoveServer { id }).await
    }

    /// Whether this node is the leader holding a valid lease.
    pub fn is_leader(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.leader_view() == LeaderView::Me)
    }

    /// Resolves once [`Server::is_leader`] holds, at once if it does: the leader's work on
    /// winning an election (registering itself, reconciling members) starts then rather than
    /// on a timer. Never resolves on a client agent.
    pub async fn leading(&self) {
        let Some(n) = &self.node else {
            return std::future::pending().await;
        };
        // Leadership arrives as a server metrics update, the quorum ack behind the lease as a
        // full one. Only a leader waits on the full metrics, which change with every
        // heartbeat's replication progress; a follower waits for its role to change.
        let mut role = n.raft.server_metrics();
        let mut metrics = n.raft.metrics();
        loop {
            metrics.mark_unchanged();
            if n.leader_view() == LeaderView::Me {
                return;
            }
            let leader = role.borrow_and_update().state == openraft::ServerState::Leader;
            let woke = if leader {
                metrics.changed().await
            } else {
                role.changed().await
            };
            if woke.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The leader's server RPC address (`""` in Consul's reply when unknown), and the voters'.
    pub async fn status(&self) -> Result<(Option<String>, Vec<String>)> {
        let s = match &self.node {
            Some(n) => n.status(),
            None => {
                self.client
                    .call(Request::Status, FORWARD_TIMEOUT, pick!(Response::Status))
                    .await?
            }
        };
        Ok((s.leader, s.peers))
    }

    /// Voter IDs and addresses of the current membership.
    pub fn voters(&self) -> BTreeMap<u64, String> {
        match &self.node {
            Some(n) => n.voters(),
            None => BTreeMap::new(),
        }
    }

    /// Every server in the Raft configuration, voter or not: ID and address.
    pub fn raft_members(&self) -> BTreeMap<u64, String> {
        match &self.node {
            Some(n) => n
                .metrics
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, b)| (*id, b.addr.clone()))
                .collect(),
            None => BTreeMap::new(),
        }
    }

    /// Resolves once another server refuses this one as retired by `muster recover`: its
    /// Raft data predates the recovery and must not be served or replicated. Records that
    /// for the next start (which sets the data aside and rejoins afresh) and returns why.
    /// Never resolves on a client agent.
    pub async fn retired(&self) -> String {
        let Some(n) = &self.node else {
            return std::future::pending().await;
        };
        let mut rx = n.retired_by.clone();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(w) => w.clone().unwrap_or_default(),
            Err(_) => return std::future::pending().await,
        };
        data_dir::record_retired(n.log_db.clone(), why.clone()).await;
        why
    }

    /// The Raft configuration (`operator raft list-peers`): this server's view, or a server's
    /// for a client agent; unless `stale`, caught up with the leader first.
    pub async fn raft_configuration(&self, stale: bool) -> Result<RaftConfiguration> {
        match &self.node {
            Some(n) => n.raft_configuration(stale).await,
            None => self
                .client
                .call(
                    Request::RaftConfiguration(stale),
                    FORWARD_TIMEOUT,
                    pick!(Response::RaftConfiguration),
                )
                .await?
                .map_err(unwire),
        }
    }

    /// Removes a server from the Raft configuration (on the leader; forwarded otherwise).
    /// Refuses the last voter.
    pub async fn remove_peer(&self, id: u64) -> Result<()> {
        self.operator(Request::RemovePeer { id }).await
    }

    /// Hands leadership to voter `to`, or to the most caught-up other voter.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<()> {
        self.operator(Request::TransferLeader { to }).await
    }

    async fn operator(&self, req: Request) -> Result<()> {
        match &self.node {
            Some(n) => n.admin(req).await,
            None => self
                .client
                .call(req, FORWARD_TIMEOUT * 6, pick!(Response::Done))
                .await?
                .map_err(unwire),
        }
    }

    /// Tells autopilot which servers gossip knows and their status (the agent's reconcile
    /// loop, on every pass). A no-op on a client agent.
    pub fn set_known_servers(&self, servers: Vec<KnownServer>) {
        if let Some(n) = &self.node {
            n.set_known_servers(servers);
        }
    }

    /// The leader's autopilot health state (`/v1/operator/autopilot/health`), asked of the
    /// leader from elsewhere.
    pub async fn autopilot_health(&self) -> Result<AutopilotHealth> {
        match &self.node {
            Some(n) => n.autopilot_health().await,
            None => self
                .client
                .call(
                    Request::AutopilotHealth,
                    FORWARD_TIMEOUT,
                    pick!(Response::AutopilotHealth),
                )
                .await?
                .map_err(unwire),
        }
    }

    /// This server's Raft figures; `None` on a client agent.
    pub fn raft_stats(&self) -> Option<RaftStats> {
        self.node.as_ref().map(|n| n.raft_stats())
    }

    /// Stops the Raft node, waiting for it to finish.
    pub async fn shutdown(&self) {
        if let Some(n) = &self.node {
            let _ = n.raft.shutdown().await;
        }
    }
}
