//! Transactions (`/v1/txn`): KV and catalog operations checked together against an overlay
//! of the tables, then written all together or not at all.

use std::collections::{BTreeMap, BTreeSet};

use super::{get, Apply};
use crate::codec::decode;
use crate::model::{
    CatalogVerb, Check, KvEntry, KvVerb, Node, Registration, Service, TxnOp, TxnOutcome, TxnResult,
};
use crate::store::error::Result;
use crate::store::mem::span;
use crate::store::tables::*;

/// One operation's verdict: its result row, if it has one, or why the transaction fails.
type Verdict = std::result::Result<Option<TxnResult>, String>;

/// The KV entries as a transaction's operations so far left them (`None`: deleted), over the
/// table.
type KvOverlay = BTreeMap<String, Option<KvEntry>>;

impl Apply<'_> {
    /// All or nothing: every operation is checked against the state as the operations before it
    /// left it (an overlay over the tables); only if none fails is anything written.
    pub(super) fn txn(&mut self, mut ops: Vec<TxnOp>) -> Result<TxnOutcome> {
        let mut out = TxnOutcome::default();
        self.txn_resolve_cas(&mut ops, &mut out)?;
        if !out.errors.is_empty() {
            return Ok(out);
        }
        let mut kv = KvOverlay::new();
        let mut new_nodes: BTreeSet<String> = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let res = match op {
                TxnOp::Kv { .. } => self.txn_kv(&mut kv, op, &mut out.results)?,
                TxnOp::Node { verb, node } => self.txn_node(&mut new_nodes, verb, node)?,
                TxnOp::Service {
                    verb,
                    node,
                    service,
                } => self.txn_service(&new_nodes, verb, node, service)?,
                TxnOp::Check { verb, check } => self.txn_check(&new_nodes, verb, check)?,
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
        self.txn_write(kv, ops)?;
        Ok(out)
    }

    /// Catalog CAS verbs: checks the entity's ModifyIndex up front, then turns the verb into
    /// set or delete; a stale index is an error of that operation.
    fn txn_resolve_cas(&self, ops: &mut [TxnOp], out: &mut TxnOutcome) -> Result<()> {
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
        Ok(())
    }

    /// Checks one KV operation against `kv`, recording what it writes there. `GetTree` adds
    /// its rows to `results` itself.
    fn txn_kv(
        &self,
        kv: &mut KvOverlay,
        op: &TxnOp,
        results: &mut Vec<TxnResult>,
    ) -> Result<Verdict> {
        let TxnOp::Kv {
            verb,
            key,
            value,
            flags,
            index: want,
            session,
        } = op
        else {
            return Ok(Ok(None));
        };
        let index = self.index;
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
        let verdict = match verb {
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
                results.extend(tree.into_values().map(TxnResult::Kv));
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
            KvVerb::CheckNotExists if cur.is_some() => Err(format!("key {key:?} exists")),
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
        };
        Ok(verdict)
    }

    fn txn_node(
        &self,
        new_nodes: &mut BTreeSet<String>,
        verb: &CatalogVerb,
        node: &Node,
    ) -> Result<Verdict> {
        let index = self.index;
        Ok(match verb {
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
            // CAS verbs were checked and turned into Set/Delete by `txn_resolve_cas`.
            CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => Ok(None),
        })
    }

    fn txn_service(
        &self,
        new_nodes: &BTreeSet<String>,
        verb: &CatalogVerb,
        node: &str,
        service: &Service,
    ) -> Result<Verdict> {
        let index = self.index;
        let key = node_key(node, &service.id);
        let verdict = match verb {
            CatalogVerb::Get => match get::<Service>(&*self.table(SERVICES)?, &key)? {
                Some(s) => Ok(Some(TxnResult::Service(node.to_string(), s))),
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
                node.to_string(),
                Service {
                    modify_index: index,
                    ..service.clone()
                },
            ))),
            // CAS verbs were checked and turned into Set/Delete by `txn_resolve_cas`.
            CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => Ok(None),
        };
        Ok(verdict)
    }

    fn txn_check(
        &self,
        new_nodes: &BTreeSet<String>,
        verb: &CatalogVerb,
        check: &Check,
    ) -> Result<Verdict> {
        let index = self.index;
        let key = node_key(&check.node, &check.id);
        let verdict = match verb {
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
            // CAS verbs were checked and turned into Set/Delete by `txn_resolve_cas`.
            CatalogVerb::Delete | CatalogVerb::Cas(_) | CatalogVerb::DeleteCas(_) => Ok(None),
        };
        Ok(verdict)
    }

    /// Writes a transaction whose every operation holds: the KV overlay, then the catalog
    /// operations in order.
    fn txn_write(&mut self, kv: KvOverlay, ops: Vec<TxnOp>) -> Result<()> {
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
        Ok(())
    }
}
