//! `/v1/operator/raft/*`: the Raft configuration in Consul's JSON, removing a peer and
//! moving leadership. Servers are named by their gossip member (node name, node ID) where
//! gossip knows them; the quorum a removal would leave is judged by gossip's view of which
//! voters are alive. Also `/v1/operator/usage`, the catalog's counts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use axum::extract::{RawQuery, State};
use axum::response::Response;
use muster_server::model::{Query, QueryResult};
use muster_server::{RaftConfiguration, RaftPeer};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::read::read;
use crate::reply::{json, with_query_meta};
use crate::types::{CatalogService, Member};
use crate::ApiState;

/// Gossip's status of a live member.
const ALIVE: u8 = 1;

/// The gossip members that are servers, by server RPC address (gossip address and `port`
/// tag), which is how the Raft configuration knows them.
fn servers_by_address(st: &ApiState) -> BTreeMap<String, Member> {
    st.agent
        .members()
        .into_iter()
        .filter(|m| m.tags.get("role").is_some_and(|r| r == "consul"))
        .filter_map(|m| {
            let ip: IpAddr = m.addr.parse().ok()?;
            let port: u16 = m.tags.get("port")?.parse().ok()?;
            Some((SocketAddr::new(ip, port).to_string(), m))
        })
        .collect()
}

/// The ID Consul shows for a server: its node ID when gossip knows it, else its Raft ID.
fn shown_id(p: &RaftPeer, members: &BTreeMap<String, Member>) -> String {
    members
        .get(&p.address)
        .and_then(|m| m.tags.get("id"))
        .filter(|id| !id.is_empty())
        .cloned()
        .unwrap_or_else(|| p.id.to_string())
}

pub(crate) async fn operator_raft_configuration(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let config = st.server.raft_configuration(p.has("stale")).await?;
    let members = servers_by_address(&st);
    let servers = config
        .servers
        .iter()
        .map(|s| crate::types::RaftServer {
            id: shown_id(s, &members),
            node: members
                .get(&s.address)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            address: s.address.clone(),
            leader: s.leader,
            voter: s.voter,
            protocol_version: "3".into(),
        })
        .collect();
    let out = crate::types::RaftConfiguration {
        servers,
        index: config.index,
    };
    Ok(json(&out, p.pretty()))
}

/// The peer `?id=` (node ID or Raft ID) or `?address=` names.
fn find_peer<'a>(
    p: &Params,
    config: &'a RaftConfiguration,
    members: &BTreeMap<String, Member>,
) -> ApiResult<&'a RaftPeer> {
    let found =
        match (p.get("id"), p.get("address")) {
            (Some(id), None) => config
                .servers
                .iter()
                .find(|s| s.id.to_string() == id || shown_id(s, members) == id),
            (None, Some(addr)) => config.servers.iter().find(|s| s.address == addr),
            _ => return Err(ApiError::BadRequest(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer \
                 to remove"
                    .into(),
            )),
        };
    found.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "no server {} in the Raft configuration",
            p.get("id").or(p.get("address")).unwrap_or_default()
        ))
    })
}

pub(crate) async fn operator_raft_peer_delete(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let config = st.server.raft_configuration(false).await?;
    let members = servers_by_address(&st);
    let peer = find_peer(&p, &config, &members)?;
    if peer.voter {
        refuse_below_quorum(peer, &config, &members)?;
    }
    st.server.remove_peer(peer.id).await?;
    Ok(json(&serde_json::Value::Null, p.pretty()))
}

/// Refuses to remove the last voter, or a voter without which the voters gossip sees alive
/// would no longer make a quorum of those that remain.
fn refuse_below_quorum(
    peer: &RaftPeer,
    config: &RaftConfiguration,
    members: &BTreeMap<String, Member>,
) -> ApiResult<()> {
    let rest: Vec<&RaftPeer> = config
        .servers
        .iter()
        .filter(|s| s.voter && s.id != peer.id)
        .collect();
    if rest.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "refusing to remove {}: it is the last voter, and the cluster would have no \
             quorum left",
            peer.address
        )));
    }
    let alive = rest
        .iter()
        .filter(|s| members.get(&s.address).is_some_and(|m| m.status == ALIVE))
        .count();
    let quorum = rest.len() / 2 + 1;
    if alive < quorum {
        return Err(ApiError::BadRequest(format!(
            "refusing to remove {}: {alive} of the {} remaining voters are alive, fewer than \
             the {quorum} a quorum needs",
            peer.address,
            rest.len()
        )));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TransferReply {
    success: bool,
}

pub(crate) async fn operator_raft_transfer_leader(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let to = match p.get("id").filter(|id| !id.is_empty()) {
        None => None,
        Some(_) => {
            let config = st.server.raft_configuration(false).await?;
            let members = servers_by_address(&st);
            Some(find_peer(&p, &config, &members)?.id)
        }
    };
    st.server.transfer_leader(to).await?;
    Ok(json(&TransferReply { success: true }, p.pretty()))
}

/// The Connect kinds Consul's usage counts, each shown even when none is registered.
const CONNECT_KINDS: [&str; 6] = [
    "api-gateway",
    "connect-native",
    "connect-proxy",
    "ingress-gateway",
    "mesh-gateway",
    "terminating-gateway",
];

/// `/v1/operator/usage` (Consul 1.11): how many services, instances and nodes the catalog
/// holds, in Consul's JSON (the counts by datacenter, then the read's query meta). `?global`
/// answers the same, as Muster knows one datacenter.
pub(crate) async fn operator_usage(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let all = Query::ServiceInstances { node_meta: vec![] };
    let (res, meta, mode) = read(&st, &p, all).await?;
    let instances: Vec<CatalogService> = match res {
        QueryResult::ServiceNodes(v) => v
            .into_iter()
            .map(|(n, s)| CatalogService::new(n, s))
            .collect(),
        _ => Vec::new(),
    };
    let nodes = match st.server.read(mode, Query::Nodes).await?.0 {
        QueryResult::Nodes(n) => n.len(),
        _ => 0,
    };
    let mut connect: BTreeMap<&str, usize> = CONNECT_KINDS.iter().map(|k| (*k, 0)).collect();
    let mut billable = 0;
    for i in &instances {
        let native = i
            .service_connect
            .as_ref()
            .and_then(|c| c.get("Native"))
            .and_then(Value::as_bool)
            == Some(true);
        let kind = if native && i.service_kind.is_empty() {
            "connect-native"
        } else {
            i.service_kind.as_str()
        };
        match connect.get_mut(kind) {
            Some(n) => *n += 1,
            // Consul bills every plain instance but its own servers' `consul` service.
            None if i.service_name != "consul" => billable += 1,
            None => {}
        }
    }
    let names: BTreeSet<&str> = instances.iter().map(|i| i.service_name.as_str()).collect();
    let usage = json!({
        "Services": names.len(),
        "ServiceInstances": instances.len(),
        "ConnectServiceInstances": connect,
        "BillableServiceInstances": billable,
        "Nodes": nodes,
    });
    let last_contact_ns = match meta.last_contact_ms {
        u64::MAX => 0,
        ms => ms.saturating_mul(1_000_000),
    };
    let out = json!({
        "Usage": { st.agent.datacenter(): usage },
        "Index": meta.index.max(1),
        "LastContact": last_contact_ns,
        "KnownLeader": meta.known_leader,
        "ConsistencyLevel": mode.as_str(),
        "NotModified": false,
        "Backend": 0,
        "ResultsFilteredByACLs": false,
    });
    Ok(with_query_meta(json(&out, p.pretty()), &meta, mode))
}
