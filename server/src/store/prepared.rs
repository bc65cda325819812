//! Prepared-query reads on the [`Catalog`]: the stored queries, and resolving and running
//! one over the same instances `/v1/health/service` reads.

use super::mem::Tables;
use super::tables::*;
use super::Catalog;
use crate::codec::decode;
use crate::model::{Coordinate, PreparedExecute, PreparedQuery, PreparedRun, ServiceHealth};
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
/// `sortNodesByDistanceFrom`): a stable sort, so equal distances keep the shuffled order, and
/// nodes without a coordinate go last. Without a coordinate for `near` nothing moves.
fn sort_by_distance(tables: &Tables, near: &str, nodes: &mut [ServiceHealth]) {
    let coord = |name: &str| {
        tables
            .table(COORDINATES)
            .get(name)
            .and_then(|v| decode::<Coordinate>(v).ok())
    };
    let Some(from) = coord(near) else {
        return;
    };
    let mut keyed: Vec<(f64, ServiceHealth)> = nodes
        .iter()
        .map(|h| {
            let d = coord(&h.node.name).and_then(|c| from.distance_to(&c));
            (d.unwrap_or(f64::INFINITY), h.clone())
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (slot, (_, h)) in nodes.iter_mut().zip(keyed) {
        *slot = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::model::Node;
    use crate::store::mem::put_raw;

    #[test]
    fn instances_sort_by_distance_from_the_near_node_those_without_coordinates_last() {
        let at = |x: f64| Coordinate {
            vec: vec![x, 0.0],
            error: 0.5,
            adjustment: 0.0,
            height: 0.0,
        };
        let mut t = Tables::default();
        for (name, x) in [("a", 0.0), ("far", 0.9), ("mid", 0.4), ("near", 0.1)] {
            let row = encode(&at(x)).expect("encodes");
            put_raw(t.table_mut(COORDINATES), name, &row);
        }
        let instance = |name: &str| ServiceHealth {
            node: Node {
                name: name.into(),
                ..Default::default()
            },
            service: Default::default(),
            checks: Vec::new(),
        };
        let order = |nodes: &[ServiceHealth]| -> Vec<String> {
            nodes.iter().map(|h| h.node.name.clone()).collect()
        };
        let mut nodes: Vec<_> = ["far", "none", "mid", "near", "a"].map(instance).into();
        sort_by_distance(&t, "a", &mut nodes);
        assert_eq!(order(&nodes), ["a", "near", "mid", "far", "none"]);
        // From a node with no coordinate, nothing moves.
        sort_by_distance(&t, "none", &mut nodes);
        assert_eq!(order(&nodes), ["a", "near", "mid", "far", "none"]);
        let mut nodes: Vec<_> = ["mid", "far"].map(instance).into();
        sort_by_distance(&t, "ghost", &mut nodes);
        assert_eq!(order(&nodes), ["mid", "far"]);
    }
}
