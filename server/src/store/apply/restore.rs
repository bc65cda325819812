//! Restores: the whole state replaced by a snapshot's, as one write at one entry's index.
//! [`Command::SnapshotRestore`] carries the state itself (a restore small enough for one
//! entry, as older versions wrote it); a larger one arrives as
//! [`Command::SnapshotRestoreChunk`]s staged in [`RESTORE_STAGING`], then a
//! [`Command::SnapshotRestoreArchive`] that reads them as one archive and builds the new
//! tables from it in one apply ([`Command::SnapshotRestoreCommit`], from older versions,
//! builds them from chunks of rows).
//!
//! A restore is a write like any other to a blocking query: every table index and every
//! row's ModifyIndex become the restore's index (a CreateIndex past it is lowered to it), so
//! no index a client saw goes backwards and none points past the log. The cluster keeps its
//! own retired-server list: the snapshot's names another cluster's servers.
//!
//! [`Command::SnapshotRestore`]: crate::model::Command::SnapshotRestore
//! [`Command::SnapshotRestoreChunk`]: crate::model::Command::SnapshotRestoreChunk
//! [`Command::SnapshotRestoreCommit`]: crate::model::Command::SnapshotRestoreCommit
//! [`Command::SnapshotRestoreArchive`]: crate::model::Command::SnapshotRestoreArchive

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use super::{decode, encode, put_raw, Apply, Result, Rows};
use crate::model::{Check, KvEntry, Node, RestoreState, Service, Session};
use crate::store::error::StoreError;
use crate::store::mem::{retain_in, span, TableId, TABLE_COUNT};
use crate::store::tables::*;

/// Rewrites a row's indexes: `T`'s create and modify index.
fn reindex<T>(v: &[u8], index: u64, f: impl Fn(&mut T, u64)) -> Result<Vec<u8>>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut row: T = decode(v)?;
    f(&mut row, index);
    Ok(encode(&row)?)
}

fn restamp(t: TableId, v: &[u8], index: u64) -> Result<Vec<u8>> {
    Ok(match t.name {
        n if n == KV.name => reindex::<KvEntry>(v, index, |r, i| {
            r.create_index = r.create_index.min(i);
            r.modify_index = i;
        })?,
        n if n == NODES.name => reindex::<Node>(v, index, |r, i| {
            r.create_index = r.create_index.min(i);
            r.modify_index = i;
        })?,
        n if n == SERVICES.name => reindex::<Service>(v, index, |r, i| {
            r.create_index = r.create_index.min(i);
            r.modify_index = i;
        })?,
        n if n == CHECKS.name => reindex::<Check>(v, index, |r, i| {
            r.create_index = r.create_index.min(i);
            r.modify_index = i;
        })?,
        n if n == SESSIONS.name => reindex::<Session>(v, index, |r, i| {
            r.create_index = r.create_index.min(i);
            r.modify_index = i;
        })?,
        n if n == KV_TOMBS.name => encode(&index)?,
        _ => v.to_vec(),
    })
}

/// The table a snapshot names `name`, or `None` for one a restore leaves alone (the
/// cluster's retired servers, restores being staged); an error for one this version lacks.
pub(crate) fn restored_table(name: &str) -> Result<Option<TableId>> {
    let Some(t) = DATA_TABLES.iter().find(|t| t.name == name) else {
        return Err(StoreError::Unknown(name.to_string()));
    };
    Ok((t.slot != RETIRED.slot && archived(*t)).then_some(*t))
}

/// Checks that one row of table `name` would restore: the table known, the row decoding.
pub(crate) fn check_row(name: &str, value: &[u8]) -> Result<()> {
    match restored_table(name)? {
        Some(t) if t.slot == KV.slot => {
            crate::codec::decode_borrowed::<KvRow<'_>>(value)?;
        }
        Some(t) => {
            restamp(t, value, 0)?;
        }
        None => {}
    }
    Ok(())
}

/// A [`KvEntry`] row read and written in place: the same encoding, its value copied whole
/// rather than byte by byte (a restore restamps every row; values are most of the state).
#[derive(Deserialize, serde::Serialize)]
struct KvRow<'a> {
    key: &'a str,
    #[serde(borrow, with = "borrowed_bytes")]
    value: &'a [u8],
    flags: u64,
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
}

mod borrowed_bytes {
    pub(super) fn serialize<S: serde::Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<&'de [u8], D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// A table's rows in a staged chunk, borrowed from it.
type RowsRef<'a> = Vec<(&'a str, &'a [u8])>;

/// A chunk as staged, read without copying its rows (the layout of [`RestoreState`]).
#[derive(Deserialize)]
struct ChunkRef<'a> {
    #[serde(borrow)]
    tables: Vec<(&'a str, RowsRef<'a>)>,
    #[serde(borrow)]
    indexes: Vec<(&'a str, u64)>,
}

/// The tables a restore builds, row by row: each restamped at the restore's index, the
/// session index derived from KV as its rows come.
pub(crate) struct Fresh {
    index: u64,
    rows: [Rows; TABLE_COUNT],
    session_keys: Rows,
    index_names: BTreeSet<String>,
    /// A KV row being rewritten: one buffer for them all rather than a growing `Vec` each.
    scratch: Vec<u8>,
}

impl Fresh {
    pub(crate) fn new(index: u64) -> Self {
        Fresh {
            index,
            rows: Default::default(),
            session_keys: Rows::new(),
            index_names: BTreeSet::new(),
            scratch: Vec::new(),
        }
    }

    fn add_row(&mut self, t: TableId, key: &str, value: &[u8]) -> Result<()> {
        if t.slot == KV.slot {
            let mut e: KvRow<'_> = crate::codec::decode_borrowed(value)?;
            e.create_index = e.create_index.min(self.index);
            e.modify_index = self.index;
            if let Some(s) = e.session {
                put_raw(&mut self.session_keys, &node_key(s, key), &[]);
            }
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            let buf = crate::codec::encode_into(&e, buf)?;
            put_raw(&mut self.rows[t.slot], key, &buf);
            self.scratch = buf;
        } else {
            put_raw(&mut self.rows[t.slot], key, &restamp(t, value, self.index)?);
        }
        Ok(())
    }

    fn add_table<'r>(
        &mut self,
        name: &str,
        rows: impl IntoIterator<Item = (&'r str, &'r [u8])>,
    ) -> Result<()> {
        if let Some(t) = restored_table(name)? {
            for (k, v) in rows {
                self.add_row(t, k, v)?;
            }
        }
        Ok(())
    }

    fn add_state(&mut self, state: &RestoreState) -> Result<()> {
        for (name, rows) in &state.tables {
            self.add_table(name, rows.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.index_names
            .extend(state.indexes.iter().map(|(n, _)| n.clone()));
        Ok(())
    }

    /// Adds one staged chunk (a postcard [`RestoreState`]).
    fn add_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        let c: ChunkRef<'_> = crate::codec::decode_borrowed(chunk)?;
        for (name, rows) in c.tables {
            self.add_table(name, rows)?;
        }
        self.index_names
            .extend(c.indexes.into_iter().map(|(n, _)| n.to_string()));
        Ok(())
    }
}

impl Apply<'_> {
    /// Replaces every table but [`RETIRED`] with `state`'s; a table `state` does not name is
    /// emptied. The server checks a restore before proposing it; one that still does not
    /// apply (a table this version does not know) changes nothing and fails.
    pub(super) fn snapshot_restore(&mut self, state: RestoreState) -> Result<bool> {
        let mut fresh = Fresh::new(self.index);
        if let Err(e) = fresh.add_state(&state) {
            tracing::warn!(error = %e, "snapshot restore refused");
            return Ok(false);
        }
        self.install(fresh)
    }

    /// The term restore `id` started in, if it is staged (its head row, the bare ID).
    fn restore_term(&self, id: &str) -> Result<Option<u64>> {
        let t = self.table(RESTORE_STAGING)?;
        match t.get(id) {
            Some(v) => Ok(Some(decode(v)?)),
            None => Ok(None),
        }
    }

    /// Drops restore `id`: its head row and its chunks.
    fn drop_restore(&mut self, id: &str) -> Result<()> {
        let mut t = self.table(RESTORE_STAGING)?;
        t.remove(id);
        let (lo, hi) = node_range(id);
        retain_in(&mut t, &lo, Some(&hi), |_, _| false);
        Ok(())
    }

    /// Stages one chunk of restore `id` (see [`Command::SnapshotRestoreChunk`]). A restore
    /// lives within one leader's term: a chunk of another term fails.
    ///
    /// [`Command::SnapshotRestoreChunk`]: crate::model::Command::SnapshotRestoreChunk
    pub(super) fn restore_chunk(&mut self, id: &str, seq: u64, data: &[u8]) -> Result<bool> {
        let term = self.txn.term();
        if seq == 0 {
            // A new restore: whatever another left staged is abandoned.
            let mut t = self.table(RESTORE_STAGING)?;
            *t = Rows::new();
            put_raw(&mut t, id, &encode(&term)?);
        } else if self.restore_term(id)? != Some(term)
            || !self
                .table(RESTORE_STAGING)?
                .contains_key(staging_key(id, seq - 1).as_str())
        {
            return Ok(false);
        }
        put_raw(
            &mut *self.table(RESTORE_STAGING)?,
            &staging_key(id, seq),
            data,
        );
        Ok(true)
    }

    /// The chunks staged for restore `id`, in order, if all `chunks` of them are, in this
    /// term; `None` (and a warning) otherwise. What was staged for `id` goes either way.
    fn take_staged(&mut self, id: &str, chunks: u64) -> Result<Option<Vec<Arc<[u8]>>>> {
        let same_term = self.restore_term(id)? == Some(self.txn.term());
        let staged = self.table(RESTORE_STAGING)?.clone();
        self.drop_restore(id)?;
        if !same_term {
            tracing::warn!(restore = id, "snapshot restore refused: the leader changed");
            return Ok(None);
        }
        let (lo, hi) = node_range(id);
        let mut out = Vec::new();
        for (k, v) in span(&staged, &lo, Some(&hi)) {
            if **k != *staging_key(id, out.len() as u64) {
                break;
            }
            out.push(v.clone());
        }
        if out.len() as u64 != chunks {
            tracing::warn!(
                restore = id,
                staged = out.len(),
                chunks,
                "snapshot restore refused: chunks missing (it was discarded)"
            );
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Swaps in the state whose rows are staged for restore `id`, all of it or nothing; its
    /// chunks go.
    pub(super) fn restore_commit(&mut self, id: &str, chunks: u64) -> Result<bool> {
        let Some(staged) = self.take_staged(id, chunks)? else {
            return Ok(false);
        };
        let mut fresh = Fresh::new(self.index);
        match staged.iter().try_for_each(|c| fresh.add_chunk(c)) {
            Ok(()) => self.install(fresh),
            Err(e) => {
                tracing::warn!(restore = id, error = %e, "snapshot restore refused");
                Ok(false)
            }
        }
    }

    /// Swaps in the state of the archive staged, in slices, for restore `id` (whose bytes
    /// must have the SHA-256 `sha256`), all of it or nothing; its chunks go.
    pub(super) fn restore_archive(&mut self, id: &str, chunks: u64, sha256: &str) -> Result<bool> {
        let Some(staged) = self.take_staged(id, chunks)? else {
            return Ok(false);
        };
        let mut fresh = Fresh::new(self.index);
        // Rows come table by table: the table is looked up once per run of its rows.
        let mut table: Option<(String, Option<TableId>)> = None;
        let read = crate::snapshot::read_staged_archive(&staged, sha256, |name, k, v| {
            if table.as_ref().is_none_or(|(n, _)| n != name) {
                table = Some((name.to_string(), restored_table(name)?));
            }
            if let Some((_, Some(t))) = &table {
                fresh.add_row(*t, k, v)?;
            }
            Ok(())
        });
        match read {
            Ok(indexes) => {
                fresh
                    .index_names
                    .extend(indexes.into_iter().map(|(n, _)| n));
                self.install(fresh)
            }
            Err(e) => {
                tracing::warn!(restore = id, error = %e, "snapshot restore refused");
                Ok(false)
            }
        }
    }

    /// Drops the chunks staged for `id`, or (`None`) those of every restore begun in an
    /// earlier term than this entry's: a new leader's clean-up, which leaves alone a restore
    /// begun under it.
    pub(super) fn restore_discard(&mut self, id: Option<&str>) -> Result<bool> {
        if let Some(id) = id {
            self.drop_restore(id)?;
            return Ok(true);
        }
        let term = self.txn.term();
        let stale: Vec<String> = {
            let t = self.table(RESTORE_STAGING)?;
            let mut stale = Vec::new();
            for (k, v) in t.iter().filter(|(k, _)| !k.contains('\0')) {
                if decode::<u64>(v)? < term {
                    stale.push(k.to_string());
                }
            }
            stale
        };
        for id in stale {
            self.drop_restore(&id)?;
        }
        Ok(true)
    }

    /// Replaces every table but [`RETIRED`] with `fresh`'s; [`RESTORE_STAGING`] empties.
    fn install(&mut self, mut fresh: Fresh) -> Result<bool> {
        for t in DATA_TABLES {
            if t.slot == RETIRED.slot {
                continue;
            }
            *self.table(t)? = std::mem::take(&mut fresh.rows[t.slot]);
        }
        *self.table(SESSION_KEYS)? = fresh.session_keys;
        let mut idx = self.txn.indexes()?;
        let names: Vec<String> = idx.keys().cloned().chain(fresh.index_names).collect();
        for n in names {
            idx.insert(n, self.index);
        }
        drop(idx);
        self.ch.all = true;
        self.touched = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_row_reads_and_writes_as_a_kv_entry() {
        let e = KvEntry {
            key: "k".into(),
            value: vec![1, 2, 3, 200],
            flags: 9,
            session: Some("s".into()),
            create_index: 3,
            modify_index: 4,
            lock_index: 5,
        };
        let b = encode(&e).expect("row");
        let r: KvRow<'_> = crate::codec::decode_borrowed(&b).expect("reads");
        assert_eq!(
            (r.key, r.value, r.session),
            ("k", &[1, 2, 3, 200][..], Some("s"))
        );
        assert_eq!(encode(&r).expect("writes"), b);
    }

    #[test]
    fn a_chunk_reads_as_the_restore_state_it_encodes() {
        let state = RestoreState {
            tables: vec![(
                "kv_tombstones".into(),
                vec![("a".into(), encode(&5u64).expect("row"))],
            )],
            indexes: vec![("kv".into(), 9)],
        };
        let bytes = encode(&state).expect("chunk");
        let c: ChunkRef<'_> = crate::codec::decode_borrowed(&bytes).expect("reads");
        assert_eq!(c.tables.len(), 1);
        assert_eq!(c.tables[0].0, "kv_tombstones");
        assert_eq!(c.tables[0].1[0].0, "a");
        assert_eq!(c.tables[0].1[0].1, encode(&5u64).expect("row").as_slice());
        assert_eq!(c.indexes, vec![("kv", 9)]);
    }
}
