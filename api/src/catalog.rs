//! `/v1/catalog/*`: registering and deregistering nodes, services and checks, and reading
//! them back.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use muster_server::model::{
    tags_by_service, Check, Command, Node, Query, QueryResult, Registration,
};
use serde_json::Value;

use crate::body::body;
use crate::cache;
use crate::coordinate::{sort_by_near, Near};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::read::{read, read_cached};
use crate::reply::{encode, json, with_query_meta, write_reply};
use crate::requests::{CheckIn, DeregisterIn, RegisterIn, ServiceIn};
use crate::types::{AgentService, CatalogNode, CatalogService, NodeServiceList, NodeServices};
use crate::ApiState;

/// A registration's check: it belongs to the registered node; its ID defaults to its name.
fn check_from(c: CheckIn, node: &str) -> ApiResult<Check> {
    let id = c
        .check_id
        .clone()
        .filter(|i| !i.is_empty())
        .or_else(|| c.name.clone())
        .unwrap_or_default();
    if id.is_empty() {
        return Err(ApiError::BadRequest("Must provide check ID or name".into()));
    }
    let mut check = c.into_check(node.to_string(), id)?;
    if check.name.is_empty() {
        check.name = check.id.clone();
    }
    Ok(check)
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
    // Consul answers these validation failures with 500, from the RPC it forwards to.
    let node = r.node.unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::Unavailable("Must provide node".into()));
    }
    // Stricter than Consul, which takes any bytes: a NUL or newline in a name corrupts logs
    // and CLI output, and a '/' cannot be named in /v1/catalog/node/<name>.
    if let Some(c) = node.chars().find(|c| c.is_control() || *c == '/') {
        return Err(ApiError::BadRequest(format!(
            "Invalid node name {node:?}: it contains {c:?}; control characters and '/' are \
             not allowed"
        )));
    }
    let skip = r.skip_node_update.unwrap_or(false);
    let address = r.address.unwrap_or_default();
    if address.is_empty() && !skip {
        return Err(ApiError::Unavailable(
            "Must provide address if SkipNodeUpdate is not set".into(),
        ));
    }
    let service = r.service.map(ServiceIn::into_service).transpose()?;
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
    Ok(write_reply(true, p.pretty()))
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
        return Err(ApiError::Unavailable("Must provide node".into()));
    }
    let cmd = Command::Deregister {
        node,
        service_id: d.service_id.filter(|s| !s.is_empty()),
        check_id: d.check_id.filter(|s| !s.is_empty()),
    };
    let res = st.server.write(cmd).await?;
    Ok(write_reply(res.success, p.pretty()))
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

pub(crate) async fn catalog_nodes(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Nodes).await?;
    let mut nodes: Vec<CatalogNode> = match res {
        QueryResult::Nodes(n) => n
            .into_iter()
            .filter(|n| p.node_meta_ok(&n.meta))
            .map(Into::into)
            .collect(),
        _ => Vec::new(),
    };
    sort_by_near(&st, p.get("near").unwrap_or(""), &mut nodes, |n| &n.node).await?;
    Ok(with_query_meta(
        json(&p.filtered(nodes)?, p.pretty()),
        &meta,
        mode,
    ))
}

/// `/v1/catalog/node/<node>`: the node and its services keyed by ID; `null` for an unknown
/// node (200, as Consul).
pub(crate) async fn catalog_node(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Node { name }).await?;
    let resp = match res {
        QueryResult::Node(Some((node, services))) => {
            let mut services: BTreeMap<String, AgentService> = services
                .into_iter()
                .map(|s| (s.id.clone(), AgentService::from(s)))
                .collect();
            // `?filter=` judges each of the node's services, as Consul's does.
            if p.has("filter") {
                let kept: Vec<Value> = p.filtered(services.values().cloned().collect())?;
                let kept: Vec<&str> = kept.iter().filter_map(|v| v["ID"].as_str()).collect();
                services.retain(|id, _| kept.contains(&id.as_str()));
            }
            json(
                &NodeServices {
                    node: node.into(),
                    services,
                },
                p.pretty(),
            )
        }
        _ => json(&Value::Null, p.pretty()),
    };
    Ok(with_query_meta(resp, &meta, mode))
}

/// `/v1/catalog/node-services/<node>`: the node and a list of its services; both `null` for
/// an unknown node.
pub(crate) async fn catalog_node_services(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (res, meta, mode) = read(&st, &p, Query::Node { name }).await?;
    let body = match res {
        QueryResult::Node(Some((node, services))) => NodeServiceList {
            node: Some(node.into()),
            services: Some(p.filtered(services.into_iter().map(AgentService::from).collect())?),
        },
        _ => NodeServiceList {
            node: None,
            services: None,
        },
    };
    Ok(with_query_meta(json(&body, p.pretty()), &meta, mode))
}

/// Connect-capable instances of a service (`/v1/catalog/connect/<service>`,
/// `/v1/health/connect/<service>`, `/v1/health/ingress/<service>`): Muster runs no Connect
/// proxies, so none, with the index of the service's instances so a blocking query still
/// waits on them.
pub(crate) async fn connect_instances(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let (_, meta, mode) = read(&st, &p, Query::ServiceNodes { name }).await?;
    Ok(with_query_meta(
        json(&serde_json::json!([]), p.pretty()),
        &meta,
        mode,
    ))
}

pub(crate) async fn catalog_services(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let node_meta = p.node_meta();
    // `?filter=` (Consul 1.14) is evaluated against each instance, as `/v1/catalog/service`
    // sees it; the names and tags of the instances that pass make the map.
    let q = if p.has("filter") {
        Query::ServiceInstances { node_meta }
    } else if node_meta.is_empty() {
        Query::Services
    } else {
        Query::ServicesOnNodes { node_meta }
    };
    let (res, meta, mode) = read(&st, &p, q).await?;
    let map = match res {
        QueryResult::Services(m) => m,
        QueryResult::ServiceNodes(v) => {
            let instances = v
                .into_iter()
                .map(|(n, s)| CatalogService::new(n, s))
                .collect();
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            tags_by_service(p.filtered(instances)?.iter().map(|i| {
                let tags = i["ServiceTags"].as_array().into_iter().flatten();
                (text(&i["ServiceName"]), tags.map(text).collect())
            }))
        }
        _ => BTreeMap::new(),
    };
    Ok(with_query_meta(json(&map, p.pretty()), &meta, mode))
}

pub(crate) async fn catalog_service(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    let near = Near::load(&st, p.get("near").unwrap_or("")).await?;
    let cache_key = near.cache_key(cache::key(&format!("catalog/service/{name}"), q.as_deref()));
    read_cached(&st, &p, Query::ServiceNodes { name }, cache_key, |res| {
        let mut list: Vec<CatalogService> = match res {
            QueryResult::ServiceNodes(v) => v
                .into_iter()
                .filter(|(n, s)| p.local() && p.tags_ok(&s.tags) && p.node_meta_ok(&n.meta))
                .map(|(n, s)| CatalogService::new(n, s))
                .collect(),
            _ => Vec::new(),
        };
        near.sort(&mut list, |s| &s.node);
        encode(&p.filtered(list)?, p.pretty())
    })
    .await
}
