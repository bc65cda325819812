//! `/v1/operator/raft/*`: the Raft configuration in Consul's JSON, removing a peer and
//! moving leadership. Servers are named by their gossip member (node name, node ID) where
//! gossip knows them; the quorum a removal would leave is judged by gossip's view of which
//! voters are alive.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{RawQuery, State};
use axum::response::Response;
use muster_server::{RaftConfiguration, RaftPeer};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::types::Member;
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
