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
use crate::types::{HealthCheck, OwnService};
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
        LocalError::Storage(m) => (StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
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
    let dc = st.agent.datacenter();
    let services: Vec<OwnService> = local(&st)?
        .services()
        .into_iter()
        .map(|s| OwnService::new(s, dc.clone()))
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

/// How often a `?hash=` query looks at the service again: the local registry is in memory.
const HASH_POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub(crate) async fn agent_service_get(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let l = local(&st)?;
    let dc = st.agent.datacenter();
    let current = || {
        l.services()
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| OwnService::new(s, dc.clone()).with_hash())
    };
    let mut found = current();
    // `?hash=H`: block until the service's hash differs from H, or the wait runs out.
    if let Some(want) = p.get("hash").filter(|h| !h.is_empty()) {
        let deadline = tokio::time::Instant::now() + hash_wait(&p)?;
        while found.as_ref().is_some_and(|s| s.content_hash == want)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(HASH_POLL).await;
            found = current();
        }
    }
    Ok(match found {
        Some(s) => {
            let mut r = json(&s, p.pretty());
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.content_hash) {
                r.headers_mut().insert("x-consul-contenthash", v);
            }
            r
        }
        None => (StatusCode::NOT_FOUND, format!("unknown service ID: {id}")).into_response(),
    })
}

/// `?wait=` of a `?hash=` query: 5 minutes by default, at most 10, as an index query's.
fn hash_wait(p: &Params) -> ApiResult<std::time::Duration> {
    let wait = match p.get("wait") {
        None => std::time::Duration::from_secs(300),
        Some(w) => go_duration(w)
            .ok_or_else(|| ApiError::BadRequest(format!("Invalid wait time {w:?}")))?,
    };
    Ok(wait.min(std::time::Duration::from_secs(600)))
}

/// The agent's own checks as Consul shows them: with the tags of their service.
fn own_checks(l: &dyn LocalAgent) -> Vec<HealthCheck> {
    let tags: BTreeMap<String, Vec<String>> =
        l.services().into_iter().map(|s| (s.id, s.tags)).collect();
    l.checks()
        .into_iter()
        .map(|c| HealthCheck {
            service_tags: tags.get(&c.service_id).cloned().unwrap_or_default(),
            ..HealthCheck::from(c)
        })
        .collect()
}

pub(crate) async fn agent_checks(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let checks = own_checks(local(&st)?);
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

/// Deregistering what is not registered succeeds, as Consul's: the result is the same.
fn gone(r: Result<(), LocalError>) -> Response {
    match r {
        Err(LocalError::NotFound(_)) => StatusCode::OK.into_response(),
        r => done(r),
    }
}

pub(crate) async fn agent_service_deregister(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(gone(local(&st)?.deregister_service(&id)))
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
    Ok(gone(local(&st)?.deregister_check(&id)))
}

async fn ttl_update(
    st: ApiState,
    id: String,
    q: Option<String>,
    status: HealthStatus,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let note = p.get("note").unwrap_or("").to_string();
    Ok(ttl_done(&id, local(&st)?.update_check(&id, status, note)))
}

/// A TTL update of a check that is unknown or not a TTL check: Consul's 500 and text.
fn ttl_done(id: &str, r: Result<(), LocalError>) -> Response {
    match r {
        Err(LocalError::NotFound(_) | LocalError::Invalid(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID {id:?} does not have associated TTL"),
        )
            .into_response(),
        r => done(r),
    }
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
            .ok_or_else(|| ApiError::BadRequest(format!("Invalid check status: '{s}'")))?,
        None => return Err(ApiError::BadRequest("Missing Status".into())),
    };
    let output = u.output.unwrap_or_default();
    Ok(ttl_done(&id, local(&st)?.update_check(&id, status, output)))
}

fn maint_params(p: &Params) -> ApiResult<(bool, String, Option<std::time::Duration>)> {
    let enable = match p.get("enable") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid value for enable: {other:?}"
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

/// A check as Consul's agent health endpoints show it: the check definition's zero values
/// under `Definition`, no `Interval`, `Timeout` or `ExposedPort`, an empty `Type`, and
/// `ServiceTags` null for a node check.
fn health_check_json(c: HealthCheck) -> serde_json::Value {
    let mut v = serde_json::to_value(&c).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for k in ["Interval", "Timeout", "ExposedPort"] {
            o.remove(k);
        }
        o.insert("Type".into(), "".into());
        if c.service_tags.is_empty() {
            o.insert("ServiceTags".into(), serde_json::Value::Null);
        }
        o.insert(
            "Definition".into(),
            serde_json::json!({
                "Interval": "0s", "Timeout": "0s", "DeregisterCriticalServiceAfter": "0s",
                "HTTP": "", "Header": null, "Method": "", "Body": "", "TLSServerName": "",
                "TLSSkipVerify": false, "TCP": "", "GRPC": "", "GRPCUseTLS": false,
            }),
        );
    }
    v
}

/// Local instances matching `select`, each with its aggregated status and checks, and the
/// worst status over all of them: `maintenance` when a maintenance check applies. `None`
/// when no service matches.
fn local_health(
    st: &ApiState,
    select: impl Fn(&muster_server::model::Service) -> bool,
) -> ApiResult<Option<(&'static str, Vec<serde_json::Value>)>> {
    let l = local(st)?;
    let dc = st.agent.datacenter();
    let checks = own_checks(l);
    let mut worst_overall: Option<(u8, &'static str)> = None;
    let mut out = Vec::new();
    for s in l.services().into_iter().filter(|s| select(s)) {
        let applies = |c: &&HealthCheck| c.service_id == s.id || c.service_id.is_empty();
        let worst = checks
            .iter()
            .filter(applies)
            .map(|c| match (c.kind.as_str(), c.status.as_str()) {
                ("maintenance", _) => (3, "maintenance"),
                (_, "critical") => (2, "critical"),
                (_, "warning") => (1, "warning"),
                _ => (0, "passing"),
            })
            .max()
            .unwrap_or((0, "passing"));
        let mine: Vec<serde_json::Value> = checks
            .iter()
            .filter(applies)
            .cloned()
            .map(health_check_json)
            .collect();
        worst_overall = worst_overall.max(Some(worst));
        out.push(serde_json::json!({
            "AggregatedStatus": worst.1,
            "Service": OwnService::new(s, dc.clone()),
            "Checks": mine,
        }));
    }
    Ok(worst_overall.map(|(_, worst)| (worst, out)))
}

/// Consul's codes for load balancers: 200 passing, 429 warning, 503 critical or maintenance.
fn health_code(status: &str) -> StatusCode {
    match status {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn with_status(mut r: Response, code: StatusCode) -> Response {
    *r.status_mut() = code;
    r
}

/// `?format=text`: the aggregated status alone, as plain text.
fn text_status(status: &str) -> Response {
    let r = ([("content-type", "text/plain")], status.to_string()).into_response();
    with_status(r, health_code(status))
}

/// Not found, as Consul answers it: 404 with a JSON body (with `?format=text`, the message
/// as a JSON string).
fn health_missing(p: &Params, text: String, body: serde_json::Value) -> Response {
    let r = if p.get("format") == Some("text") {
        json(&text, p.pretty())
    } else {
        json(&body, p.pretty())
    };
    with_status(r, StatusCode::NOT_FOUND)
}

pub(crate) async fn agent_health_by_name(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    Ok(match local_health(&st, |s| s.name == name)? {
        Some((worst, _)) if p.get("format") == Some("text") => text_status(worst),
        Some((worst, list)) => with_status(json(&list, p.pretty()), health_code(worst)),
        None => health_missing(
            &p,
            format!("ServiceName {name} Not Found"),
            serde_json::json!([]),
        ),
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
        Some((worst, _)) if p.get("format") == Some("text") => text_status(worst),
        Some((worst, mut list)) => {
            with_status(json(&list.swap_remove(0), p.pretty()), health_code(worst))
        }
        None => health_missing(
            &p,
            format!("ServiceId {id} not found"),
            serde_json::json!({"AggregatedStatus": "critical", "Service": null, "Checks": null}),
        ),
    })
}
