//! The Raft log, vote and committed index in one redb file (`raft.redb`).

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::types::{decode, encode, sto_err, Entry, LogId, StorageError, TypeConfig, Vote};

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
    committed: Arc<std::sync::Mutex<Option<LogId>>>,
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
        })
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
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mem = *self.committed.lock().unwrap_or_else(|p| p.into_inner());
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
        let rows = encode_rows(entries)?;
        let committed = *self.committed.lock().unwrap_or_else(|p| p.into_inner());
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
