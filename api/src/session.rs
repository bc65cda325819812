//! `/v1/session/*`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::model::{Command, Query, QueryResult, Session, SessionBehavior};
use serde_json::Value;

use crate::body::body;
use crate::error::{ApiError, ApiResult};
use crate::params::{go_duration, Params};
use crate::read::read;
use crate::reply::{json, with_meta};
use crate::requests::CreateIn;
use crate::types::SessionOut;
use crate::ApiState;

/// `LockDelay`: a duration string, or a number of nanoseconds (a bare number under 1000 is
/// taken as seconds, as Consul's decoder does).
fn lock_delay_ms(v: &Value) -> ApiResult<u64> {
    let bad = || ApiError::BadRequest(format!("Invalid LockDelay {v}"));
    match v {
        Value::String(s) => go_duration(s).map(|d| d.as_millis() as u64).ok_or_else(bad),
        Value::Number(n) => {
            let n = n.as_u64().ok_or_else(bad)?;
            Ok(if n < 1000 { n * 1000 } else { n / 1_000_000 })
        }
        _ => Err(bad()),
    }
}

pub(crate) async fn session_create(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let c: CreateIn = if b.iter().all(u8::is_ascii_whitespace) {
        CreateIn::default()
    } else {
        body(&b)?
    };
    let ttl_ms = match c.ttl.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => {
            let d = go_duration(t)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid Session TTL {t:?}")))?;
            if d.as_secs() < 10 || d.as_secs() > 86_400 {
                return Err(ApiError::BadRequest(format!(
                    "Invalid Session TTL '{t}', must be between [10s=24h0m0s]"
                )));
            }
            d.as_millis() as u64
        }
    };
    let behavior = match c.behavior.as_deref().unwrap_or("release") {
        "" | "release" => SessionBehavior::Release,
        "delete" => SessionBehavior::Delete,
        other => {
            return Err(ApiError::BadRequest(format!(
                "Invalid Behavior setting '{other}'"
            )))
        }
    };
    let lock_delay_ms = match &c.lock_delay {
        None => 15_000,
        Some(v) => lock_delay_ms(v)?.min(60_000),
    };
    let node_checks = match (c.node_checks, c.checks) {
        (Some(n), _) => n,
        (None, Some(legacy)) => legacy,
        (None, None) => vec!["serfHealth".to_string()],
    };
    let node = c
        .node
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| st.agent.node_name());
    let session = Session {
        id: muster_server::new_uuid(),
        name: c.name.unwrap_or_default(),
        node: node.clone(),
        lock_delay_ms,
        behavior,
        ttl_ms,
        node_checks,
        service_checks: c
            .service_checks
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.id)
            .collect(),
        ..Default::default()
    };
    let id = session.id.clone();
    let res = st
        .server
        .write(Command::SessionCreate(Box::new(session)))
        .await?;
    if !res.success {
        return Err(ApiError::Unavailable(format!(
            "Missing node registration or a check it depends on is missing or critical (node {node:?})"
        )));
    }
    Ok(json(&serde_json::json!({ "ID": id }), p.pretty()))
}

pub(crate) async fn session_destroy(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    st.server.write(Command::SessionDestroy { id }).await?;
    Ok(json(&true, p.pretty()))
}

pub(crate) async fn session_renew(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    if !st.server.session_renew(&id).await? {
        return Ok((
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        )
            .into_response());
    }
    let (res, _) = st
        .server
        .read(
            muster_server::model::Consistency::Default,
            Query::Session { id },
        )
        .await?;
    Ok(sessions_json(res, &p))
}

fn sessions_json(res: QueryResult, p: &Params) -> Response {
    let list: Vec<SessionOut> = match res {
        QueryResult::Sessions(s) => s.into_iter().map(Into::into).collect(),
        _ => Vec::new(),
    };
    json(&list, p.pretty())
}

async fn sessions_reply(st: ApiState, q: Option<String>, query: Query) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, _) = read(&st, &p, query).await?;
    Ok(with_meta(sessions_json(res, &p), &meta))
}

pub(crate) async fn session_info(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    sessions_reply(st, q, Query::Session { id }).await
}

pub(crate) async fn session_node(
    State(st): State<ApiState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    sessions_reply(st, q, Query::NodeSessions { node }).await
}

pub(crate) async fn session_list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    sessions_reply(st, q, Query::Sessions).await
}
