//! `/v1/agent/*` for the agent's own services and checks: listing, registering and
//! deregistering them, TTL updates, maintenance and the agent-local health endpoints. The
//! agent's [`LocalAgent`] holds them; anti-entropy pushes them into the catalog.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::model::HealthStatus;

use crate::body::{body, json_value};
use crate::error::{ApiError, ApiResult};
use crate::params::{go_duration, Params};
use crate::reply::json;
use crate::requests::CheckUpdateIn;
use crate::types::{AgentService, HealthCheck};
use crate::{ApiState, LocalAgent, LocalError};

/// The agent's local state, or 500 where there is none.
pub(crate) fn local(st: &ApiState) -> ApiResult<&dyn LocalAgent> {
    st.local
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("agent-local state is not available".into()))
}

fn local_err(e: LocalError) -> Response {
    match e {
        LocalError::NotFound(m) => (StatusCode::NOT_FOUND, m).into_response(),
        LocalError::Invalid(m) => (StatusCode::BAD_REQUEST, m).into_response(),
    }
}

fn done(r: Result<(), LocalError>) -> Response {
    match r {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => local_err(e),
    }
}

pub(crate) async fn agent_services(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let services: Vec<AgentService> = local(&st)?
        .services()
        .into_iter()
        .map(AgentService::from)
        .collect();
    Ok(json(&keyed(&p, services, "ID")?, p.pretty()))
}

/// Applies `?filter=` to the agent's own services or checks, as Consul filters the values of
/// its map, and keys the survivors by `key`.
fn keyed<T: crate::filter::Filterable>(
    p: &Params,
    items: Vec<T>,
    key: &str,
) -> ApiResult<BTreeMap<String, serde_json::Value>> {
    let values = p.filtered(items)?;
    Ok(values
        .into_iter()
        .map(|v| {
            (
                v.get(key)
                    .and_then(|k| k.as_str())
                    .unwrap_or("")
                    .to_string(),
                v,
            )
        })
        .collect())
}

pub(crate) async fn agent_service_get(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    Ok(
        match local(&st)?.services().into_iter().find(|s| s.id == id) {
            Some(s) => json(&AgentService::from(s), p.pretty()),
            None => (StatusCode::NOT_FOUND, format!("unknown service ID: {id}")).into_response(),
        },
    )
}

pub(crate) async fn agent_checks(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let checks: Vec<HealthCheck> = local(&st)?
        .checks()
        .into_iter()
        .map(HealthCheck::from)
        .collect();
    Ok(json(&keyed(&p, checks, "CheckID")?, p.pretty()))
}

pub(crate) async fn agent_service_register(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let def = json_value(&b)?;
    let replace =
        p.has("replace-existing-checks") && p.get("replace-existing-checks") != Some("false");
    Ok(done(local(&st)?.register_service(&def, replace)))
}

pub(crate) async fn agent_service_deregister(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(done(local(&st)?.deregister_service(&id)))
}

pub(crate) async fn agent_check_register(
    State(st): State<ApiState>,
    b: Bytes,
) -> ApiResult<Response> {
    let def = json_value(&b)?;
    Ok(done(local(&st)?.register_check(&def)))
}

pub(crate) async fn agent_check_deregister(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(done(local(&st)?.deregister_check(&id)))
}

async fn ttl_update(
    st: ApiState,
    id: String,
    q: Option<String>,
    status: HealthStatus,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let note = p.get("note").unwrap_or("").to_string();
    Ok(done(local(&st)?.update_check(&id, status, note)))
}

pub(crate) async fn agent_check_pass(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    ttl_update(st, id, q, HealthStatus::Passing).await
}

pub(crate) async fn agent_check_warn(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    ttl_update(st, id, q, HealthStatus::Warning).await
}

pub(crate) async fn agent_check_fail(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    ttl_update(st, id, q, HealthStatus::Critical).await
}

pub(crate) async fn agent_check_update(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    b: Bytes,
) -> ApiResult<Response> {
    let u: CheckUpdateIn = body(&b)?;
    let status = match u.status.as_deref() {
        Some(s) => HealthStatus::parse(s)
            .ok_or_else(|| ApiError::BadRequest(format!("Invalid check status: {s:?}")))?,
        None => return Err(ApiError::BadRequest("Missing Status".into())),
    };
    Ok(done(local(&st)?.update_check(
        &id,
        status,
        u.output.unwrap_or_default(),
    )))
}

fn maint_params(p: &Params) -> ApiResult<(bool, String, Option<std::time::Duration>)> {
    let enable = match p.get("enable") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid value for 'enable': {other:?}"
            )))
        }
        None => return Err(ApiError::BadRequest("Missing value for enable".into())),
    };
    let ttl = match p.get("ttl") {
        None | Some("") => None,
        Some(t) => {
            Some(go_duration(t).ok_or_else(|| ApiError::BadRequest(format!("Invalid ttl {t:?}")))?)
        }
    };
    Ok((enable, p.get("reason").unwrap_or("").to_string(), ttl))
}

pub(crate) async fn agent_maintenance(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (enable, reason, ttl) = maint_params(&Params::parse(q.as_deref()))?;
    Ok(done(local(&st)?.maintenance(None, enable, reason, ttl)))
}

pub(crate) async fn agent_service_maintenance(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let (enable, reason, ttl) = maint_params(&Params::parse(q.as_deref()))?;
    Ok(done(local(&st)?.maintenance(
        Some(&id),
        enable,
        reason,
        ttl,
    )))
}

/// Local instances matching `select`, each with its aggregated status and checks, and the
/// status code for load balancers: 200 all passing, 429 any warning, 503 any critical.
/// `None` when no service matches.
fn local_health(
    st: &ApiState,
    select: impl Fn(&muster_server::model::Service) -> bool,
) -> ApiResult<Option<(StatusCode, Vec<serde_json::Value>)>> {
    let l = local(st)?;
    let checks = l.checks();
    let mut worst_overall = None;
    let mut out = Vec::new();
    for s in l.services().into_iter().filter(|s| select(s)) {
        let applies =
            |c: &&muster_server::model::Check| c.service_id == s.id || c.service_id.is_empty();
        let worst = checks
            .iter()
            .filter(applies)
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Passing);
        let mine: Vec<HealthCheck> = checks
            .iter()
            .filter(applies)
            .cloned()
            .map(Into::into)
            .collect();
        worst_overall = worst_overall.max(Some(worst));
        out.push(serde_json::json!({"AggregatedStatus": worst.as_str(), "Service": AgentService::from(s), "Checks": mine}));
    }
    Ok(worst_overall.map(|worst| {
        let code = match worst {
            HealthStatus::Passing => StatusCode::OK,
            HealthStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
            HealthStatus::Critical => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, out)
    }))
}

fn with_status(mut r: Response, code: StatusCode) -> Response {
    *r.status_mut() = code;
    r
}

pub(crate) async fn agent_health_by_name(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    Ok(match local_health(&st, |s| s.name == name)? {
        Some((code, list)) => with_status(json(&list, p.pretty()), code),
        None => (StatusCode::NOT_FOUND, "service not found").into_response(),
    })
}

pub(crate) async fn agent_health_by_id(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    // By ID, a single object, as Consul.
    Ok(match local_health(&st, |s| s.id == id)? {
        Some((code, list)) => with_status(json(&list[0], p.pretty()), code),
        None => (StatusCode::NOT_FOUND, "service not found").into_response(),
    })
}
