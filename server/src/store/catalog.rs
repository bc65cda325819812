use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition};

use super::tables::*;
use std::collections::BTreeMap;

use crate::model::{
    Check, HealthStatus, KvEntry, Node, Query, QueryResult, Service, ServiceHealth, Session,
};
use crate::raft::types::decode;
use crate::{Error, Result};

/// Read handle over the local state machine. Reads run beside writes (redb MVCC) and return
/// owned model values; no lock is held once a method returns. Callers choose consistency
/// through [`crate::Server::barrier`] before reading.
#[derive(Clone)]
pub struct Catalog {
    db: Arc<Database>,
}

fn de<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    decode(b).map_err(|e| Error::Storage(e.to_string()))
}

impl Catalog {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Catalog { db }
    }

    fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    fn scan<T: serde::de::DeserializeOwned>(
        txn: &ReadTransaction,
        table: TableDefinition<&str, &[u8]>,
        lo: &str,
        hi: Option<&str>,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<T>> {
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        let iter = match hi {
            Some(hi) => t.range::<&str>(lo..hi)?,
            None => t.range::<&str>(lo..)?,
        };
        for item in iter {
            let (k, v) = item?;
            if !keep(k.value()) {
                break;
            }
            out.push(de(v.value())?);
        }
        Ok(out)
    }

    /// The Raft index of the last change to a table (`kv`, `nodes`, `services`, `checks`).
    pub fn table_index(&self, table: &str) -> Result<u64> {
        let txn = self.read()?;
        let t = txn.open_table(INDEXES)?;
        Ok(t.get(table)?.map_or(0, |v| v.value()))
    }

    pub fn kv_get(&self, key: &str) -> Result<Option<KvEntry>> {
        let txn = self.read()?;
        let t = txn.open_table(KV)?;
        match t.get(key)? {
            Some(v) => Ok(Some(de(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let txn = self.read()?;
        Self::scan(&txn, KV, prefix, None, |k| k.starts_with(prefix))
    }

    /// Keys under `prefix`; with a separator, keys past it are folded into one entry ending at
    /// the separator, as Consul's `?keys&separator=/`.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(KV)?;
        let mut out: Vec<String> = Vec::new();
        for item in t.range::<&str>(prefix..)? {
            let (k, _) = item?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            let key = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match k[prefix.len()..].find(sep) {
                    Some(pos) => &k[..prefix.len() + pos + sep.len()],
                    None => k,
                },
                None => k,
            };
            if out.last().map(String::as_str) != Some(key) {
                out.push(key.to_string());
            }
        }
        Ok(out)
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        let txn = self.read()?;
        Self::scan(&txn, NODES, "", None, |_| true)
    }

    pub fn node(&self, name: &str) -> Result<Option<Node>> {
        let txn = self.read()?;
        let t = txn.open_table(NODES)?;
        match t.get(name)? {
            Some(v) => Ok(Some(de(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn node_services(&self, name: &str) -> Result<Vec<Service>> {
        let txn = self.read()?;
        let (lo, hi) = node_range(name);
        Self::scan(&txn, SERVICES, &lo, Some(&hi), |_| true)
    }

    pub fn node_checks(&self, name: &str) -> Result<Vec<Check>> {
        let txn = self.read()?;
        let (lo, hi) = node_range(name);
        Self::scan(&txn, CHECKS, &lo, Some(&hi), |_| true)
    }

    /// Every service instance in the catalog, with its node.
    pub fn services(&self) -> Result<Vec<(String, Service)>> {
        let txn = self.read()?;
        let t = txn.open_table(SERVICES)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let node = k.value().split('\0').next().unwrap_or_default().to_string();
            out.push((node, de(v.value())?));
        }
        Ok(out)
    }

    /// The index a deleted key left behind, if any.
    fn tombstone(&self, txn: &ReadTransaction, key: &str) -> Result<Option<u64>> {
        let t = txn.open_table(KV_TOMBS)?;
        match t.get(key)? {
            Some(v) => Ok(Some(de(v.value())?)),
            None => Ok(None),
        }
    }

    /// Whether any tombstone was left at or before `index`.
    pub(crate) fn has_tombstones_upto(&self, index: u64) -> Result<bool> {
        let txn = self.read()?;
        let t = txn.open_table(KV_TOMBS)?;
        for item in t.iter()? {
            let (_, v) = item?;
            if de::<u64>(v.value())? <= index {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The highest deletion index under a prefix.
    fn max_tombstone(&self, txn: &ReadTransaction, prefix: &str) -> Result<u64> {
        let t = txn.open_table(KV_TOMBS)?;
        let mut max = 0;
        for item in t.range::<&str>(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            max = max.max(de::<u64>(v.value())?);
        }
        Ok(max)
    }

    /// The index of a service: the last change to any instance, its checks or its nodes.
    fn service_index(&self, name: &str) -> Result<u64> {
        match self.table_index(&svc_index(name))? {
            0 => self.table_index(IDX_SERVICES),
            i => Ok(i),
        }
    }

    /// The index of one node: the last change to its record, services or checks.
    fn node_index(&self, name: &str) -> Result<u64> {
        match self.table_index(&node_index(name))? {
            0 => self.table_index(IDX_NODES),
            i => Ok(i),
        }
    }

    /// A prefix's index, as Consul: its newest entry or deletion, else the KV table's index.
    fn prefix_idx(newest: u64, tombstone: u64, table: u64) -> u64 {
        match newest.max(tombstone) {
            0 => table,
            i => i,
        }
    }

    /// The instances of one service, with their nodes.
    pub fn service_nodes(&self, name: &str) -> Result<Vec<(Node, Service)>> {
        Self::service_nodes_in(&self.read()?, name)
    }

    fn service_nodes_in(txn: &ReadTransaction, name: &str) -> Result<Vec<(Node, Service)>> {
        let names = txn.open_table(SERVICE_NAMES)?;
        let services = txn.open_table(SERVICES)?;
        let nodes = txn.open_table(NODES)?;
        let (lo, hi) = node_range(name);
        let mut out = Vec::new();
        for item in names.range::<&str>(lo.as_str()..hi.as_str())? {
            let (k, _) = item?;
            let svc_key = &k.value()[name.len() + 1..];
            let Some(sv) = services.get(svc_key)? else {
                continue;
            };
            let svc: Service = de(sv.value())?;
            let node_name = svc_key.split('\0').next().unwrap_or_default();
            let Some(nv) = nodes.get(node_name)? else {
                continue;
            };
            out.push((de(nv.value())?, svc));
        }
        Ok(out)
    }

    /// The instances of one service with every check that applies to each, from one
    /// consistent snapshot of the tables.
    pub fn service_health(&self, name: &str) -> Result<Vec<ServiceHealth>> {
        let txn = self.read()?;
        let checks = txn.open_table(CHECKS)?;
        let mut out = Vec::new();
        for (node, service) in Self::service_nodes_in(&txn, name)? {
            let (lo, hi) = node_range(&node.name);
            let mut mine = Vec::new();
            for item in checks.range::<&str>(lo.as_str()..hi.as_str())? {
                let (_, v) = item?;
                let c: Check = de(v.value())?;
                if c.service_id.is_empty() || c.service_id == service.id {
                    mine.push(c);
                }
            }
            out.push(ServiceHealth {
                node,
                service,
                checks: mine,
            });
        }
        Ok(out)
    }

    /// Every check, optionally only those in `state`.
    pub fn checks(&self, state: Option<HealthStatus>) -> Result<Vec<Check>> {
        let txn = self.read()?;
        let all: Vec<Check> = Self::scan(&txn, CHECKS, "", None, |_| true)?;
        Ok(all
            .into_iter()
            .filter(|c| state.is_none_or(|s| c.status == s))
            .collect())
    }

    pub fn sessions(&self) -> Result<Vec<Session>> {
        let txn = self.read()?;
        Self::scan(&txn, SESSIONS, "", None, |_| true)
    }

    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        let txn = self.read()?;
        let t = txn.open_table(SESSIONS)?;
        match t.get(id)? {
            Some(v) => Ok(Some(de(v.value())?)),
            None => Ok(None),
        }
    }

    /// The index a [`Query`] would report, without reading its data when that is cheaper.
    pub fn query_index(&self, q: &Query) -> Result<u64> {
        match q {
            Query::ServiceNodes { name }
            | Query::ServiceHealth { name }
            | Query::ServiceChecks { name } => self.service_index(name),
            Query::Nodes => self.table_index(IDX_NODES),
            Query::Services => self.table_index(IDX_SERVICES),
            Query::ChecksInState { .. } => self.table_index(IDX_CHECKS),
            Query::Node { name } | Query::NodeChecks { name } => self.node_index(name),
            Query::Session { .. } | Query::Sessions | Query::NodeSessions { .. } => {
                self.table_index(IDX_SESSIONS)
            }
            Query::KvGet { .. } | Query::KvList { .. } | Query::KvKeys { .. } => {
                Ok(self.query(q)?.1)
            }
        }
    }

    /// Runs a [`Query`] against local state, returning the data and its index.
    ///
    /// The index is always read before the data (separate read transactions): a write landing
    /// in between then makes the index older than the data, which costs a blocking client one
    /// extra round trip; the other order would hand out old data under the new index, and the
    /// client's next blocking query would wait for a change that already happened.
    pub fn query(&self, q: &Query) -> Result<(QueryResult, u64)> {
        Ok(match q {
            Query::KvGet { key } => {
                let before = match self.tombstone(&self.read()?, key)? {
                    Some(i) => i,
                    None => self.table_index(IDX_KV)?,
                };
                let e = self.kv_get(key)?;
                let idx = e.as_ref().map_or(before, |e| e.modify_index);
                (QueryResult::Kv(e), idx)
            }
            Query::KvList { prefix } => {
                let (tomb, table) = (
                    self.max_tombstone(&self.read()?, prefix)?,
                    self.table_index(IDX_KV)?,
                );
                let l = self.kv_list(prefix)?;
                let newest = l.iter().map(|e| e.modify_index).max().unwrap_or(0);
                (
                    QueryResult::KvList(l),
                    Self::prefix_idx(newest, tomb, table),
                )
            }
            Query::KvKeys { prefix, separator } => {
                let (tomb, table) = (
                    self.max_tombstone(&self.read()?, prefix)?,
                    self.table_index(IDX_KV)?,
                );
                let newest = self
                    .kv_list(prefix)?
                    .iter()
                    .map(|e| e.modify_index)
                    .max()
                    .unwrap_or(0);
                let keys = self.kv_keys(prefix, separator.as_deref())?;
                (
                    QueryResult::Keys(keys),
                    Self::prefix_idx(newest, tomb, table),
                )
            }
            Query::Services => {
                let idx = self.query_index(q)?;
                let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (_, s) in self.services()? {
                    let tags = map.entry(s.name).or_default();
                    for t in s.tags {
                        if !tags.contains(&t) {
                            tags.push(t);
                        }
                    }
                }
                (QueryResult::Services(map), idx)
            }
            other => {
                let idx = self.query_index(other)?;
                let res = match other {
                    Query::Nodes => QueryResult::Nodes(self.nodes()?),
                    Query::Node { name } => QueryResult::Node(match self.node(name)? {
                        Some(n) => Some((n, self.node_services(name)?)),
                        None => None,
                    }),
                    Query::NodeChecks { name } => QueryResult::Checks(self.node_checks(name)?),
                    Query::ServiceNodes { name } => {
                        QueryResult::ServiceNodes(self.service_nodes(name)?)
                    }
                    Query::ServiceHealth { name } => {
                        QueryResult::ServiceHealth(self.service_health(name)?)
                    }
                    Query::ServiceChecks { name } => QueryResult::Checks(
                        self.service_health(name)?
                            .into_iter()
                            .flat_map(|h| h.checks.into_iter().filter(|c| !c.service_id.is_empty()))
                            .collect(),
                    ),
                    Query::ChecksInState { state } => QueryResult::Checks(self.checks(*state)?),
                    Query::Session { id } => {
                        QueryResult::Sessions(self.session(id)?.into_iter().collect())
                    }
                    Query::Sessions => QueryResult::Sessions(self.sessions()?),
                    Query::NodeSessions { node } => QueryResult::Sessions(
                        self.sessions()?
                            .into_iter()
                            .filter(|s| s.node == *node)
                            .collect(),
                    ),
                    Query::KvGet { .. }
                    | Query::KvList { .. }
                    | Query::KvKeys { .. }
                    | Query::Services => {
                        unreachable!("handled above")
                    }
                };
                (res, idx)
            }
        })
    }
}
