//! `/v1/agent/*` for the agent itself and its cluster membership: members, self, join, leave,
//! force-leave and reload. Its own services and checks are in [`crate::agent_local`].

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::agent_local::local;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::json;
use crate::ApiState;

pub(crate) async fn agent_members(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let wan = p.has("wan") && !matches!(p.get("wan"), Some("0" | "false"));
    let members = if wan {
        st.agent.members_wan()
    } else {
        st.agent.members()
    };
    json(&members, p.pretty())
}

/// `/v1/agent/self`: the agent's description, with the `Stats` sections `consul info` prints.
/// The agent gives its own (`serf_lan`, `runtime`, `build`); `agent`, `raft` and `consul` are
/// read here from the local registry and the server.
pub(crate) async fn agent_self(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let mut v = st.agent.self_info();
    let extra = [
        ("agent", agent_stats(&st)),
        ("raft", raft_stats(&st).await),
        ("consul", consul_stats(&st).await),
    ];
    if let Some(stats) = v.get_mut("Stats").and_then(Value::as_object_mut) {
        for (k, section) in extra {
            if let Some(section) = section {
                stats.insert(k.into(), section);
            }
        }
    }
    json(&v, p.pretty())
}

/// Every value a string, as Consul's stats are.
fn strings(pairs: &[(&str, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
            .collect::<Map<_, _>>(),
    )
}

/// Counts of the agent's own services and checks.
fn agent_stats(st: &ApiState) -> Option<Value> {
    let l = st.local.as_deref()?;
    let checks = l.checks();
    let kinds = |k: &str| checks.iter().filter(|c| c.kind == k).count().to_string();
    Some(strings(&[
        ("services", l.services().len().to_string()),
        ("checks", checks.len().to_string()),
        ("check_ttls", kinds("ttl")),
        ("check_monitors", kinds("script")),
        ("check_http", kinds("http")),
        ("check_tcp", kinds("tcp")),
    ]))
}

/// The Raft view of a server; `None` on a client agent, as in Consul.
async fn raft_stats(st: &ApiState) -> Option<Value> {
    if !st.server.is_server() {
        return None;
    }
    let (leader, _) = st.server.status().await.unwrap_or_default();
    let voters = st.server.voters();
    let state = match (st.server.is_leader(), &leader) {
        (true, _) => "Leader",
        (false, Some(_)) => "Follower",
        (false, None) => "Candidate",
    };
    let configuration: Vec<String> = voters
        .iter()
        .map(|(id, addr)| format!("{{Suffrage:Voter ID:{id} Address:{addr}}}"))
        .collect();
    let applied = st.server.applied_index().unwrap_or(0).to_string();
    Some(strings(&[
        ("state", state.into()),
        ("applied_index", applied),
        ("num_peers", voters.len().saturating_sub(1).to_string()),
        (
            "latest_configuration",
            format!("[{}]", configuration.join(" ")),
        ),
        ("protocol_version", "3".into()),
        ("protocol_version_min", "0".into()),
        ("protocol_version_max", "3".into()),
    ]))
}

/// Consul's own section: the server role, the leader, the datacenters known.
async fn consul_stats(st: &ApiState) -> Option<Value> {
    if !st.server.is_server() {
        return Some(strings(&[
            ("server", "false".into()),
            ("acl", "disabled".into()),
        ]));
    }
    let (leader, _) = st.server.status().await.unwrap_or_default();
    Some(strings(&[
        ("server", "true".into()),
        ("acl", "disabled".into()),
        ("leader", st.server.is_leader().to_string()),
        ("leader_addr", leader.unwrap_or_default()),
        ("known_datacenters", "1".into()),
    ]))
}

pub(crate) async fn agent_join(
    State(st): State<ApiState>,
    Path(addr): Path<String>,
) -> ApiResult<Response> {
    st.agent.join(addr).await.map_err(ApiError::Unavailable)?;
    Ok(().into_response())
}

pub(crate) async fn agent_leave(State(st): State<ApiState>) -> Response {
    st.agent.leave();
    ().into_response()
}

/// An unknown node is a 500, as Consul answers it.
pub(crate) async fn agent_force_leave(
    State(st): State<ApiState>,
    Path(node): Path<String>,
) -> ApiResult<Response> {
    st.agent
        .force_leave(node)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(().into_response())
}

pub(crate) async fn agent_reload(State(st): State<ApiState>) -> ApiResult<Response> {
    Ok(match local(&st)?.reload() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    })
}

/// ACL endpoints, until ACLs exist: Consul's answer with ACLs disabled.
pub(crate) async fn acl_disabled() -> (StatusCode, &'static str) {
    (StatusCode::UNAUTHORIZED, "ACL support disabled")
}
