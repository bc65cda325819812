//! `/v1/health/*`: service instances with their checks, and checks by node, service or
//! state.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::model::{Check, Consistency, HealthStatus, Query, QueryResult, ServiceHealth};

use crate::cache;
use crate::coordinate::{sort_by_near, Near};
use crate::error::ApiResult;
use crate::params::Params;
use crate::read::{read, read_cached};
use crate::reply::{encode, json, with_query_meta};
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

/// One instance as `/v1/health/service` (and a prepared query's execution) answers with it.
pub(crate) fn service_entry(h: ServiceHealth) -> ServiceEntry {
    let tags = h.service.tags.clone();
    ServiceEntry {
        node: h.node.into(),
        service: h.service.into(),
        checks: with_service_tags(h.checks, &tags),
    }
}

pub(crate) async fn health_service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let passing = p.has("passing") && p.get("passing") != Some("false");
    let near = Near::load(&st, p.get("near").unwrap_or("")).await?;
    let cache_key = near.cache_key(cache::key(&format!("health/service/{name}"), q.as_deref()));
    read_cached(&st, &p, Query::ServiceHealth { name }, cache_key, |res| {
        let mut list: Vec<ServiceEntry> = match res {
            QueryResult::ServiceHealth(v) => v
                .into_iter()
                .filter(|h: &ServiceHealth| {
                    p.local() && p.tags_ok(&h.service.tags) && p.node_meta_ok(&h.node.meta)
                })
                .filter(|h| !passing || h.checks.iter().all(|c| c.status == HealthStatus::Passing))
                .map(service_entry)
                .collect(),
            _ => Vec::new(),
        };
        near.sort(&mut list, |e| &e.node.node);
        encode(&p.filtered(list)?, p.pretty())
    })
    .await
}

async fn checks_reply(st: ApiState, p: Params, query: Query) -> ApiResult<Response> {
    let (res, meta, mode) = read(&st, &p, query).await?;
    let checks = match res {
        QueryResult::Checks(c) => c,
        _ => Vec::new(),
    };
    let mut checks = with_tags_of_services(&st, checks).await?;
    sort_by_near(&st, p.get("near").unwrap_or(""), &mut checks, |c| &c.node).await?;
    Ok(with_query_meta(
        json(&p.filtered(checks)?, p.pretty()),
        &meta,
        mode,
    ))
}

/// Service checks carry their service's tags (`ServiceTags`), read from the nodes they are
/// on: the server's own state on a server (the read that found the checks already had the
/// consistency asked for), a stale read on a client agent.
async fn with_tags_of_services(st: &ApiState, checks: Vec<Check>) -> ApiResult<Vec<HealthCheck>> {
    let nodes: BTreeSet<String> = checks
        .iter()
        .filter(|c| !c.service_id.is_empty())
        .map(|c| c.node.clone())
        .collect();
    let mut tags: HashMap<(String, String), Vec<String>> = HashMap::new();
    for name in nodes {
        let q = Query::Node { name: name.clone() };
        let res = match st.server.catalog() {
            Some(catalog) => catalog.query(&q)?.0,
            None => st.server.read(Consistency::Stale, q).await?.0,
        };
        if let QueryResult::Node(Some((_, services))) = res {
            for s in services {
                tags.insert((name.clone(), s.id), s.tags);
            }
        }
    }
    Ok(checks
        .into_iter()
        .map(|c| {
            let key = (c.node.clone(), c.service_id.clone());
            let mut h = HealthCheck::from(c);
            h.service_tags = tags.get(&key).cloned().unwrap_or_default();
            h
        })
        .collect())
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
    let p = Params::parse(q.as_deref());
    let state = match state.as_str() {
        "any" => None,
        s => match HealthStatus::parse(s) {
            Some(s) => Some(s),
            // No check is ever in an unknown state: an empty list, as Consul answers.
            None => {
                let (_, meta, mode) = read(&st, &p, Query::ChecksInState { state: None }).await?;
                let none: [HealthCheck; 0] = [];
                return Ok(with_query_meta(json(&none, p.pretty()), &meta, mode));
            }
        },
    };
    checks_reply(st, p, Query::ChecksInState { state }).await
}
