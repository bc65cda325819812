//! [`Catalog`], the read handle over the state machine's tables: KV, catalog and session
//! reads, and the indexes blocking queries wait on.

use std::sync::Arc;

use super::error::StoreError;
use super::mem::{span, Live, TableId, Tables};

use super::tables::*;

use crate::codec::decode;
use crate::model::{
    tags_by_service, Check, HealthStatus, KvEntry, Node, Query, QueryResult, Service,
    ServiceHealth, Session,
};
use crate::Result;

/// Read handle over the local state machine. Each read works on a snapshot of the tables,
/// taken for the price of a few reference counts, and returns owned model values; no lock is
/// held once a method returns. Callers choose consistency through [`crate::Server::barrier`]
/// before reading.
/// Sizes of the state, as Consul's `consul.state.*` usage gauges report them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub nodes: u64,
    /// Distinct service names.
    pub services: u64,
    pub service_instances: u64,
    pub kv_entries: u64,
    /// Keys plus their stored entries.
    pub kv_bytes: u64,
}

#[derive(Clone)]
pub struct Catalog {
    live: Arc<Live>,
}

fn de<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(decode(b).map_err(StoreError::from)?)
}

impl Catalog {
    /// A consistent copy of every table, for a snapshot.
    pub(crate) fn tables(&self) -> super::mem::Tables {
        self.live.snapshot()
    }

    pub(crate) fn new(live: Arc<Live>) -> Self {
        Catalog { live }
    }

    pub(super) fn read(&self) -> Tables {
        self.live.snapshot()
    }

    fn scan<T: serde::de::DeserializeOwned>(
        snap: &Tables,
        table: TableId,
        lo: &str,
        hi: Option<&str>,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for (k, v) in span(snap.table(table), lo, hi) {
            if !keep(k) {
                break;
            }
            out.push(de(v)?);
        }
        Ok(out)
    }

    /// The Raft index of the last change to a table (`kv`, `nodes`, `services`, `checks`).
    pub fn table_index(&self, table: &str) -> Result<u64> {
        // Read in place: a snapshot would clone every table's handle and the membership,
        // and the ACL resolver asks this on every request.
        Ok(self.live.index(table))
    }

    pub fn kv_get(&self, key: &str) -> Result<Option<KvEntry>> {
        let snap = self.read();
        let t = snap.table(KV);
        match t.get(key) {
            Some(v) => Ok(Some(de(v)?)),
            None => Ok(None),
        }
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let snap = self.read();
        Self::scan(&snap, KV, prefix, None, |k| k.starts_with(prefix))
    }

    /// Keys under `prefix`; with a separator, keys past it are folded into one entry ending at
    /// the separator, as Consul's `?keys&separator=/`.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> Result<Vec<String>> {
        let snap = self.read();
        let t = snap.table(KV);
        let mut out: Vec<String> = Vec::new();
        for (k, _) in span(t, prefix, None) {
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

    /// What the state holds, for metrics. Counts are O(1); the KV bytes (keys plus their
    /// stored entries: value, flags, indexes, session) and the distinct service names walk
    /// their tables without decoding a row, so call it at scrape time, not per request.
    pub fn usage(&self) -> Usage {
        let snap = self.read();
        let kv = snap.table(KV);
        let kv_bytes = kv.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u64;
        let mut services = 0u64;
        let mut last: Option<&str> = None;
        for (k, _) in snap.table(SERVICE_NAMES).iter() {
            let name = k.split('\0').next().unwrap_or_default();
            if last != Some(name) {
                services += 1;
                last = Some(name);
            }
        }
        Usage {
            nodes: snap.table(NODES).len() as u64,
            services,
            service_instances: snap.table(SERVICES).len() as u64,
            kv_entries: kv.len() as u64,
            kv_bytes,
        }
    }

    pub fn nodes(&self) -> Result<Vec<Node>> {
        let snap = self.read();
        Self::scan(&snap, NODES, "", None, |_| true)
    }

    pub fn node(&self, name: &str) -> Result<Option<Node>> {
        let snap = self.read();
        let t = snap.table(NODES);
        match t.get(name) {
            Some(v) => Ok(Some(de(v)?)),
            None => Ok(None),
        }
    }

    pub fn node_services(&self, name: &str) -> Result<Vec<Service>> {
        let snap = self.read();
        let (lo, hi) = node_range(name);
        Self::scan(&snap, SERVICES, &lo, Some(&hi), |_| true)
    }

    pub fn node_checks(&self, name: &str) -> Result<Vec<Check>> {
        let snap = self.read();
        let (lo, hi) = node_range(name);
        Self::scan(&snap, CHECKS, &lo, Some(&hi), |_| true)
    }

    /// Every service instance in the catalog, with its node.
    pub fn services(&self) -> Result<Vec<(String, Service)>> {
        let snap = self.read();
        let t = snap.table(SERVICES);
        let mut out = Vec::new();
        for (k, v) in t.iter() {
            let node = k.split('\0').next().unwrap_or_default().to_string();
            out.push((node, de(v)?));
        }
        Ok(out)
    }

    /// The services of the nodes whose meta has every pair in `node_meta`, with their nodes'
    /// names, from one snapshot.
    fn services_on_nodes(&self, node_meta: &[(String, String)]) -> Result<Vec<(Node, Service)>> {
        let snap = self.read();
        let nodes: Vec<Node> = Self::scan(&snap, NODES, "", None, |_| true)?;
        let mut out = Vec::new();
        for n in nodes {
            if !node_meta.iter().all(|(k, v)| n.meta.get(k) == Some(v)) {
                continue;
            }
            let prefix = format!("{}\0", n.name);
            let on_node = |k: &str| k.starts_with(&prefix);
            for s in Self::scan::<Service>(&snap, SERVICES, &prefix, None, on_node)? {
                out.push((n.clone(), s));
            }
        }
        Ok(out)
    }

    /// The index a deleted key left behind, if any.
    fn tombstone(&self, snap: &Tables, key: &str) -> Result<Option<u64>> {
        let t = snap.table(KV_TOMBS);
        match t.get(key) {
            Some(v) => Ok(Some(de(v)?)),
            None => Ok(None),
        }
    }

    /// Whether any tombstone was left at or before `index`.
    pub(crate) fn has_tombstones_upto(&self, index: u64) -> Result<bool> {
        let snap = self.read();
        let t = snap.table(KV_TOMBS);
        for (_, v) in t.iter() {
            if de::<u64>(v)? <= index {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The highest deletion index under a prefix.
    fn max_tombstone(&self, snap: &Tables, prefix: &str) -> Result<u64> {
        let t = snap.table(KV_TOMBS);
        let mut max = 0;
        for (k, v) in span(t, prefix, None) {
            if !k.starts_with(prefix) {
                break;
            }
            max = max.max(de::<u64>(v)?);
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
        Self::service_nodes_in(&self.read(), name)
    }

    fn service_nodes_in(snap: &Tables, name: &str) -> Result<Vec<(Node, Service)>> {
        let names = snap.table(SERVICE_NAMES);
        let services = snap.table(SERVICES);
        let nodes = snap.table(NODES);
        let (lo, hi) = node_range(name);
        let mut out = Vec::new();
        for (k, _) in span(names, lo.as_str(), Some(hi.as_str())) {
            let svc_key = &k[name.len() + 1..];
            let Some(sv) = services.get(svc_key) else {
                continue;
            };
            let svc: Service = de(sv)?;
            let node_name = svc_key.split('\0').next().unwrap_or_default();
            let Some(nv) = nodes.get(node_name) else {
                continue;
            };
            out.push((de(nv)?, svc));
        }
        Ok(out)
    }

    /// The instances of one service with every check that applies to each, from one
    /// consistent snapshot of the tables.
    pub fn service_health(&self, name: &str) -> Result<Vec<ServiceHealth>> {
        let snap = self.read();
        let checks = snap.table(CHECKS);
        let mut out = Vec::new();
        for (node, service) in Self::service_nodes_in(&snap, name)? {
            let (lo, hi) = node_range(&node.name);
            let mut mine = Vec::new();
            for (_, v) in span(checks, lo.as_str(), Some(hi.as_str())) {
                let c: Check = de(v)?;
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
        let snap = self.read();
        let all: Vec<Check> = Self::scan(&snap, CHECKS, "", None, |_| true)?;
        Ok(all
            .into_iter()
            .filter(|c| state.is_none_or(|s| c.status == s))
            .collect())
    }

    pub fn sessions(&self) -> Result<Vec<Session>> {
        let snap = self.read();
        Self::scan(&snap, SESSIONS, "", None, |_| true)
    }

    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        let snap = self.read();
        let t = snap.table(SESSIONS);
        match t.get(id) {
            Some(v) => Ok(Some(de(v)?)),
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
            Query::ServicesOnNodes { .. } | Query::ServiceInstances { .. } => Ok(self
                .table_index(IDX_SERVICES)?
                .max(self.table_index(IDX_NODES)?)),
            Query::ChecksInState { .. } => self.table_index(IDX_CHECKS),
            Query::Node { name } | Query::NodeChecks { name } => self.node_index(name),
            Query::Session { .. } | Query::Sessions | Query::NodeSessions { .. } => {
                self.table_index(IDX_SESSIONS)
            }
            Query::KvGet { .. } | Query::KvList { .. } | Query::KvKeys { .. } => {
                Ok(self.query(q)?.1)
            }
            Query::PreparedQueries | Query::PreparedQuery { .. } => self.table_index(IDX_PREPARED),
            // As Consul's, an explained or executed query reports no index.
            Query::PreparedQueryExplain { .. } | Query::PreparedQueryExecute(_) => Ok(0),
            Query::Coordinates => self.table_index(IDX_COORDINATES),
            Query::AclPolicies
            | Query::AclTokens
            | Query::AclRoles
            | Query::AclResolve { .. }
            | Query::AclMeta
            | Query::AclAuthMethods
            | Query::AclBindingRules => self.table_index(IDX_ACL),
            Query::AutopilotConfig => self.table_index(IDX_AUTOPILOT),
        }
    }

    /// Runs a [`Query`] against local state, returning the data and its index.
    ///
    /// The index is always read before the data (separate snapshots): a write landing
    /// in between then makes the index older than the data, which costs a blocking client one
    /// extra round trip; the other order would hand out old data under the new index, and the
    /// client's next blocking query would wait for a change that already happened.
    pub fn query(&self, q: &Query) -> Result<(QueryResult, u64)> {
        Ok(match q {
            Query::KvGet { key } => {
                let before = match self.tombstone(&self.read(), key)? {
                    Some(i) => i,
                    None => self.table_index(IDX_KV)?,
                };
                let e = self.kv_get(key)?;
                let idx = e.as_ref().map_or(before, |e| e.modify_index);
                (QueryResult::Kv(e), idx)
            }
            Query::KvList { prefix } => {
                let (tomb, table) = (
                    self.max_tombstone(&self.read(), prefix)?,
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
                    self.max_tombstone(&self.read(), prefix)?,
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
            Query::Services | Query::ServicesOnNodes { .. } => {
                let idx = self.query_index(q)?;
                let services: Vec<Service> = match q {
                    Query::ServicesOnNodes { node_meta } => self
                        .services_on_nodes(node_meta)?
                        .into_iter()
                        .map(|(_, s)| s)
                        .collect(),
                    _ => self.services()?.into_iter().map(|(_, s)| s).collect(),
                };
                let map = tags_by_service(services.into_iter().map(|s| (s.name, s.tags)));
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
                    Query::ServiceInstances { node_meta } => {
                        QueryResult::ServiceNodes(self.services_on_nodes(node_meta)?)
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
                    Query::PreparedQueries => {
                        QueryResult::PreparedQueries(self.prepared_queries()?)
                    }
                    Query::PreparedQuery { id } => QueryResult::PreparedQueries(
                        self.prepared_queries()?
                            .into_iter()
                            .filter(|q| q.id == *id)
                            .collect(),
                    ),
                    Query::PreparedQueryExplain { id_or_name } => {
                        QueryResult::PreparedQueryRun(self.prepared_explain(id_or_name)?)
                    }
                    Query::PreparedQueryExecute(req) => {
                        QueryResult::PreparedQueryRun(self.prepared_execute(req)?)
                    }
                    Query::Coordinates => QueryResult::Coordinates(self.coordinates()?),
                    Query::AclPolicies => QueryResult::AclPolicies(self.acl_policies()?),
                    Query::AclTokens => QueryResult::AclTokens(self.acl_tokens()?),
                    Query::AclRoles => QueryResult::AclRoles(self.acl_roles()?),
                    Query::AclResolve { secret } => {
                        QueryResult::AclResolved(self.acl_resolve(secret)?.map(Box::new))
                    }
                    Query::AclMeta => QueryResult::AclMeta(self.acl_meta()?),
                    Query::AclAuthMethods => QueryResult::AclAuthMethods(self.acl_auth_methods()?),
                    Query::AclBindingRules => {
                        QueryResult::AclBindingRules(self.acl_binding_rules()?)
                    }
                    Query::AutopilotConfig => {
                        QueryResult::AutopilotConfig(self.autopilot_config()?)
                    }
                    Query::NodeSessions { node } => QueryResult::Sessions(
                        self.sessions()?
                            .into_iter()
                            .filter(|s| s.node == *node)
                            .collect(),
                    ),
                    Query::KvGet { .. }
                    | Query::KvList { .. }
                    | Query::KvKeys { .. }
                    | Query::Services
                    | Query::ServicesOnNodes { .. } => {
                        unreachable!("handled above")
                    }
                };
                (res, idx)
            }
        })
    }
}
