//! Read-only catalog and health views needed so far: nodes, one node, a node's checks.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_server::model::{Query, QueryResult};

use crate::error::ApiResult;
use crate::params::{json, with_meta, Params};
use crate::types::{AgentService, CatalogNode, HealthCheck, NodeServices};
use crate::ApiState;

pub(crate) async fn catalog_nodes(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let (res, meta) = st.server.read(mode, Query::Nodes).await?;
    let nodes: Vec<CatalogNode> = match res {
        QueryResult::Nodes(n) => n.into_iter().map(Into::into).collect(),
        _ => Vec::new(),
    };
    Ok(with_meta(json(&nodes, p.pretty()), &meta, mode))
}

pub(crate) async fn catalog_node(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let (res, meta) = st.server.read(mode, Query::Node { name }).await?;
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

pub(crate) async fn health_node(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref());
    p.check_dc(&st.agent.datacenter())?;
    let mode = p.consistency()?;
    let (res, meta) = st.server.read(mode, Query::NodeChecks { name }).await?;
    let checks: Vec<HealthCheck> = match res {
        QueryResult::Checks(c) => c.into_iter().map(Into::into).collect(),
        _ => Vec::new(),
    };
    Ok(with_meta(json(&checks, p.pretty()), &meta, mode))
}
