//! KV writes: set (with CAS and lock acquire/release), delete, delete-tree, tombstones, and
//! the [`SESSION_KEYS`] index of which session holds which key.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::{KvEntry, LockOp};
use crate::store::error::Result;
use crate::store::mem::{put_raw, retain_in, span, Rows, Tables};
use crate::store::tables::*;

/// Rebuilds [`SESSION_KEYS`] from the KV table: at start (data written before the index
/// existed) and after a snapshot replaced the tables.
pub(crate) fn rebuild_session_keys(t: &mut Tables) -> Result<()> {
    let mut idx = Rows::new();
    for (k, v) in t.table(KV).iter() {
        let e: KvEntry = decode(v)?;
        if let Some(s) = &e.session {
            put_raw(&mut idx, &node_key(s, k), &[]);
        }
    }
    *t.table_mut(SESSION_KEYS) = idx;
    Ok(())
}

impl Apply<'_> {
    /// Writes a KV entry whose holder was `prev_holder`, keeping [`SESSION_KEYS`] in step.
    pub(super) fn kv_store(&mut self, e: &KvEntry, prev_holder: Option<&str>) -> Result<()> {
        put(&mut *self.table(KV)?, &e.key, e)?;
        let holder = e.session.as_deref();
        if holder != prev_holder {
            let mut t = self.table(SESSION_KEYS)?;
            if let Some(s) = prev_holder {
                t.remove(node_key(s, &e.key).as_str());
            }
            if let Some(s) = holder {
                put_raw(&mut t, &node_key(s, &e.key), &[]);
            }
        }
        Ok(())
    }

    /// Removes a KV entry, keeping [`SESSION_KEYS`] in step; returns what was there.
    pub(super) fn kv_remove(&mut self, key: &str) -> Result<Option<KvEntry>> {
        let old: Option<KvEntry> = match self.table(KV)?.remove(key) {
            Some(v) => Some(decode(&v)?),
            None => None,
        };
        if let Some(s) = old.as_ref().and_then(|e| e.session.as_deref()) {
            self.table(SESSION_KEYS)?.remove(node_key(s, key).as_str());
        }
        Ok(old)
    }

    pub(super) fn kv_touch(&mut self, key: &str) -> Result<()> {
        self.ch.kv.insert(key.to_string());
        self.bump(IDX_KV)
    }

    pub(super) fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
        lock: Option<LockOp>,
    ) -> Result<bool> {
        if let Some(LockOp::Acquire(s)) = &lock {
            if !self.session_exists(s)? {
                return Ok(false);
            }
        }
        let old: Option<KvEntry> = get(&*self.table(KV)?, &key)?;
        if let Some(cas) = cas {
            if old.as_ref().map_or(0, |e| e.modify_index) != cas {
                return Ok(false);
            }
        }
        let prev_holder = old.as_ref().and_then(|e| e.session.clone());
        let mut entry = match old {
            Some(old) => KvEntry {
                value,
                flags,
                modify_index: self.index,
                ..old
            },
            None => KvEntry {
                key: key.clone(),
                value,
                flags,
                session: None,
                create_index: self.index,
                modify_index: self.index,
                lock_index: 0,
            },
        };
        match lock {
            Some(LockOp::Acquire(s)) => match &entry.session {
                Some(holder) if *holder != s => return Ok(false),
                Some(_) => {}
                None => {
                    entry.session = Some(s);
                    entry.lock_index += 1;
                }
            },
            Some(LockOp::Release(s)) => {
                if entry.session.as_deref() != Some(s.as_str()) {
                    return Ok(false);
                }
                entry.session = None;
            }
            None => {}
        }
        self.kv_store(&entry, prev_holder.as_deref())?;
        self.table(KV_TOMBS)?.remove(key.as_str());
        self.kv_touch(&key)?;
        Ok(true)
    }

    pub(super) fn tombstone(&mut self, key: &str) -> Result<()> {
        let index = self.index;
        put(&mut *self.table(KV_TOMBS)?, key, &index)?;
        self.kv_touch(key)
    }

    pub(super) fn kv_delete(&mut self, key: &str, cas: Option<u64>) -> Result<bool> {
        if let Some(cas) = cas {
            match get::<KvEntry>(&*self.table(KV)?, key)? {
                Some(e) if e.modify_index == cas => {}
                // Consul: deleting a missing key with cas=0 succeeds; anything else fails.
                None if cas == 0 => return Ok(true),
                _ => return Ok(false),
            }
        }
        if self.kv_remove(key)?.is_some() {
            self.tombstone(key)?;
        }
        Ok(true)
    }

    pub(super) fn kv_delete_tree(&mut self, prefix: &str) -> Result<bool> {
        // Collected first: the keys under a prefix are one contiguous run, and the rest of
        // the table need not be visited.
        let mut removed = Vec::new();
        for (k, _) in span(&*self.table(KV)?, prefix, None) {
            if !k.starts_with(prefix) {
                break;
            }
            removed.push(k.to_string());
        }
        for k in removed {
            self.kv_remove(&k)?;
            self.tombstone(&k)?;
        }
        Ok(true)
    }

    /// Tombstones exist so that a blocking query on a prefix sees a delete's index; once no
    /// such query can still be waiting, they only take space. The prefixes they covered fall
    /// back to the KV table's index, which this bumps past theirs.
    pub(super) fn kv_reap_tombstones(&mut self, upto: u64) -> Result<bool> {
        let mut reaped = Vec::new();
        retain_in(&mut *self.table(KV_TOMBS)?, "", None, |k, v| {
            let old = decode::<u64>(v).is_ok_and(|i| i <= upto);
            if old {
                reaped.push(k.to_string());
            }
            !old
        });
        if reaped.is_empty() {
            return Ok(true);
        }
        for k in reaped {
            self.ch.kv.insert(k);
        }
        self.bump(IDX_KV)?;
        Ok(true)
    }
}
