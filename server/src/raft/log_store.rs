//! The Raft log, vote and committed index in one redb file (`raft.redb`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::types::{
    decode, encode, sto_err, CommitHook, Entry, LogId, StorageError, TypeConfig, Vote,
};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
pub(crate) const IDENTITY: &str = "identity";
/// Set when another server refused this one as retired by `muster recover`: why. At the next
/// start the Raft files are set aside and the server rejoins as a new member.
pub(crate) const RETIRED_BY: &str = "retired_by";

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    /// The latest committed log id, persisted with the next append rather than on its own:
    /// a stale value only means re-applying a few entries after a crash.
    committed: Arc<Mutex<Option<LogId>>>,
    /// The index of `committed`, for readers outside Raft: a leader's default-mode read
    /// must observe every write it has acknowledged, and it acknowledges at commit.
    committed_index: Arc<AtomicU64>,
    /// Entries this server proposed as leader, by index, until they commit (or are
    /// truncated away): their hooks fire in `save_committed`.
    proposed: Arc<Mutex<BTreeMap<u64, CommitHook>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Result<Self, StorageError> {
        let txn = db.begin_write().map_err(sto_err)?;
        txn.open_table(LOGS).map_err(sto_err)?;
        txn.open_table(META).map_err(sto_err)?;
        txn.commit().map_err(sto_err)?;
        Ok(LogStore {
            db,
            committed: Arc::default(),
            committed_index: Arc::default(),
            proposed: Arc::default(),
        })
    }

    /// The latest committed index this server knows of, shared with readers.
    pub(crate) fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    /// Appends entries and returns once they are on disk: for outage recovery, which writes
    /// the log while no Raft node runs.
    pub(crate) async fn append_durable(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let rows = encode_rows(entries)?;
        self.write(Durability::Immediate, move |txn| insert_rows(txn, &rows))
            .await
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        get_meta(&self.db, key)
    }

    /// Runs a write transaction on a blocking thread: redb writes block on fsync.
    async fn write<F>(&self, durability: Durability, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(sto_err)?;
            txn.set_durability(durability);
            f(&txn)?;
            txn.commit().map_err(sto_err)
        })
        .await
        .map_err(sto_err)?
    }
}

fn encode_rows(
    entries: impl IntoIterator<Item = Entry>,
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    entries
        .into_iter()
        .map(|e| Ok((e.log_id.index, encode(&e)?)))
        .collect()
}

fn insert_rows(txn: &redb::WriteTransaction, rows: &[(u64, Vec<u8>)]) -> Result<(), StorageError> {
    let mut t = txn.open_table(LOGS).map_err(sto_err)?;
    for (i, b) in rows {
        t.insert(*i, b.as_slice()).map_err(sto_err)?;
    }
    Ok(())
}

pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let txn = db.begin_read().map_err(sto_err)?;
    let table = txn.open_table(META).map_err(sto_err)?;
    match table.get(key).map_err(sto_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn put_meta<T: serde::Serialize>(
    db: &Database,
    key: &str,
    value: &T,
) -> Result<(), StorageError> {
    let mut txn = db.begin_write().map_err(sto_err)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut table = txn.open_table(META).map_err(sto_err)?;
        table
            .insert(key, encode(value)?.as_slice())
            .map_err(sto_err)?;
    }
    txn.commit().map_err(sto_err)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(sto_err)?;
        let table = txn.open_table(LOGS).map_err(sto_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(sto_err)? {
            let (_, v) = item.map_err(sto_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta::<Option<LogId>>(PURGED)?.flatten();
        let txn = self.db.begin_read().map_err(sto_err)?;
        let table = txn.open_table(LOGS).map_err(sto_err)?;
        let last = match table.last().map_err(sto_err)? {
            Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A vote must be durable before it is acted on, or a server could vote twice in a term.
        let bytes = encode(vote)?;
        self.write(Durability::Immediate, move |txn| {
            let mut t = txn.open_table(META).map_err(sto_err)?;
            t.insert(VOTE, bytes.as_slice()).map_err(sto_err)?;
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *lock(&self.committed) = committed;
        if let Some(c) = committed {
            self.committed_index.fetch_max(c.index, Ordering::Release);
            // openraft calls this as soon as a quorum holds the entries, before applying them.
            let fired = {
                let mut proposed = lock(&self.proposed);
                let later = proposed.split_off(&(c.index + 1));
                std::mem::replace(&mut *proposed, later)
            };
            for (index, hook) in fired {
                hook.fire(index);
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mem = *lock(&self.committed);
        match mem {
            Some(c) => Ok(Some(c)),
            None => Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten()),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One transaction and one fsync for the whole batch: this is the group commit.
        let entries: Vec<Entry> = entries.into_iter().collect();
        for e in &entries {
            if let EntryPayload::Normal(b) = &e.payload {
                if let Some(hook) = &b.on_commit {
                    lock(&self.proposed).insert(e.log_id.index, hook.clone());
                }
            }
        }
        let rows = encode_rows(entries)?;
        let committed = *lock(&self.committed);
        let committed = committed.map(|c| encode(&Some(c))).transpose()?;
        let res = self
            .write(Durability::Immediate, move |txn| {
                insert_rows(txn, &rows)?;
                if let Some(c) = &committed {
                    let mut m = txn.open_table(META).map_err(sto_err)?;
                    m.insert(COMMITTED, c.as_slice()).map_err(sto_err)?;
                }
                Ok(())
            })
            .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Entries this server proposed from here on will never commit: dropping their hooks
        // leaves their writers to the error client_write returns.
        lock(&self.proposed).split_off(&log_id.index);
        self.write(Durability::Immediate, move |txn| {
            let mut t = txn.open_table(LOGS).map_err(sto_err)?;
            t.retain_in(log_id.index.., |_, _| false).map_err(sto_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&Some(log_id))?;
        self.write(Durability::Immediate, move |txn| {
            {
                let mut m = txn.open_table(META).map_err(sto_err)?;
                m.insert(PURGED, bytes.as_slice()).map_err(sto_err)?;
            }
            let mut t = txn.open_table(LOGS).map_err(sto_err)?;
            t.retain_in(..=log_id.index, |_, _| false)
                .map_err(sto_err)?;
            Ok(())
        })
        .await
    }
}
