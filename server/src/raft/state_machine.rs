//! The state machine: the tables in memory ([`crate::store::mem`]), checkpointed to
//! `state.redb`, and its snapshots.
//!
//! A batch is applied in memory and answered from there. A checkpointer thread writes what
//! changed since its last checkpoint to `state.redb` every [`CHECKPOINT_EVERY`] (5 s), in one
//! durable transaction. After a crash the tables are loaded from the last checkpoint and
//! openraft re-applies the committed log from there. Every snapshot is taken right after a
//! checkpoint of the same state, so the log is never purged past what is on disk.
//!
//! The tables live in memory rather than in redb because a redb write copies a B-tree page or
//! two of `state.redb` on every server, while a checkpoint writes a key once however often it
//! changed in between, and a write costs a map insert.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use imbl::ordmap::DiffItem;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, Durability, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::*;
use crate::codec::{decode, encode};
use crate::metrics::ServerMetrics;
use crate::store::mem::{put_raw, Live, Tables, WriteTxn};
use crate::store::tables::*;
use crate::store::watch::WatchHub;
use crate::store::{
    apply_command, rebuild_session_keys, retired_servers, upgrade_rows, Catalog, Changes,
    LockDelays,
};

/// What a snapshot file holds: the table rows plus the metadata they correspond to.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    tables: Vec<Vec<(String, Vec<u8>)>>,
    indexes: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Clone)]
pub(crate) struct StateMachine {
    live: Arc<Live>,
    checkpoint: Arc<Checkpoint>,
    snapshot_path: PathBuf,
    /// Bumped with the last applied index after every applied batch.
    applied: watch::Sender<u64>,
    /// Blocking queries waiting on what the next batches change.
    pub(crate) hub: Arc<WatchHub>,
    /// Keys whose lock was released by a session invalidation, until when they stay unlockable.
    pub(crate) lock_delays: Arc<LockDelays>,
    /// Raft IDs of retired servers, as in the `RETIRED` table.
    pub(crate) retired: Arc<RwLock<BTreeSet<NodeId>>>,
    /// Snapshot timings, and the server's other figures.
    pub(crate) metrics: Arc<ServerMetrics>,
}

/// How often the checkpointer writes the applied state to `state.redb`. It bounds what a
/// restart re-applies from the log (5 s of writes), not what survives a crash: the log has
/// every committed write. Under a stream of writes to random keys a checkpoint rewrites most
/// of the file's pages however long the interval, so a longer interval costs less CPU.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// `state.redb`, and the tables as its last checkpoint wrote them.
struct Checkpoint {
    db: Arc<Database>,
    path: PathBuf,
    written: Mutex<Tables>,
    /// Why checkpoints stopped, once one failed: redb refuses every write after an I/O
    /// error, so the server cannot go on (nor build a snapshot) without a restart.
    broken: watch::Sender<Option<String>>,
}

impl Checkpoint {
    /// Writes what differs between the last checkpoint and `to` in one durable transaction.
    /// The maps share every node a checkpoint did not change, and the diff skips those.
    /// A state no newer than the file's is not written: a snapshot that finds the
    /// checkpointer got there first needs nothing more on disk.
    fn write(&self, to: &Tables) -> Result<(), StorageError> {
        let mut written = crate::sync::lock(&self.written);
        if to.last_applied <= written.last_applied {
            return Ok(());
        }
        self.write_diff(&written, to).map_err(|e| {
            let why = format!(
                "cannot write {}: {}",
                self.path.display(),
                super::files::describe_io(&e.to_string())
            );
            self.broken.send_replace(Some(why.clone()));
            sto_err(why)
        })?;
        *written = to.clone();
        Ok(())
    }

    fn write_diff(&self, written: &Tables, to: &Tables) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(sto_err)?;
        txn.set_durability(Durability::Immediate);
        for def in ALL_TABLES {
            let mut t = txn.open_table(file_table(def)).map_err(sto_err)?;
            for d in written.table(def).diff(to.table(def)) {
                match d {
                    DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => {
                        t.insert(&**k, &**v).map_err(sto_err)?;
                    }
                    DiffItem::Remove(k, _) => {
                        t.remove(&**k).map_err(sto_err)?;
                    }
                }
            }
        }
        {
            let mut t = txn.open_table(INDEXES).map_err(sto_err)?;
            for d in written.indexes.diff(&to.indexes) {
                match d {
                    DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => {
                        t.insert(k.as_str(), *v).map_err(sto_err)?;
                    }
                    DiffItem::Remove(k, _) => {
                        t.remove(k.as_str()).map_err(sto_err)?;
                    }
                }
            }
            let mut meta = txn.open_table(SM_META).map_err(sto_err)?;
            meta.insert(LAST_APPLIED, encode(&to.last_applied)?.as_slice())
                .map_err(sto_err)?;
            meta.insert(MEMBERSHIP, encode(&to.membership)?.as_slice())
                .map_err(sto_err)?;
        }
        txn.commit().map_err(sto_err)
    }
}

/// Checkpoints the applied state every [`CHECKPOINT_EVERY`] while it changes, on a thread of
/// its own so that the fsync never holds up a batch. It holds the state machine weakly: once
/// the server drops it, `state.redb` closes and the thread ends.
fn spawn_checkpointer(
    live: Weak<Live>,
    checkpoint: Weak<Checkpoint>,
    mut applied: watch::Receiver<u64>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("checkpoint".into())
        .spawn(move || loop {
            std::thread::sleep(CHECKPOINT_EVERY);
            let (Some(live), Some(checkpoint)) = (live.upgrade(), checkpoint.upgrade()) else {
                return;
            };
            if applied.has_changed().unwrap_or(false) {
                applied.mark_unchanged();
                if let Err(e) = checkpoint.write(&live.snapshot()) {
                    // Reported through `broken`: the server stops.
                    tracing::error!(error = %e, "state checkpoint failed");
                    return;
                }
            }
        })?;
    Ok(())
}

/// The last applied log id and the membership applied with it, as checkpointed in `db`.
pub(crate) fn read_applied(
    db: &Database,
) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let txn = db.begin_read().map_err(sto_err)?;
    let t = txn.open_table(SM_META).map_err(sto_err)?;
    let last = match t.get(LAST_APPLIED).map_err(sto_err)? {
        Some(v) => decode(v.value())?,
        None => None,
    };
    let membership = match t.get(MEMBERSHIP).map_err(sto_err)? {
        Some(v) => decode(v.value())?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

/// Reads the last checkpoint of `db` into memory, creating its tables on a new file.
fn load(db: &Database) -> Result<Tables, StorageError> {
    let txn = db.begin_write().map_err(sto_err)?;
    for t in ALL_TABLES {
        txn.open_table(file_table(t)).map_err(sto_err)?;
    }
    txn.open_table(SM_META).map_err(sto_err)?;
    txn.open_table(INDEXES).map_err(sto_err)?;
    txn.commit().map_err(sto_err)?;

    let mut tables = Tables::default();
    (tables.last_applied, tables.membership) = read_applied(db)?;
    let txn = db.begin_read().map_err(sto_err)?;
    for def in ALL_TABLES {
        let t = txn.open_table(file_table(def)).map_err(sto_err)?;
        let rows = tables.table_mut(def);
        for item in t.iter().map_err(sto_err)? {
            let (k, v) = item.map_err(sto_err)?;
            put_raw(rows, k.value(), v.value());
        }
    }
    let t = txn.open_table(INDEXES).map_err(sto_err)?;
    for item in t.iter().map_err(sto_err)? {
        let (k, v) = item.map_err(sto_err)?;
        tables.indexes.insert(k.value().to_string(), v.value());
    }
    upgrade_rows(&mut tables)?;
    Ok(tables)
}

/// Applies `entries` (at least one) to a copy of `base`: the results, the tables to publish
/// and what changed.
fn apply_entries(
    base: &Tables,
    entries: Vec<Entry>,
) -> Result<(Vec<BatchResult>, Tables, Changes), StorageError> {
    let txn = WriteTxn::new(base);
    let mut results = Vec::with_capacity(entries.len());
    let mut changes = Changes::default();
    let mut last = None;
    let mut membership = None;
    for e in entries {
        let index = e.log_id.index;
        txn.set_term(e.log_id.leader_id.term);
        last = Some(e.log_id);
        match e.payload {
            EntryPayload::Blank => results.push(BatchResult::default()),
            EntryPayload::Normal(Batch { cmds, .. }) => {
                let mut out = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    out.push(apply_command(&txn, index, cmd, &mut changes)?);
                }
                results.push(BatchResult(out));
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(e.log_id), m));
                results.push(BatchResult::default());
            }
        }
    }
    let membership = membership.unwrap_or_else(|| base.membership.clone());
    Ok((results, txn.finish(last, membership), changes))
}

/// Reads the snapshot file at `path`, if there is one.
fn read_snapshot_file(path: &Path) -> Result<Option<SnapshotFile>, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(sto_err(format!("cannot read {}: {e}", path.display()))),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|e| sto_err(format!("{} is damaged: {}", path.display(), sto_err(e))))
}

/// Checks that the snapshot file at `path`, if any, reads whole; returns what it describes.
pub(crate) fn check_snapshot_file(path: &Path) -> Result<Option<SnapshotMeta>, StorageError> {
    Ok(read_snapshot_file(path)?.map(|f| f.meta))
}

/// The tables a snapshot holds.
fn from_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Tables, StorageError> {
    let parsed: SnapshotData = decode(data)?;
    let mut tables = Tables::default();
    for (def, rows) in DATA_TABLES.iter().zip(parsed.tables) {
        let t = tables.table_mut(*def);
        for (k, v) in rows {
            put_raw(t, &k, &v);
        }
    }
    tables.indexes = parsed.indexes.into_iter().collect();
    tables.last_applied = meta.last_log_id;
    tables.membership = meta.last_membership.clone();
    upgrade_rows(&mut tables)?;
    rebuild_session_keys(&mut tables)?;
    Ok(tables)
}

impl StateMachine {
    /// The state machine over `db` (open at `path`), from its last checkpoint, or from the
    /// snapshot at `snapshot_path` when that is newer: `state.redb` was lost or set aside
    /// and is being rebuilt, and the log before the snapshot may be purged.
    pub(crate) fn new(
        db: Arc<Database>,
        path: &Path,
        snapshot_path: PathBuf,
    ) -> Result<Self, StorageError> {
        let written = load(&db)?;
        let snapshot = read_snapshot_file(&snapshot_path)?
            .filter(|f| f.meta.last_log_id > written.last_applied);
        let mut tables = written.clone();
        let checkpoint = Arc::new(Checkpoint {
            db,
            path: path.to_path_buf(),
            written: Mutex::new(written),
            broken: watch::channel(None).0,
        });
        match snapshot {
            Some(file) => {
                tables = from_snapshot(&file.meta, &file.data)?;
                checkpoint.write(&tables)?;
                tracing::warn!(
                    index = file.meta.last_log_id.map_or(0, |l| l.index),
                    "{} was behind {}: loaded the snapshot into it; the Raft log replays the rest",
                    path.display(),
                    snapshot_path.display()
                );
            }
            // Derived from KV, so rebuilt rather than trusted (files from before it existed).
            None => rebuild_session_keys(&mut tables)?,
        }
        let last = tables.last_applied.map_or(0, |l| l.index);
        let live = Arc::new(Live::default());
        live.publish(tables);
        let sm = StateMachine {
            live: live.clone(),
            checkpoint: checkpoint.clone(),
            snapshot_path,
            applied: watch::channel(last).0,
            hub: Arc::default(),
            lock_delays: Arc::default(),
            retired: Arc::default(),
            metrics: Arc::default(),
        };
        spawn_checkpointer(
            Arc::downgrade(&live),
            Arc::downgrade(&checkpoint),
            sm.applied.subscribe(),
        )
        .map_err(|e| sto_err(format!("cannot start the state checkpointer: {e}")))?;
        sm.load_retired();
        Ok(sm)
    }

    fn load_retired(&self) {
        let ids = retired_servers(self.live.snapshot().table(RETIRED));
        *crate::sync::write(&self.retired) = ids;
    }

    /// Resolves with why checkpoints stopped, if they ever do.
    pub(crate) fn broken(&self) -> watch::Receiver<Option<String>> {
        self.checkpoint.broken.subscribe()
    }

    /// The last applied log id.
    pub(crate) fn last_applied(&self) -> Option<LogId> {
        self.live.snapshot().last_applied
    }

    pub(crate) fn catalog(&self) -> Catalog {
        Catalog::new(self.live.clone())
    }

    pub(crate) fn applied_rx(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Serializes the current state; runs on a blocking thread.
    fn dump(
        live: &Live,
        checkpoint: &Checkpoint,
    ) -> Result<(Option<LogId>, StoredMembership, Vec<u8>), StorageError> {
        let t = live.snapshot();
        // Checkpoint this very state first: the snapshot must never describe state that a
        // crash could take back, since the log before it may be purged.
        checkpoint.write(&t)?;
        let tables = DATA_TABLES
            .iter()
            .map(|def| {
                t.table(*def)
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect()
            })
            .collect();
        let indexes = t.indexes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let data = encode(&SnapshotData { tables, indexes })?;
        Ok((t.last_applied, t.membership, data))
    }

    fn write_snapshot_file(path: &PathBuf, file: &SnapshotFile) -> Result<(), StorageError> {
        let bytes = encode(file)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(sto_err)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(sto_err)?;
        std::fs::rename(&tmp, path).map_err(sto_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (live, checkpoint) = (self.live.clone(), self.checkpoint.clone());
        let path = self.snapshot_path.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (last, membership, data) = Self::dump(&live, &checkpoint)?;
            metrics
                .snapshot_create
                .observe(started.elapsed().as_secs_f64());
            let snapshot_id = match &last {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
                None => format!("0-0-{}", rand::random::<u32>()),
            };
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id,
            };
            let file = SnapshotFile {
                meta: meta.clone(),
                data,
            };
            let started = std::time::Instant::now();
            Self::write_snapshot_file(&path, &file)?;
            metrics
                .snapshot_persist
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(index = last.map_or(0, |l| l.index), "built snapshot");
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(file.data)),
            })
        })
        .await
        .map_err(sto_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let t = self.live.snapshot();
        Ok((t.last_applied, t.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Only this task replaces the live tables, so the copy taken here is still the live
        // one when the batch is published. Applied on a blocking thread: a batch is a map
        // insert per write, but one delete-tree of a big prefix, or the log re-applied after a
        // restart, would hold an async worker for a long time.
        let base = self.live.snapshot();
        let (results, next, changes) =
            tokio::task::spawn_blocking(move || apply_entries(&base, entries))
                .await
                .map_err(sto_err)??;
        let last = next.last_applied.map_or(0, |l| l.index);
        self.live.publish(next);
        self.lock_delays.record(&changes);
        if changes.retired {
            self.load_retired();
        }
        self.applied.send_replace(last);
        if changes.all {
            self.hub.publish_all();
        } else {
            self.hub.publish(&changes);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let tables = from_snapshot(meta, &data)?;
        let checkpoint = self.checkpoint.clone();
        let path = self.snapshot_path.clone();
        let meta = meta.clone();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        // On disk before it is visible, as an applied batch is in the log before it is applied.
        let tables = tokio::task::spawn_blocking(move || {
            checkpoint.write(&tables)?;
            Self::write_snapshot_file(&path, &SnapshotFile { meta, data })?;
            Ok::<_, StorageError>(tables)
        })
        .await
        .map_err(sto_err)??;
        self.live.publish(tables);
        tracing::info!(index, "installed snapshot");
        self.load_retired();
        self.applied.send_replace(index);
        self.hub.publish_all();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(
            read_snapshot_file(&self.snapshot_path)?.map(|file| Snapshot {
                meta: file.meta,
                snapshot: Box::new(Cursor::new(file.data)),
            }),
        )
    }
}
