//! Snapshots of the whole replicated state: the archive `GET /v1/snapshot` streams
//! (`archive.rs`, Consul's shape; `state.rs`, Muster's `state.bin`), what `inspect` reports,
//! and a restore. `consul.rs` reads a Consul 1.x `state.bin` into the same rows.
//!
//! **A restore of any size, atomic through Raft.** The archive is first read whole from a
//! file, as a stream (gzip, tar, `state.bin` a row at a time), checking its sums, format
//! version and every row: a damaged one is refused before anything is proposed. The file is
//! then put through Raft as it is, compressed, in [`Command::SnapshotRestoreChunk`] entries
//! of [`CHUNK_BYTES`] each, staged under a fresh restore ID in the `restore_staging` table,
//! and one [`Command::SnapshotRestoreArchive`] that reads the staged archive and swaps in
//! the tables it holds, in one apply, at one index, on every server
//! (`store/apply/restore.rs`). Readers see the old state until that apply and the new one
//! after; never a mix. The log, the replication and the staging carry the archive's
//! compressed size (a tenth of the state, typically), not the state's.
//!
//! Why staged entries rather than a snapshot installed by openraft: openraft 0.9 installs
//! snapshots only on followers behind the leader's log, never on a leader, and a snapshot
//! installed beside the log would leave log entries after it that describe the old state.
//! Entries are ordered with every other write, and applied by every server, by one that
//! restarts (from the log), and by one that catches up. The staging table is a data table,
//! so a checkpoint and a restart keep what was staged, and openraft's own snapshots carry
//! it to a follower that catches up from one; archives never carry it.
//!
//! Bounds: a chunk (1 MiB) is far below the server RPC frame (64 MiB), and AppendEntries
//! frames of several entries past 8 MiB are cut by the network (openraft's
//! `PayloadTooLarge`), so a follower that is behind receives the chunks a few at a time; an
//! AppendEntries with entries may take 5 s rather than a heartbeat interval
//! (vendor/openraft/MUSTER.md). The commit holds, for a moment, the staged chunks, the new
//! tables and the old ones (still read until it is published): about three times the state.
//!
//! Abandoned restores: chunks and commit must share one leader term, so a leader change
//! never mixes two leaders' views of a restore. A restore that stops half-way (its driver
//! failed, or the leader changed) leaves chunks no commit will use: a new restore's first
//! chunk drops them, a new leader discards them (`server/reapers.rs`), and the commit of a
//! restore whose chunks were dropped fails, changing nothing. A driver whose chunk or commit
//! is refused so starts again (nothing of it applied), [`RESTORE_ATTEMPTS`] times at most.
//! The old single-entry [`Command::SnapshotRestore`], and [`Command::SnapshotRestoreCommit`]
//! of chunks of rows, still apply, from logs that hold them.

mod archive;
mod consul;
mod state;

use std::io::{Read, Write};
use std::path::Path;

pub use archive::ArchiveMeta;

use crate::model::{Command, Consistency, ReadMeta, RestoreState};
use crate::store::mem::Tables;
use crate::{Error, Result, Server};

/// The rows one restore chunk carries, in bytes, about: one MiB, far below the server RPC
/// frame, so that a follower decodes and flushes a chunk's AppendEntries quickly, and a few
/// fit in one.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The largest chunk of rows: a single row past this cannot travel in a frame with its entry.
#[cfg(test)]
const MAX_CHUNK_BYTES: usize = 48 << 20;

/// Why an archive is refused. Nothing is changed by a refused archive.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is damaged: {0}")]
    Corrupt(String),
    #[error("snapshot state format version {0} is not supported (this Muster reads version {v})", v = state::VERSION)]
    Version(u32),
    #[error("cannot read the snapshot: {0}")]
    Io(String),
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Io(why) => Error::Storage(why),
            e => Error::InvalidRequest(e.to_string()),
        }
    }
}

/// A consistent copy of the whole state, to be written as an archive: the tables on a
/// server, the archive a server built on a client agent.
pub struct StateSnapshot {
    source: Source,
}

enum Source {
    Tables(Box<Tables>),
    Archive(Vec<u8>, u64),
}

impl StateSnapshot {
    /// The Raft index the state reflects: the `X-Consul-Index` of `GET /v1/snapshot`.
    pub fn index(&self) -> u64 {
        match &self.source {
            Source::Tables(t) => t.last_applied.map_or(0, |l| l.index),
            Source::Archive(_, index) => *index,
        }
    }

    /// Writes the archive to `out` (a blocking writer; large states take a while).
    pub fn write_archive(&self, mut out: impl Write) -> std::io::Result<()> {
        match &self.source {
            Source::Tables(t) => archive::write(t, out).map(|_| ()),
            Source::Archive(b, _) => out.write_all(b),
        }
    }
}

/// The archive of `tables`, whole, for a client agent (over one RPC frame); `meta` is the
/// read's, from the barrier taken before the tables.
pub(crate) async fn archive_bytes(
    mut meta: ReadMeta,
    tables: Tables,
) -> Result<(Vec<u8>, ReadMeta)> {
    meta.index = tables.last_applied.map_or(0, |l| l.index);
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        archive::write(&tables, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| Error::Storage(e.to_string()))?
    .map_err(|e| Error::Storage(format!("snapshot: {e}")))?;
    Ok((bytes, meta))
}

/// One table of an inspected archive: its name, rows and their encoded size.
#[derive(Debug, Clone)]
pub struct TableCount {
    pub name: String,
    pub count: u64,
    pub size: u64,
}

/// What an archive holds, as `muster snapshot inspect` shows it.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub meta: ArchiveMeta,
    /// "muster" or "consul".
    pub format: &'static str,
    pub tables: Vec<TableCount>,
    /// Consul record types a restore skips, with how many of each.
    pub skipped: Vec<(String, u64)>,
}

/// An archive read, checked and turned into the state a restore writes.
pub struct Restore {
    pub inspection: Inspection,
    pub state: RestoreState,
}

/// A `state.bin` reader with its first bytes put back: Muster's, or Consul's otherwise.
fn state_kind(r: &mut dyn Read) -> Result<(bool, Vec<u8>), SnapshotError> {
    let mut magic = Vec::with_capacity(state::MAGIC.len());
    r.take(state::MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))?;
    Ok((magic == state::MAGIC, magic))
}

fn consul_state(magic: Vec<u8>, r: &mut dyn Read) -> Result<consul::ConsulState, SnapshotError> {
    let mut b = magic;
    r.read_to_end(&mut b)
        .map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))?;
    consul::read(&b)
}

fn table_counts(counts: state::Counts) -> Vec<TableCount> {
    counts
        .into_iter()
        .map(|(name, count, size)| TableCount { name, count, size })
        .collect()
}

/// Reads an archive as a stream, checking its format and (if `checked`: not for a staged
/// archive, checked whole) its sums and that every row would restore, and hands every row to
/// `row` as `(table, key, value)`; what it holds, once read. Muster's `state.bin` is read
/// a row at a time; a Consul one (a migration, small) whole.
fn read_rows(
    r: impl Read,
    checked: bool,
    mut row: impl FnMut(&str, &str, &[u8]) -> Result<(), SnapshotError>,
) -> Result<(Inspection, Vec<(String, u64)>), SnapshotError> {
    let check = |table: &str, v: &[u8]| {
        if !checked {
            return Ok(());
        }
        crate::store::check_row(table, v)
            .map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))
    };
    let (meta, (format, tables, skipped, indexes)) = archive::read_with(r, checked, |r| {
        let (muster, magic) = state_kind(r)?;
        if muster {
            let s = state::scan(
                &mut std::io::BufReader::with_capacity(1 << 16, r),
                |t, k, v| {
                    check(t, v)?;
                    row(t, k, v)
                },
            )?;
            Ok(("muster", table_counts(s.counts), Vec::new(), s.indexes))
        } else {
            let c = consul_state(magic, r)?;
            for (t, rows) in &c.state.tables {
                for (k, v) in rows {
                    check(t, v)?;
                    row(t, k, v)?;
                }
            }
            Ok(("consul", table_counts(c.counts), c.skipped, c.state.indexes))
        }
    })?;
    let inspection = Inspection {
        meta,
        format,
        tables,
        skipped,
    };
    Ok((inspection, indexes))
}

/// Reads an archive (Muster's or Consul's) whole into memory; refuses one that is damaged
/// or of another format version.
pub fn read_archive(bytes: &[u8]) -> std::result::Result<Restore, SnapshotError> {
    let mut state = RestoreState::default();
    let (inspection, indexes) = read_rows(bytes, true, |t, k, v| {
        if state.tables.last().is_none_or(|(n, _)| n != t) {
            state.tables.push((t.to_string(), Vec::new()));
        }
        if let Some((_, rows)) = state.tables.last_mut() {
            rows.push((k.to_string(), v.to_vec()));
        }
        Ok(())
    })?;
    state.indexes = indexes;
    Ok(Restore { inspection, state })
}

/// Reads and checks the archive at `path` as a stream, holding no more than a row of it
/// (or a Consul `state.bin`) at a time: what it holds, or why it is refused.
pub fn inspect_file(path: &Path) -> std::result::Result<Inspection, SnapshotError> {
    let f = std::fs::File::open(path).map_err(|e| SnapshotError::Io(e.to_string()))?;
    Ok(read_rows(f, true, |_, _, _| Ok(()))?.0)
}

/// Reads the archive whose bytes are `parts`, in order (a restore's staged slices), handing
/// every row to `row` as `(table, key, value)`; the table indexes it names. The bytes must
/// have `sha256`, the sum of the file the leader checked whole; `row` checks each row as it
/// restores it.
pub(crate) fn read_staged_archive(
    parts: &[std::sync::Arc<[u8]>],
    sha256: &str,
    mut row: impl FnMut(&str, &str, &[u8]) -> Result<(), crate::store::StoreError>,
) -> Result<Vec<(String, u64)>, SnapshotError> {
    let got = archive::sha256_hex(parts.iter().map(|p| &p[..]));
    if got != sha256 {
        return Err(SnapshotError::Corrupt(format!(
            "the staged archive's SHA-256 is {got}, its commit names {sha256}"
        )));
    }
    let r = Concat {
        parts,
        at: 0,
        off: 0,
    };
    let (_, indexes) = read_rows(r, false, |t, k, v| {
        row(t, k, v).map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))
    })?;
    Ok(indexes)
}

/// Byte slices read one after the other.
struct Concat<'a> {
    parts: &'a [std::sync::Arc<[u8]>],
    at: usize,
    off: usize,
}

impl Read for Concat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.get(self.at) {
            let rest = &part[self.off.min(part.len())..];
            if rest.is_empty() {
                (self.at, self.off) = (self.at + 1, 0);
                continue;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.off += n;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Hands the file at `path` to `emit` in slices of [`CHUNK_BYTES`], in order; its size and
/// SHA-256 (hex).
fn slice_file(
    path: &Path,
    mut emit: impl FnMut(Vec<u8>) -> Result<(), SnapshotError>,
) -> Result<(u64, String), SnapshotError> {
    let mut f = std::fs::File::open(path).map_err(|e| SnapshotError::Io(e.to_string()))?;
    let mut total = 0u64;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        (&mut f)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut chunk)
            .map_err(|e| SnapshotError::Io(e.to_string()))?;
        if chunk.is_empty() {
            return Ok((total, archive::hex(hash.finish().as_ref())));
        }
        total += chunk.len() as u64;
        hash.update(&chunk);
        emit(chunk)?;
    }
}

/// A row's value as postcard writes a `Vec<u8>`, copied whole rather than byte by byte.
#[cfg(test)]
struct AsBytes<'a>(&'a [u8]);

#[cfg(test)]
impl serde::Serialize for AsBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Cuts the rows of an archive into restore chunks (postcard [`RestoreState`]s) of about
/// [`CHUNK_BYTES`], in order; the last one carries the indexes: the chunks older versions
/// proposed, for [`Command::SnapshotRestoreCommit`], which logs may still hold.
#[cfg(test)]
struct Chunker<F> {
    cur: RestoreState,
    size: usize,
    emit: F,
}

#[cfg(test)]
impl<F: FnMut(Vec<u8>) -> Result<(), SnapshotError>> Chunker<F> {
    fn push(&mut self, table: &str, k: &str, v: &[u8]) -> Result<(), SnapshotError> {
        if self.cur.tables.last().is_none_or(|(n, _)| n != table) {
            self.cur.tables.push((table.to_string(), Vec::new()));
        }
        if let Some((_, rows)) = self.cur.tables.last_mut() {
            rows.push((k.to_string(), v.to_vec()));
        }
        self.size += k.len() + v.len() + 8;
        if self.size >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        let tables: Vec<(&str, Vec<(&str, AsBytes<'_>)>)> = self
            .cur
            .tables
            .iter()
            .map(|(t, rows)| {
                let rows = rows.iter().map(|(k, v)| (k.as_str(), AsBytes(v))).collect();
                (t.as_str(), rows)
            })
            .collect();
        let chunk = crate::codec::encode(&(tables, &self.cur.indexes))
            .map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))?;
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(SnapshotError::Corrupt(format!(
                "state.bin: a row of {} bytes is past what a restore carries",
                chunk.len()
            )));
        }
        self.cur = RestoreState::default();
        self.size = 0;
        (self.emit)(chunk)
    }
}

/// The restore chunks of the archive at `path`, each handed to `emit` as it is cut.
#[cfg(test)]
fn chunk_file(
    path: &Path,
    emit: impl FnMut(Vec<u8>) -> Result<(), SnapshotError>,
) -> Result<u64, SnapshotError> {
    let f = std::fs::File::open(path).map_err(|e| SnapshotError::Io(e.to_string()))?;
    let mut c = Chunker {
        cur: RestoreState::default(),
        size: 0,
        emit,
    };
    let mut rows = 0u64;
    let (_, indexes) = read_rows(f, true, |t, k, v| {
        rows += 1;
        c.push(t, k, v)
    })?;
    c.cur.indexes = indexes;
    c.flush()?;
    Ok(rows)
}

impl Server {
    /// The whole state at the consistency asked for, on a server (a client agent holds none).
    pub async fn snapshot(&self, mode: Consistency) -> Result<(StateSnapshot, ReadMeta)> {
        let Some(catalog) = self.catalog() else {
            let (bytes, meta) = self.forwarded_snapshot(mode).await?;
            let s = StateSnapshot {
                source: Source::Archive(bytes, meta.index),
            };
            return Ok((s, meta));
        };
        let mut meta = self.barrier(mode).await?;
        let s = StateSnapshot {
            source: Source::Tables(Box::new(catalog.tables())),
        };
        meta.index = s.index();
        Ok((s, meta))
    }

    /// Replaces the whole state with that of the archive at `path`, through Raft (see the
    /// module's doc); returns the restore's index and what the archive held. A damaged
    /// archive is refused before anything is proposed; a restore that fails later changes
    /// nothing.
    pub async fn restore_file(&self, path: &Path) -> Result<(u64, Inspection)> {
        let p = path.to_path_buf();
        let inspection = tokio::task::spawn_blocking(move || inspect_file(&p))
            .await
            .map_err(|e| Error::Storage(e.to_string()))??;
        let mut attempt = 1;
        let index = loop {
            let id = crate::new_uuid();
            match self.propose_restore(path, &id).await {
                Ok(index) => break index,
                // Nothing of it was applied: run it again, under a new ID, in the new term.
                Err(Proposal::Interrupted) if attempt < RESTORE_ATTEMPTS => {
                    tracing::warn!(attempt, "snapshot restore interrupted; starting it again");
                    attempt += 1;
                }
                Err(Proposal::Interrupted) => return Err(interrupted()),
                Err(Proposal::Failed(e)) => {
                    // Best effort: a new restore or a new leader drops them otherwise.
                    let discard = Command::SnapshotRestoreDiscard { id: Some(id) };
                    if let Err(d) = self.write(discard).await {
                        tracing::warn!(error = %d, "cannot discard a failed restore's chunks");
                    }
                    return Err(e);
                }
            }
        };
        tracing::info!(
            index,
            format = inspection.format,
            "restored snapshot {}",
            inspection.meta.id
        );
        Ok((index, inspection))
    }

    /// Proposes the chunks of the archive at `path` under restore `id`, then its commit.
    async fn propose_restore(&self, path: &Path, id: &str) -> Result<u64, Proposal> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let p = path.to_path_buf();
        let cutter = tokio::task::spawn_blocking(move || {
            slice_file(&p, |chunk| {
                tx.blocking_send(chunk)
                    .map_err(|_| SnapshotError::Io("the restore stopped".into()))
            })
        });
        let mut seq = 0u64;
        while let Some(data) = rx.recv().await {
            let cmd = Command::SnapshotRestoreChunk {
                id: id.to_string(),
                seq,
                data,
            };
            if !self.write(cmd).await?.success {
                return Err(Proposal::Interrupted);
            }
            seq += 1;
        }
        let (bytes, sha256) = cutter
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
            .map_err(Error::from)?;
        let commit = Command::SnapshotRestoreArchive {
            id: id.to_string(),
            chunks: seq,
            sha256,
        };
        let out = self.write(commit).await?;
        if !out.success {
            return Err(Proposal::Interrupted);
        }
        tracing::info!(index = out.index, chunks = seq, bytes, "restore committed");
        Ok(out.index)
    }
}

/// How many times a restore interrupted by a leader change (or another restore) is run.
const RESTORE_ATTEMPTS: u32 = 3;

/// Why proposing a restore stopped.
enum Proposal {
    /// A chunk or the commit was refused, so nothing of this restore was applied.
    Interrupted,
    /// Anything else: a write that may or may not have been applied, an unreadable file.
    Failed(Error),
}

impl From<Error> for Proposal {
    fn from(e: Error) -> Self {
        Proposal::Failed(e)
    }
}

fn interrupted() -> Error {
    Error::Storage(format!(
        "snapshot restore interrupted {RESTORE_ATTEMPTS} times (another restore started, or \
         the leader changed): nothing was changed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::put_raw;
    use crate::store::tables::{KV, RESTORE_STAGING};

    fn archive_of(t: &Tables) -> Vec<u8> {
        let mut out = Vec::new();
        archive::write(t, &mut out).expect("archive");
        out
    }

    fn tables() -> Tables {
        let mut t = Tables::default();
        let e = crate::model::KvEntry {
            key: "a".into(),
            value: vec![0, 1, 2],
            flags: 7,
            session: None,
            create_index: 3,
            modify_index: 4,
            lock_index: 0,
        };
        put_raw(
            t.table_mut(KV),
            "a",
            &crate::codec::encode(&e).expect("row"),
        );
        t.indexes.insert("kv".into(), 4);
        t
    }

    #[test]
    fn an_archive_reads_back_whole() {
        let r = read_archive(&archive_of(&tables())).expect("reads");
        assert_eq!(r.inspection.format, "muster");
        let kv = r.state.tables.iter().find(|(n, _)| n == "kv").expect("kv");
        assert_eq!(kv.1.len(), 1);
        assert_eq!(r.state.indexes, vec![("kv".to_string(), 4)]);
        let counts: Vec<_> = r
            .inspection
            .tables
            .iter()
            .map(|t| (t.name.as_str(), t.count))
            .collect();
        assert!(counts.contains(&("kv", 1)), "{counts:?}");
    }

    #[test]
    fn another_state_version_and_a_cut_state_are_refused() {
        let mut state = Vec::new();
        state::write(&tables(), &mut state).expect("state");
        assert_eq!(state::size(&tables()).expect("size"), state.len() as u64);
        let scan = |b: &[u8]| state::scan(&mut &b[state::MAGIC.len()..], |_, _, _| Ok(()));
        let mut newer = state.clone();
        newer[state::MAGIC.len()] = 2;
        assert!(matches!(scan(&newer), Err(SnapshotError::Version(2))));
        assert_eq!(
            SnapshotError::Version(2).to_string(),
            "snapshot state format version 2 is not supported (this Muster reads version 1)"
        );
        for cut in [state.len() - 1, state.len() / 2, 20] {
            let e = scan(&state[..cut]).err().map(|e| e.to_string());
            assert!(
                e.is_some_and(|e| e.starts_with("snapshot is damaged: state.bin: ")),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_damaged_archive_is_refused() {
        let good = archive_of(&tables());
        assert!(read_archive(&good[..good.len() - 10]).is_err());
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(read_archive(&flipped).is_err());
    }

    /// Row `i`'s value in [`big_archive`]: `size` bytes of noise, which gzip cannot shrink.
    fn noise(i: usize, size: usize) -> Vec<u8> {
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// An archive of `n` KV rows of `size` bytes each.
    fn big_archive(n: usize, size: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let mut t = Tables::default();
        for i in 0..n {
            let e = crate::model::KvEntry {
                key: format!("k{i:04}"),
                value: noise(i, size),
                flags: i as u64,
                session: None,
                create_index: 10,
                modify_index: 11,
                lock_index: 0,
            };
            let row = crate::codec::encode(&e).expect("row");
            put_raw(t.table_mut(KV), &e.key, &row);
        }
        t.indexes.insert("kv".into(), 11);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.snap");
        std::fs::write(&path, archive_of(&t)).expect("write");
        (dir, path)
    }

    fn apply(txn: &crate::store::mem::WriteTxn, term: u64, index: u64, c: Command) -> bool {
        txn.set_term(term);
        let mut ch = crate::store::Changes::default();
        crate::store::apply_command(txn, index, c, &mut ch)
            .expect("apply")
            .success
    }

    fn chunks_of(path: &Path) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let rows = chunk_file(path, |c| {
            chunks.push(c);
            Ok(())
        })
        .expect("chunks");
        assert_eq!(rows, 40);
        chunks
    }

    /// Stages `chunks` as restore `r1` over [`tables`], checking that the old state stays
    /// until the commit, then applies `commit(chunks.len())` and checks the state it swapped
    /// in: [`big_archive`]'s 40 rows, restamped at the commit's index.
    fn restore_and_check(chunks: Vec<Vec<u8>>, commit: impl FnOnce(u64) -> Command) {
        assert!(chunks.len() >= 3, "{}", chunks.len());
        let txn = crate::store::mem::WriteTxn::new(&tables());
        let n = chunks.len() as u64;
        for (seq, data) in chunks.into_iter().enumerate() {
            let c = Command::SnapshotRestoreChunk {
                id: "r1".into(),
                seq: seq as u64,
                data,
            };
            assert!(apply(&txn, 2, 20 + seq as u64, c));
            // Staged only: the old state is untouched.
            assert_eq!(txn.open_table(KV).expect("kv").len(), 1);
        }
        assert!(apply(&txn, 2, 100, commit(n)));
        let kv = txn.open_table(KV).expect("kv").clone();
        assert_eq!(kv.len(), 40);
        let e: crate::model::KvEntry = crate::codec::decode(&kv["k0007"]).expect("row");
        assert_eq!((e.flags, e.create_index, e.modify_index), (7, 10, 100));
        assert_eq!(e.value, noise(7, 300 << 10));
        assert!(txn.open_table(RESTORE_STAGING).expect("staging").is_empty());
        assert_eq!(txn.indexes().expect("idx").get("kv"), Some(&100));
    }

    #[test]
    fn a_restore_in_chunks_swaps_the_state_at_its_commit_only() {
        let (_dir, path) = big_archive(40, 300 << 10);
        restore_and_check(chunks_of(&path), |chunks| Command::SnapshotRestoreCommit {
            id: "r1".into(),
            chunks,
        });
    }

    /// The slices of the file at `path`, and its SHA-256.
    fn slices_of(path: &Path) -> (Vec<Vec<u8>>, String) {
        let mut slices = Vec::new();
        let (bytes, sha256) = slice_file(path, |c| {
            slices.push(c);
            Ok(())
        })
        .expect("slices");
        let file = std::fs::read(path).expect("file");
        assert_eq!(bytes, file.len() as u64);
        assert_eq!(sha256, archive::sha256_hex([&file[..]]));
        (slices, sha256)
    }

    #[test]
    fn an_archive_restored_in_slices_swaps_the_state_at_its_commit_only() {
        // Incompressible values: the archive is about as large as the state, several slices.
        let (_dir, path) = big_archive(40, 300 << 10);
        let (slices, sha256) = slices_of(&path);
        restore_and_check(slices, |chunks| Command::SnapshotRestoreArchive {
            id: "r1".into(),
            chunks,
            sha256,
        });
    }

    #[test]
    fn a_damaged_staged_archive_or_a_missing_slice_changes_nothing() {
        let (_dir, path) = big_archive(40, 300 << 10);
        let (slices, sha256) = slices_of(&path);
        let n = slices.len();
        let txn = crate::store::mem::WriteTxn::new(&tables());
        let stage = |id: &str, index: u64, which: &mut dyn FnMut(usize, &mut Vec<u8>)| {
            for (seq, data) in slices.iter().enumerate() {
                let mut data = data.clone();
                which(seq, &mut data);
                let c = Command::SnapshotRestoreChunk {
                    id: id.into(),
                    seq: seq as u64,
                    data,
                };
                assert!(apply(&txn, 2, index + seq as u64, c));
            }
        };
        let commit = |id: &str, chunks: usize| Command::SnapshotRestoreArchive {
            id: id.into(),
            chunks: chunks as u64,
            sha256: sha256.clone(),
        };
        // One byte flipped in the middle: the sum the commit names catches it.
        stage("r1", 20, &mut |seq, d| {
            if seq == n / 2 {
                d[100] ^= 1;
            }
        });
        assert!(!apply(&txn, 2, 90, commit("r1", n)));
        // The last slice cut short: the archive ends early.
        stage("r2", 100, &mut |seq, d| {
            if seq == n - 1 {
                d.truncate(d.len() / 2);
            }
        });
        assert!(!apply(&txn, 2, 190, commit("r2", n)));
        // A commit naming fewer slices than the archive has.
        stage("r3", 200, &mut |_, _| {});
        assert!(!apply(&txn, 2, 290, commit("r3", n - 1)));
        assert_eq!(txn.open_table(KV).expect("kv").len(), 1);
        assert!(txn.open_table(RESTORE_STAGING).expect("staging").is_empty());
    }

    #[test]
    fn a_restore_across_a_leader_change_or_with_a_chunk_missing_changes_nothing() {
        let (_dir, path) = big_archive(40, 300 << 10);
        let chunks = chunks_of(&path);
        let txn = crate::store::mem::WriteTxn::new(&tables());
        let chunk = |seq: usize| Command::SnapshotRestoreChunk {
            id: "r1".into(),
            seq: seq as u64,
            data: chunks[seq].clone(),
        };
        let commit = |n: usize| Command::SnapshotRestoreCommit {
            id: "r1".into(),
            chunks: n as u64,
        };
        assert!(apply(&txn, 2, 20, chunk(0)));
        // The leader changed: the next chunk, and a commit, fail.
        assert!(!apply(&txn, 3, 21, chunk(1)));
        assert!(!apply(&txn, 3, 22, commit(1)));
        assert_eq!(txn.open_table(KV).expect("kv").len(), 1);
        // A new leader's clean-up drops an earlier term's restore, not one of its own.
        assert!(apply(&txn, 4, 23, chunk(0)));
        assert!(apply(
            &txn,
            4,
            24,
            Command::SnapshotRestoreDiscard { id: None }
        ));
        assert!(!txn.open_table(RESTORE_STAGING).expect("staging").is_empty());
        assert!(apply(
            &txn,
            5,
            25,
            Command::SnapshotRestoreDiscard { id: None }
        ));
        assert!(txn.open_table(RESTORE_STAGING).expect("staging").is_empty());
        // A commit that names more chunks than were staged fails.
        assert!(apply(&txn, 6, 26, chunk(0)));
        assert!(apply(&txn, 6, 27, chunk(1)));
        assert!(!apply(&txn, 6, 28, commit(chunks.len())));
        assert_eq!(txn.open_table(KV).expect("kv").len(), 1);
        assert!(txn.open_table(RESTORE_STAGING).expect("staging").is_empty());
    }
}
