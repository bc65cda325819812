//! `/v1/health/*`: service instances with their checks, and checks by node, service or
//! state.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::model::{Check, HealthStatus, Query, QueryResult, ServiceHealth};

use crate::cache;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::read::{read, read_cached};
use crate::reply::{encode, json, with_meta};
use crate::types::{HealthCheck, ServiceEntry};
use crate::ApiState;

/// A service instance's checks; its service checks carry the service's tags.
fn with_service_tags(checks: Vec<Check>, tags: &[String]) -> Vec<HealthCheck> {
    checks
        .into_iter()
        .map(|c| {
            let service = !c.service_id.is_empty();
            let mut h = HealthCheck::from(c);
            if service {
                h.service_tags = tags.to_vec();
            }
            h
        })
        .collect()
}

pub(crate) async fn health_service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let passing = p.has("passing") && p.get("passing") != Some("false");
    let cache_key = cache::key(&format!("health/service/{name}"), q.as_deref());
    read_cached(&st, &p, Query::ServiceHealth { name }, cache_key, |res| {
        let list: Vec<ServiceEntry> = match res {
            QueryResult::ServiceHealth(v) => v
                .into_iter()
                .filter(|h: &ServiceHealth| {
                    p.tags_ok(&h.service.tags) && p.node_meta_ok(&h.node.meta)
                })
                .filter(|h| !passing || h.checks.iter().all(|c| c.status == HealthStatus::Passing))
                .map(|h| {
                    let tags = h.service.tags.clone();
                    ServiceEntry {
                        node: h.node.into(),
                        service: h.service.into(),
                        checks: with_service_tags(h.checks, &tags),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        encode(&p.filtered(list)?, p.pretty())
    })
    .await
}

async fn checks_reply(st: ApiState, p: Params, query: Query) -> ApiResult<Response> {
    let (res, meta, mode) = read(&st, &p, query).await?;
    let checks: Vec<HealthCheck> = match res {
        QueryResult::Checks(c) => c.into_iter().map(Into::into).collect(),
        _ => Vec::new(),
    };
    Ok(with_meta(
        json(&p.filtered(checks)?, p.pretty()),
        &meta,
        mode,
    ))
}

pub(crate) async fn health_node(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    checks_reply(st, Params::parse(q.as_deref()), Query::NodeChecks { name }).await
}

pub(crate) async fn health_checks(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    checks_reply(
        st,
        Params::parse(q.as_deref()),
        Query::ServiceChecks { name },
    )
    .await
}

pub(crate) async fn health_state(
    State(st): State<ApiState>,
    Path(state): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let state = match state.as_str() {
        "any" => None,
        s => Some(
            HealthStatus::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid check state {s:?}")))?,
        ),
    };
    checks_reply(
        st,
        Params::parse(q.as_deref()),
        Query::ChecksInState { state },
    )
    .await
}
