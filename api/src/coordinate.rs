//! `/v1/coordinate/*`: the nodes' network coordinates (LAN only: Muster has no WAN pool), and
//! `?near=`: ordering a list by the estimated round trip from one node, as Consul's
//! `agent/consul/rtt.go`, for the catalog, health and prepared-query reads.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use muster_server::model::{
    Command, Consistency, Coordinate, NodeCoordinate, Query, QueryResult, ReadMeta,
};
use serde::Serialize;
use serde_json::Value;

use crate::body::json_value;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::read::read;
use crate::reply::{json, with_meta};
use crate::ApiState;

/// A coordinate as Consul's JSON shows it (`Vec`, `Error`, `Adjustment`, `Height`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coord {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

impl From<Coordinate> for Coord {
    fn from(c: Coordinate) -> Self {
        Coord {
            vec: c.vec,
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

/// One node's coordinate (Consul's `structs.Coordinate`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeCoord {
    node: String,
    segment: String,
    coord: Coord,
}

impl From<NodeCoordinate> for NodeCoord {
    fn from(c: NodeCoordinate) -> Self {
        NodeCoord {
            node: c.node,
            segment: String::new(),
            coord: c.coord.into(),
        }
    }
}

/// One datacenter's servers and their coordinates (Consul's `structs.DatacenterMap`).
#[derive(Serialize)]
struct DatacenterMap {
    #[serde(rename = "Datacenter")]
    datacenter: String,
    #[serde(rename = "AreaID")]
    area_id: &'static str,
    #[serde(rename = "Coordinates")]
    coordinates: Vec<NodeCoord>,
}

/// Every stored coordinate: from this server's own state, or a stale read on a client agent
/// (as the servers answer `?near` from their own state), with its index.
async fn all_coordinates(st: &ApiState) -> ApiResult<(Vec<NodeCoordinate>, u64)> {
    let (res, index) = match st.server.catalog() {
        Some(catalog) => catalog.query(&Query::Coordinates)?,
        None => {
            let (res, meta) = st
                .server
                .read(Consistency::Stale, Query::Coordinates)
                .await?;
            (res, meta.index)
        }
    };
    match res {
        QueryResult::Coordinates(c) => Ok((c, index)),
        _ => Ok((Vec::new(), index)),
    }
}

/// `/v1/coordinate/datacenters`: this datacenter and its servers' coordinates. Consul shows
/// its WAN pool here; Muster has none, so a server's LAN coordinate stands in (this agent's
/// own as it is now, the others' as last reported).
pub(crate) async fn coordinate_datacenters(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let servers = match st
        .server
        .read(
            Consistency::Stale,
            Query::ServiceNodes {
                name: "consul".into(),
            },
        )
        .await?
        .0
    {
        QueryResult::ServiceNodes(v) => v,
        _ => Vec::new(),
    };
    let (stored, _) = all_coordinates(&st).await?;
    let me = st.agent.node_name();
    let mut coordinates: Vec<NodeCoord> = servers
        .into_iter()
        .filter_map(|(node, _)| {
            let coord = if node.name == me {
                st.agent.coordinate()
            } else {
                None
            };
            let coord = coord.or_else(|| {
                stored
                    .iter()
                    .find(|c| c.node == node.name)
                    .map(|c| c.coord.clone())
            })?;
            Some(NodeCoord::from(NodeCoordinate {
                node: node.name,
                coord,
            }))
        })
        .collect();
    coordinates.sort_by(|a, b| a.node.cmp(&b.node));
    let dc = DatacenterMap {
        datacenter: st.agent.datacenter(),
        area_id: "wan",
        coordinates,
    };
    Ok(json(&[dc], p.pretty()))
}

/// The stored coordinates, all or only `node`'s, read with the request's consistency and
/// blocking parameters.
async fn read_coordinates(
    st: &ApiState,
    p: &Params,
    node: Option<&str>,
) -> ApiResult<(Vec<NodeCoord>, ReadMeta)> {
    let (res, meta, _) = read(st, p, Query::Coordinates).await?;
    let list = match res {
        QueryResult::Coordinates(c) => c
            .into_iter()
            .filter(|c| node.is_none_or(|n| c.node == n))
            .map(Into::into)
            .collect(),
        _ => Vec::new(),
    };
    Ok((list, meta))
}

/// `/v1/coordinate/nodes`: every node's coordinate, by node name.
pub(crate) async fn coordinate_nodes(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (list, meta) = read_coordinates(&st, &p, None).await?;
    Ok(with_meta(json(&list, p.pretty()), &meta))
}

/// `/v1/coordinate/node/<node>`: that node's coordinates; 404 with no body when it has none.
/// The 404 carries the read's index headers (Consul's has none, as its deferred `setMeta`
/// comes after the status is written), so clients that read `X-Consul-Index` from every
/// answer, py-consul among them, can poll or block until the coordinate arrives.
pub(crate) async fn coordinate_node(
    State(st): State<ApiState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (list, meta) = read_coordinates(&st, &p, Some(&node)).await?;
    if list.is_empty() {
        return Ok(with_meta(StatusCode::NOT_FOUND.into_response(), &meta));
    }
    Ok(with_meta(json(&list, p.pretty()), &meta))
}

/// The value under `name` in a JSON object, the name matched in any case (as Go decodes).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn decode_error(why: &str) -> ApiError {
    ApiError::BadRequest(format!("Request decode failed: {why}"))
}

/// A coordinate update body: `{"Node", "Segment", "Coord": {"Vec", "Error", "Adjustment",
/// "Height"}}`.
fn update_body(b: &[u8]) -> ApiResult<NodeCoordinate> {
    let v = json_value(b)?;
    let node = match field(&v, "Node") {
        None => String::new(),
        Some(n) => n
            .as_str()
            .ok_or_else(|| decode_error("Node: expected a string"))?
            .to_string(),
    };
    let num = |c: &Value, name: &str| -> ApiResult<f64> {
        match field(c, name) {
            None => Ok(0.0),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| decode_error(&format!("Coord.{name}: expected a number"))),
        }
    };
    let coord = match field(&v, "Coord") {
        None => Coordinate::origin(0, 0.0, 0.0),
        Some(c) => Coordinate {
            vec: match field(c, "Vec") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| decode_error("Coord.Vec: expected numbers"))
                    })
                    .collect::<ApiResult<_>>()?,
                Some(_) => return Err(decode_error("Coord.Vec: expected a list")),
            },
            error: num(c, "Error")?,
            adjustment: num(c, "Adjustment")?,
            height: num(c, "Height")?,
        },
    };
    Ok(NodeCoordinate { node, coord })
}

/// `PUT /v1/coordinate/update`: sets a node's coordinate, as an agent's own report does. A
/// node the catalog does not hold is skipped when the update is applied.
pub(crate) async fn coordinate_update(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let update = update_body(&b)?;
    if !update.coord.is_valid() {
        return Err(ApiError::Unavailable("invalid coordinate".into()));
    }
    let compatible = st
        .agent
        .coordinate()
        .is_none_or(|own| own.is_compatible_with(&update.coord));
    if !compatible {
        return Err(ApiError::Unavailable("incompatible coordinates".into()));
    }
    st.server
        .write(Command::CoordinateBatchUpdate(vec![update]))
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// The coordinates a `?near=` sort measures from: the source node's and every other node's.
pub struct Near {
    source: Option<Coordinate>,
    coordinates: std::collections::HashMap<String, Coordinate>,
    /// The index of the coordinates read (part of a cached reply's key).
    pub index: u64,
}

impl Near {
    /// Reads what sorting by the distance from `near` needs: `_agent` is this agent's node,
    /// anything else a node name, empty means no sorting.
    pub async fn load(st: &ApiState, near: &str) -> ApiResult<Near> {
        let mut n = Near {
            source: None,
            coordinates: Default::default(),
            index: 0,
        };
        if near.is_empty() {
            return Ok(n);
        }
        let source = if near == "_agent" {
            st.agent.node_name()
        } else {
            near.to_string()
        };
        let (all, index) = all_coordinates(st).await?;
        n.index = index;
        n.coordinates = all.into_iter().map(|c| (c.node, c.coord)).collect();
        n.source = n.coordinates.get(&source).cloned();
        Ok(n)
    }

    /// A cached reply's key: a sorted reply also depends on the coordinates it was sorted by.
    pub(crate) fn cache_key(&self, key: String) -> String {
        match self.source {
            Some(_) => format!("{key}#coordinates={}", self.index),
            None => key,
        }
    }

    /// Orders `items` by the estimated round trip from the source to each item's node,
    /// nearest first; items whose node has no coordinate keep their order, after the others.
    /// Without a source coordinate, nothing moves (Consul: no meaningful sort).
    pub fn sort<T>(&self, items: &mut Vec<T>, node_of: impl Fn(&T) -> &str) {
        let Some(source) = &self.source else {
            return;
        };
        let distance = |item: &T| {
            self.coordinates
                .get(node_of(item))
                .and_then(|c| source.distance_to(c))
                .unwrap_or(f64::INFINITY)
        };
        let mut keyed: Vec<(f64, usize)> = items
            .iter()
            .enumerate()
            .map(|(i, item)| (distance(item), i))
            .collect();
        // Stable: equal distances (all the unknown ones) keep their order.
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
        items.extend(keyed.into_iter().filter_map(|(_, i)| slots[i].take()));
    }
}

/// Sorts `items` by the estimated round trip from `near` (`_agent`, a node name, or empty for
/// no sorting), as Consul's `sortNodesByDistanceFrom`: `node_of` names each item's node.
/// The prepared-query executor shuffles its instances before calling this, as Consul's does,
/// so instances without a coordinate come last in random order.
pub async fn sort_by_near<T>(
    st: &ApiState,
    near: &str,
    items: &mut Vec<T>,
    node_of: impl Fn(&T) -> &str,
) -> ApiResult<()> {
    Near::load(st, near).await?.sort(items, node_of);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64) -> Coordinate {
        let mut c = Coordinate::origin(8, 1.5, 0.0);
        c.vec[0] = x;
        c
    }

    #[test]
    fn near_sorts_by_distance_and_keeps_unknown_nodes_last_in_order() {
        let coordinates = [("me", 0.0), ("far", 0.5), ("mid", 0.1), ("near", 0.01)]
            .into_iter()
            .map(|(n, x)| (n.to_string(), at(x)))
            .collect::<std::collections::HashMap<_, _>>();
        let near = Near {
            source: coordinates.get("me").cloned(),
            coordinates,
            index: 1,
        };
        let mut items = vec!["x1", "far", "me", "x2", "mid", "near", "x0"];
        near.sort(&mut items, |s| s);
        assert_eq!(items, ["me", "near", "mid", "far", "x1", "x2", "x0"]);

        let none = Near {
            source: None,
            coordinates: Default::default(),
            index: 0,
        };
        let mut items = vec!["b", "a"];
        none.sort(&mut items, |s| s);
        assert_eq!(items, ["b", "a"], "no source coordinate: no sort");
    }

    #[test]
    fn update_bodies_read_in_any_case() {
        let b = br#"{"node":"n1","SEGMENT":"","coord":{"vec":[1,2],"Error":0.5,"height":0.1}}"#;
        let u = update_body(b).expect("decodes");
        assert_eq!(u.node, "n1");
        assert_eq!(u.coord.vec, vec![1.0, 2.0]);
        assert_eq!(
            (u.coord.error, u.coord.adjustment, u.coord.height),
            (0.5, 0.0, 0.1)
        );
        assert!(update_body(br#"{"Node":1}"#).is_err());
    }
}
