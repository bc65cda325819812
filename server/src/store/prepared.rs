//! Prepared-query reads on the [`Catalog`]: the stored queries, and resolving and running
//! one over the same instances `/v1/health/service` reads.

use super::mem::Tables;
use super::tables::*;
use super::Catalog;
use crate::codec::decode;
use crate::model::{PreparedExecute, PreparedQuery, PreparedRun, ServiceHealth};
use crate::prepared::execute::{arrange, resolve, select, source_node};
use crate::store::StoreError;
use crate::Result;

impl Catalog {
    /// Every prepared query, by ID.
    pub fn prepared_queries(&self) -> Result<Vec<PreparedQuery>> {
        Self::prepared_in(&self.read())
    }

    fn prepared_in(snap: &Tables) -> Result<Vec<PreparedQuery>> {
        let mut out = Vec::new();
        for (_, v) in snap.table(PREPARED_QUERIES).iter() {
            out.push(decode(v).map_err(StoreError::from)?);
        }
        Ok(out)
    }

    /// The query `id_or_name` resolves to, a template rendered for it (Consul's explain).
    pub fn prepared_explain(&self, id_or_name: &str) -> Result<PreparedRun> {
        Ok(match resolve(&self.prepared_queries()?, id_or_name) {
            Err(why) => PreparedRun::Failed(why),
            Ok(None) => PreparedRun::NotFound,
            Ok(Some((query, _))) => PreparedRun::Found {
                query,
                nodes: Vec::new(),
            },
        })
    }

    /// Resolves and runs a prepared query: the healthy instances it selects, shuffled (or
    /// sorted near a node), cut to the limit.
    pub fn prepared_execute(&self, req: &PreparedExecute) -> Result<PreparedRun> {
        let (query, def) = match resolve(&self.prepared_queries()?, &req.id_or_name) {
            Err(why) => return Ok(PreparedRun::Failed(why)),
            Ok(None) => return Ok(PreparedRun::NotFound),
            Ok(Some(found)) => found,
        };
        // Muster has no Connect-capable instances (native or proxies) to offer.
        let all = if req.connect || def.service.connect.enabled {
            Vec::new()
        } else {
            self.service_health(&def.service.service)?
        };
        let node_at = |ip: &str| {
            let nodes = self.nodes().ok()?;
            nodes.into_iter().find(|n| n.address == ip).map(|n| n.name)
        };
        let near = source_node(req, &def, node_at);
        let snap = self.read();
        let nodes = arrange(select(&def, all), &near, req.limit, |near, nodes| {
            sort_by_distance(&snap, near, nodes)
        });
        Ok(PreparedRun::Found { query, nodes })
    }
}

/// Sorts `nodes` by estimated round-trip time from node `near`, nearest first (Consul's
/// `sortNodesByDistanceFrom`). Network coordinates are not kept yet, so the shuffled order
/// stays as it is: this is where sorting by them plugs in.
fn sort_by_distance(_tables: &Tables, _near: &str, _nodes: &mut [ServiceHealth]) {}
