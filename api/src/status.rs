//! `/v1/status/leader` and `/v1/status/peers`.
//!
//! `/v1/status/leader` is what scripts poll to know an agent is ready, so it names a leader
//! only once that is true: the catalog holds the leader's own registration (its node with a
//! passing `serfHealth` and the `consul` service at its RPC address) and this agent's node,
//! registered by a leader (it has a `serfHealth` check). Consul names the Raft leader as soon
//! as Raft knows it, before its leader loop has registered anything, and its own test helpers
//! wait for the catalog on top; a script that creates a session as soon as a leader is named
//! would otherwise be refused for a missing node registration.
//!
//! This agent's own check need only exist, not pass: after a partition a server may follow
//! the leader again before gossip has found it alive, and its Raft state is no less usable
//! for it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{RawQuery, State};
use axum::response::Response;
use muster_server::model::{Check, Consistency, HealthStatus, Query, QueryResult, ServiceHealth};

use crate::error::ApiResult;
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

/// The check the leader keeps on every member's node, as Consul names it.
const SERF_CHECK: &str = "serfHealth";

pub(crate) async fn status_leader(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (leader, _) = st.server.status().await?;
    let leader = match leader {
        Some(l) if registered(&st, &l).await? => l,
        _ => String::new(),
    };
    Ok(json(&leader, p.pretty()))
}

pub(crate) async fn status_peers(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (_, peers) = st.server.status().await?;
    Ok(json(&peers, p.pretty()))
}

/// Whether the catalog holds the registrations of the leader at `leader` (its server RPC
/// address, `serfHealth` passing) and of this agent's node. Stale reads suffice: a
/// registration that any server has applied is committed, so every write proposed after this
/// answer (a session, say) is applied after it.
async fn registered(st: &ApiState, leader: &str) -> ApiResult<bool> {
    let q = Query::ServiceHealth {
        name: "consul".into(),
    };
    let (res, _) = st.server.read(Consistency::Stale, q).await?;
    let QueryResult::ServiceHealth(servers) = res else {
        return Ok(false);
    };
    let passing = |c: &Check| c.id == SERF_CHECK && c.status == HealthStatus::Passing;
    let Some(leader_node) = servers
        .iter()
        .find(|s| serves_at(s, leader) && s.checks.iter().any(passing))
        .map(|s| &s.node.name)
    else {
        return Ok(false);
    };
    let me = st.agent.node_name();
    if *leader_node == me {
        return Ok(true);
    }
    let (res, _) = st
        .server
        .read(Consistency::Stale, Query::NodeChecks { name: me })
        .await?;
    Ok(matches!(res, QueryResult::Checks(checks) if checks.iter().any(|c| c.id == SERF_CHECK)))
}

/// Whether this `consul` service instance is the server at `rpc` (`ip:port`).
fn serves_at(s: &ServiceHealth, rpc: &str) -> bool {
    let host = if s.service.address.is_empty() {
        &s.node.address
    } else {
        &s.service.address
    };
    match (host.parse::<IpAddr>(), rpc.parse::<SocketAddr>()) {
        (Ok(ip), Ok(want)) => SocketAddr::new(ip, s.service.port) == want,
        _ => format!("{host}:{}", s.service.port) == rpc,
    }
}
