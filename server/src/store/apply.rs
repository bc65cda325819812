//! Applying one command to the state machine's tables, inside the caller's transaction.
//! Every change is recorded in [`Changes`], so watchers of exactly that data are woken.

use std::collections::BTreeSet;

use std::cell::RefMut;

use super::mem::{put_raw, retain_in, span, Rows, TableId, Tables, WriteTxn};

use super::tables::*;
use std::collections::BTreeMap;

use crate::model::{
    CatalogVerb, Check, Command, CommandResult, HealthStatus, KvEntry, KvVerb, LockOp, Node,
    Registration, Service, Session, SessionBehavior, TxnOp, TxnOutcome, TxnResult,
};
use crate::raft::types::{decode, encode, StorageError};

type R<T> = Result<T, StorageError>;

/// Rebuilds [`SESSION_KEYS`] from the KV table: at start (data written before the index
/// existed) and after a snapshot replaced the tables.
pub(crate) fn rebuild_session_keys(t: &mut Tables) -> R<()> {
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

/// What a batch of commands touched.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) kv: BTreeSet<String>,
    pub(crate) services: BTreeSet<String>,
    pub(crate) nodes: BTreeSet<String>,
    pub(crate) tables: BTreeSet<&'static str>,
    /// Keys whose lock was released by a session invalidation, with that session's lock
    /// delay in ms: they cannot be re-acquired until it passes.
    pub(crate) lock_delays: Vec<(String, u64)>,
    /// Servers were retired: the refused Raft IDs must be reloaded.
    pub(crate) retired: bool,
}

/// Records `ids` as retired servers (see [`RETIRED`]).
pub(crate) fn retire_servers(txn: &WriteTxn, ids: &[u64]) -> R<()> {
    let mut t = txn.open_table(RETIRED)?;
    for id in ids {
        put_raw(&mut t, &id.to_string(), &[]);
    }
    Ok(())
}

/// The retired servers' Raft IDs.
pub(crate) fn retired_servers(t: &Rows) -> BTreeSet<u64> {
    t.keys().filter_map(|k| k.parse().ok()).collect()
}

pub(crate) fn apply_command(
    txn: &WriteTxn,
    index: u64,
    cmd: Command,
    ch: &mut Changes,
) -> R<CommandResult> {
    let mut a = Apply {
        txn,
        index,
        ch,
        touched: false,
    };
    let success = match cmd {
        Command::KvSet {
            key,
            value,
            flags,
            cas,
            lock,
        } => a.kv_set(key, value, flags, cas, lock)?,
        Command::KvDelete { key, cas } => a.kv_delete(&key, cas)?,
        Command::KvDeleteTree { prefix } => a.kv_delete_tree(&prefix)?,
        Command::KvReapTombstones { upto } => a.kv_reap_tombstones(upto)?,
        Command::RetireServers { ids } => {
            retire_servers(txn, &ids)?;
            a.ch.retired = true;
            true
        }
        Command::Register(reg) => a.register(*reg)?,
        Command::Deregister {
            node,
            service_id,
            check_id,
        } => a.deregister(&node, service_id.as_deref(), check_id.as_deref())?,
        Command::SessionCreate(s) => a.session_create(*s)?,
        Command::SessionDestroy { id } => a.session_destroy(&id)?,
        Command::Txn(ops) => {
            let outcome = a.txn(ops)?;
            let success = outcome.errors.is_empty();
            return Ok(CommandResult {
                index,
                success,
                txn: Some(outcome),
            });
        }
    };
    Ok(CommandResult {
        index,
        success,
        txn: None,
    })
}

fn get<T: serde::de::DeserializeOwned>(t: &Rows, key: &str) -> R<Option<T>> {
    match t.get(key) {
        Some(v) => Ok(Some(decode(v)?)),
        None => Ok(None),
    }
}

fn put<T: serde::Serialize>(t: &mut Rows, key: &str, v: &T) -> R<()> {
    put_raw(t, key, &encode(v)?);
    Ok(())
}

struct Apply<'a> {
    txn: &'a WriteTxn,
    index: u64,
    ch: &'a mut Changes,
    /// Set by any table change; tells register/deregister whether their node changed.
    touched: bool,
}

impl Apply<'_> {
    fn table(&self, t: TableId) -> R<RefMut<'_, Rows>> {
        self.txn.open_table(t)
    }

    fn bump(&mut self, name: &'static str) -> R<()> {
        self.txn.indexes()?.insert(name.to_string(), self.index);
        self.ch.tables.insert(name);
        self.touched = true;
        Ok(())
    }

    /// Marks everything about one node (record, services, checks) as changed.
    fn bump_node(&mut self, node: &str) -> R<()> {
        self.txn.indexes()?.insert(node_index(node), self.index);
        self.ch.nodes.insert(node.to_string());
        Ok(())
    }

    fn bump_service(&mut self, name: &str) -> R<()> {
        self.txn.indexes()?.insert(svc_index(name), self.index);
        self.ch.services.insert(name.to_string());
        Ok(())
    }

    /// A node-level change affects every service instance on the node.
    fn bump_node_services(&mut self, node: &str) -> R<()> {
        let names: Vec<String> = {
            let t = self.table(SERVICES)?;
            let (lo, hi) = node_range(node);
            let mut names = Vec::new();
            for (_, v) in span(&t, lo.as_str(), Some(hi.as_str())) {
                names.push(decode::<Service>(v)?.name);
            }
            names
        };
        for n in names {
            self.bump_service(&n)?;
        }
        Ok(())
    }

    /// Writes a KV entry whose holder was `prev_holder`, keeping [`SESSION_KEYS`] in step.
    fn kv_store(&mut self, e: &KvEntry, prev_holder: Option<&str>) -> R<()> {
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
    fn kv_remove(&mut self, key: &str) -> R<Option<KvEntry>> {
        let old: Option<KvEntry> = match self.table(KV)?.remove(key) {
            Some(v) => Some(decode(&v)?),
            None => None,
        };
        if let Some(s) = old.as_ref().and_then(|e| e.session.as_deref()) {
            self.table(SESSION_KEYS)?.remove(node_key(s, key).as_str());
        }
        Ok(old)
    }

    fn kv_touch(&mut self, key: &str) -> R<()> {
        self.ch.kv.insert(key.to_string());
        self.bump(IDX_KV)
    }

    fn session_exists(&self, id: &str) -> R<bool> {
        Ok(self.table(SESSIONS)?.get(id).is_some())
    }

    fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
        lock: Option<LockOp>,
    ) -> R<bool> {
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

    fn tombstone(&mut self, key: &str) -> R<()> {
        let index = self.index;
        put(&mut *self.table(KV_TOMBS)?, key, &index)?;
        self.kv_touch(key)
    }

    fn kv_delete(&mut self, key: &str, cas: Option<u64>) -> R<bool> {
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

    fn kv_delete_tree(&mut self, prefix: &str) -> R<bool> {
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
    fn kv_reap_tombstones(&mut self, upto: u64) -> R<bool> {
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

    fn register(&mut self, reg: Registration) -> R<bool> {
        let node = reg.node.name.clone();
        self.touched = false;
        let ok = self.register_inner(reg)?;
        if self.touched {
            self.bump_node(&node)?;
        }
        Ok(ok)
    }

    fn register_inner(&mut self, reg: Registration) -> R<bool> {
        let Registration {
            node,
            skip_node_update,
            service,
            checks,
        } = reg;
        // Validate before writing anything: a check must belong to a service the node has or
        // is registering now (Consul refuses the whole registration otherwise).
        for c in &checks {
            let sid = &c.service_id;
            let ok = sid.is_empty()
                || service.as_ref().is_some_and(|s| &s.id == sid)
                || self
                    .table(SERVICES)?
                    .get(node_key(&node.name, sid).as_str())
                    .is_some();
            if !ok {
                return Ok(false);
            }
        }
        let old: Option<Node> = get(&*self.table(NODES)?, &node.name)?;
        let write = match &old {
            None => true,
            Some(_) if skip_node_update => false,
            Some(o) => {
                o.id != node.id
                    || o.address != node.address
                    || o.datacenter != node.datacenter
                    || o.tagged_addresses != node.tagged_addresses
                    || o.meta != node.meta
            }
        };
        if write {
            let create_index = old.map_or(self.index, |o| o.create_index);
            let n = Node {
                create_index,
                modify_index: self.index,
                ..node.clone()
            };
            put(&mut *self.table(NODES)?, &node.name, &n)?;
            self.bump(IDX_NODES)?;
            self.bump_node_services(&node.name)?;
        }
        if let Some(svc) = service {
            let key = node_key(&node.name, &svc.id);
            let old: Option<Service> = get(&*self.table(SERVICES)?, &key)?;
            let same = |o: &Service| {
                Service {
                    create_index: 0,
                    modify_index: 0,
                    ..o.clone()
                } == Service {
                    create_index: 0,
                    modify_index: 0,
                    ..svc.clone()
                }
            };
            if !old.as_ref().is_some_and(same) {
                if let Some(o) = old.as_ref().filter(|o| o.name != svc.name) {
                    // Renamed in place: drop the old name's index row.
                    let k = format!("{}\0{}", o.name, key);
                    self.table(SERVICE_NAMES)?.remove(k.as_str());
                    self.bump_service(&o.name.clone())?;
                }
                let create_index = old.map_or(self.index, |o| o.create_index);
                let s = Service {
                    create_index,
                    modify_index: self.index,
                    ..svc.clone()
                };
                put(&mut *self.table(SERVICES)?, &key, &s)?;
                let name_key = format!("{}\0{}", svc.name, key);
                put_raw(&mut *self.table(SERVICE_NAMES)?, &name_key, &[]);
                self.bump(IDX_SERVICES)?;
                self.bump_service(&svc.name)?;
            }
        }
        let mut critical = Vec::new();
        for mut c in checks {
            c.node = node.name.clone();
            c.service_name = if c.service_id.is_empty() {
                String::new()
            } else {
                get::<Service>(
                    &*self.table(SERVICES)?,
                    &node_key(&node.name, &c.service_id),
                )?
                .map(|s| s.name)
                .unwrap_or_default()
            };
            let key = node_key(&node.name, &c.id);
            let old: Option<Check> = get(&*self.table(CHECKS)?, &key)?;
            let same = |o: &Check| {
                Check {
                    create_index: 0,
                    modify_index: 0,
                    ..o.clone()
                } == Check {
                    create_index: 0,
                    modify_index: 0,
                    ..c.clone()
                }
            };
            if old.as_ref().is_some_and(same) {
                continue;
            }
            if c.status == HealthStatus::Critical {
                critical.push(c.id.clone());
            }
            let create_index = old.map_or(self.index, |o| o.create_index);
            let c = Check {
                create_index,
                modify_index: self.index,
                ..c
            };
            put(&mut *self.table(CHECKS)?, &key, &c)?;
            self.bump(IDX_CHECKS)?;
            if c.service_name.is_empty() {
                self.bump_node_services(&node.name)?;
            } else {
                self.bump_service(&c.service_name)?;
            }
        }
        for check in critical {
            self.invalidate_sessions_on_check(&node.name, &check)?;
        }
        Ok(true)
    }

    /// Removes a node's services (all, or those matching `only`), with their name index rows.
    fn remove_services(&mut self, node: &str, only: Option<&str>) -> R<()> {
        let (lo, hi) = node_range(node);
        let mut gone: Vec<Service> = Vec::new();
        retain_in(&mut *self.table(SERVICES)?, &lo, Some(&hi), |_, v| {
            let Ok(s) = decode::<Service>(v) else {
                return true;
            };
            if only.is_some_and(|id| id != s.id) {
                return true;
            }
            gone.push(s);
            false
        });
        if gone.is_empty() {
            return Ok(());
        }
        for s in &gone {
            let k = format!("{}\0{}", s.name, node_key(node, &s.id));
            self.table(SERVICE_NAMES)?.remove(k.as_str());
            self.bump_service(&s.name)?;
        }
        self.bump(IDX_SERVICES)
    }

    /// Removes a node's checks matching `pred`; returns the IDs removed.
    fn remove_checks(&mut self, node: &str, pred: impl Fn(&Check) -> bool) -> R<Vec<Check>> {
        let (lo, hi) = node_range(node);
        let mut gone = Vec::new();
        retain_in(
            &mut *self.table(CHECKS)?,
            &lo,
            Some(&hi),
            |_, v| match decode::<Check>(v) {
                Ok(c) if pred(&c) => {
                    gone.push(c);
                    false
                }
                _ => true,
            },
        );
        if !gone.is_empty() {
            self.bump(IDX_CHECKS)?;
        }
        Ok(gone)
    }

    fn deregister(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> R<bool> {
        self.touched = false;
        let ok = self.deregister_inner(node, service_id, check_id)?;
        if self.touched {
            self.bump_node(node)?;
        }
        Ok(ok)
    }

    fn deregister_inner(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> R<bool> {
        match (service_id, check_id) {
            (Some(sid), _) => {
                let checks = self.remove_checks(node, |c| c.service_id == sid)?;
                self.remove_services(node, Some(sid))?;
                for c in checks {
                    self.invalidate_sessions_on_check(node, &c.id)?;
                }
            }
            (None, Some(cid)) => {
                let checks = self.remove_checks(node, |c| c.id == cid)?;
                for c in &checks {
                    if c.service_name.is_empty() {
                        self.bump_node_services(node)?;
                    } else {
                        self.bump_service(&c.service_name)?;
                    }
                    self.invalidate_sessions_on_check(node, &c.id)?;
                }
            }
            (None, None) => {
                self.remove_checks(node, |_| true)?;
                self.remove_services(node, None)?;
                if self.table(NODES)?.remove(node).is_some() {
                    self.bump(IDX_NODES)?;
                }
                // A node that is gone takes its sessions with it.
                let ids: Vec<String> = self
                    .sessions()?
                    .into_iter()
                    .filter(|s| s.node == node)
                    .map(|s| s.id)
                    .collect();
                for id in ids {
                    self.session_destroy(&id)?;
                }
            }
        }
        Ok(true)
    }

    fn sessions(&self) -> R<Vec<Session>> {
        let t = self.table(SESSIONS)?;
        let mut out = Vec::new();
        for (_, v) in t.iter() {
            out.push(decode(v)?);
        }
        Ok(out)
    }

    fn session_create(&mut self, mut s: Session) -> R<bool> {
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

    fn session_destroy(&mut self, id: &str) -> R<bool> {
        let Some(s) = get::<Session>(&*self.table(SESSIONS)?, id)? else {
            return Ok(true);
        };
        self.table(SESSIONS)?.remove(id);
        self.bump(IDX_SESSIONS)?;
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
    fn invalidate_sessions_on_check(&mut self, node: &str, check: &str) -> R<()> {
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

impl Apply<'_> {
    /// All or nothing: every operation is checked against the state as the operations before it
    /// left it (an overlay over the tables); only if none fails is anything written.
    fn txn(&mut self, ops: Vec<TxnOp>) -> R<TxnOutcome> {
        let mut kv: BTreeMap<String, Option<KvEntry>> = BTreeMap::new();
        let mut new_nodes: BTreeSet<String> = BTreeSet::new();
        let mut out = TxnOutcome::default();
        let index = self.index;
        // Catalog CAS verbs: check the entity's ModifyIndex up front, then act as set/delete.
        let mut ops = ops;
        for (i, op) in ops.iter_mut().enumerate() {
            let (verb, current) = match op {
                TxnOp::Node { verb, node } => {
                    let cur =
                        get::<Node>(&*self.table(NODES)?, &node.name)?.map(|n| n.modify_index);
                    (verb, cur)
                }
                TxnOp::Service {
                    verb,
                    node,
                    service,
                } => {
                    let cur =
                        get::<Service>(&*self.table(SERVICES)?, &node_key(node, &service.id))?
                            .map(|s| s.modify_index);
                    (verb, cur)
                }
                TxnOp::Check { verb, check } => {
                    let cur =
                        get::<Check>(&*self.table(CHECKS)?, &node_key(&check.node, &check.id))?
                            .map(|c| c.modify_index);
                    (verb, cur)
                }
                TxnOp::Kv { .. } => continue,
            };
            match *verb {
                CatalogVerb::Cas(want) if current.unwrap_or(0) != want => {
                    out.errors.push((
                        i,
                        format!(
                            "failed to set, index is stale (current {}, given {want})",
                            current.unwrap_or(0)
                        ),
                    ));
                }
                CatalogVerb::Cas(_) => *verb = CatalogVerb::Set,
                CatalogVerb::DeleteCas(want) if current != Some(want) => {
                    out.errors.push((
                        i,
                        format!(
                            "failed to delete, index is stale (current {}, given {want})",
                            current.unwrap_or(0)
                        ),
                    ));
                }
                CatalogVerb::DeleteCas(_) => *verb = CatalogVerb::Delete,
                _ => {}
            }
        }
        if !out.errors.is_empty() {
            return Ok(out);
        }
        for (i, op) in ops.iter().enumerate() {
            let res: Result<Option<TxnResult>, String> = match op {
                TxnOp::Kv {
                    verb,
                    key,
                    value,
                    flags,
                    index: want,
                    session,
                } => {
                    let cur = match kv.get(key) {
                        Some(e) => e.clone(),
                        None => get::<KvEntry>(&*self.table(KV)?, key)?,
                    };
                    let modify = cur.as_ref().map_or(0, |e| e.modify_index);
                    let written = |cur: Option<KvEntry>| match cur {
                        Some(e) => KvEntry {
                            value: value.clone(),
                            flags: *flags,
                            modify_index: index,
                            ..e
                        },
                        None => KvEntry {
                            key: key.clone(),
                            value: value.clone(),
                            flags: *flags,
                            session: None,
                            create_index: index,
                            modify_index: index,
                            lock_index: 0,
                        },
                    };
                    let stripped = |e: &KvEntry| KvEntry {
                        value: Vec::new(),
                        ..e.clone()
                    };
                    match verb {
                        KvVerb::Set => {
                            let e = written(cur);
                            kv.insert(key.clone(), Some(e.clone()));
                            Ok(Some(TxnResult::Kv(stripped(&e))))
                        }
                        KvVerb::Cas if modify != *want => {
                            Err(format!("failed to set key {key:?}, index is stale"))
                        }
                        KvVerb::Cas => {
                            let e = written(cur);
                            kv.insert(key.clone(), Some(e.clone()));
                            Ok(Some(TxnResult::Kv(stripped(&e))))
                        }
                        KvVerb::Lock => {
                            if !self.session_exists(session)? {
                                Err(format!(
                                    "failed to lock key {key:?}: invalid session {session:?}"
                                ))
                            } else if cur
                                .as_ref()
                                .and_then(|e| e.session.as_ref())
                                .is_some_and(|s| s != session)
                            {
                                Err(format!("failed to lock key {key:?}, lock is already held"))
                            } else {
                                let held = cur
                                    .as_ref()
                                    .is_some_and(|e| e.session.as_ref() == Some(session));
                                let mut e = written(cur);
                                if !held {
                                    e.session = Some(session.clone());
                                    e.lock_index += 1;
                                }
                                kv.insert(key.clone(), Some(e.clone()));
                                Ok(Some(TxnResult::Kv(stripped(&e))))
                            }
                        }
                        KvVerb::Unlock => {
                            if cur.as_ref().and_then(|e| e.session.as_ref()) != Some(session) {
                                Err(format!("failed to unlock key {key:?}, lock isn't held, or is held by another session"))
                            } else {
                                let mut e = written(cur);
                                e.session = None;
                                kv.insert(key.clone(), Some(e.clone()));
                                Ok(Some(TxnResult::Kv(stripped(&e))))
                            }
                        }
                        KvVerb::Get => match cur {
                            Some(e) => Ok(Some(TxnResult::Kv(e))),
                            None => Err(format!("key {key:?} doesn't exist")),
                        },
                        KvVerb::GetTree => {
                            let mut tree: BTreeMap<String, KvEntry> = BTreeMap::new();
                            let t = self.table(KV)?;
                            for (k, v) in span(&t, key.as_str(), None) {
                                if !k.starts_with(key.as_str()) {
                                    break;
                                }
                                tree.insert(k.to_string(), decode(v)?);
                            }
                            for (k, e) in kv
                                .range(key.clone()..)
                                .take_while(|(k, _)| k.starts_with(key.as_str()))
                            {
                                match e {
                                    Some(e) => tree.insert(k.clone(), e.clone()),
                                    None => tree.remove(k),
                                };
                            }
                            out.results.extend(tree.into_values().map(TxnResult::Kv));
                            Ok(None)
                        }
                        KvVerb::CheckIndex if modify != *want => {
                            Err(format!("current modify index {modify} != {want}"))
                        }
                        KvVerb::CheckSession
                            if cur.as_ref().and_then(|e| e.session.as_ref()) != Some(session) =>
                        {
                            Err(format!("key {key:?} is not locked by session {session:?}"))
                        }
                        KvVerb::CheckIndex | KvVerb::CheckSession => {
                            Ok(cur.map(|e| TxnResult::Kv(stripped(&e))))
                        }
                        KvVerb::CheckNotExists if cur.is_some() => {
                            Err(format!("key {key:?} exists"))
                        }
                        KvVerb::CheckNotExists => Ok(None),
                        KvVerb::DeleteCas if modify != *want => {
                            Err(format!("failed to delete key {key:?}, index is stale"))
                        }
                        KvVerb::Delete | KvVerb::DeleteCas => {
                            kv.insert(key.clone(), None);
                            Ok(None)
                        }
                        KvVerb::DeleteTree => {
                            let t = self.table(KV)?;
                            for (k, _) in span(&t, key.as_str(), None) {
                                if !k.starts_with(key.as_str()) {
                                    break;
                                }
                                kv.insert(k.to_string(), None);
                            }
                            let pending: Vec<String> = kv
                                .range(key.clone()..)
                                .take_while(|(k, _)| k.starts_with(key.as_str()))
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in pending {
                                kv.insert(k, None);
                            }
                            Ok(None)
                        }
                    }
                }
                TxnOp::Node { verb, node } => match verb {
                    CatalogVerb::Get => match get::<Node>(&*self.table(NODES)?, &node.name)? {
                        Some(n) => Ok(Some(TxnResult::Node(n))),
                        None => Err(format!("node {:?} doesn't exist", node.name)),
                    },
                    CatalogVerb::Set if node.name.is_empty() || node.address.is_empty() => {
                        Err("Must provide node name and address".into())
                    }
                    CatalogVerb::Set => {
                        new_nodes.insert(node.name.clone());
                        Ok(Some(TxnResult::Node(Node {
                            modify_index: index,
                            ..node.clone()
                        })))
                    }
                    // CAS verbs were checked and turned into Set/Delete above.
                    CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => {
                        Ok(None)
                    }
                },
                TxnOp::Service {
                    verb,
                    node,
                    service,
                } => {
                    let key = node_key(node, &service.id);
                    match verb {
                        CatalogVerb::Get => match get::<Service>(&*self.table(SERVICES)?, &key)? {
                            Some(s) => Ok(Some(TxnResult::Service(node.clone(), s))),
                            None => Err(format!(
                                "service {:?} on node {node:?} doesn't exist",
                                service.id
                            )),
                        },
                        CatalogVerb::Set
                            if !new_nodes.contains(node)
                                && get::<Node>(&*self.table(NODES)?, node)?.is_none() =>
                        {
                            Err(format!("node {node:?} doesn't exist"))
                        }
                        CatalogVerb::Set => Ok(Some(TxnResult::Service(
                            node.clone(),
                            Service {
                                modify_index: index,
                                ..service.clone()
                            },
                        ))),
                        // CAS verbs were checked and turned into Set/Delete above.
                        CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => {
                            Ok(None)
                        }
                    }
                }
                TxnOp::Check { verb, check } => {
                    let key = node_key(&check.node, &check.id);
                    match verb {
                        CatalogVerb::Get => match get::<Check>(&*self.table(CHECKS)?, &key)? {
                            Some(c) => Ok(Some(TxnResult::Check(c))),
                            None => Err(format!(
                                "check {:?} on node {:?} doesn't exist",
                                check.id, check.node
                            )),
                        },
                        CatalogVerb::Set
                            if !new_nodes.contains(&check.node)
                                && get::<Node>(&*self.table(NODES)?, &check.node)?.is_none() =>
                        {
                            Err(format!("node {:?} doesn't exist", check.node))
                        }
                        CatalogVerb::Set => Ok(Some(TxnResult::Check(Check {
                            modify_index: index,
                            ..check.clone()
                        }))),
                        // CAS verbs were checked and turned into Set/Delete above.
                        CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => {
                            Ok(None)
                        }
                    }
                }
            };
            match res {
                Ok(Some(r)) => out.results.push(r),
                Ok(None) => {}
                Err(e) => out.errors.push((i, e)),
            }
        }
        if !out.errors.is_empty() {
            out.results.clear();
            return Ok(out);
        }
        // Every operation holds: write the KV overlay, then the catalog operations in order.
        for (key, e) in kv {
            match e {
                Some(e) => {
                    let prev = get::<KvEntry>(&*self.table(KV)?, &key)?.and_then(|p| p.session);
                    self.kv_store(&e, prev.as_deref())?;
                    self.table(KV_TOMBS)?.remove(key.as_str());
                    self.kv_touch(&key)?;
                }
                None => {
                    if self.kv_remove(&key)?.is_some() {
                        self.tombstone(&key)?;
                    }
                }
            }
        }
        for op in ops {
            match op {
                TxnOp::Kv { .. } => {}
                TxnOp::Node {
                    verb: CatalogVerb::Set,
                    node,
                } => {
                    self.register(Registration {
                        node,
                        skip_node_update: false,
                        service: None,
                        checks: Vec::new(),
                    })?;
                }
                TxnOp::Node {
                    verb: CatalogVerb::Delete,
                    node,
                } => {
                    self.deregister(&node.name, None, None)?;
                }
                TxnOp::Service {
                    verb: CatalogVerb::Set,
                    node,
                    service,
                } => {
                    let reg = Registration {
                        node: Node {
                            name: node,
                            ..Default::default()
                        },
                        skip_node_update: true,
                        service: Some(service),
                        checks: Vec::new(),
                    };
                    self.register(reg)?;
                }
                TxnOp::Service {
                    verb: CatalogVerb::Delete,
                    node,
                    service,
                } => {
                    self.deregister(&node, Some(&service.id), None)?;
                }
                TxnOp::Check {
                    verb: CatalogVerb::Set,
                    check,
                } => {
                    let reg = Registration {
                        node: Node {
                            name: check.node.clone(),
                            ..Default::default()
                        },
                        skip_node_update: true,
                        service: None,
                        checks: vec![check],
                    };
                    self.register(reg)?;
                }
                TxnOp::Check {
                    verb: CatalogVerb::Delete,
                    check,
                } => {
                    self.deregister(&check.node, None, Some(&check.id))?;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
