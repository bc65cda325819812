//! Snapshots of the whole replicated state: the archive `GET /v1/snapshot` streams
//! (`archive.rs`, Consul's shape; `state.rs`, Muster's `state.bin`), what `inspect` reports,
//! and a restore: an archive checked whole, then put through Raft as one
//! [`Command::SnapshotRestore`] entry so every server applies it at the same index
//! (`store/apply/restore.rs`). `consul.rs` reads a Consul 1.x `state.bin` into the same form.
//!
//! A restore is one Raft entry rather than a snapshot installed by openraft: openraft 0.9
//! installs snapshots only on followers behind the leader's log, never on a leader, and a
//! snapshot installed beside the log would leave log entries after it that describe the old
//! state. An entry is ordered with every other write, applied by every server (and by a
//! server that restarts, from the log) and answered like any write. Its bound is the server
//! RPC frame (64 MiB), which carries the entry to followers: a restore's encoded state may be
//! at most [`MAX_RESTORE_BYTES`], and a larger one is refused before anything is written.

mod archive;
mod consul;
mod state;

use std::io::Write;

pub use archive::ArchiveMeta;

use crate::model::{Command, Consistency, ReadMeta, RestoreState};
use crate::store::mem::Tables;
use crate::{Error, Result, Server};

/// The most encoded state one restore may carry: half the server RPC frame, leaving room
/// for the other entries an AppendEntries frame carries with it.
pub const MAX_RESTORE_BYTES: usize = 32 << 20;

/// Why an archive is refused. Nothing is changed by a refused archive.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is damaged: {0}")]
    Corrupt(String),
    #[error("snapshot state format version {0} is not supported (this Muster reads version {v})", v = state::VERSION)]
    Version(u32),
    #[error("snapshot state is {size} bytes once decoded; a restore carries at most {max} bytes (one Raft entry)")]
    TooLarge { size: usize, max: usize },
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        Error::InvalidRequest(e.to_string())
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

/// Reads an archive (Muster's or Consul's) whole; refuses one that is damaged, of another
/// format version, or too large to restore.
pub fn read_archive(bytes: &[u8]) -> std::result::Result<Restore, SnapshotError> {
    let a = archive::read(bytes)?;
    let (state, counts, skipped, format) = if state::is_muster(&a.state) {
        let (state, counts) = state::read(&a.state)?;
        (state, counts, Vec::new(), "muster")
    } else {
        let c = consul::read(&a.state)?;
        (c.state, c.counts, c.skipped, "consul")
    };
    crate::store::check_restore(&state)
        .map_err(|e| SnapshotError::Corrupt(format!("state.bin: {e}")))?;
    let tables = counts
        .into_iter()
        .map(|(name, count, size)| TableCount { name, count, size })
        .collect();
    Ok(Restore {
        inspection: Inspection {
            meta: a.meta,
            format,
            tables,
            skipped,
        },
        state,
    })
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

    /// Replaces the whole state with the archive's, through Raft; returns the restore's
    /// index and what the archive held.
    pub async fn restore(&self, bytes: &[u8]) -> Result<(u64, Inspection)> {
        let r = read_archive(bytes)?;
        let cmd = Command::SnapshotRestore(Box::new(r.state));
        let size = crate::codec::encode(&cmd)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?
            .len();
        if size > MAX_RESTORE_BYTES {
            return Err(SnapshotError::TooLarge {
                size,
                max: MAX_RESTORE_BYTES,
            }
            .into());
        }
        let out = self.write(cmd).await?;
        if !out.success {
            return Err(Error::InvalidRequest(
                "snapshot restore refused by the state machine (see the server log)".into(),
            ));
        }
        tracing::info!(
            index = out.index,
            format = r.inspection.format,
            "restored snapshot {}",
            r.inspection.meta.id
        );
        Ok((out.index, r.inspection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::put_raw;
    use crate::store::tables::KV;

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
        let mut newer = state.clone();
        newer[state::MAGIC.len()] = 2;
        assert!(matches!(
            state::read(&newer),
            Err(SnapshotError::Version(2))
        ));
        assert_eq!(
            SnapshotError::Version(2).to_string(),
            "snapshot state format version 2 is not supported (this Muster reads version 1)"
        );
        for cut in [state.len() - 1, state.len() / 2, 20] {
            let e = state::read(&state[..cut]).err().map(|e| e.to_string());
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
}
