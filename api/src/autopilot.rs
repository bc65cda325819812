//! `/v1/operator/autopilot/*`: the replicated autopilot configuration (read, and replaced
//! through Raft with Consul's `?cas`), and the leader's view of every server's health, in
//! Consul's JSON. Servers are shown by their node ID, as Consul shows them.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::acl::builtin::rfc3339;
use muster_server::model::{AutopilotConfig, Command, Query, QueryResult};
use muster_server::{AutopilotHealth, ServerHealth};
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::reply::{json, write_reply};
use crate::requests::AutopilotIn;
use crate::types::go_duration_string;
use crate::ApiState;

/// Consul's `AutopilotConfiguration`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigOut {
    cleanup_dead_servers: bool,
    last_contact_threshold: String,
    max_trailing_logs: u64,
    min_quorum: u64,
    server_stabilization_time: String,
    redundancy_zone_tag: String,
    disable_upgrade_migration: bool,
    upgrade_version_tag: String,
    create_index: u64,
    modify_index: u64,
}

impl From<AutopilotConfig> for ConfigOut {
    fn from(c: AutopilotConfig) -> Self {
        ConfigOut {
            cleanup_dead_servers: c.cleanup_dead_servers,
            last_contact_threshold: go_duration_string(Duration::from_millis(
                c.last_contact_threshold_ms,
            )),
            max_trailing_logs: c.max_trailing_logs,
            min_quorum: c.min_quorum,
            server_stabilization_time: go_duration_string(Duration::from_millis(
                c.server_stabilization_time_ms,
            )),
            redundancy_zone_tag: c.redundancy_zone_tag,
            disable_upgrade_migration: c.disable_upgrade_migration,
            upgrade_version_tag: c.upgrade_version_tag,
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

pub(crate) async fn operator_autopilot_configuration(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let (res, _) = st.server.read(mode, Query::AutopilotConfig).await?;
    // None only before the first leader has seeded it: Consul's defaults meanwhile.
    let config = match res {
        QueryResult::AutopilotConfig(c) => c.unwrap_or_default(),
        _ => AutopilotConfig::default(),
    };
    // As Consul: no index or leader headers on this read.
    Ok(json(&ConfigOut::from(config), p.pretty()))
}

/// A duration as Consul's `ReadableDuration` reads it: a Go duration string, or a number of
/// nanoseconds; absent is zero.
fn readable_duration(v: Option<&Value>, field: &str) -> ApiResult<u64> {
    let bad = |why: String| ApiError::BadRequest(format!("Error parsing autopilot config: {why}"));
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => muster_server::go_duration(s)
            .map(|d| d.as_millis() as u64)
            .ok_or_else(|| bad(format!("time: invalid duration {s:?} for {field}"))),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|ns| (ns / 1e6) as u64)
            .ok_or_else(|| bad(format!("invalid duration {n} for {field}"))),
        Some(other) => Err(bad(format!("invalid duration {other} for {field}"))),
    }
}

pub(crate) async fn operator_autopilot_configuration_put(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let input: AutopilotIn = crate::body::body(&body)?;
    let config = AutopilotConfig {
        cleanup_dead_servers: input.cleanup_dead_servers,
        last_contact_threshold_ms: readable_duration(
            input.last_contact_threshold.as_ref(),
            "LastContactThreshold",
        )?,
        max_trailing_logs: input.max_trailing_logs,
        min_quorum: input.min_quorum,
        server_stabilization_time_ms: readable_duration(
            input.server_stabilization_time.as_ref(),
            "ServerStabilizationTime",
        )?,
        redundancy_zone_tag: input.redundancy_zone_tag,
        disable_upgrade_migration: input.disable_upgrade_migration,
        upgrade_version_tag: input.upgrade_version_tag,
        create_index: 0,
        modify_index: 0,
    };
    let cas = match p.get("cas") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|e| ApiError::BadRequest(format!("Error parsing cas value: {e}")))?,
        ),
    };
    let res = st
        .server
        .write(Command::AutopilotSetConfig {
            config: Box::new(config),
            cas,
        })
        .await?;
    // As Consul: only a CAS write reports whether it happened.
    Ok(write_reply(cas.is_none() || res.success, p.pretty()))
}

/// Consul's `ServerHealth`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServerHealthOut {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    serf_status: &'static str,
    version: String,
    leader: bool,
    last_contact: String,
    last_term: u64,
    last_index: u64,
    healthy: bool,
    voter: bool,
    stable_since: String,
}

/// Consul's `OperatorHealthReply`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthOut {
    healthy: bool,
    failure_tolerance: u64,
    servers: Vec<ServerHealthOut>,
}

/// The ID Consul shows: the node ID, else (a server gossip does not know) the Raft ID.
fn shown_id(s: &ServerHealth) -> String {
    if s.node_id.is_empty() {
        s.raft_id.to_string()
    } else {
        s.node_id.clone()
    }
}

fn server_out(s: &ServerHealth) -> ServerHealthOut {
    ServerHealthOut {
        id: shown_id(s),
        name: s.name.clone(),
        address: s.address.clone(),
        serf_status: s.serf_status.as_str(),
        version: s.version.clone(),
        leader: s.leader,
        last_contact: go_duration_string(Duration::from_millis(s.last_contact_ms)),
        last_term: s.last_term,
        last_index: s.last_index,
        healthy: s.healthy,
        voter: s.voter,
        stable_since: rfc3339(s.stable_since_ms),
    }
}

pub(crate) async fn operator_autopilot_health(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let h = st.server.autopilot_health().await?;
    let out = HealthOut {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        servers: h.servers.iter().map(server_out).collect(),
    };
    let mut resp = json(&out, p.pretty());
    // As Consul: an unhealthy cluster answers 429, with the same body.
    if !h.healthy {
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    Ok(resp)
}

/// One server in Consul's `AutopilotState`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StateServerOut {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    node_status: &'static str,
    version: String,
    last_contact: String,
    last_term: u64,
    last_index: u64,
    healthy: bool,
    stable_since: String,
    read_replica: bool,
    status: &'static str,
    meta: BTreeMap<String, String>,
    node_type: &'static str,
}

/// Consul's `AutopilotState` (`/v1/operator/autopilot/state`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StateOut {
    healthy: bool,
    failure_tolerance: u64,
    optimistic_failure_tolerance: u64,
    servers: BTreeMap<String, StateServerOut>,
    leader: String,
    voters: Vec<String>,
    read_replicas: Option<Vec<String>>,
    redundancy_zones: Option<Value>,
    upgrade: Option<Value>,
}

fn state_out(h: &AutopilotHealth) -> StateOut {
    let servers = h
        .servers
        .iter()
        .map(|s| {
            let out = StateServerOut {
                id: shown_id(s),
                name: s.name.clone(),
                address: s.address.clone(),
                node_status: s.serf_status.as_str(),
                version: s.version.clone(),
                last_contact: go_duration_string(Duration::from_millis(s.last_contact_ms)),
                last_term: s.last_term,
                last_index: s.last_index,
                healthy: s.healthy,
                stable_since: rfc3339(s.stable_since_ms),
                read_replica: false,
                status: match (s.leader, s.voter) {
                    (true, _) => "leader",
                    (false, true) => "voter",
                    (false, false) => "non-voter",
                },
                meta: BTreeMap::new(),
                node_type: "voter",
            };
            (out.id.clone(), out)
        })
        .collect();
    let id_of = |raft_id: u64| {
        h.servers
            .iter()
            .find(|s| s.raft_id == raft_id)
            .map_or_else(|| raft_id.to_string(), shown_id)
    };
    StateOut {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        optimistic_failure_tolerance: h.optimistic_failure_tolerance,
        servers,
        leader: id_of(h.leader),
        voters: h.voters.iter().map(|v| id_of(*v)).collect(),
        read_replicas: None,
        redundancy_zones: None,
        upgrade: None,
    }
}

pub(crate) async fn operator_autopilot_state(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let h = st.server.autopilot_health().await?;
    Ok(json(&state_out(&h), p.pretty()).into_response())
}
