//! [`Command::SnapshotRestore`](crate::model::Command::SnapshotRestore): the whole state
//! replaced by a snapshot's, as one write at the entry's index.
//!
//! A restore is a write like any other to a blocking query: every table index and every
//! row's ModifyIndex become the restore's index (a CreateIndex past it is lowered to it), so
//! no index a client saw goes backwards and none points past the log. The cluster keeps its
//! own retired-server list: the snapshot's names another cluster's servers.

use super::{decode, encode, put_raw, Apply, Result, Rows};
use crate::model::{Check, KvEntry, Node, RestoreState, Service, Session};
use crate::store::error::StoreError;
use crate::store::mem::TableId;
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

/// The tables `state` restores (all but [`RETIRED`]) and the lock index derived from its KV;
/// an error names a table this version does not know or a row that does not decode.
pub(crate) fn prepare(state: &RestoreState, index: u64) -> Result<(Vec<(TableId, Rows)>, Rows)> {
    let mut fresh: Vec<(TableId, Rows)> = Vec::new();
    for (name, rows) in &state.tables {
        let Some(t) = DATA_TABLES.iter().find(|t| t.name == name) else {
            return Err(StoreError::Unknown(name.clone()));
        };
        if t.name == RETIRED.name {
            continue;
        }
        let mut out = Rows::new();
        for (k, v) in rows {
            put_raw(&mut out, k, &restamp(*t, v, index)?);
        }
        fresh.push((*t, out));
    }
    let mut keys = Rows::new();
    if let Some((_, kv)) = fresh.iter().find(|(t, _)| t.name == KV.name) {
        for (k, v) in kv.iter() {
            let e: KvEntry = decode(v)?;
            if let Some(s) = &e.session {
                put_raw(&mut keys, &node_key(s, k), &[]);
            }
        }
    }
    Ok((fresh, keys))
}

impl Apply<'_> {
    /// Replaces every table but [`RETIRED`] with `state`'s; a table `state` does not name is
    /// emptied. The server checks a restore before proposing it; one that still does not
    /// apply (a table this version does not know) changes nothing and fails.
    pub(super) fn snapshot_restore(&mut self, state: RestoreState) -> Result<bool> {
        let (mut fresh, keys) = match prepare(&state, self.index) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot restore refused");
                return Ok(false);
            }
        };
        for t in DATA_TABLES {
            if t.name == RETIRED.name {
                continue;
            }
            let rows = fresh
                .iter_mut()
                .find(|(f, _)| f.name == t.name)
                .map(|(_, r)| std::mem::take(r))
                .unwrap_or_default();
            *self.table(t)? = rows;
        }
        *self.table(SESSION_KEYS)? = keys;
        let mut idx = self.txn.indexes()?;
        let names: Vec<String> = idx
            .keys()
            .cloned()
            .chain(state.indexes.into_iter().map(|(k, _)| k))
            .collect();
        for n in names {
            idx.insert(n, self.index);
        }
        drop(idx);
        self.ch.all = true;
        self.touched = true;
        Ok(true)
    }
}

/// Whether `state` would apply: every table known, every row decoding.
pub(crate) fn check_restore(state: &RestoreState) -> Result<()> {
    prepare(state, 0).map(|_| ())
}
