//! The Raft log, vote and committed index in one redb file (`raft.redb`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::types::{sto_err, CommitHook, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::codec::{decode, encode};
use crate::sync::lock;

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
    /// Entries appended but not yet written to `raft.redb`. A leader replicates entries
    /// while its own append is still on its way to disk, so they must be readable at once.
    unflushed: Arc<Mutex<BTreeMap<u64, Entry>>>,
    /// The log writer task: every write to `raft.redb` goes through it, in order.
    writer: tokio::sync::mpsc::UnboundedSender<Job>,
    /// Why the writer stopped taking writes, once it has: the server cannot go on without it.
    broken: tokio::sync::watch::Receiver<Option<String>>,
    /// This server's Raft id, once known: see [`LogStore::read_vote`].
    node_id: Option<u64>,
}

/// The error for a write the writer task can no longer take: the Raft node is shutting down.
fn writer_stopped() -> StorageError {
    sto_err("the raft log writer has stopped")
}

type TxnFn = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<(), StorageError> + Send>;

/// Log entries to write, with the committed id known when they were submitted.
struct Append {
    rows: Vec<(u64, Vec<u8>)>,
    ids: Vec<LogId>,
    committed: Option<Vec<u8>>,
    callback: LogFlushed<TypeConfig>,
}

/// One write to `raft.redb`, done by the writer task in the order submitted.
enum Job {
    Append(Append),
    /// Anything else (vote, truncation, purge): one durable transaction.
    Run {
        f: TxnFn,
        done: tokio::sync::oneshot::Sender<Result<(), StorageError>>,
    },
}

/// Writes jobs one at a time, in submission order, each on a blocking thread (a task rather
/// than a thread of its own: the blocking pool's threads and their malloc arenas exist
/// anyway). Appends that queued up meanwhile share one transaction and one fsync: group
/// commit across log entries, on top of the batching into entries. After a failed write every
/// later one fails too: writing past a lost append would leave a hole in the log.
async fn writer_loop(
    db: Arc<Database>,
    path: PathBuf,
    unflushed: Arc<Mutex<BTreeMap<u64, Entry>>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>,
    report: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut next = None;
    let mut broken = Broken {
        path,
        why: None,
        report,
    };
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Run { f, done } => {
                let res = commit(&db, f, &mut broken).await;
                let _ = done.send(res);
            }
            Job::Append(first) => {
                let mut appends = vec![first];
                while let Ok(job) = rx.try_recv() {
                    match job {
                        Job::Append(a) => appends.push(a),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let written: Vec<LogId> = appends.iter().flat_map(|a| a.ids.clone()).collect();
                let committed = appends.iter().rev().find_map(|a| a.committed.clone());
                let (rows, callbacks): (Vec<_>, Vec<_>) =
                    appends.into_iter().map(|a| (a.rows, a.callback)).unzip();
                let res = commit(
                    &db,
                    Box::new(move |txn| {
                        for rows in &rows {
                            insert_rows(txn, rows)?;
                        }
                        if let Some(c) = &committed {
                            let mut m = txn.open_table(META).map_err(sto_err)?;
                            m.insert(COMMITTED, c.as_slice()).map_err(sto_err)?;
                        }
                        Ok(())
                    }),
                    &mut broken,
                )
                .await;
                if res.is_ok() {
                    // Readers find these in the file now. An entry replaced meanwhile (a
                    // truncation and a new append at its index) stays for its own write.
                    let mut u = lock(&unflushed);
                    for id in &written {
                        if u.get(&id.index).is_some_and(|e| e.log_id == *id) {
                            u.remove(&id.index);
                        }
                    }
                }
                for cb in callbacks {
                    match &res {
                        Ok(()) => cb.log_io_completed(Ok(())),
                        Err(e) => cb.log_io_completed(Err(std::io::Error::other(e.to_string()))),
                    }
                }
            }
        }
    }
}

/// The writer's failure, once it failed: reported once to the server, which stops.
struct Broken {
    path: PathBuf,
    why: Option<String>,
    report: tokio::sync::watch::Sender<Option<String>>,
}

/// One durable transaction, on a blocking thread (redb writes block on fsync), unless an
/// earlier one failed.
async fn commit(db: &Arc<Database>, f: TxnFn, broken: &mut Broken) -> Result<(), StorageError> {
    if let Some(why) = &broken.why {
        return Err(sto_err(format!("an earlier raft log write failed: {why}")));
    }
    let db = db.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut txn = db.begin_write().map_err(sto_err)?;
        txn.set_durability(Durability::Immediate);
        f(&txn)?;
        txn.commit().map_err(sto_err)
    })
    .await
    .map_err(sto_err)
    .and_then(|r| r);
    if let Err(e) = &res {
        // redb refuses every later write after an I/O error, and a write past a lost append
        // would leave a hole in the log: only a restart recovers.
        let why = format!(
            "cannot write {}: {}",
            broken.path.display(),
            super::files::describe_io(&e.to_string())
        );
        broken.report.send_replace(Some(why.clone()));
        broken.why = Some(why.clone());
        return Err(sto_err(why));
    }
    res
}

impl LogStore {
    /// The store over `db`, the open `path`.
    pub(crate) fn new(db: Arc<Database>, path: &Path) -> Result<Self, StorageError> {
        let txn = db.begin_write().map_err(sto_err)?;
        txn.open_table(LOGS).map_err(sto_err)?;
        txn.open_table(META).map_err(sto_err)?;
        txn.commit().map_err(sto_err)?;
        let unflushed: Arc<Mutex<BTreeMap<u64, Entry>>> = Arc::default();
        let (writer, rx) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::try_current().map_err(sto_err)?;
        let (report, broken) = tokio::sync::watch::channel(None);
        runtime.spawn(writer_loop(
            db.clone(),
            path.to_path_buf(),
            unflushed.clone(),
            rx,
            report,
        ));
        Ok(LogStore {
            db,
            committed: Arc::default(),
            committed_index: Arc::default(),
            proposed: Arc::default(),
            unflushed,
            writer,
            broken,
            node_id: None,
        })
    }

    /// The store for the Raft node `id`, which never resumes a leadership it held before a
    /// restart (see `read_vote`).
    pub(crate) fn for_node(mut self, id: u64) -> Self {
        self.node_id = Some(id);
        self
    }

    /// Resolves with why the log writer stopped, if it ever does.
    pub(crate) fn broken(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.broken.clone()
    }

    /// The latest committed index this server knows of, shared with readers.
    pub(crate) fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    /// Appends entries and returns once they are on disk: for outage recovery, which writes
    /// the log while no Raft node runs.
    pub(crate) async fn append_durable(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let rows = encode_rows(&entries)?;
        self.write(move |txn| insert_rows(txn, &rows)).await
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        get_meta(&self.db, key)
    }

    /// Runs a durable write transaction on the writer task, after every write submitted
    /// before it.
    async fn write<F>(&self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), StorageError> + Send + 'static,
    {
        let (done, rx) = tokio::sync::oneshot::channel();
        let job = Job::Run {
            f: Box::new(f),
            done,
        };
        self.writer.send(job).map_err(|_| writer_stopped())?;
        rx.await.map_err(|_| writer_stopped())?
    }
}

fn encode_rows<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    entries
        .into_iter()
        .map(|e| Ok((e.log_id.index, encode(e)?)))
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
    let table = match txn.open_table(META) {
        Ok(t) => t,
        // A new file: LogStore::new creates the table.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(sto_err(e)),
    };
    match table.get(key).map_err(sto_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// What a start-up read of the whole of `raft.redb` found.
pub(crate) struct Scan {
    pub(crate) last_purged: Option<LogId>,
    pub(crate) last: Option<LogId>,
}

/// Reads every row of `raft.redb` once, so that damage anywhere in it shows at start, named,
/// rather than as a failed read in the middle of replication: the log is what every
/// acknowledged write depends on, and is never rebuilt from anything else.
pub(crate) fn scan(db: &Database) -> Result<Scan, StorageError> {
    let _: Option<Vote> = get_meta(db, VOTE)?;
    let _: Option<Option<LogId>> = get_meta(db, COMMITTED)?;
    let last_purged = get_meta::<Option<LogId>>(db, PURGED)?.flatten();
    let txn = db.begin_read().map_err(sto_err)?;
    let table = match txn.open_table(LOGS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(Scan {
                last_purged,
                last: last_purged,
            })
        }
        Err(e) => return Err(sto_err(e)),
    };
    let mut last = last_purged;
    let mut expect = last_purged.map_or(0, |l| l.index + 1);
    for item in table.iter().map_err(sto_err)? {
        let (k, v) = item.map_err(sto_err)?;
        let e: Entry = decode(v.value())
            .map_err(|e| sto_err(format!("log entry {}: {}", k.value(), sto_err(e))))?;
        // Index 0 is openraft's first entry when a cluster forms; a purge may leave none.
        if e.log_id.index != k.value() || (k.value() != expect && last.is_some()) {
            return Err(sto_err(format!(
                "log entry {} is out of place (expected {expect})",
                k.value()
            )));
        }
        expect = k.value() + 1;
        last = Some(e.log_id);
    }
    Ok(Scan { last_purged, last })
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
        // The unflushed entries first: one the writer removes after this look was written
        // to the file before it was removed, so the read below finds it.
        let mut found: BTreeMap<u64, Entry> = lock(&self.unflushed)
            .range(range.clone())
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        let txn = self.db.begin_read().map_err(sto_err)?;
        let table = txn.open_table(LOGS).map_err(sto_err)?;
        for item in table.range(range).map_err(sto_err)? {
            let (k, v) = item.map_err(sto_err)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(k.value()) {
                slot.insert(decode(v.value())?);
            }
        }
        Ok(found.into_values().collect())
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
        let pending = lock(&self.unflushed)
            .last_key_value()
            .map(|(_, e)| e.log_id);
        let last = last.max(pending);
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
        self.write(move |txn| {
            let mut t = txn.open_table(META).map_err(sto_err)?;
            t.insert(VOTE, bytes.as_slice()).map_err(sto_err)?;
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let mut vote: Option<Vote> = self.get_meta(VOTE)?;
        // openraft resumes leadership at once when the saved vote is this server's own and
        // committed. A leader replicates entries before its own append reaches the disk, so
        // after a crash its log may lack entries its followers hold under the same term: as
        // leader again it would give their log ids to new entries, and the followers, seeing
        // the ids match, would keep the old ones. The logs diverge. Read back as uncommitted,
        // the vote makes it stand for election in a new term, which only a server holding
        // every committed entry can win.
        if let (Some(v), Some(id)) = (vote.as_mut(), self.node_id) {
            if v.committed && v.leader_id().voted_for() == Some(id) {
                v.committed = false;
            }
        }
        Ok(vote)
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
        // Submitted to the writer, not waited for: the callback reports the flush. One
        // transaction and one fsync for the batch (and for any appends queued behind it).
        let entries: Vec<Entry> = entries.into_iter().collect();
        let rows = encode_rows(&entries)?;
        let committed = *lock(&self.committed);
        let committed = committed.map(|c| encode(&Some(c))).transpose()?;
        let ids = entries.iter().map(|e| e.log_id).collect();
        {
            let mut proposed = lock(&self.proposed);
            let mut unflushed = lock(&self.unflushed);
            for e in entries {
                if let EntryPayload::Normal(b) = &e.payload {
                    if let Some(hook) = &b.on_commit {
                        proposed.insert(e.log_id.index, hook.clone());
                    }
                }
                unflushed.insert(e.log_id.index, e);
            }
        }
        let job = Job::Append(Append {
            rows,
            ids,
            committed,
            callback,
        });
        self.writer.send(job).map_err(|_| writer_stopped())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Entries this server proposed from here on will never commit: dropping their hooks
        // leaves their writers to the error client_write returns.
        lock(&self.proposed).split_off(&log_id.index);
        lock(&self.unflushed).split_off(&log_id.index);
        self.write(move |txn| {
            let mut t = txn.open_table(LOGS).map_err(sto_err)?;
            t.retain_in(log_id.index.., |_, _| false).map_err(sto_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&Some(log_id))?;
        {
            let mut unflushed = lock(&self.unflushed);
            let keep = unflushed.split_off(&(log_id.index + 1));
            *unflushed = keep;
        }
        self.write(move |txn| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails stops the writer: a later append must not land after a lost one.
    #[tokio::test]
    async fn after_a_failed_write_every_later_write_fails() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().map_err(sto_err)?;
        let db = Database::create(dir.path().join("raft.redb")).map_err(sto_err)?;
        let mut store = LogStore::new(Arc::new(db), &dir.path().join("raft.redb"))?;
        let failed = store.write(|_| Err(sto_err("disk gone"))).await;
        assert!(failed.is_err());
        let vote = Vote::new(1, 1);
        let later = store.save_vote(&vote).await;
        let msg = later.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("an earlier raft log write failed"), "{msg}");
        assert_eq!(store.read_vote().await?, None);
        Ok(())
    }

    /// A leader's own committed vote reads back uncommitted after a restart, so it stands for
    /// election rather than resuming a term its log may no longer match; a vote for another
    /// server reads back as saved.
    #[tokio::test]
    async fn a_restarted_leader_does_not_resume_its_term() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().map_err(sto_err)?;
        let path = dir.path().join("raft.redb");
        let db = Arc::new(Database::create(&path).map_err(sto_err)?);
        let mut own = Vote::new(7, 1);
        own.commit();
        LogStore::new(db.clone(), &path)?.save_vote(&own).await?;
        let read = LogStore::new(db.clone(), &path)?
            .for_node(1)
            .read_vote()
            .await?;
        assert_eq!(read, Some(Vote::new(7, 1)));
        assert_eq!(
            LogStore::new(db.clone(), &path)?.read_vote().await?,
            Some(own)
        );
        let read = LogStore::new(db, &path)?.for_node(2).read_vote().await?;
        assert_eq!(read, Some(own), "a follower keeps its committed vote");
        Ok(())
    }
}
