use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition};

use super::tables::*;
use crate::model::{Check, KvEntry, Node, Query, QueryResult, Service};
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

    /// Runs a [`Query`] against local state, returning the data and its index.
    pub fn query(&self, q: &Query) -> Result<(QueryResult, u64)> {
        Ok(match q {
            Query::KvGet { key } => {
                let e = self.kv_get(key)?;
                let idx = match &e {
                    Some(e) => e.modify_index,
                    None => self.table_index(IDX_KV)?,
                };
                (QueryResult::Kv(e), idx)
            }
            Query::KvList { prefix } => {
                let l = self.kv_list(prefix)?;
                let idx = match l.iter().map(|e| e.modify_index).max() {
                    Some(i) => i,
                    None => self.table_index(IDX_KV)?,
                };
                (QueryResult::KvList(l), idx)
            }
            Query::KvKeys { prefix, separator } => {
                let keys = self.kv_keys(prefix, separator.as_deref())?;
                (QueryResult::Keys(keys), self.table_index(IDX_KV)?)
            }
            Query::Nodes => (
                QueryResult::Nodes(self.nodes()?),
                self.table_index(IDX_NODES)?,
            ),
            Query::Node { name } => {
                let n = match self.node(name)? {
                    Some(n) => Some((n, self.node_services(name)?)),
                    None => None,
                };
                let idx = self
                    .table_index(IDX_NODES)?
                    .max(self.table_index(IDX_SERVICES)?);
                (QueryResult::Node(n), idx)
            }
            Query::NodeChecks { name } => (
                QueryResult::Checks(self.node_checks(name)?),
                self.table_index(IDX_CHECKS)?,
            ),
        })
    }
}
