//! `/v1/catalog/*` and `/v1/health/*`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::model::{
    Check, Command, HealthStatus, Node, Query, QueryResult, Registration, Service, ServiceHealth,
};
use serde::Deserialize;
use serde_json::Value;

use crate::cache;
use crate::error::{ApiError, ApiResult};
use crate::filter;
use crate::params::{encode, json, read, read_cached, set_meta, with_meta, Params};
use crate::types::{
    AgentService, CatalogNode, CatalogService, HealthCheck, NodeServices, ServiceEntry,
};
use crate::ApiState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsIn {
    passing: Option<u32>,
    warning: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceIn {
    #[serde(rename = "ID")]
    id: Option<String>,
    service: Option<String>,
    tags: Option<Vec<String>>,
    address: Option<String>,
    meta: Option<BTreeMap<String, String>>,
    port: Option<u16>,
    weights: Option<WeightsIn>,
    enable_tag_override: Option<bool>,
    /// Only read by transactions' `cas` verbs.
    pub(crate) modify_index: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckIn {
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    name: Option<String>,
    notes: Option<String>,
    status: Option<String>,
    #[serde(rename = "ServiceID")]
    service_id: Option<String>,
    output: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterIn {
    #[serde(rename = "ID")]
    id: Option<String>,
    node: Option<String>,
    address: Option<String>,
    datacenter: Option<String>,
    tagged_addresses: Option<BTreeMap<String, String>>,
    node_meta: Option<BTreeMap<String, String>>,
    service: Option<ServiceIn>,
    check: Option<CheckIn>,
    checks: Option<Vec<CheckIn>>,
    skip_node_update: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeregisterIn {
    node: Option<String>,
    #[serde(rename = "ServiceID")]
    service_id: Option<String>,
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    datacenter: Option<String>,
}

pub(crate) use crate::body::body;

/// The field names of this module's request bodies (see [`crate::body`]).
pub(crate) fn field_names() -> Vec<&'static str> {
    crate::body::field_names!(WeightsIn, ServiceIn, CheckIn, RegisterIn, DeregisterIn)
}

pub(crate) fn service_from(s: ServiceIn) -> ApiResult<Service> {
    let name = s.service.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::BadRequest("Must provide service name".into()));
    }
    let w = s.weights.unwrap_or(WeightsIn {
        passing: None,
        warning: None,
    });
    Ok(Service {
        id: s
            .id
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        tags: s.tags.unwrap_or_default(),
        address: s.address.unwrap_or_default(),
        port: s.port.unwrap_or(0),
        meta: s.meta.unwrap_or_default(),
        weight_passing: w.passing.unwrap_or(1),
        weight_warning: w.warning.unwrap_or(1),
        enable_tag_override: s.enable_tag_override.unwrap_or(false),
        ..Default::default()
    })
}

fn check_from(c: CheckIn, node: &str) -> ApiResult<Check> {
    let status = match c.status.as_deref().unwrap_or("") {
        "" => HealthStatus::Critical,
        s => HealthStatus::parse(s)
            .ok_or_else(|| ApiError::BadRequest(format!("Invalid check status {s:?}")))?,
    };
    let id = c
        .check_id
        .filter(|i| !i.is_empty())
        .or_else(|| c.name.clone())
        .unwrap_or_default();
    if id.is_empty() {
        return Err(ApiError::BadRequest("Must provide check ID or name".into()));
    }
    Ok(Check {
        node: node.to_string(),
        name: c.name.unwrap_or_else(|| id.clone()),
        id,
        status,
        notes: c.notes.unwrap_or_default(),
        output: c.output.unwrap_or_default(),
        service_id: c.service_id.unwrap_or_default(),
        ..Default::default()
    })
}

fn write_reply(ok: bool, index: u64, p: &Params) -> Response {
    let mut resp = json(&ok, p.pretty());
    let meta = muster_server::model::ReadMeta {
        index,
        known_leader: true,
        last_contact_ms: 0,
    };
    set_meta(
        resp.headers_mut(),
        &meta,
        muster_server::model::Consistency::Default,
    );
    resp
}

pub(crate) async fn catalog_register(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let r: RegisterIn = body(&b)?;
    let dc = st.agent.datacenter();
    if r.datacenter
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != dc)
    {
        return Err(ApiError::Unavailable("No path to datacenter".into()));
    }
    let node = r.node.unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::BadRequest("Must provide node".into()));
    }
    let skip = r.skip_node_update.unwrap_or(false);
    let address = r.address.unwrap_or_default();
    if address.is_empty() && !skip {
        return Err(ApiError::BadRequest(
            "Must provide address if SkipNodeUpdate is not set".into(),
        ));
    }
    let service = r.service.map(service_from).transpose()?;
    let mut checks = Vec::new();
    for c in r.check.into_iter().chain(r.checks.unwrap_or_default()) {
        checks.push(check_from(c, &node)?);
    }
    let reg = Registration {
        node: Node {
            name: node,
            id: r.id.unwrap_or_default(),
            address,
            datacenter: dc,
            tagged_addresses: r.tagged_addresses.unwrap_or_default(),
            meta: r.node_meta.unwrap_or_default(),
            ..Default::default()
        },
        skip_node_update: skip,
        service,
        checks,
    };
    let res = st.server.write(Command::Register(Box::new(reg))).await?;
    if !res.success {
        return Err(ApiError::BadRequest(
            "A check refers to a service the node does not have".into(),
        ));
    }
    Ok(write_reply(true, res.index, &p))
}

pub(crate) async fn catalog_deregister(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
    b: Bytes,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let d: DeregisterIn = body(&b)?;
    if d.datacenter
        .as_deref()
        .is_some_and(|x| !x.is_empty() && x != st.agent.datacenter())
    {
        return Err(ApiError::Unavailable("No path to datacenter".into()));
    }
    let node = d.node.unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::BadRequest("Must provide node".into()));
    }
    let cmd = Command::Deregister {
        node,
        service_id: d.service_id.filter(|s| !s.is_empty()),
        check_id: d.check_id.filter(|s| !s.is_empty()),
    };
    let res = st.server.write(cmd).await?;
    Ok(write_reply(res.success, res.index, &p))
}

pub(crate) async fn catalog_datacenters(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Response {
    json(
        &[st.agent.datacenter()],
        Params::parse(q.as_deref()).pretty(),
    )
}

/// `?node-meta=k:v` (repeatable, all must match).
fn node_meta_ok(p: &Params, meta: &BTreeMap<String, String>) -> bool {
    p.all("node-meta").iter().all(|kv| {
        let (k, v) = kv.split_once(':').unwrap_or((kv, ""));
        meta.get(k).is_some_and(|x| x == v)
    })
}

/// `?tag=` (repeatable, all must be present).
fn tags_ok(p: &Params, tags: &[String]) -> bool {
    p.all("tag").iter().all(|t| tags.contains(t))
}

/// Applies `?filter=` to already-serialized results.
fn filtered<T: filter::Filterable>(p: &Params, items: Vec<T>) -> ApiResult<Vec<Value>> {
    filter::apply(p.get("filter"), items).map_err(ApiError::BadRequest)
}

pub(crate) async fn catalog_nodes(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Nodes).await?;
    let nodes: Vec<CatalogNode> = match res {
        QueryResult::Nodes(n) => n
            .into_iter()
            .filter(|n| node_meta_ok(&p, &n.meta))
            .map(Into::into)
            .collect(),
        _ => Vec::new(),
    };
    Ok(with_meta(
        json(&filtered(&p, nodes)?, p.pretty()),
        &meta,
        mode,
    ))
}

pub(crate) async fn catalog_node(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Node { name }).await?;
    let resp = match res {
        QueryResult::Node(Some((node, services))) => {
            let services = services
                .into_iter()
                .map(|s| (s.id.clone(), AgentService::from(s)))
                .collect();
            json(
                &NodeServices {
                    node: node.into(),
                    services,
                },
                p.pretty(),
            )
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    };
    Ok(with_meta(resp, &meta, mode))
}

pub(crate) async fn catalog_services(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Services).await?;
    let map = match res {
        QueryResult::Services(m) => m,
        _ => BTreeMap::new(),
    };
    Ok(with_meta(json(&map, p.pretty()), &meta, mode))
}

pub(crate) async fn catalog_service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let cache_key = cache::key(&format!("catalog/service/{name}"), q.as_deref());
    read_cached(&st, &p, Query::ServiceNodes { name }, cache_key, |res| {
        let list: Vec<CatalogService> = match res {
            QueryResult::ServiceNodes(v) => v
                .into_iter()
                .filter(|(n, s)| tags_ok(&p, &s.tags) && node_meta_ok(&p, &n.meta))
                .map(|(n, s)| CatalogService::new(n, s))
                .collect(),
            _ => Vec::new(),
        };
        encode(&filtered(&p, list)?, p.pretty())
    })
    .await
}

fn health_checks(checks: Vec<Check>, tags: &[String]) -> Vec<HealthCheck> {
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
                    tags_ok(&p, &h.service.tags) && node_meta_ok(&p, &h.node.meta)
                })
                .filter(|h| !passing || h.checks.iter().all(|c| c.status == HealthStatus::Passing))
                .map(|h| {
                    let tags = h.service.tags.clone();
                    ServiceEntry {
                        node: h.node.into(),
                        service: h.service.into(),
                        checks: health_checks(h.checks, &tags),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        encode(&filtered(&p, list)?, p.pretty())
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
        json(&filtered(&p, checks)?, p.pretty()),
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

pub(crate) async fn health_checks_of(
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
