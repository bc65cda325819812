//! Sessions: create, destroy (releasing or deleting the keys they hold) and invalidation when
//! a check they depend on goes critical or away.

use super::{get, put, Apply};
use crate::codec::decode;
use crate::model::{Check, HealthStatus, KvEntry, Node, Session, SessionBehavior};
use crate::store::error::Result;
use crate::store::mem::span;
use crate::store::tables::*;

impl Apply<'_> {
    pub(super) fn session_exists(&self, id: &str) -> Result<bool> {
        Ok(self.table(SESSIONS)?.get(id).is_some())
    }

    pub(super) fn sessions(&self) -> Result<Vec<Session>> {
        let t = self.table(SESSIONS)?;
        let mut out = Vec::new();
        for (_, v) in t.iter() {
            out.push(decode(v)?);
        }
        Ok(out)
    }

    pub(super) fn session_create(&mut self, mut s: Session) -> Result<bool> {
        // As Consul: the node must exist, and every check the session depends on must exist and
        // not be critical.
        if get::<Node>(&*self.table(NODES)?, &s.node)?.is_none() {
            return Ok(false);
        }
        for c in s.node_checks.iter().chain(&s.service_checks) {
            match get::<Check>(&*self.table(CHECKS)?, &node_key(&s.node, c))? {
                Some(check) if check.status != HealthStatus::Critical => {}
                _ => return Ok(false),
            }
        }
        s.create_index = self.index;
        s.modify_index = self.index;
        put(&mut *self.table(SESSIONS)?, &s.id.clone(), &s)?;
        self.bump(IDX_SESSIONS)?;
        Ok(true)
    }

    pub(super) fn session_destroy(&mut self, id: &str) -> Result<bool> {
        let Some(s) = get::<Session>(&*self.table(SESSIONS)?, id)? else {
            return Ok(true);
        };
        self.table(SESSIONS)?.remove(id);
        self.bump(IDX_SESSIONS)?;
        // As Consul: the prepared queries bound to the session go with it.
        self.prepared_delete_for_session(id)?;
        let held: Vec<KvEntry> = {
            let (lo, hi) = node_range(id);
            let idx = self.table(SESSION_KEYS)?;
            let kv = self.table(KV)?;
            let mut held = Vec::new();
            for (k, _) in span(&idx, lo.as_str(), Some(hi.as_str())) {
                let key = &k[lo.len()..];
                if let Some(e) = get::<KvEntry>(&kv, key)? {
                    held.push(e);
                }
            }
            held
        };
        for mut e in held {
            self.ch.lock_delays.push((e.key.clone(), s.lock_delay_ms));
            match s.behavior {
                SessionBehavior::Release => {
                    e.session = None;
                    e.modify_index = self.index;
                    self.kv_store(&e, Some(id))?;
                    self.kv_touch(&e.key)?;
                }
                SessionBehavior::Delete => {
                    self.kv_remove(&e.key)?;
                    self.tombstone(&e.key)?;
                }
            }
        }
        Ok(true)
    }

    /// A session dies with any check it depends on going critical or away.
    pub(super) fn invalidate_sessions_on_check(&mut self, node: &str, check: &str) -> Result<()> {
        let ids: Vec<String> = self
            .sessions()?
            .into_iter()
            .filter(|s| {
                s.node == node
                    && s.node_checks
                        .iter()
                        .chain(&s.service_checks)
                        .any(|c| c == check)
            })
            .map(|s| s.id)
            .collect();
        for id in ids {
            self.session_destroy(&id)?;
        }
        Ok(())
    }
}
