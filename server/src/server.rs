//! `Server`: the one handle the agent, HTTP and DNS use to write and read replicated state.
//! On a server agent it drives the local Raft node; on a client agent it forwards every
//! request to a known server over the server RPC port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use redb::Database;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{Command, CommandResult, Consistency, Query, QueryResult, ReadMeta};
use crate::raft::files::{
    self, guarded, ServerFile, LOG_FILE, SERVER_FILE, SNAPSHOT_FILE, STATE_FILE,
};
use crate::raft::log_store::{get_meta, put_meta, scan, LogStore, IDENTITY, RETIRED_BY};
use crate::raft::network::Network;
use crate::raft::rpc::{Request, Response, RpcClient, StatusReply, WireError};
use crate::raft::state_machine::{check_snapshot_file, StateMachine};
use crate::raft::types::{Batch, CommitHook, NodeId, Raft};
use crate::store::watch::{Topic, WatchHub};
use crate::store::{Catalog, LockDelays};
use crate::{Error, Result, ServerConfig};

/// Timeout of one forwarded request between servers.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most commands packed into one log entry.
const MAX_BATCH: usize = 1024;
/// Log entries proposed but not yet committed, at most, on a single-server cluster: later
/// writes queue up and form the next, larger batch meanwhile. With more voters the leader
/// keeps one: since the leader's own append runs beside replication (vendor/openraft), 1 to 4
/// in flight gave the same PUT rate in the 3-server bench (5.4-6.0k PUT/s, paired runs),
/// and one costs the least CPU per PUT (213-217 us against 226-241 us).
const BATCHES_IN_FLIGHT: usize = 2;

/// Forwarding RPCs to the leader in flight, at most. More than `BATCHES_IN_FLIGHT`: a
/// forwarded write should join the leader's queue at once, where it is batched anyway,
/// rather than wait out a whole round trip for a free slot here.
const FORWARDS_IN_FLIGHT: usize = 16;

/// What became of one command handed to the batcher.
enum Outcome {
    Done(CommandResult),
    NotLeader,
    Failed(String),
}

type Pending = (Command, tokio::sync::oneshot::Sender<Outcome>);

/// Group commit: packs every queued command into one Raft entry, with a few entries in flight.
async fn batch_loop(raft: Raft, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // Each entry takes one permit alone, or all of them with followers to wait for.
        let sole_voter = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .nth(1)
            .is_none();
        let need = if sole_voter {
            1
        } else {
            BATCHES_IN_FLIGHT as u32
        };
        let Ok(permit) = permits.clone().acquire_many_owned(need).await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut cmds = vec![first.0];
        let mut waiters = vec![first.1];
        while cmds.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((c, w)) => {
                    cmds.push(c);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        tokio::spawn(propose(raft.clone(), cmds, waiters, permit));
    }
}

/// Proposes one batch. Its unconditional KV writes are answered, and its in-flight slot
/// freed, as soon as a quorum holds the entry: the entry is then as durable as Raft makes
/// anything, and reads wait for the apply (see `Local::read_index`). Applying a batch thus
/// overlaps the next one's log append, and a round trip no longer includes an apply.
async fn propose(
    raft: Raft,
    cmds: Vec<Command>,
    waiters: Vec<tokio::sync::oneshot::Sender<Outcome>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let early: Vec<bool> = cmds.iter().map(Command::succeeds_unconditionally).collect();
    let mut waiters: Vec<_> = waiters.into_iter().map(Some).collect();
    let mut permit = Some(permit);
    let (hook, committed) = CommitHook::new();
    let write = raft.client_write(Batch {
        cmds,
        on_commit: Some(hook),
    });
    tokio::pin!(write);
    let res = tokio::select! {
        biased;
        res = &mut write => res,
        Ok(index) = committed => {
            drop(permit.take());
            for (w, _) in waiters.iter_mut().zip(&early).filter(|(_, &e)| e) {
                if let Some(w) = w.take() {
                    let _ = w.send(Outcome::Done(CommandResult {
                        index,
                        success: true,
                        txn: None,
                    }));
                }
            }
            write.await
        }
    };
    drop(permit);
    match res {
        Ok(resp) => {
            for ((w, r), e) in waiters.into_iter().zip(resp.data.0).zip(early) {
                if e && !r.success {
                    tracing::error!(
                        index = r.index,
                        "a write acknowledged at commit failed to apply"
                    );
                }
                if let Some(w) = w {
                    let _ = w.send(Outcome::Done(r));
                }
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Outcome::NotLeader);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Outcome::Failed(msg.clone()));
            }
        }
    }
}

/// What this server believes about leadership right now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeaderView {
    Me,
    Other(String),
    Unknown,
}

/// A Raft server's identity, stored in `raft.redb` and checked at every start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) node_name: String,
    pub(crate) datacenter: String,
    pub(crate) node_id: u64,
}

/// The local Raft node and its stores.
struct Local {
    id: NodeId,
    config: ServerConfig,
    raft: Raft,
    catalog: Catalog,
    applied: watch::Receiver<u64>,
    /// The latest commit index this server knows of (the log store's).
    committed: Arc<AtomicU64>,
    rpc: RpcClient,
    /// When this follower last accepted entries or a heartbeat from a leader.
    leader_contact: Mutex<Option<Instant>>,
    /// (term, last log index when this leader first served a read in that term): everything
    /// up to that index must be applied before the leader serves a read, or a leader that just
    /// restarted could answer from a state machine still replaying its log.
    leader_floor: Mutex<(u64, u64)>,
    /// Commands waiting to be packed into the next log entry.
    batcher: tokio::sync::mpsc::Sender<Pending>,
    /// Raft IDs whose Raft requests are refused (the state machine's retired servers).
    retired: Arc<RwLock<BTreeSet<NodeId>>>,
    /// Why a peer refused this server as retired, once one did.
    retired_by: watch::Receiver<Option<String>>,
    log_db: Arc<Database>,
    /// Commands waiting to be forwarded to the leader, many per RPC.
    forwarder: tokio::sync::mpsc::Sender<Forward>,
    metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    hub: Arc<WatchHub>,
    lock_delays: Arc<LockDelays>,
    /// Session TTL deadlines, kept by the leader only (as Consul): a new leader starts every
    /// session's TTL afresh.
    session_deadlines: Mutex<std::collections::HashMap<String, Instant>>,
}

/// Read and write access to the replicated state. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    local: Option<Arc<Local>>,
    rpc: RpcClient,
    /// Server RPC addresses a client agent forwards to (learned through gossip).
    servers: Arc<RwLock<Vec<String>>>,
    /// How long a server may hold a forwarded request while it waits for a leader.
    hold: Duration,
    /// Why the local server stopped serving, once it has (see [`Server::fatal`]).
    fatal: Option<watch::Receiver<Option<String>>>,
}

/// Reports the first reason the server cannot go on; later ones follow from it.
fn report_fatal(tx: &watch::Sender<Option<String>>, why: String) {
    tx.send_if_modified(|slot| {
        if slot.is_some() {
            return false;
        }
        tracing::error!(reason = %why, "the server cannot go on; stopping");
        *slot = Some(why);
        true
    });
}

/// Spawns the server's tasks that must run as long as it does: one that ends or panics
/// before shutdown is reported as fatal.
struct Essential {
    fatal: Arc<watch::Sender<Option<String>>>,
    cancel: CancellationToken,
}

impl Essential {
    fn spawn(
        &self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let task = tokio::spawn(task);
        let (fatal, cancel) = (self.fatal.clone(), self.cancel.clone());
        tokio::spawn(async move {
            let res = task.await;
            if cancel.is_cancelled() {
                return;
            }
            let why = match res {
                Err(e) if e.is_panic() => format!("the server's {name} task panicked"),
                _ => format!("the server's {name} task stopped"),
            };
            report_fatal(&fatal, why);
        });
    }
}

/// Watches the Raft core, the log writer and the checkpointer until shutdown, and reports
/// the first of them to stop.
async fn watch_core(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    mut log: watch::Receiver<Option<String>>,
    mut checkpoint: watch::Receiver<Option<String>>,
    fatal: Arc<watch::Sender<Option<String>>>,
    cancel: CancellationToken,
) {
    let why = loop {
        let core = match &metrics.borrow().running_state {
            Err(openraft::error::Fatal::Stopped) => Some("the Raft core stopped".to_string()),
            Err(e) => Some(format!("the Raft core stopped: {e}")),
            Ok(()) => None,
        };
        if let Some(why) = log.borrow().clone() {
            break format!("the Raft log writer stopped: {why}");
        }
        if let Some(why) = checkpoint.borrow().clone() {
            break format!("the state checkpointer stopped: {why}");
        }
        if let Some(why) = core {
            break why;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = metrics.changed() => if r.is_err() {
                // The core's task ended without reporting: it panicked.
                if cancel.is_cancelled() {
                    return;
                }
                break "the Raft core panicked".to_string();
            },
            // A closed channel only disables its branch: the core's end is seen above.
            Ok(()) = log.changed() => {}
            Ok(()) = checkpoint.changed() => {}
        }
    };
    if !cancel.is_cancelled() {
        report_fatal(&fatal, why);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens a redb file with a bounded page cache (redb's default is 1 GiB). redb panics on
/// some damaged files: callers at start run this under [`files::guarded`].
pub(crate) fn open_db(path: &Path, cache_bytes: usize) -> Result<Arc<Database>> {
    match Database::builder().set_cache_size(cache_bytes).create(path) {
        Ok(db) => Ok(Arc::new(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::DataDirInUse(
            path.parent().unwrap_or(path).to_path_buf(),
        )),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => Err(Error::Open {
            path: path.to_path_buf(),
            reason: files::describe_io(&e.to_string()),
        }),
        Err(e) => Err(Error::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The Raft files of a data dir, which a retired server sets aside.
const RAFT_FILES: [&str; 4] = [LOG_FILE, STATE_FILE, SNAPSHOT_FILE, SERVER_FILE];

/// For a server another one refused as retired (see [`Server::retired`]): moves its Raft
/// files, closed, into `superseded-<unix time>/` in the data dir, kept for inspection, so
/// that it starts with no Raft state and rejoins the cluster as a new member with the data
/// that cluster holds.
fn set_aside_retired(dir: &Path, why: &str) -> Result<()> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("superseded-{secs}"));
    let moved = std::fs::create_dir_all(&aside).and_then(|()| {
        for f in RAFT_FILES {
            match std::fs::rename(dir.join(f), aside.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    });
    moved.map_err(|e| Error::Open {
        path: aside.clone(),
        reason: format!("cannot set aside the Raft data of a retired server: {e}"),
    })?;
    tracing::warn!(
        reason = %why,
        moved_to = %aside.display(),
        "this server was retired by a recovery elsewhere; its old Raft data is set aside and it \
         rejoins as a new member"
    );
    Ok(())
}

/// Opens the data dir's files, checking that they belong together (see [`files`]): the Raft
/// ID, the log store and the state machine. A lost or damaged `state.redb` or `snapshot.bin`
/// is set aside and rebuilt; a lost or damaged `raft.redb` refuses the start.
fn open_data_dir(config: &ServerConfig) -> Result<(NodeId, Arc<Database>, LogStore, StateMachine)> {
    let dir = &config.data_dir;
    let raft_path = dir.join(LOG_FILE);
    let sm_path = dir.join(STATE_FILE);
    let snap_path = dir.join(SNAPSHOT_FILE);
    let st = |path: &Path| {
        let path = path.to_path_buf();
        move |e: openraft::StorageError<u64>| Error::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        }
    };
    let open_log = || -> Result<(Arc<Database>, Option<String>)> {
        guarded(&raft_path, || {
            let db = open_db(&raft_path, 4 << 20)?;
            let retired = get_meta::<String>(&db, RETIRED_BY).map_err(st(&raft_path))?;
            Ok((db, retired))
        })
    };

    let mut marker = files::read_server_file(dir)?;
    let log_held = files::size(&raft_path)?.is_some_and(|n| n > 0);
    if !log_held {
        // An emptied file is as good as a missing one: redb would make a new log of it.
        let what = match files::size(&raft_path)? {
            Some(_) => "raft.redb is empty",
            None => "raft.redb is missing",
        };
        if let Some(m) = &marker {
            return Err(files::refuse(
                dir,
                format!(
                    "{what}, but {SERVER_FILE} says this data dir belongs to Raft server {}: \
                     its Raft log, and any acknowledged write only it held, are gone",
                    m.raft_id
                ),
            ));
        }
        let beside: Vec<&str> = [STATE_FILE, SNAPSHOT_FILE]
            .into_iter()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !beside.is_empty() {
            return Err(files::refuse(
                dir,
                format!(
                    "{what} beside {}: the Raft log, and the writes after the last \
                     checkpoint, are gone",
                    beside.join(" and ")
                ),
            ));
        }
    }

    let (mut log_db, retired) = open_log()?;
    if let Some(why) = retired {
        drop(log_db);
        set_aside_retired(dir, &why)?;
        marker = None;
        log_db = open_log()?.0;
    }
    let scan = guarded(&raft_path, || {
        let scan = scan(&log_db).map_err(st(&raft_path))?;
        let ident = get_meta::<Identity>(&log_db, IDENTITY).map_err(st(&raft_path))?;
        Ok((scan, ident))
    });
    let (scan, ident) = scan?;
    let agent_id = files::agent_node_id(dir);
    let id = match ident {
        Some(found) => {
            if found.node_name != config.node_name || found.datacenter != config.datacenter {
                return Err(Error::DataDirMismatch {
                    dir: dir.clone(),
                    found_node: found.node_name,
                    found_dc: found.datacenter,
                    node: config.node_name.clone(),
                    dc: config.datacenter.clone(),
                });
            }
            match &marker {
                Some(m) if m.raft_id != found.node_id => {
                    return Err(files::refuse(
                        dir,
                        format!(
                            "{SERVER_FILE} says Raft server {}, but raft.redb belongs to Raft \
                             server {}: the files come from two different servers",
                            m.raft_id, found.node_id
                        ),
                    ));
                }
                Some(ServerFile {
                    node_id: Some(was), ..
                }) if agent_id.as_ref().is_some_and(|a| a != was) => {
                    return Err(files::refuse(
                        dir,
                        format!(
                            "node-id holds {}, but this server's Raft data was made with node \
                             ID {was}: if node-id was lost, write {was} back into it",
                            agent_id.unwrap_or_default()
                        ),
                    ));
                }
                Some(_) => {}
                // A data dir from before server.json existed.
                None => files::write_server_file(
                    dir,
                    &ServerFile {
                        raft_id: found.node_id,
                        node_id: agent_id,
                    },
                )?,
            }
            found.node_id
        }
        None => {
            if let Some(m) = &marker {
                return Err(files::refuse(
                    dir,
                    format!(
                        "raft.redb holds no Raft identity (it was replaced or emptied), but \
                         {SERVER_FILE} says this data dir belongs to Raft server {}",
                        m.raft_id
                    ),
                ));
            }
            if sm_path.exists() || snap_path.exists() {
                return Err(files::refuse(
                    dir,
                    "raft.redb holds no Raft identity (it was replaced or emptied) beside \
                     state.redb or snapshot.bin"
                        .into(),
                ));
            }
            let ident = Identity {
                node_name: config.node_name.clone(),
                datacenter: config.datacenter.clone(),
                node_id: rand::random::<u64>() >> 1,
            };
            // The identity first: a crash before server.json is written is caught up above.
            put_meta(&log_db, IDENTITY, &ident).map_err(|e| Error::Open {
                path: raft_path.clone(),
                reason: files::describe_io(&e.to_string()),
            })?;
            files::write_server_file(
                dir,
                &ServerFile {
                    raft_id: ident.node_id,
                    node_id: agent_id,
                },
            )?;
            ident.node_id
        }
    };
    let log_store = LogStore::new(log_db.clone(), &raft_path).map_err(st(&raft_path))?;

    // The snapshot is rebuilt from state.redb when missing, so a damaged one is set aside.
    if let Err(e) = check_snapshot_file(&snap_path) {
        let to = files::set_aside(&snap_path)?;
        tracing::warn!(
            error = %e,
            moved_to = %to.display(),
            "{} is damaged: set aside; it is rebuilt from state.redb",
            snap_path.display()
        );
    }
    // Written only by checkpoints, and read only at start: a small cache does.
    let open_state = || {
        guarded(&sm_path, || {
            let db = open_db(&sm_path, 1 << 20)?;
            StateMachine::new(db, &sm_path, snap_path.clone()).map_err(st(&sm_path))
        })
    };
    let state_existed = sm_path.exists();
    let sm = match open_state() {
        Ok(sm) => sm,
        Err(e @ Error::Damaged { .. }) => {
            let to = files::set_aside(&sm_path)?;
            tracing::warn!(
                error = %e,
                moved_to = %to.display(),
                "{} is damaged: set aside; rebuilding the state from the Raft log and snapshot",
                sm_path.display()
            );
            open_state()?
        }
        Err(e) => return Err(e),
    };
    if !state_existed && scan.last.is_some() {
        tracing::warn!(
            "{} is missing: rebuilding the state from the Raft log and snapshot",
            sm_path.display()
        );
    }
    // The log before `last_purged` is gone: the state must start at least there.
    let applied = sm.last_applied();
    if applied.map(|l| l.index) < scan.last_purged.map(|l| l.index) {
        return Err(Error::Damaged {
            path: sm_path,
            reason: format!(
                "it was lost and cannot be rebuilt: it reaches log index {}, snapshot.bin is \
                 missing or behind, and raft.redb was compacted up to index {}",
                applied.map_or(0, |l| l.index),
                scan.last_purged.map_or(0, |l| l.index)
            ),
        });
    }
    Ok((id, log_db, log_store, sm))
}

fn wire(e: Error) -> WireError {
    match e {
        Error::NoLeader => WireError::NoLeader,
        Error::InvalidRequest(m) => WireError::Invalid(m),
        e => WireError::Other(e.to_string()),
    }
}

fn unwire(e: WireError) -> Error {
    match e {
        WireError::NoLeader => Error::NoLeader,
        WireError::Invalid(m) => Error::InvalidRequest(m),
        WireError::Other(m) => Error::Storage(m),
    }
}

impl Server {
    /// Opens (or creates) the data dir, starts the Raft node and serves the server RPC port
    /// on `listener` until `cancel` fires. The cluster is not formed yet: see
    /// [`Server::bootstrap`] and [`Server::add_voter`].
    pub async fn start(
        config: ServerConfig,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Open {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })?;
        let (id, log_db, log_store, sm) = open_data_dir(&config)?;
        let committed = log_store.committed_index();
        let log_broken = log_store.broken();
        let checkpoint_broken = sm.broken();
        let catalog = sm.catalog();
        let applied = sm.applied_rx();
        let hub = sm.hub.clone();
        let lock_delays = sm.lock_delays.clone();
        let retired = sm.retired.clone();

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
        let rpc = RpcClient::new(config.bind_ip);
        let hold = config.rpc_hold_timeout;
        let (retired_tx, retired_by) = watch::channel(None);
        let network = Network {
            rpc: rpc.clone(),
            retired: retired_tx,
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
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(MAX_BATCH * BATCHES_IN_FLIGHT);
        essential.spawn("write batcher", batch_loop(raft.clone(), batch_rx));
        let (fwd_tx, fwd_rx) = tokio::sync::mpsc::channel(MAX_BATCH * BATCHES_IN_FLIGHT);
        essential.spawn("write forwarder", forward_loop(rpc.clone(), fwd_rx));
        let local = Arc::new(Local {
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
            rpc: rpc.clone(),
            leader_contact: Mutex::new(None),
            leader_floor: Mutex::new((0, 0)),
            retired,
            retired_by,
            log_db,
        });
        essential.spawn(
            "session reaper",
            session_reaper(local.clone(), cancel.clone()),
        );
        essential.spawn(
            "tombstone reaper",
            tombstone_reaper(local.clone(), cancel.clone()),
        );
        essential.spawn(
            "server RPC listener",
            accept_loop(local.clone(), listener, cancel.clone()),
        );
        {
            let raft = local.raft.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                let _ = raft.shutdown().await;
            });
        }
        Ok(Server {
            local: Some(local),
            rpc,
            servers: Arc::default(),
            hold,
            fatal: Some(fatal),
        })
    }

    /// A handle for a client agent: no local state, every request goes to a server.
    pub fn client() -> Server {
        Self::client_bound(None, Duration::from_secs(7))
    }

    /// [`Server::client`] whose connections leave from `bind` (the agent's `-bind` address),
    /// allowing servers `hold` (their `rpc_hold_timeout`) to wait for a leader.
    pub fn client_bound(bind: Option<std::net::IpAddr>, hold: Duration) -> Server {
        Server {
            local: None,
            rpc: RpcClient::new(bind),
            servers: Arc::default(),
            hold,
            fatal: None,
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
        *self.servers.write().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    pub fn is_server(&self) -> bool {
        self.local.is_some()
    }

    /// The local state machine, on a server. Reads through it see local state only: call
    /// [`Server::barrier`] first for the consistency a request asked for.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.local.as_ref().map(|l| &l.catalog)
    }

    /// The advertised server RPC address, on a server.
    pub fn rpc_addr(&self) -> Option<String> {
        self.local.as_ref().map(|l| l.config.advertise_rpc.clone())
    }

    /// Asks another server for its view of the leader and voters (used before bootstrapping,
    /// to join an existing cluster instead of forming a second one).
    pub async fn remote_status(&self, addr: &str) -> Result<(Option<String>, Vec<String>)> {
        match self
            .rpc
            .call(addr, &Request::Status, Duration::from_secs(2))
            .await
        {
            Ok(Response::Status(s)) => Ok((s.leader, s.peers)),
            Ok(_) => Err(Error::Storage("unexpected reply".into())),
            Err(e) => Err(Error::Rpc {
                addr: addr.to_string(),
                reason: e.0,
            }),
        }
    }

    /// The last index applied to local state (on a server): nothing read from it can have
    /// changed while this stays the same.
    pub fn applied_index(&self) -> Option<u64> {
        self.local.as_ref().map(|l| *l.applied.borrow())
    }

    /// This server's Raft node ID.
    pub fn node_id(&self) -> Option<u64> {
        self.local.as_ref().map(|l| l.id)
    }

    async fn client_call(&self, req: Request) -> Result<Response> {
        self.client_call_timeout(req, FORWARD_TIMEOUT).await
    }

    /// Calls a server from a client agent, trying each of the others in turn when one is
    /// unreachable. A server holds a read or write for up to its `rpc_hold_timeout` while it
    /// waits for a leader, so the call allows for that on top of `timeout`.
    async fn client_call_timeout(&self, req: Request, timeout: Duration) -> Result<Response> {
        let mut servers = self
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if servers.is_empty() {
            return Err(Error::NoServers);
        }
        let start = rand::random_range(0..servers.len());
        servers.rotate_left(start);
        let mut last = Error::NoServers;
        for addr in servers {
            match self.rpc.call(&addr, &req, timeout + self.hold).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Error::Rpc { addr, reason: e.0 },
            }
        }
        Err(last)
    }

    /// Applies a command through Raft, forwarding to the leader as needed. Waits up to
    /// `leader_wait` for a leader during an election, then fails with [`Error::NoLeader`].
    pub async fn write(&self, cmd: Command) -> Result<CommandResult> {
        match &self.local {
            Some(l) => l.write(cmd, true).await,
            None => match self.client_call(Request::Write(cmd)).await? {
                Response::Write(r) => r.map_err(unwire),
                _ => Err(Error::Storage("unexpected reply".into())),
            },
        }
    }

    /// Makes local state as fresh as `mode` asks, and tells how fresh it is. `index` in the
    /// returned meta is zero: the caller fills it from the data it reads.
    pub async fn barrier(&self, mode: Consistency) -> Result<ReadMeta> {
        self.barrier_within(mode, self.hold).await
    }

    /// [`Server::barrier`], waiting at most `hold` for a leader instead of the configured
    /// `rpc_hold_timeout`: for DNS, whose clients give up after a few seconds.
    pub async fn barrier_within(&self, mode: Consistency, hold: Duration) -> Result<ReadMeta> {
        match &self.local {
            Some(l) => l.barrier_within(mode, hold).await,
            None => Err(Error::InvalidRequest(
                "no local state on a client agent".into(),
            )),
        }
    }

    /// Runs a read at the given consistency, locally on a server or on a server for a client.
    pub async fn read(&self, mode: Consistency, q: Query) -> Result<(QueryResult, ReadMeta)> {
        match &self.local {
            Some(l) => l.read(mode, &q).await,
            None => match self.client_call(Request::Read(mode, q)).await? {
                Response::Read(r) => r.map_err(unwire),
                _ => Err(Error::Storage("unexpected reply".into())),
            },
        }
    }

    /// What [`Server::read`] would report for `q` (index, leader), without the data: lets a
    /// caller holding an encoded answer for that index skip the read.
    pub async fn read_meta(&self, mode: Consistency, q: Query) -> Result<ReadMeta> {
        match &self.local {
            Some(l) => {
                let mut meta = l.barrier(mode).await?;
                meta.index = l.catalog.query_index(&q)?;
                Ok(meta)
            }
            None => match self.client_call(Request::QueryIndex(mode, q)).await? {
                Response::Meta(r) => r.map_err(unwire),
                _ => Err(Error::Storage("unexpected reply".into())),
            },
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
        match &self.local {
            Some(l) => l.read_blocking(mode, &q, min_index, wait).await,
            None => {
                let req = Request::ReadBlocking(mode, q, min_index, wait.as_millis() as u64);
                match self
                    .client_call_timeout(req, wait + FORWARD_TIMEOUT)
                    .await?
                {
                    Response::Read(r) => r.map_err(unwire),
                    _ => Err(Error::Storage("unexpected reply".into())),
                }
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
        match &self.local {
            Some(l) => l.wait_index(mode, &q, min_index, wait).await,
            None => {
                let req = Request::WaitIndex(mode, q, min_index, wait.as_millis() as u64);
                match self
                    .client_call_timeout(req, wait + FORWARD_TIMEOUT)
                    .await?
                {
                    Response::Meta(r) => r.map_err(unwire),
                    _ => Err(Error::Storage("unexpected reply".into())),
                }
            }
        }
    }

    /// Restarts a session's TTL on the leader. `Ok(false)`: no such session.
    pub async fn session_renew(&self, id: &str) -> Result<bool> {
        let req = Request::SessionRenew(id.to_string());
        match &self.local {
            Some(l) => match l.leader_view() {
                LeaderView::Me => l.session_renew(id),
                LeaderView::Other(addr) => {
                    match self.rpc.call(&addr, &req, FORWARD_TIMEOUT).await {
                        Ok(Response::Renewed(r)) => r.map_err(unwire),
                        Ok(_) => Err(Error::Storage("unexpected reply".into())),
                        Err(e) => Err(Error::Rpc { addr, reason: e.0 }),
                    }
                }
                LeaderView::Unknown => Err(Error::NoLeader),
            },
            None => match self.client_call(req).await? {
                Response::Renewed(r) => r.map_err(unwire),
                _ => Err(Error::Storage("unexpected reply".into())),
            },
        }
    }

    /// Forms a new cluster from the given servers (ID → RPC address). A no-op when this node
    /// already belongs to a cluster, so every server may call it with the same set.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<()> {
        let l = self.local.as_ref().ok_or(Error::NoServers)?;
        if l.raft
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
        match l.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(_)) => Ok(()),
            Err(e) => Err(Error::Stopped(e.to_string())),
        }
    }

    /// Whether this server has joined or formed a cluster.
    pub async fn is_initialized(&self) -> bool {
        match &self.local {
            Some(l) => l.raft.is_initialized().await.unwrap_or(false),
            None => false,
        }
    }

    /// Adds a server as a voter (on the leader; forwarded otherwise). Waits for it to catch up
    /// as a learner first so the quorum never depends on an empty node.
    pub async fn add_voter(&self, id: u64, addr: String) -> Result<()> {
        let l = self.local.as_ref().ok_or(Error::NoServers)?;
        l.admin(Request::AddVoter { id, addr }).await
    }

    /// Removes a server from the voters (graceful leave or force-leave).
    pub async fn remove_server(&self, id: u64) -> Result<()> {
        let l = self.local.as_ref().ok_or(Error::NoServers)?;
        l.admin(Request::RemoveServer { id }).await
    }

    /// Whether this node is the leader holding a valid lease.
    pub fn is_leader(&self) -> bool {
        self.local
            .as_ref()
            .is_some_and(|l| l.leader_view() == LeaderView::Me)
    }

    /// The leader's server RPC address (`""` in Consul's reply when unknown), and the voters'.
    pub async fn status(&self) -> Result<(Option<String>, Vec<String>)> {
        match &self.local {
            Some(l) => {
                let s = l.status();
                Ok((s.leader, s.peers))
            }
            None => match self.client_call(Request::Status).await? {
                Response::Status(s) => Ok((s.leader, s.peers)),
                _ => Err(Error::Storage("unexpected reply".into())),
            },
        }
    }

    /// Voter IDs and addresses of the current membership.
    pub fn voters(&self) -> BTreeMap<u64, String> {
        match &self.local {
            Some(l) => l.voters(),
            None => BTreeMap::new(),
        }
    }

    /// Resolves once another server refuses this one as retired by `muster recover`: its
    /// Raft data predates the recovery and must not be served or replicated. Records that
    /// for the next start (which sets the data aside and rejoins afresh) and returns why.
    /// Never resolves on a client agent.
    pub async fn retired(&self) -> String {
        let Some(l) = &self.local else {
            return std::future::pending().await;
        };
        let mut rx = l.retired_by.clone();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(w) => w.clone().unwrap_or_default(),
            Err(_) => return std::future::pending().await,
        };
        let db = l.log_db.clone();
        let mark = why.clone();
        let put = move || put_meta(&db, RETIRED_BY, &mark).map_err(|e| e.to_string());
        let done = tokio::task::spawn_blocking(put).await;
        if let Err(e) = done.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::error!(error = %e, "cannot record the retirement");
        }
        why
    }

    /// Stops the Raft node, waiting for it to finish.
    pub async fn shutdown(&self) {
        if let Some(l) = &self.local {
            let _ = l.raft.shutdown().await;
        }
    }
}

/// A write on its way to the leader at `addr`; `None` back means "could not deliver".
type Forward = (
    String,
    Command,
    tokio::sync::oneshot::Sender<Option<Result<CommandResult, WireError>>>,
);

/// Ships queued writes to the leader, many per RPC, a few RPCs in flight.
async fn forward_loop(rpc: RpcClient, mut rx: tokio::sync::mpsc::Receiver<Forward>) {
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
                    Err(e) if e.1 => {
                        tracing::debug!(error = %e, %addr, "forwarded writes lost in flight");
                        let why = WireError::Other(format!(
                            "the leader {addr} failed while handling this write ({}); it may \
                             or may not have been applied",
                            e.0
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

async fn accept_loop(local: Arc<Local>, listener: TcpListener, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((s, _)) => {
                let l = local.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = crate::raft::rpc::serve_conn(s, |req| {
                            let l = l.clone();
                            async move { l.handle(req).await }
                        }) => {}
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

/// On the leader: destroys sessions whose TTL (doubled, as Consul's grace) ran out.
async fn session_reaper(local: Arc<Local>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if local.leader_view() != LeaderView::Me {
            lock(&local.session_deadlines).clear();
            continue;
        }
        let Ok(sessions) = local.catalog.sessions() else {
            continue;
        };
        let now = Instant::now();
        let expired: Vec<String> = {
            let mut d = lock(&local.session_deadlines);
            d.retain(|id, _| sessions.iter().any(|s| &s.id == id));
            sessions
                .iter()
                .filter(|s| s.ttl_ms > 0)
                .filter(|s| {
                    let ttl = Duration::from_millis(s.ttl_ms * 2);
                    *d.entry(s.id.clone()).or_insert(now + ttl) <= now
                })
                .map(|s| s.id.clone())
                .collect()
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired; invalidating");
            if let Err(e) = local
                .write(Command::SessionDestroy { id: id.clone() }, false)
                .await
            {
                tracing::warn!(session = %id, error = %e, "cannot invalidate expired session");
            } else {
                lock(&local.session_deadlines).remove(&id);
            }
        }
    }
}

/// On the leader: drops KV tombstones older than `tombstone_ttl`, as Consul's tombstone GC.
/// Without it every deleted key (each `muster lock` run leaves one) stays in the state forever.
async fn tombstone_reaper(local: Arc<Local>, cancel: CancellationToken) {
    let ttl = local.config.tombstone_ttl;
    // Consul reaps in 30 s steps; short TTLs (tests) get proportionally finer ones.
    let step = (ttl / 30).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(step);
    // (when, applied index then), oldest first: the newest mark older than the TTL bounds
    // which tombstones may go. Kept in memory only; a new leader starts counting afresh.
    let mut marks: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut reaped = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if local.leader_view() != LeaderView::Me {
            marks.clear();
            continue;
        }
        let now = Instant::now();
        marks.push_back((now, *local.applied.borrow()));
        let mut upto = None;
        while let Some(&(at, index)) = marks.front() {
            if now.duration_since(at) < ttl {
                break;
            }
            upto = Some(index);
            marks.pop_front();
        }
        let Some(upto) = upto.filter(|&u| u > reaped) else {
            continue;
        };
        match local.catalog.has_tombstones_upto(upto) {
            Ok(false) => reaped = upto,
            Ok(true) => match local.write(Command::KvReapTombstones { upto }, false).await {
                Ok(_) => {
                    tracing::debug!(upto, "reaped KV tombstones");
                    reaped = upto;
                }
                Err(e) => tracing::warn!(error = %e, "cannot reap KV tombstones"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read KV tombstones"),
        }
    }
}

impl Local {
    fn session_renew(&self, id: &str) -> Result<bool> {
        let Some(s) = self.catalog.session(id)? else {
            return Ok(false);
        };
        if s.ttl_ms > 0 {
            let until = Instant::now() + Duration::from_millis(s.ttl_ms * 2);
            lock(&self.session_deadlines).insert(id.to_string(), until);
        }
        Ok(true)
    }

    async fn read_blocking(
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
    async fn wait_index(
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

    fn lease(&self) -> Duration {
        self.config.election_timeout_max * 2
    }

    fn voters(&self) -> BTreeMap<u64, String> {
        let m = self.metrics.borrow();
        let mem = m.membership_config.membership();
        mem.voter_ids()
            .filter_map(|id| mem.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect()
    }

    fn leader_view(&self) -> LeaderView {
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

    fn status(&self) -> StatusReply {
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
    async fn settle(&self, step: Duration) {
        let mut rx = self.raft.metrics();
        let _ = tokio::time::timeout(step, rx.changed()).await;
    }

    async fn write(&self, cmd: Command, forward: bool) -> Result<CommandResult> {
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
    async fn read_index(&self, mode: Consistency) -> Result<u64> {
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
    async fn barrier(&self, mode: Consistency) -> Result<ReadMeta> {
        self.barrier_within(mode, self.config.rpc_hold_timeout)
            .await
    }

    async fn barrier_within(&self, mode: Consistency, hold: Duration) -> Result<ReadMeta> {
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
                        Ok(_) => {
                            return Err(Error::Storage(format!(
                                "server {addr} answered a read-index request with another reply"
                            )))
                        }
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

    async fn read(&self, mode: Consistency, q: &Query) -> Result<(QueryResult, ReadMeta)> {
        let mut meta = self.barrier(mode).await?;
        let (res, index) = self.catalog.query(q)?;
        meta.index = index;
        Ok((res, meta))
    }

    async fn admin(&self, req: Request) -> Result<()> {
        let deadline = Instant::now() + self.config.leader_wait;
        loop {
            match self.leader_view() {
                LeaderView::Me => return self.admin_local(&req).await,
                LeaderView::Other(addr) => {
                    match self.rpc.call(&addr, &req, FORWARD_TIMEOUT * 6).await {
                        Ok(Response::Done(Err(WireError::NoLeader))) => {}
                        Ok(Response::Done(r)) => return r.map_err(unwire),
                        Ok(_) => return Err(Error::Storage("unexpected reply".into())),
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

    async fn admin_local(&self, req: &Request) -> Result<()> {
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
                if known.is_some_and(|n| n.addr != *addr) {
                    // The server came back on another address: update it in place.
                    tracing::info!(id, %addr, "server address changed; updating raft membership");
                    let set = ChangeMembers::SetNodes(BTreeMap::from([(*id, node.clone())]));
                    self.raft.change_membership(set, true).await.map_err(fail)?;
                    if voters.contains_key(id) {
                        return Ok(());
                    }
                }
                tracing::info!(id, %addr, "adding server as voter");
                self.raft.add_learner(*id, node, true).await.map_err(fail)?;
                let ids: BTreeSet<u64> = voters.keys().copied().chain([*id]).collect();
                self.raft
                    .change_membership(ids, false)
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
            _ => Err(Error::InvalidRequest("not an admin request".into())),
        }
    }

    fn is_retired(&self, id: NodeId) -> bool {
        self.retired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// A refusal for a Raft request from a retired server, or `None` to serve it.
    fn refuse_retired(&self, vote: &crate::raft::types::Vote) -> Option<Response> {
        let from = vote.leader_id().voted_for()?;
        if !self.is_retired(from) {
            return None;
        }
        tracing::warn!(
            id = from,
            "refused a Raft request from a server retired by `muster recover`"
        );
        Some(Response::Retired(format!(
            "server {} ({}) refuses Raft requests from Raft ID {from}: `muster recover` replaced \
             the membership that ID belongs to, so this server's log predates the recovery",
            self.config.node_name, self.config.advertise_rpc
        )))
    }

    async fn handle(&self, req: Request) -> Response {
        let vote = match &req {
            Request::AppendEntries(r) => Some(&r.vote),
            Request::Vote(r) => Some(&r.vote),
            Request::InstallSnapshot(r) => Some(&r.vote),
            _ => None,
        };
        if let Some(refusal) = vote.and_then(|v| self.refuse_retired(v)) {
            return refusal;
        }
        match req {
            Request::AppendEntries(r) => {
                let res = self.raft.append_entries(r).await;
                if matches!(&res, Ok(openraft::raft::AppendEntriesResponse::Success)) {
                    *lock(&self.leader_contact) = Some(Instant::now());
                }
                Response::AppendEntries(res)
            }
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                let res = self.raft.install_snapshot(r).await;
                if res.is_ok() {
                    *lock(&self.leader_contact) = Some(Instant::now());
                }
                Response::InstallSnapshot(res)
            }
            Request::Write(cmd) => Response::Write(self.write(cmd, true).await.map_err(wire)),
            Request::ApplyMany(cmds) => {
                let writes = cmds.into_iter().map(|c| self.write(c, false));
                let results = futures::future::join_all(writes).await;
                Response::WriteMany(results.into_iter().map(|r| r.map_err(wire)).collect())
            }
            Request::ReadIndex(mode) => {
                Response::ReadIndex(self.read_index(mode).await.map_err(wire))
            }
            Request::Read(mode, q) => Response::Read(self.read(mode, &q).await.map_err(wire)),
            Request::QueryIndex(mode, q) => Response::Meta(
                async {
                    let mut meta = self.barrier(mode).await?;
                    meta.index = self.catalog.query_index(&q)?;
                    Ok(meta)
                }
                .await
                .map_err(wire),
            ),
            Request::WaitIndex(mode, q, min, wait_ms) => {
                let wait = Duration::from_millis(wait_ms);
                Response::Meta(self.wait_index(mode, &q, min, wait).await.map_err(wire))
            }
            Request::ReadBlocking(mode, q, min, wait_ms) => {
                let wait = Duration::from_millis(wait_ms);
                Response::Read(self.read_blocking(mode, &q, min, wait).await.map_err(wire))
            }
            Request::SessionRenew(id) => Response::Renewed(match self.leader_view() {
                LeaderView::Me => self.session_renew(&id).map_err(wire),
                _ => Err(WireError::NoLeader),
            }),
            r @ (Request::AddVoter { .. } | Request::RemoveServer { .. }) => {
                Response::Done(self.admin_local(&r).await.map_err(wire))
            }
            Request::Status => Response::Status(self.status()),
        }
    }
}
